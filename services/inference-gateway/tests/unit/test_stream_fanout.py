"""forward_stream with a fake pool: each request of a client stream goes up on a backend stream of
its own (Triton's gRPC frontend can abort when two in-flight decoupled requests share a stream), and
the responses come back under the caller's ids, interleaved as they arrive."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from tritonclient.grpc import service_pb2

from mlmesh.common.errors import Unavailable
from mlmesh.gateway.routing import Route, Router
from mlmesh.gateway.streaming import EMPTY_FINAL, FINAL, forward_stream

pytestmark = pytest.mark.timeout(10)


@dataclass
class Call:
    model: str
    triton: str
    version: str
    route: Route


def route(request: service_pb2.ModelInferRequest) -> Call:
    name = request.model_name
    return Call(name, f"team-a--{name}", "", Route("team-a", name, f"team-a--{name}", ""))


class FakePool:
    """A decoupled model per backend stream: two tokens, then the empty final response."""

    def __init__(self, fail_model: str = ""):
        self.streams: list[list[str]] = []  # the request ids each backend stream carried
        self.fail_model = fail_model

    async def stream(self, requests, timeout: float):
        carried: list[str] = []
        self.streams.append(carried)
        async for request in requests:
            carried.append(request.id)
            assert request.parameters[EMPTY_FINAL].bool_param
            if request.model_name == f"team-a--{self.fail_model}":
                raise Unavailable("the inference backend went away during the stream")
            for _ in range(2):  # two tokens
                await asyncio.sleep(0.01)
                r = service_pb2.ModelStreamInferResponse()
                r.infer_response.id, r.infer_response.model_name = request.id, request.model_name
                r.infer_response.outputs.add(name="text", datatype="BYTES", shape=[1])
                r.infer_response.parameters[FINAL].bool_param = False
                yield r
            final = service_pb2.ModelStreamInferResponse()
            final.infer_response.id = request.id
            final.infer_response.parameters[FINAL].bool_param = True
            yield final


async def _requests(*ids_and_models):
    for caller_id, model in ids_and_models:
        yield service_pb2.ModelInferRequest(id=caller_id, model_name=model)


async def _collect(pool, *ids_and_models):
    stream = forward_stream(
        _requests(*ids_and_models),
        pool=pool,
        router=Router(),
        route=route,
        cached=None,
        max_request_bytes=1 << 20,
        timeout=5,
    )
    return [(r.infer_response.id, r.infer_response.model_name) async for r in stream]


async def test_each_request_gets_a_backend_stream_of_its_own():
    pool = FakePool()
    got = await _collect(pool, ("one", "gpt"), ("two", "gpt"), ("three", "bert"))
    assert sorted(pool.streams) == [["1"], ["2"], ["3"]]  # one request per backend stream
    # Two tokens per request, under the caller's id and model name; the empty finals were not asked for.
    assert sorted(got) == sorted([("one", "gpt")] * 2 + [("two", "gpt")] * 2 + [("three", "bert")] * 2)
    assert {caller for caller, _ in got[:3]} != {"one"}  # concurrent: the responses interleave


async def test_a_failed_backend_stream_ends_the_client_stream():
    with pytest.raises(Unavailable):
        await _collect(FakePool(fail_model="bert"), ("one", "gpt"), ("two", "bert"))
