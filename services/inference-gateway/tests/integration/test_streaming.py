"""ModelStreamInfer through the gateway: tritonclient.grpc streams a generation model of team-a
loaded in a real Triton, by the caller's name."""

from __future__ import annotations

import queue
import re
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from .conftest import GENERATOR, Gateway, stream_generate

pytestmark = pytest.mark.timeout(180)


def _prompt(text: str, max_tokens: int, request_id: str = "") -> list[tgrpc.InferInput]:
    prompt = tgrpc.InferInput("PROMPT", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    limit = tgrpc.InferInput("MAX_TOKENS", [1], "INT32")
    limit.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
    temperature = tgrpc.InferInput("TEMPERATURE", [1], "FP32")
    temperature.set_data_from_numpy(np.array([0.0], dtype=np.float32))
    return [prompt, limit, temperature]


@pytest.fixture
def client(llm_gateway: Gateway):
    c = tgrpc.InferenceServerClient(llm_gateway.grpc_address)
    yield c
    c.close()


def _first_token_count(gateway: Gateway, front: str) -> float:
    text = urllib.request.urlopen(gateway.metrics_url, timeout=10).read().decode()
    match = re.search(rf'^mlmesh_gateway_first_token_seconds_count{{front="{front}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_the_owning_team_streams_by_its_name(llm_gateway: Gateway, client, triton_server, generator_model) -> None:
    before = _first_token_count(llm_gateway, "grpc")
    through = stream_generate(client, GENERATOR, "streams come back", 8, 0.0, llm_gateway.headers(llm_gateway.alice))
    direct_client = tgrpc.InferenceServerClient(triton_server.grpc_url)
    try:
        direct = stream_generate(direct_client, generator_model, "streams come back", 8, 0.0)
    finally:
        direct_client.close()
    assert len(through) >= 3
    assert through == direct
    assert through[-1][1] == "length" and through[-1][3] == 8
    assert _first_token_count(llm_gateway, "grpc") == before + 1


def test_requests_on_one_stream_keep_their_ids_and_names(llm_gateway: Gateway, client) -> None:
    results: queue.Queue = queue.Queue()
    client.start_stream(
        lambda result, error: results.put((result, error)), headers=llm_gateway.headers(llm_gateway.alice)
    )
    try:
        client.async_stream_infer(GENERATOR, _prompt("first one", 4), request_id="one")
        client.async_stream_infer(GENERATOR, _prompt("second one", 6), request_id="two")
        client.async_stream_infer("not-there", _prompt("nobody", 2), request_id="three")
        texts: dict[str, str] = {"one": "", "two": ""}
        finished, errors = set(), []
        while len(finished) < 2 or not errors:
            result, error = results.get(timeout=120)
            if error is not None:
                errors.append(error)
                continue
            response = result.get_response()
            assert response.model_name == GENERATOR
            texts[response.id] += result.as_numpy("TEXT")[0].decode()
            if result.as_numpy("FINISH_REASON")[0]:
                finished.add(response.id)
                assert int(result.as_numpy("COMPLETION_TOKENS")[0]) == {"one": 4, "two": 6}[response.id]
    finally:
        client.stop_stream()
    assert finished == {"one", "two"} and all(texts.values())
    assert "not-there" in errors[0].message() and "team-" not in errors[0].message()


def test_another_team_gets_not_found_and_no_token_is_refused(llm_gateway: Gateway, client) -> None:
    with pytest.raises(InferenceServerException) as bob:
        stream_generate(client, GENERATOR, "bob's turn", 3, 0.0, llm_gateway.headers(llm_gateway.bob))
    assert "not found" in bob.value.message() and "team-" not in bob.value.message()
    with pytest.raises(InferenceServerException) as anonymous:
        stream_generate(client, GENERATOR, "no token", 3, 0.0)
    assert anonymous.value.status() == "StatusCode.UNAUTHENTICATED", anonymous.value.message()
