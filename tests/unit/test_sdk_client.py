"""The SDK client core: address and token resolution, error translation and retries, against a real
in-process gRPC server that uses the platform's own auth and error-mapping interceptors."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from mlmesh.cli.output import CliError
from mlmesh.common import errors
from mlmesh.sdk import client as sdk
from mlmesh.sdk.client import Client, RpcFailure, resolve_address, resolve_token

pytestmark = pytest.mark.timeout(60)

SERVICE = "mlmesh.sdktest.v1.Probe"
C = grpc.StatusCode
TOKEN = "tok-" + "s3cr3t" * 5


@pytest.fixture
def clean_env(monkeypatch, tmp_path: Path) -> Path:
    """No MLMESH_* from the developer's shell; the state dir is an empty temporary one."""
    for name in ("MLMESH_SCHEDULER_ADDR", "MLMESH_INFERENCE_GATEWAY_ADDR", "MLMESH_TOKEN", "MLMESH_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("MLMESH_STATE_DIR", str(state))
    return state


def _write_endpoints(state: Path, services: dict) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "endpoints.json").write_text(json.dumps({"services": services, "infra": {}}))


# --- address -------------------------------------------------------------------------------------


def test_address_explicit_beats_env_beats_endpoints_file(clean_env, monkeypatch):
    with pytest.raises(CliError) as info:
        resolve_address("scheduler")
    assert info.value.message == "no scheduler endpoint: run `mlmesh up` or set MLMESH_SCHEDULER_ADDR"

    _write_endpoints(clean_env, {"scheduler": {"grpc": "127.0.0.1:1111"}})
    assert resolve_address("scheduler") == "127.0.0.1:1111"
    monkeypatch.setenv("MLMESH_SCHEDULER_ADDR", "10.0.0.1:2222")
    assert resolve_address("scheduler") == "10.0.0.1:2222"
    assert resolve_address("scheduler", "explicit:3333") == "explicit:3333"


def test_address_env_name_of_hyphenated_services_and_explicit_state_dir(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MLMESH_INFERENCE_GATEWAY_ADDR", "gw:1")
    assert resolve_address("inference-gateway") == "gw:1"
    other = tmp_path / "other"
    _write_endpoints(other, {"fabric": {"grpc": "127.0.0.1:4444"}})
    assert resolve_address("fabric", state_dir=other) == "127.0.0.1:4444"
    with pytest.raises(CliError, match="no fabric endpoint"):
        resolve_address("fabric")  # the default state dir has none


def test_unreadable_endpoints_file_is_a_cli_error(clean_env):
    clean_env.mkdir(parents=True)
    (clean_env / "endpoints.json").write_text("{not json")
    with pytest.raises(CliError, match="unreadable"):
        resolve_address("scheduler")


# --- token ---------------------------------------------------------------------------------------


def test_token_env_beats_token_file_beats_local_admin_token(clean_env, monkeypatch, tmp_path):
    with pytest.raises(CliError) as info:
        resolve_token()
    assert "MLMESH_TOKEN" in info.value.message and "mlmesh up" in info.value.hint

    (clean_env / "auth").mkdir(parents=True)
    (clean_env / "auth" / "admin.token").write_text("admin-token\n")
    assert resolve_token() == "admin-token"
    token_file = tmp_path / "my.token"
    token_file.write_text("  file-token\n")
    monkeypatch.setenv("MLMESH_TOKEN_FILE", str(token_file))
    assert resolve_token() == "file-token"
    monkeypatch.setenv("MLMESH_TOKEN", "env-token")
    assert resolve_token() == "env-token"


def test_token_file_problems_name_the_file_never_the_token(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MLMESH_TOKEN_FILE", str(tmp_path / "missing.token"))
    with pytest.raises(CliError, match=r"missing\.token"):
        resolve_token()
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    monkeypatch.setenv("MLMESH_TOKEN_FILE", str(empty))
    with pytest.raises(CliError, match="is empty"):
        resolve_token()


def test_the_client_never_shows_its_token(clean_env):
    c = Client("scheduler", lambda ch: None, endpoint="127.0.0.1:1", token=TOKEN)
    try:
        assert TOKEN not in repr(c) and TOKEN not in str(vars(c).get("target"))
        assert c.metadata == (("authorization", f"Bearer {TOKEN}"),)
    finally:
        c.close()


# --- a real server -------------------------------------------------------------------------------


class ProbeServer:
    """Bytes in, bytes out. `Raise` raises the domain error named in the request; `Flaky` raises it
    the first N times per key (`Name:N:key`), then answers `ok`; `Slow` sleeps."""

    def __init__(self):
        self.calls: Counter[str] = Counter()

    async def raise_(self, request: bytes, context) -> bytes:
        self.calls[request.decode()] += 1
        name = request.decode()
        if name == "InvalidArgument":
            raise errors.InvalidArgument(
                "2 fields are invalid", {"spec.workers.count": "must be 1-4096", "spec.name": "is required"}
            )
        raise getattr(errors, name)(f"{name} happened\nwith a second line")

    async def flaky(self, request: bytes, context) -> bytes:
        name, n, key = request.decode().split(":")
        self.calls[key] += 1
        if self.calls[key] <= int(n):
            raise getattr(errors, name)("try again")
        return b"ok"

    async def slow(self, request: bytes, context) -> bytes:
        await asyncio.sleep(float(request.decode()))
        return b"late"

    async def stream(self, request: bytes, context):
        yield b"first"
        raise errors.NotFound("gone")

    def handler(self):
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Raise": grpc.unary_unary_rpc_method_handler(self.raise_),
                "Flaky": grpc.unary_unary_rpc_method_handler(self.flaky),
                "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
                "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            },
        )


class ProbeStub:
    def __init__(self, channel: grpc.Channel):
        self.Raise = channel.unary_unary(f"/{SERVICE}/Raise")
        self.Flaky = channel.unary_unary(f"/{SERVICE}/Flaky")
        self.Slow = channel.unary_unary(f"/{SERVICE}/Slow")
        self.Stream = channel.unary_stream(f"/{SERVICE}/Stream")


@pytest.fixture
def server(threaded_grpc_server):
    """The probe on a grpc.aio server with mlmesh's interceptors, on its own loop in a thread (the
    client under test is synchronous)."""
    probe = ProbeServer()
    probe.target = threaded_grpc_server(lambda srv: srv.add_generic_rpc_handlers((probe.handler(),)))
    return probe


@pytest.fixture
def client(server, signing_key, clean_env):
    token = signing_key.token(subject="alice", team="team-a", roles=["developer"])
    c = Client("scheduler", ProbeStub, endpoint=server.target, token=token)
    yield c
    c.close()


def _fail(c: Client, method: str, payload: str, timeout: float = 5) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        c.call(getattr(c.stub, method), payload.encode(), timeout=timeout)
    err = info.value
    assert "\n" not in err.message and err.exit_code == 1
    return err


# --- translation ---------------------------------------------------------------------------------


def test_invalid_argument_lists_each_field_violation_on_one_line(client, server):
    err = _fail(client, "Raise", "InvalidArgument")
    assert err.code == C.INVALID_ARGUMENT
    assert err.message == (
        "invalid_argument: 2 fields are invalid; spec.workers.count: must be 1-4096; spec.name: is required"
    )
    assert err.hint
    assert server.calls["InvalidArgument"] == 1  # never retried


@pytest.mark.parametrize(
    ("name", "code", "hint"),
    [
        ("NotFound", C.NOT_FOUND, "check the id; jobs of other teams are not visible"),
        ("PermissionDenied", C.PERMISSION_DENIED, "admin"),
        ("AlreadyExists", C.ALREADY_EXISTS, "another name"),
        ("FailedPrecondition", C.FAILED_PRECONDITION, "state"),
    ],
)
def test_status_codes_become_one_line_with_a_hint(client, server, name, code, hint):
    err = _fail(client, "Raise", name)
    assert err.code == code
    assert err.message == f"{code.name.lower()}: {name} happened with a second line"
    assert hint in err.hint
    assert server.calls[name] == 1


def test_bad_token_is_unauthenticated_with_the_hint(server, clean_env):
    with Client("scheduler", ProbeStub, endpoint=server.target, token="not-a-jwt") as c:
        err = _fail(c, "Raise", "NotFound")
    assert err.code == C.UNAUTHENTICATED and err.message.startswith("unauthenticated: ")
    assert err.hint == "set MLMESH_TOKEN or run `mlmesh up`"
    assert "not-a-jwt" not in err.message


def test_stream_errors_are_translated_after_the_messages_before_them(client):
    got = []
    with pytest.raises(RpcFailure) as info:
        for item in client.stream(client.stub.Stream, b"", timeout=5):
            got.append(item)
    assert got == [b"first"]
    assert info.value.code == C.NOT_FOUND and info.value.message == "not_found: gone"


def test_deadline_is_set_and_reported(client):
    start = time.monotonic()
    err = _fail(client, "Slow", "5", timeout=0.3)
    assert err.code == C.DEADLINE_EXCEEDED and err.message.startswith("deadline_exceeded")
    assert time.monotonic() - start < 2
    assert "did not answer in time" in err.hint


# --- retries -------------------------------------------------------------------------------------


def test_unavailable_twice_then_ok_succeeds(client, server):
    assert client.call(client.stub.Flaky, b"Unavailable:2:a", timeout=10) == b"ok"
    assert server.calls["a"] == 3


def test_quota_exceeded_is_reported_not_retried(client, server):
    # A retried quota error used to end as DEADLINE_EXCEEDED when the last try ran out of time.
    err = _fail(client, "Flaky", "QuotaExceeded:1:b", timeout=10)
    assert err.code == C.RESOURCE_EXHAUSTED
    assert server.calls["b"] == 1


@pytest.mark.parametrize(
    "name", ["InvalidArgument", "NotFound", "Conflict", "FailedPrecondition", "PermissionDenied", "DeadlineExceeded"]
)
def test_other_codes_are_never_retried(client, server, name):
    err = _fail(client, "Flaky", f"{name}:5:{name}")
    assert err.code != C.UNAVAILABLE
    assert server.calls[name] == 1


def test_retries_stop_at_the_deadline(client, server):
    start = time.monotonic()
    err = _fail(client, "Flaky", "Unavailable:1000:c", timeout=1.0)
    elapsed = time.monotonic() - start
    assert err.code == C.UNAVAILABLE and err.message == "unavailable: try again"
    assert 1 < server.calls["c"] < 50  # backed off, not hammering
    assert elapsed <= 1.5


def test_unreachable_server_is_unavailable_naming_the_target(clean_env):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client("scheduler", ProbeStub, endpoint=f"127.0.0.1:{port}", token=TOKEN) as c:
        start = time.monotonic()
        err = _fail(c, "Raise", "NotFound", timeout=1.0)
    assert err.code == C.UNAVAILABLE and err.message.startswith("unavailable: ")
    assert f"127.0.0.1:{port}" in err.hint and "mlmesh status" in err.hint
    assert time.monotonic() - start < 2.5


def test_backoff_grows_with_full_jitter():
    delays = sdk.backoff_delays(initial=0.1, maximum=1.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for ceiling in ceilings:
        assert 0 <= next(delays) <= ceiling
