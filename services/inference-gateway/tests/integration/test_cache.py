"""The result cache, single flight and rate limits with a real valkey in front of a real Triton.
Triton's own statistics count what reached it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from mlmesh.local.servers import NatsServer, TritonServer, ValkeyServer

from .conftest import TEAM_B_MODEL, TRITON_MODEL, VERSIONED_MODEL, Gateway, start_gateway, triton_env

pytestmark = pytest.mark.timeout(120)

_rng = np.random.default_rng()


def fresh(n: int = 3) -> np.ndarray:
    """Data no other test sends: the cache is shared by the whole session."""
    return _rng.standard_normal(n).astype(np.float32)


def executions(triton: TritonServer, model: str = TRITON_MODEL, version: str = "") -> int:
    client = thttp.InferenceServerClient(triton.http_url.removeprefix("http://"))
    try:
        stats = client.get_inference_statistics(model_name=model, model_version=version)
    finally:
        client.close()
    return sum(int(s["inference_count"]) for s in stats["model_stats"])


def grpc_infer(gateway: Gateway, data: np.ndarray, *, token: str | None = None, **kwargs):
    client = tgrpc.InferenceServerClient(gateway.grpc_address)
    try:
        x = tgrpc.InferInput("X", list(data.shape), "FP32")
        x.set_data_from_numpy(data)
        kwargs.setdefault("model_name", "double")
        return client.infer(inputs=[x], headers=gateway.headers(token or gateway.alice), client_timeout=10, **kwargs)
    finally:
        client.close()


def http_infer(gateway: Gateway, data: np.ndarray, *, binary: bool = True, **kwargs):
    client = thttp.InferenceServerClient(gateway.http_address)
    try:
        x = thttp.InferInput("X", list(data.shape), "FP32")
        x.set_data_from_numpy(data, binary_data=binary)
        outputs = [thttp.InferRequestedOutput("Y", binary_data=binary)]
        kwargs.setdefault("model_name", "double")
        return client.infer(inputs=[x], outputs=outputs, headers=gateway.headers(gateway.alice), **kwargs)
    finally:
        client.close()


def test_grpc_repeat_is_a_hit_with_the_same_result(cached_gateway: Gateway, more_models: TritonServer) -> None:
    data = fresh()
    before = executions(more_models)
    first = grpc_infer(cached_gateway, data, request_id="one")
    second = grpc_infer(cached_gateway, data, request_id="two")
    third = grpc_infer(cached_gateway, data)
    assert executions(more_models) == before + 1
    for result in (first, second, third):
        np.testing.assert_array_equal(result.as_numpy("Y"), data * 2)
        assert result.get_response().model_name == "double"
    assert [first.get_response().id, second.get_response().id, third.get_response().id] == ["one", "two", ""]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_repeat_is_a_hit_with_the_same_result(
    cached_gateway: Gateway, more_models: TritonServer, binary: bool
) -> None:
    data = fresh()
    before = executions(more_models)
    first = http_infer(cached_gateway, data, binary=binary, request_id="one")
    second = http_infer(cached_gateway, data, binary=binary, request_id="two")
    assert executions(more_models) == before + 1
    for result, rid in ((first, "one"), (second, "two")):
        np.testing.assert_array_equal(result.as_numpy("Y"), data * 2)
        assert result.get_response()["model_name"] == "double"
        assert result.get_response()["id"] == rid
    # The gRPC front caches its own value: its first call is a miss.
    grpc_infer(cached_gateway, data)
    assert executions(more_models) == before + 2


def test_other_data_or_parameters_are_misses(cached_gateway: Gateway, more_models: TritonServer) -> None:
    data = fresh()
    before = executions(more_models)
    grpc_infer(cached_gateway, data)
    grpc_infer(cached_gateway, data + 1)
    grpc_infer(cached_gateway, data, parameters={"custom": "a"})
    grpc_infer(cached_gateway, data, parameters={"custom": "b"})
    assert executions(more_models) == before + 4
    grpc_infer(cached_gateway, data, parameters={"custom": "b"})
    assert executions(more_models) == before + 4


def test_another_team_is_a_miss(cached_gateway: Gateway, more_models: TritonServer) -> None:
    data = fresh()
    a_before, b_before = executions(more_models), executions(more_models, TEAM_B_MODEL)
    grpc_infer(cached_gateway, data)
    result = grpc_infer(cached_gateway, data, token=cached_gateway.bob)
    np.testing.assert_array_equal(result.as_numpy("Y"), data * 2)
    assert executions(more_models) == a_before + 1
    assert executions(more_models, TEAM_B_MODEL) == b_before + 1


def test_versions_do_not_share_entries(cached_gateway: Gateway, more_models: TritonServer) -> None:
    data = fresh()
    v1, v2 = executions(more_models, VERSIONED_MODEL, "1"), executions(more_models, VERSIONED_MODEL, "2")
    grpc_infer(cached_gateway, data, model_name="versioned", model_version="1")
    grpc_infer(cached_gateway, data, model_name="versioned", model_version="2")
    assert executions(more_models, VERSIONED_MODEL, "1") == v1 + 1
    assert executions(more_models, VERSIONED_MODEL, "2") == v2 + 1
    # No version: Triton serves the highest, 2, so this is the version-2 entry (a hit).
    result = grpc_infer(cached_gateway, data, model_name="versioned")
    assert result.get_response().model_version == "2"
    assert executions(more_models, VERSIONED_MODEL, "2") == v2 + 1


def test_concurrent_identical_requests_execute_once(cached_gateway: Gateway, more_models: TritonServer) -> None:
    for infer in (grpc_infer, http_infer):
        data = fresh()
        before = executions(more_models)
        barrier = threading.Barrier(16)

        def call(_: int, infer=infer, data=data, barrier=barrier):
            barrier.wait()
            return infer(cached_gateway, data)

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(16)))
        for result in results:
            np.testing.assert_array_equal(result.as_numpy("Y"), data * 2)
        assert executions(more_models) == before + 1, infer.__name__


def test_errors_are_not_cached(cached_gateway: Gateway, more_models: TritonServer) -> None:
    bad_shape = fresh(4).reshape(2, 2)  # the model takes one dimension: Triton refuses it up front
    poisoned = np.array([-999.0, *fresh(2)], dtype=np.float32)  # the model itself answers an error
    for infer, code in ((grpc_infer, "StatusCode.INVALID_ARGUMENT"), (http_infer, "400")):
        for _ in range(2):
            with pytest.raises(InferenceServerException) as err:
                infer(cached_gateway, bad_shape)
            assert err.value.status() == code
            assert "team-a--" not in err.value.message()
        before = executions(more_models)
        for _ in range(2):
            with pytest.raises(InferenceServerException) as err:
                infer(cached_gateway, poisoned)
            assert "poisoned input" in err.value.message()
        # Triton counts a model's error reply as an inference: the second attempt reached it too.
        assert executions(more_models) == before + 2


def test_requests_keep_succeeding_when_valkey_stops(
    tmp_path, nats_server: NatsServer, more_models: TritonServer
) -> None:
    valkey = ValkeyServer(tmp_path / "valkey")
    valkey.start(timeout=60)
    gateway_gen = start_gateway(
        tmp_path / "gw", nats_server, {**triton_env(more_models), "VALKEY_URL": valkey.url, "CACHE_TTL_S": "60"}
    )
    (tmp_path / "gw").mkdir()
    gateway = next(gateway_gen)
    try:
        data = fresh()
        before = executions(more_models)
        grpc_infer(gateway, data)
        grpc_infer(gateway, data)
        assert executions(more_models) == before + 1  # the cache works
        stop_at = time.monotonic() + 1.0
        stopped = False
        slowest = 0.0
        count = 0
        while time.monotonic() < stop_at + 2.0:
            if not stopped and time.monotonic() >= stop_at:
                valkey.stop(grace=1)
                stopped = True
            sample = fresh()
            started = time.perf_counter()
            np.testing.assert_array_equal(grpc_infer(gateway, sample).as_numpy("Y"), sample * 2)
            np.testing.assert_array_equal(http_infer(gateway, sample).as_numpy("Y"), sample * 2)
            slowest = max(slowest, time.perf_counter() - started)
            count += 1
        assert stopped and count > 10
        assert slowest < 2.0, slowest
        # Without the cache, a repeat reaches Triton again.
        before = executions(more_models)
        grpc_infer(gateway, data)
        assert executions(more_models) == before + 1
        log = gateway.proc.log_tail(500)
        assert '"level": "ERROR"' not in log and '"level":"ERROR"' not in log
        assert "valkey call failed" in log  # logged (once), and the password never
        assert valkey.password not in log
    finally:
        gateway_gen.close()
        valkey.stop()


def test_rate_limit_after_the_burst(limited_gateway: Gateway, more_models: TritonServer) -> None:
    data = fresh()
    for _ in range(3):  # the burst
        grpc_infer(limited_gateway, data)
    with pytest.raises(InferenceServerException) as grpc_err:
        grpc_infer(limited_gateway, data)
    assert grpc_err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    with pytest.raises(InferenceServerException) as http_err:
        http_infer(limited_gateway, data)
    assert http_err.value.status() == "429"
    # Another team has its own bucket.
    grpc_infer(limited_gateway, data, token=limited_gateway.bob)
