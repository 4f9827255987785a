"""Trace propagation helpers: outgoing gRPC calls, job context and cheap child spans.

- Outgoing gRPC calls carry `traceparent` (and `baggage`) through OpenTelemetry's client
  interceptors: `traced_aio_channel` / `traced_channel`.
- A job's trace: the scheduler stores the submission's `traceparent` with the job; `job_context`
  turns it back into a parent context carrying the job id and team as baggage. `JobAttributes`
  (a span processor installed by `setup_tracing`) copies that baggage onto every span started
  under it, in any service, so every span on the job path carries `mlmesh.job_id` and
  `mlmesh.team`.
- `child_span` opens a span only when the current one is recording: an untraced (off or
  unsampled) request costs one attribute read, nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

JOB_ID = "mlmesh.job_id"
TEAM = "mlmesh.team"
RANK = "mlmesh.rank"
# Baggage keys copied onto spans.
_CARRIED = (JOB_ID, TEAM)
TRACEPARENT_ENV = "TRACEPARENT"

tracer = trace.get_tracer("mlmesh")
_NOOP = contextlib.nullcontext()


class JobAttributes(SpanProcessor):
    """Copies the job id and team from the context's baggage onto each span as it starts."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        carried = baggage.get_all(parent_context)
        if not carried:
            return
        for key in _CARRIED:
            value = carried.get(key)
            if value and (span.attributes is None or key not in span.attributes):
                span.set_attribute(key, str(value))

    def on_end(self, span: ReadableSpan) -> None:
        pass


def _request_hook(span, request) -> None:
    """Client spans of job-scoped requests (StartRun, ...) name the job and team themselves."""
    job_id = getattr(request, "job_id", None)
    team = getattr(request, "team", None)
    if isinstance(job_id, str) and job_id:
        span.set_attribute(JOB_ID, job_id)
    if isinstance(team, str) and team:
        span.set_attribute(TEAM, team)


def aio_client_interceptors() -> list:
    from opentelemetry.instrumentation.grpc import aio_client_interceptors as otel

    return otel(request_hook=_request_hook)


def traced_aio_channel(target: str, options: Sequence[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
    """An insecure `grpc.aio` channel whose calls open a client span and send `traceparent`."""
    return grpc.aio.insecure_channel(target, options=options, interceptors=aio_client_interceptors())


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """Wraps a sync channel so its calls open a client span and send `traceparent`."""
    from opentelemetry.instrumentation.grpc import client_interceptor

    return grpc.intercept_channel(channel, client_interceptor(request_hook=_request_hook))


def current_traceparent() -> str:
    """The W3C traceparent of the current span ("" when there is none)."""
    return outgoing_headers().get("traceparent", "")


def job_context(traceparent: str, job_id: str, team: str) -> Context:
    """The parent context of a job's later work: its submission's span, plus job id and team as
    baggage (so every span started under it, here or downstream, carries them)."""
    ctx = propagate.extract({"traceparent": traceparent}) if traceparent else Context()
    ctx = baggage.set_baggage(JOB_ID, job_id, context=ctx)
    return baggage.set_baggage(TEAM, team, context=ctx)


def is_sampled(traceparent: str) -> bool:
    """Whether a W3C traceparent (`00-<trace>-<span>-<flags>`) asks for its trace to be recorded."""
    parts = traceparent.split("-")
    try:
        return len(parts) == 4 and bool(int(parts[3], 16) & 1)
    except ValueError:
        return False


@contextlib.contextmanager
def job_span(name: str, traceparent: str, job_id: str, team: str, attributes: dict | None = None):
    """A span of a job's later work under its submission's trace; nothing when the submission was
    not sampled. The job context stays current inside, so calls made there carry it on."""
    if not is_sampled(traceparent):
        yield None
        return
    ctx = job_context(traceparent, job_id, team)
    with attached(ctx), tracer.start_as_current_span(name, context=ctx, attributes=attributes) as span:
        yield span


def tag(**attributes: str | int | float | bool) -> None:
    """Set attributes on the current span if it is recording (keys: `job_id` -> `mlmesh.job_id`)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"mlmesh.{k}": v for k, v in attributes.items()})


def child_span(name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: dict | None = None):
    """A child of the current span when it records; otherwise a shared no-op context manager."""
    if not trace.get_current_span().is_recording():
        return _NOOP
    return tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def outgoing_headers() -> dict[str, str]:
    """`traceparent` (and tracestate/baggage) of the current span, for an HTTP or gRPC call."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def attached(ctx: Context) -> Iterator[None]:
    """Run a block with `ctx` as the current context."""
    from opentelemetry import context

    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)
