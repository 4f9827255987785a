"""Options and formatting shared by the service commands (jobs, queues, ...)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from google.protobuf import json_format
from google.protobuf.message import Message

from mlmesh.cli.output import print_json
from mlmesh.sdk.client import (
    DEFAULT_TIMEOUT_S,
    Client,
    fabric_client,
    registry_client,
    scheduler_client,
    storage_client,
)

EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint", help="host:port of the service [env MLMESH_<SERVICE>_ADDR; default from `mlmesh up`]"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print proto3 JSON for scripts instead of a table.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Deadline of each call, in seconds.", min=0.1)]


def _with_timeout(client: Client, timeout: float) -> Client:
    client.default_timeout = timeout
    return client


def scheduler(endpoint: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> Client:
    return _with_timeout(scheduler_client(endpoint), timeout)


def fabric(endpoint: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> Client:
    return _with_timeout(fabric_client(endpoint), timeout)


def storage(endpoint: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> Client:
    return _with_timeout(storage_client(endpoint), timeout)


def registry(endpoint: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> Client:
    return _with_timeout(registry_client(endpoint), timeout)


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_message(message: Message) -> None:
    print_json(to_dict(message))


def enum_short(enum_type, value: int, prefix: str) -> str:
    try:
        return enum_type.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def age(ts, now: float | None = None) -> str:
    """`5s`, `3m`, `2h`, `4d` since a protobuf Timestamp; empty when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    secs = max(0, int((now if now is not None else time.time()) - ts.seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"
