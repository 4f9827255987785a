"""tritonclient's own clients against the gateway, in front of a real Triton."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from .conftest import Gateway

pytestmark = pytest.mark.timeout(120)

X = np.array([1.0, 2.5, -3.0], dtype=np.float32)


@pytest.fixture
def grpc_client(gateway: Gateway):
    client = tgrpc.InferenceServerClient(gateway.grpc_address)
    yield client
    client.close()


@pytest.fixture
def http_client(gateway: Gateway):
    client = thttp.InferenceServerClient(gateway.http_address)
    yield client
    client.close()


def _grpc_input(data: np.ndarray, dtype: str = "FP32") -> tgrpc.InferInput:
    x = tgrpc.InferInput("X", list(data.shape), dtype)
    x.set_data_from_numpy(data)
    return x


def _http_input(data: np.ndarray, dtype: str = "FP32", binary: bool = True) -> thttp.InferInput:
    x = thttp.InferInput("X", list(data.shape), dtype)
    x.set_data_from_numpy(data, binary_data=binary)
    return x


def test_grpc_infer_and_metadata_as_the_owning_team(gateway: Gateway, grpc_client) -> None:
    headers = gateway.headers(gateway.alice)
    result = grpc_client.infer("double", [_grpc_input(X)], headers=headers, client_timeout=10)
    np.testing.assert_array_equal(result.as_numpy("Y"), X * 2)
    assert result.get_response().model_name == "double"
    assert grpc_client.is_model_ready("double", headers=headers)
    metadata = grpc_client.get_model_metadata("double", headers=headers)
    assert metadata.name == "double" and [i.name for i in metadata.inputs] == ["X"]
    assert grpc_client.get_model_config("double", headers=headers).config.name == "double"
    assert grpc_client.is_server_live(headers=headers) and grpc_client.is_server_ready(headers=headers)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_binary_and_json(gateway: Gateway, http_client, binary: bool) -> None:
    headers = gateway.headers(gateway.alice)
    outputs = [thttp.InferRequestedOutput("Y", binary_data=binary)]
    result = http_client.infer("double", [_http_input(X, binary=binary)], outputs=outputs, headers=headers)
    np.testing.assert_array_equal(result.as_numpy("Y"), X * 2)
    assert result.get_response()["model_name"] == "double"
    assert http_client.is_model_ready("double", headers=headers)
    assert http_client.get_model_metadata("double", headers=headers)["name"] == "double"
    assert http_client.get_model_config("double", headers=headers)["name"] == "double"
    assert http_client.is_server_live() and http_client.is_server_ready()  # health needs no token


def test_another_team_gets_not_found(gateway: Gateway, grpc_client, http_client) -> None:
    with pytest.raises(InferenceServerException) as grpc_err:
        grpc_client.infer("double", [_grpc_input(X)], headers=gateway.headers(gateway.bob))
    assert grpc_err.value.status() == "StatusCode.NOT_FOUND"
    assert "team-" not in grpc_err.value.message()  # Triton's name for the model does not leak
    with pytest.raises(InferenceServerException) as http_err:
        http_client.infer("double", [_http_input(X)], headers=gateway.headers(gateway.bob))
    assert http_err.value.status() == "404"
    with pytest.raises(InferenceServerException) as invalid:
        http_client.get_model_metadata("Not_A--Name", headers=gateway.headers(gateway.alice))
    assert invalid.value.status() == "404"


def test_missing_token_is_unauthenticated(gateway: Gateway, grpc_client, http_client) -> None:
    with pytest.raises(InferenceServerException) as grpc_err:
        grpc_client.infer("double", [_grpc_input(X)])
    assert grpc_err.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as http_err:
        http_client.infer("double", [_http_input(X)])
    assert http_err.value.status() == "401"


@pytest.mark.parametrize(
    ("data", "dtype"),
    [(np.array([[1.0, 2.0]], dtype=np.float32), "FP32"), (np.array([1, 2], dtype=np.int32), "INT32")],
    ids=["shape", "dtype"],
)
def test_bad_input_is_invalid_argument(gateway: Gateway, grpc_client, http_client, data, dtype) -> None:
    headers = gateway.headers(gateway.alice)
    with pytest.raises(InferenceServerException) as grpc_err:
        grpc_client.infer("double", [_grpc_input(data, dtype)], headers=headers)
    assert grpc_err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "team-a--" not in grpc_err.value.message()
    for binary in (True, False):
        with pytest.raises(InferenceServerException) as http_err:
            http_client.infer("double", [_http_input(data, dtype, binary)], headers=headers)
        assert http_err.value.status() == "400"


def test_oversize_request_is_rejected(gateway: Gateway, grpc_client, http_client) -> None:
    big = np.zeros(512 * 1024, dtype=np.float32)  # 2 MiB over a 1 MiB limit
    headers = gateway.headers(gateway.alice)
    with pytest.raises(InferenceServerException) as grpc_err:
        grpc_client.infer("double", [_grpc_input(big)], headers=headers)
    assert grpc_err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    with pytest.raises(InferenceServerException) as http_err:
        http_client.infer("double", [_http_input(big)], headers=headers)
    assert http_err.value.status() == "413"
    # The gateway still serves normal requests afterwards.
    result = http_client.infer("double", [_http_input(X)], headers=headers)
    np.testing.assert_array_equal(result.as_numpy("Y"), X * 2)


def test_dead_backend_is_unavailable_and_fast_once_the_breaker_opens(dead_gateway: Gateway) -> None:
    headers = dead_gateway.headers(dead_gateway.alice)
    grpc_client = tgrpc.InferenceServerClient(dead_gateway.grpc_address)
    http_client = thttp.InferenceServerClient(dead_gateway.http_address)
    try:
        with pytest.raises(InferenceServerException) as first:
            grpc_client.infer("double", [_grpc_input(X)], headers=headers, client_timeout=10)
        assert first.value.status() == "StatusCode.UNAVAILABLE"
        assert not http_client.is_server_ready()  # the breaker is open: nothing can take a call
        started = time.perf_counter()
        with pytest.raises(InferenceServerException) as fast:
            grpc_client.infer("double", [_grpc_input(X)], headers=headers, client_timeout=10)
        grpc_took = time.perf_counter() - started
        assert fast.value.status() == "StatusCode.UNAVAILABLE"
        started = time.perf_counter()
        with pytest.raises(InferenceServerException) as http_err:
            http_client.infer("double", [_http_input(X)], headers=headers)
        http_took = time.perf_counter() - started
        assert http_err.value.status() == "503"
        assert grpc_took < 0.1 and http_took < 0.1, (grpc_took, http_took)
    finally:
        grpc_client.close()
        http_client.close()
    # SIGTERM: the HTTP front, the backends and NATS shut down in order and the process exits 0.
    dead_gateway.proc.stop(grace=10)
    assert dead_gateway.proc.returncode == 0, dead_gateway.proc.log_tail()
    assert '"stopped"' in dead_gateway.proc.log_tail(50)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_http_compressed_request_and_reply(gateway: Gateway, http_client, algorithm: str) -> None:
    result = http_client.infer(
        "double",
        [_http_input(X)],
        outputs=[thttp.InferRequestedOutput("Y", binary_data=True)],
        headers=gateway.headers(gateway.alice),
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    np.testing.assert_array_equal(result.as_numpy("Y"), X * 2)
    assert result.get_response()["model_name"] == "double"
