"""Streamed inference: the gRPC front's ModelStreamInfer (and the metrics the OpenAI front shares).

Each request on a client stream is routed as ModelInfer routes (team-scoped names, deployment
versions, rate limit, size limit) and forwarded on a backend stream of its own (`BackendPool.stream`:
each is balanced and retried on its own), under an id of the gateway's own, so its responses,
however they interleave on the client stream, are matched back to it: the caller's id and model
name are restored, its first response is timed, and it counts as in flight for its deployment until
its final response. A request the gateway refuses is answered in the stream with an error response,
as Triton answers a request it cannot serve; the stream goes on.

Requests never share a backend stream: Triton's gRPC frontend can abort (a failed gRPC assertion
while it serializes a response, seen here as `ASSERTION FAILED: !byte_buffer->Valid()`) when the
responses of two in-flight decoupled requests race on one stream, which takes every model down.

Every forwarded request asks Triton for the empty final response of decoupled models, so the
gateway always learns when a request is done; callers that did not ask for it do not get it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Histogram
from tritonclient.grpc import service_pb2

from mlmesh.common.errors import MlmeshError, TooLarge
from mlmesh.gateway.backends import BackendError, BackendPool
from mlmesh.gateway.cached import Cached
from mlmesh.gateway.routing import Route, Router

FIRST_TOKEN = Histogram(
    "mlmesh_gateway_first_token_seconds",
    "Time from a streamed request's arrival to its first streamed response",
    ["front"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
STREAMED = Counter(
    "mlmesh_gateway_stream_responses_total",
    "Streamed responses sent to callers (one per generated text delta for generation models)",
    ["front"],
)

FINAL = "triton_final_response"
EMPTY_FINAL = "triton_enable_empty_final_response"


def _flag(message, key: str) -> bool:
    return message.parameters[key].bool_param if key in message.parameters else False


def is_final(response: service_pb2.ModelInferResponse) -> bool:
    """Whether a streamed response is its request's last (Triton marks each; an unmarked one is an
    error at receipt or the one response of a model that is not decoupled)."""
    if FINAL in response.parameters:
        return response.parameters[FINAL].bool_param
    return True


class StreamCall(Protocol):
    """What routing says of one request on a stream (the gRPC front's `_Call` fits)."""

    model: str
    triton: str
    version: str
    route: Route


@dataclass
class _Pending:
    caller_id: str
    call: StreamCall
    started: float
    wants_empty_final: bool
    inflight: contextlib.ExitStack
    answered: bool = False


_DONE = object()


def _refusal(request: service_pb2.ModelInferRequest, message: str) -> service_pb2.ModelStreamInferResponse:
    response = service_pb2.ModelStreamInferResponse(error_message=message)
    response.infer_response.id = request.id
    response.infer_response.model_name = request.model_name
    if _flag(request, EMPTY_FINAL):
        response.infer_response.parameters[FINAL].bool_param = True
    return response


async def forward_stream(
    requests: AsyncIterator[service_pb2.ModelInferRequest],
    *,
    pool: BackendPool,
    router: Router,
    route: Callable[[service_pb2.ModelInferRequest], StreamCall],
    cached: Cached | None,
    max_request_bytes: int,
    timeout: float,
) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
    """The gateway's side of one ModelStreamInfer: `route(request)` routes a request (raising a
    domain error to refuse it). Raises `BackendError` / domain errors for the whole stream."""
    out: asyncio.Queue = asyncio.Queue()
    pending: dict[str, _Pending] = {}
    ids = itertools.count(1)

    async def forwarded() -> AsyncIterator[service_pb2.ModelInferRequest]:
        async for request in requests:
            try:
                size = request.ByteSize()
                if size > max_request_bytes:
                    raise TooLarge(f"request of {size} bytes exceeds the limit of {max_request_bytes} bytes")
                call = route(request)
                if cached is not None:
                    await cached.limit(call.route)
            except MlmeshError as exc:
                out.put_nowait(_refusal(request, exc.message))
                continue
            inflight = contextlib.ExitStack()
            inflight.enter_context(router.track(call.route))
            gateway_id = str(next(ids))
            wants = _flag(request, EMPTY_FINAL)
            pending[gateway_id] = _Pending(request.id, call, time.perf_counter(), wants, inflight)
            forward = service_pb2.ModelInferRequest()
            forward.CopyFrom(request)
            forward.id = gateway_id
            forward.model_name, forward.model_version = call.triton, call.version
            forward.parameters[EMPTY_FINAL].bool_param = True
            yield forward

    def restore(response: service_pb2.ModelStreamInferResponse) -> service_pb2.ModelStreamInferResponse | None:
        infer = response.infer_response
        gateway_id = infer.id
        state = pending.get(gateway_id)
        if state is None:
            return response
        call = state.call
        infer.id = state.caller_id
        if infer.model_name:
            infer.model_name = call.model
        if response.error_message:
            response.error_message = response.error_message.replace(call.triton, call.model)
        if not state.answered and infer.outputs and not response.error_message:
            state.answered = True
            FIRST_TOKEN.labels("grpc").observe(time.perf_counter() - state.started)
        if is_final(infer):
            del pending[gateway_id]
            state.inflight.close()
            empty = not infer.outputs and not response.error_message
            if empty and not state.wants_empty_final:
                return None
        return response

    async def one(forward: service_pb2.ModelInferRequest, remaining: float) -> None:
        async def single() -> AsyncIterator[service_pb2.ModelInferRequest]:
            yield forward

        try:
            async with contextlib.aclosing(pool.stream(single(), remaining)) as responses:
                async for response in responses:
                    restored = restore(response)
                    if restored is not None:
                        out.put_nowait(restored)
        except (MlmeshError, BackendError) as exc:
            out.put_nowait(exc)  # ends the whole client stream, as a failed backend stream did

    async def pump() -> None:
        deadline = time.monotonic() + timeout
        calls: set[asyncio.Task] = set()
        try:
            async for forward in forwarded():
                call = asyncio.create_task(one(forward, deadline - time.monotonic()), name=f"stream {forward.id}")
                calls.add(call)
                call.add_done_callback(calls.discard)
            if calls:
                await asyncio.gather(*calls)
        except (MlmeshError, BackendError) as exc:
            out.put_nowait(exc)
        finally:
            for call in list(calls):
                call.cancel()
            out.put_nowait(_DONE)

    task = asyncio.create_task(pump(), name="stream pump")
    try:
        while True:
            item = await out.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            STREAMED.labels("grpc").inc()
            yield item
        await task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for state in pending.values():
            state.inflight.close()
        pending.clear()
