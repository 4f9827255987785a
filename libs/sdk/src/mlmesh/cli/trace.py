"""`mlmesh trace <trace-id|job-id>`: a recent trace from the telemetry service, as a tree."""

from __future__ import annotations

import re
from typing import Annotated

import grpc
import typer

from mlmesh.cli.common import EndpointOpt, JsonOpt, TimeoutOpt, print_message
from mlmesh.cli.output import CliError
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S, Client, RpcFailure

TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
ERROR_MARK = "✗"


def _ns(ts) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def duration_ms(span) -> float | None:
    start, end = _ns(span.start_time), _ns(span.end_time)
    return (end - start) / 1e6 if end >= start > 0 else None


def span_line(span) -> str:
    ms = duration_ms(span)
    took = f"{ms:.1f} ms" if ms is not None else "?"
    service = span.service.removeprefix("mlmesh-") or "?"
    line = f"{service} {span.name}  {took}"
    if span.error:
        line += f"  {ERROR_MARK} {span.status_message}".rstrip()
    return line


def render_tree(trace) -> list[str]:
    """One line per span, children under their parent by start time. A span whose parent is not
    in the trace (not exported, or evicted) is shown as a root."""
    ids = {s.span_id for s in trace.spans}
    children: dict[str, list] = {}
    roots = []
    for span in sorted(trace.spans, key=lambda s: (_ns(s.start_time), s.span_id)):
        if span.parent_span_id and span.parent_span_id in ids and span.parent_span_id != span.span_id:
            children.setdefault(span.parent_span_id, []).append(span)
        else:
            roots.append(span)
    lines: list[str] = []
    seen: set[str] = set()

    def walk(span, prefix: str, last: bool, top: bool) -> None:
        if span.span_id in seen:  # a malformed trace may loop; print each span once
            return
        seen.add(span.span_id)
        lines.append((prefix + ("└─ " if last else "├─ ") if not top else "") + span_line(span))
        inner = "" if top else prefix + ("   " if last else "│  ")
        kids = children.get(span.span_id, [])
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return lines


def telemetry_client(endpoint: str | None, timeout: float) -> Client:
    from mlmesh.api.telemetry.v1 import telemetry_service_pb2_grpc

    client = Client("telemetry", telemetry_service_pb2_grpc.TelemetryServiceStub, endpoint=endpoint)
    client.default_timeout = timeout
    return client


def request_for(ident: str):
    from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api

    ident = ident.strip()
    if TRACE_ID.fullmatch(ident):
        return api.GetTraceRequest(trace_id=ident.lower())
    return api.GetTraceRequest(job_id=ident)


def trace(
    ident: Annotated[
        str, typer.Argument(metavar="TRACE_ID|JOB_ID", help="A trace id (32 hex) or a job id.", show_default=False)
    ],
    endpoint: EndpointOpt = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Print a recent trace (a job's, or any by id) as a tree with durations."""
    with telemetry_client(endpoint, timeout) as client:
        try:
            reply = client.call(client.stub.GetTrace, request_for(ident))
        except RpcFailure as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                hint = "only recent traces are held; other teams' traces are not visible"
                raise CliError(exc.message, hint=hint) from None
            raise
    if json_output:
        print_message(reply.trace)
        return
    # Plain lines, never wrapped: the tree's indentation is the information.
    typer.echo(f"trace {reply.trace.trace_id}  ({len(reply.trace.spans)} spans)")
    for line in render_tree(reply.trace):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("trace")(trace)
