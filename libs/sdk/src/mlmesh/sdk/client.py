"""Client core for the CLI and the SDKs: where a service is, which token to send, and one way to call it.

- Address: explicit `--endpoint` > `MLMESH_<NAME>_ADDR` > `<state dir>/endpoints.json` (`mlmesh up`).
- Token: `MLMESH_TOKEN` > `MLMESH_TOKEN_FILE` > `<state dir>/auth/admin.token`. Never printed.
- Every call has a deadline. Only UNAVAILABLE is retried, with exponential backoff and full jitter,
  and only while the deadline leaves room for another try. RESOURCE_EXHAUSTED means a quota or a
  size limit here: retrying it only burns the deadline and ends as DEADLINE_EXCEEDED.
- A failed call becomes one line, `<code>: <message>[; field: description ...]`, plus a hint.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mlmesh.cli.output import CliError
from mlmesh.local import mesh
from mlmesh.local.errors import InfraError

DEFAULT_TIMEOUT_S = 10.0
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
TOKEN_ENV = "MLMESH_TOKEN"
TOKEN_FILE_ENV = "MLMESH_TOKEN_FILE"
MAX_MESSAGE_BYTES = 64 << 20

_HINTS = {
    grpc.StatusCode.NOT_FOUND: "check the id; jobs of other teams are not visible",
    grpc.StatusCode.UNAUTHENTICATED: "set MLMESH_TOKEN or run `mlmesh up`",
    grpc.StatusCode.PERMISSION_DENIED: "your token lacks the role this needs (admin commands need an admin token)",
    grpc.StatusCode.INVALID_ARGUMENT: "fix the fields named above",
    grpc.StatusCode.ALREADY_EXISTS: "pick another name, or update the existing object",
    grpc.StatusCode.FAILED_PRECONDITION: "the object is not in a state that allows this; check it with `get`",
    grpc.StatusCode.ABORTED: "it changed concurrently; try again",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the request exceeds a quota or size limit",
    grpc.StatusCode.DATA_LOSS: "stored bytes failed verification; the storage service's log has the details",
}


class RpcFailure(CliError):
    """A call that failed; `code` is the gRPC status for callers that branch on it."""

    def __init__(self, code: grpc.StatusCode, message: str, hint: str = ""):
        super().__init__(message, hint=hint, exit_code=1)
        self.code = code


# --- resolution ----------------------------------------------------------------------------------


def env_name(service: str) -> str:
    """`scheduler` -> `MLMESH_SCHEDULER_ADDR`; `inference-gateway` -> `MLMESH_INFERENCE_GATEWAY_ADDR`."""
    return f"MLMESH_{service.upper().replace('-', '_')}_ADDR"


def _endpoints(state_dir: str | Path | None) -> dict | None:
    try:
        return mesh.read_endpoints(mesh.state_dir(state_dir))
    except InfraError as exc:
        raise CliError(str(exc), hint="run `mlmesh down` and `mlmesh up` again") from None


def resolve_address(service: str, explicit: str | None = None, state_dir: str | Path | None = None) -> str:
    if explicit:
        return explicit
    from_env = os.environ.get(env_name(service), "").strip()
    if from_env:
        return from_env
    endpoints = _endpoints(state_dir) or {}
    target = endpoints.get("services", {}).get(service, {}).get("grpc")
    if target:
        return str(target)
    raise CliError(f"no {service} endpoint: run `mlmesh up` or set {env_name(service)}", hint="or pass --endpoint")


def _read_token(path: Path, source: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read the token file {path} ({source}): {exc.strerror or exc}") from None
    if not token:
        raise CliError(f"the token file {path} ({source}) is empty")
    return token


def resolve_token(state_dir: str | Path | None = None) -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    token_file = os.environ.get(TOKEN_FILE_ENV, "").strip()
    if token_file:
        return _read_token(Path(token_file).expanduser(), TOKEN_FILE_ENV)
    local = mesh.state_dir(state_dir) / "auth" / "admin.token"
    if local.is_file():
        return _read_token(local, "the local mesh's admin token")
    raise CliError(
        "no token: set MLMESH_TOKEN or MLMESH_TOKEN_FILE", hint="or run `mlmesh up`, which writes an admin token"
    )


# --- errors --------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:  # inconsistent trailers; fall back to the plain message
        return []
    found = []
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


def translate(err: grpc.RpcError, service: str = "service", target: str = "") -> RpcFailure:
    """A gRPC failure -> one line `<code>: <message>[; field: description...]` with a hint."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or ""
    line = f"{code.name.lower()}: {_one_line(details) or code.value[1]}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        line += "".join(f"; {field}: {_one_line(desc)}" for field, desc in _violations(err))
    hint = _HINTS.get(code, "")
    where = f" at {target}" if target else ""
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = f"is the {service} running{where}? check `mlmesh status`"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        hint = f"the {service}{where} did not answer in time; check `mlmesh status` or raise --timeout"
    elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        hint = f"a bug or fault in the {service}; its log has the details"
    return RpcFailure(code, line, hint)


# --- calls ---------------------------------------------------------------------------------------


def backoff_delays(initial: float = 0.1, maximum: float = 2.0, multiplier: float = 2.0) -> Iterator[float]:
    """Full-jitter exponential backoff: uniform(0, min(max, initial * multiplier**n))."""
    ceiling = initial
    while True:
        yield random.uniform(0, ceiling)
        ceiling = min(maximum, ceiling * multiplier)


class Client:
    """A sync channel to one service with a stub, the bearer token and the call discipline."""

    def __init__(
        self,
        service: str,
        stub_factory: Callable[[grpc.Channel], Any],
        *,
        endpoint: str | None = None,
        token: str | None = None,
        state_dir: str | Path | None = None,
        default_timeout: float = DEFAULT_TIMEOUT_S,
    ):
        self.service = service
        self.target = resolve_address(service, endpoint, state_dir)
        self._token = token if token is not None else resolve_token(state_dir)
        self.default_timeout = default_timeout
        self.channel = grpc.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.enable_retries", 0),  # retries are ours: only retryable codes, inside the deadline
            ],
        )
        self.stub = stub_factory(self.channel)

    def __repr__(self) -> str:  # never shows the token
        return f"Client({self.service!r}, target={self.target!r})"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token}"),)

    def call(self, stub_method: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        """A unary call with a deadline; retries UNAVAILABLE inside it."""
        timeout = self.default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delays = backoff_delays()
        while True:
            remaining = deadline - time.monotonic()
            try:
                return stub_method(request, metadata=self.metadata, timeout=max(remaining, 0.001))
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else None
                delay = next(delays)
                if code not in RETRYABLE or time.monotonic() + delay >= deadline:
                    raise translate(err, self.service, self.target) from None
                time.sleep(delay)

    def stream(self, stub_method: Callable[..., Any], request: Any, timeout: float) -> Iterator[Any]:
        """A server-streaming call with a deadline; failures become `RpcFailure` while iterating.
        Not retried here: the caller knows whether and how to resume."""
        responses = stub_method(request, metadata=self.metadata, timeout=timeout)
        try:
            yield from responses
        except grpc.RpcError as err:
            raise translate(err, self.service, self.target) from None
        finally:
            responses.cancel()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scheduler_client(endpoint: str | None = None, *, state_dir: str | Path | None = None) -> Client:
    from mlmesh.api.scheduler.v1 import scheduler_service_pb2_grpc

    return Client("scheduler", scheduler_service_pb2_grpc.SchedulerServiceStub, endpoint=endpoint, state_dir=state_dir)


def team_access_client(endpoint: str | None = None, *, state_dir: str | Path | None = None) -> Client:
    """TeamAccessService (teams' event credentials); served by the scheduler (same endpoint)."""
    from mlmesh.api.scheduler.v1 import team_access_service_pb2_grpc

    return Client(
        "scheduler", team_access_service_pb2_grpc.TeamAccessServiceStub, endpoint=endpoint, state_dir=state_dir
    )


def fabric_client(endpoint: str | None = None, *, state_dir: str | Path | None = None) -> Client:
    from mlmesh.api.fabric.v1 import fabric_service_pb2_grpc

    return Client("fabric", fabric_service_pb2_grpc.FabricServiceStub, endpoint=endpoint, state_dir=state_dir)


def storage_client(endpoint: str | None = None, *, state_dir: str | Path | None = None) -> Client:
    from mlmesh.api.storage.v1 import storage_service_pb2_grpc

    return Client("storage", storage_service_pb2_grpc.StorageServiceStub, endpoint=endpoint, state_dir=state_dir)


def registry_client(endpoint: str | None = None, *, state_dir: str | Path | None = None) -> Client:
    """The model registry; served by the storage service (same endpoint)."""
    from mlmesh.api.storage.v1 import model_registry_service_pb2_grpc

    return Client(
        "storage", model_registry_service_pb2_grpc.ModelRegistryServiceStub, endpoint=endpoint, state_dir=state_dir
    )


def deployment_client(endpoint: str | None = None, *, state_dir: str | Path | None = None) -> Client:
    """DeploymentService of the inference gateway."""
    from mlmesh.api.gateway.v1 import deployment_service_pb2_grpc

    return Client(
        "inference-gateway",
        deployment_service_pb2_grpc.DeploymentServiceStub,
        endpoint=endpoint,
        state_dir=state_dir,
    )


def trainer_client(endpoint: str | None = None, *, state_dir: str | Path | None = None) -> Client:
    from mlmesh.api.trainer.v1 import trainer_service_pb2_grpc

    return Client("trainer", trainer_service_pb2_grpc.TrainerServiceStub, endpoint=endpoint, state_dir=state_dir)
