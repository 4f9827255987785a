"""The gateway as users run it: a `python -m mlmesh.gateway` process on a real nats-server, in
front of a real tritonserver (python backend) holding `team-a--double`."""

from __future__ import annotations

import socket
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tritonclient.http as triton_http

from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.local.process import ManagedProcess, start_service
from mlmesh.local.servers import NatsServer, TritonServer, ValkeyServer

TRITON_MODEL = "team-a--double"
TEAM_B_MODEL = "team-b--double"
VERSIONED_MODEL = "team-a--versioned"


@dataclass
class Gateway:
    grpc_address: str
    http_address: str
    alice: str
    bob: str
    proc: ManagedProcess

    def headers(self, token: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"} if token else {}


def _write_doubling_model(repo: Path, name: str, versions: tuple[int, ...] = (1,)) -> None:
    policy = "version_policy: { all { } }" if len(versions) > 1 else ""
    (repo / name).mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(
        textwrap.dedent(f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        {policy}
        input [{{ name: "X", data_type: TYPE_FP32, dims: [ -1 ] }}]
        output [{{ name: "Y", data_type: TYPE_FP32, dims: [ -1 ] }}]
        instance_group [{{ kind: KIND_CPU, count: 1 }}]
        """)
    )
    for number in versions:
        _write_model_py(repo / name / str(number))


def _write_model_py(version: Path) -> None:
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(
        textwrap.dedent("""
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
                    if x.size and x.flat[0] == -999:  # a poisoned input: an error from the model
                        error = pb_utils.TritonError("poisoned input")
                        responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                        continue
                    y = pb_utils.Tensor("Y", (x * 2).astype(np.float32))
                    responses.append(pb_utils.InferenceResponse(output_tensors=[y]))
                return responses
        """)
    )


@pytest.fixture(scope="session")
def triton_with_double(triton_server: TritonServer) -> TritonServer:
    _write_doubling_model(triton_server.model_repository, TRITON_MODEL)
    client = triton_http.InferenceServerClient(triton_server.http_url.removeprefix("http://"))
    try:
        client.load_model(TRITON_MODEL)
        assert client.is_model_ready(TRITON_MODEL)
    finally:
        client.close()
    return triton_server


def _dead_port() -> int:
    """A port nobody listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_gateway(tmp: Path, nats: NatsServer, extra: dict[str, str]) -> Iterator[Gateway]:
    private, public = generate_signing_key()
    write_secret(tmp / "public.pem", public)
    settings = {
        "NATS_URL": nats.url,
        "AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem"),
        "METRICS_PORT": "-1",
        "HTTP_PORT": "0",
        "SHUTDOWN_GRACE_S": "2",
        **extra,
    }
    proc, info = start_service("gateway", settings, tmp, prefix="MLMESH_GATEWAY_", timeout=60)
    try:
        grpc_port, http_port = info["grpc_port"], info["http_port"]
        yield Gateway(
            grpc_address=f"127.0.0.1:{grpc_port}",
            http_address=f"127.0.0.1:{http_port}",
            alice=mint_token(private, subject="alice", team="team-a", roles=["developer"]),
            bob=mint_token(private, subject="bob", team="team-b", roles=["developer"]),
            proc=proc,
        )
    finally:
        proc.stop(grace=5)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, nats_server: NatsServer, triton_with_double: TritonServer) -> Iterator[Gateway]:
    yield from _start_gateway(
        tmp_path_factory.mktemp("gateway"),
        nats_server,
        {
            "TRITON_GRPC_URLS": triton_with_double.grpc_url,
            "TRITON_HTTP_URLS": triton_with_double.http_url,
            "MAX_REQUEST_BYTES": str(1024 * 1024),
        },
    )


@pytest.fixture(scope="module")
def dead_gateway(tmp_path_factory, nats_server: NatsServer) -> Iterator[Gateway]:
    yield from _start_gateway(
        tmp_path_factory.mktemp("dead-gateway"),
        nats_server,
        {
            "TRITON_GRPC_URLS": f"127.0.0.1:{_dead_port()}",
            "TRITON_HTTP_URLS": f"http://127.0.0.1:{_dead_port()}",
            "BREAKER_FAILURE_THRESHOLD": "2",
            "BREAKER_OPEN_S": "60",
            "HEALTH_INTERVAL_S": "60",  # only the breaker decides in this test
        },
    )


def triton_env(triton: TritonServer) -> dict[str, str]:
    return {"TRITON_GRPC_URLS": triton.grpc_url, "TRITON_HTTP_URLS": triton.http_url}


@pytest.fixture(scope="module")
def cached_gateway(
    tmp_path_factory, nats_server: NatsServer, more_models: TritonServer, valkey_server: ValkeyServer
) -> Iterator[Gateway]:
    yield from _start_gateway(
        tmp_path_factory.mktemp("cached-gateway"),
        nats_server,
        {**triton_env(more_models), "VALKEY_URL": valkey_server.url, "CACHE_TTL_S": "60"},
    )


@pytest.fixture(scope="module")
def limited_gateway(
    tmp_path_factory, nats_server: NatsServer, more_models: TritonServer, valkey_server: ValkeyServer
) -> Iterator[Gateway]:
    yield from _start_gateway(
        tmp_path_factory.mktemp("limited-gateway"),
        nats_server,
        {
            **triton_env(more_models),
            "VALKEY_URL": valkey_server.url,
            "CACHE_TTL_S": "0",
            "RATE_LIMIT_PER_S": "0.2",
            "RATE_LIMIT_BURST": "3",
        },
    )


def start_gateway(tmp: Path, nats: NatsServer, extra: dict[str, str]) -> Iterator[Gateway]:
    """For a test that owns its gateway (and its valkey)."""
    return _start_gateway(tmp, nats, extra)


@pytest.fixture(scope="module")
def more_models(triton_with_double: TritonServer) -> Iterator[TritonServer]:
    """`team-b--double` and `team-a--versioned` (versions 1 and 2), unloaded afterwards: other
    modules expect team-b to have no `double`."""
    repo = triton_with_double.model_repository
    _write_doubling_model(repo, TEAM_B_MODEL)
    _write_doubling_model(repo, VERSIONED_MODEL, versions=(1, 2))
    client = triton_http.InferenceServerClient(triton_with_double.http_url.removeprefix("http://"))
    try:
        for model in (TEAM_B_MODEL, VERSIONED_MODEL):
            client.load_model(model)
            assert client.is_model_ready(model)
        yield triton_with_double
        for model in (TEAM_B_MODEL, VERSIONED_MODEL):
            client.unload_model(model, unload_dependents=False)
        deadline = time.monotonic() + 30
        while client.is_model_ready(TEAM_B_MODEL) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.close()
