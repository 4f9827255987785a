"""`mlmesh audit ls|verify`: the audit log, through the telemetry service (admin token only).

Through an RPC rather than from the stream: NATS credentials are per identity, and only the
telemetry service may read every chain; the CLI needs nothing but its bearer token.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from mlmesh.cli.common import EndpointOpt, JsonOpt, TimeoutOpt, enum_short, to_dict
from mlmesh.cli.output import CliError, console, print_json, print_table
from mlmesh.cli.trace import telemetry_client
from mlmesh.sdk.jobspec import parse_duration

audit_app = typer.Typer(help="The audit log: who changed what (admins).", no_args_is_help=True, rich_markup_mode=None)


def _clean(value: object) -> str:
    """A value as one inert line: ids come from callers, so no markup or control characters."""
    text = str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode()
    return escape(text)


def _method(full: str) -> str:
    """`/mlmesh.scheduler.v1.SchedulerService/CancelJob` -> `SchedulerService/CancelJob`."""
    service, _, name = full.strip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}/{name}" if name else full


def _object(record) -> str:
    if record.dropped_count:
        return f"{record.dropped_count} records dropped"
    return " ".join(f"{k}={v}" for k, v in sorted(record.object.items()))


@audit_app.command("ls")
def list_records(
    service: Annotated[str, typer.Option("--service", help="Only this service, e.g. scheduler.")] = "",
    team: Annotated[str, typer.Option("--team", help="Only calls by this team.")] = "",
    since: Annotated[str, typer.Option("--since", help="How far back, e.g. 30m, 1h, 7d.")] = "24h",
    limit: Annotated[int, typer.Option("--limit", help="The most recent this many.", min=1, max=10_000)] = 100,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """List audit records, oldest first: who called which mutating RPC on what, and the outcome."""
    from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api

    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise CliError(f"--since: {exc}", exit_code=2) from None
    request = api.ListAuditRecordsRequest(service=service, team=team, limit=limit)
    request.start_time.FromNanoseconds(int((time.time() - window) * 1e9))
    with telemetry_client(endpoint, timeout) as client:
        records = client.call(client.stub.ListAuditRecords, request).records
    if json_output:
        print_json([to_dict(r) for r in records])
        return
    print_table(
        "audit",
        ["time", "service", "subject", "team", "method", "object", "outcome", "chain"],
        [
            (
                r.time.ToJsonString() if r.HasField("time") else "",
                _clean(r.service),
                _clean(r.subject),
                _clean(r.team),
                _clean(_method(r.method)),
                _clean(_object(r)),
                _clean(r.outcome),
                f"{_clean(r.instance)}#{r.seq}",
            )
            for r in records
        ],
    )


def _kind(kind: int) -> str:
    from mlmesh.api.telemetry.v1 import audit_pb2

    return enum_short(audit_pb2.AuditProblemKind, kind, "AUDIT_PROBLEM_KIND_").lower()


@audit_app.command("verify")
def verify(
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Deadline in seconds.", min=0.1)] = 120.0,
) -> None:
    """Check every hash chain of the audit log and its anchors; exits 1 on any problem."""
    from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api

    with telemetry_client(endpoint, timeout) as client:
        reply = client.call(client.stub.VerifyAuditLog, api.VerifyAuditLogRequest())
    if json_output:
        print_json(to_dict(reply))
    elif reply.problems:
        print_table(
            "audit problems",
            ["kind", "chain", "seq", "detail"],
            [(_kind(p.kind), _clean(p.instance), p.seq, _clean(p.detail)) for p in reply.problems],
        )
    else:
        console.print(f"audit log intact: {reply.records} records, {reply.chains} chains, {reply.anchors} anchors")
    if reply.problems:
        raise CliError(f"audit log: {len(reply.problems)} problems", hint="see docs/security.md (audit log)")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
