"""OTLP -> stored spans, and stored spans -> the `GetTrace` answer. Pure functions."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api
from mlmesh.common.auth import Identity
from mlmesh.common.errors import InvalidArgument, NotFound
from mlmesh.telemetry.traces.store import StoredSpan, TraceStore

MAX_ATTRIBUTE_CHARS = 1024  # a stored attribute value is cut here: the store is bounded in bytes too
_HEX = frozenset("0123456789abcdef")


def value_text(value: common_pb2.AnyValue) -> str:
    which = value.WhichOneof("value")
    if which is None:
        return ""
    if which == "array_value":
        return ",".join(value_text(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return ",".join(f"{kv.key}={value_text(kv.value)}" for kv in value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    return str(getattr(value, which))


def _attributes(pairs) -> dict[str, str]:
    return {kv.key: value_text(kv.value)[:MAX_ATTRIBUTE_CHARS] for kv in pairs}


def spans_from_request(request: trace_service_pb2.ExportTraceServiceRequest) -> list[StoredSpan]:
    out: list[StoredSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = resource.get("service.name", "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    continue  # not a valid W3C id: nothing could ever ask for it
                out.append(
                    StoredSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() if len(span.parent_span_id) == 8 else "",
                        name=span.name,
                        service=service,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        error=span.status.code == trace_pb2.Status.STATUS_CODE_ERROR,
                        status_message=span.status.message,
                    )
                )
    return out


def span_pb(span: StoredSpan) -> api.Span:
    out = api.Span(
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.name,
        service=span.service,
        attributes=span.attributes,
        error=span.error,
        status_message=span.status_message,
    )
    out.start_time.FromNanoseconds(span.start_ns)
    out.end_time.FromNanoseconds(span.end_ns)
    return out


def not_held(store: TraceStore) -> NotFound:
    return NotFound(f"trace not held (the receiver keeps the most recent {store.max_traces})")


def get_trace(store: TraceStore, request: api.GetTraceRequest, caller: Identity) -> api.GetTraceResponse:
    """The answer to GetTrace: by trace id or job id; NOT_FOUND when not held or not visible."""
    which = request.WhichOneof("selector")
    if which == "trace_id":
        trace_id = request.trace_id.strip().lower()
        if len(trace_id) != 32 or not set(trace_id) <= _HEX:
            raise InvalidArgument.field("trace_id", "must be 32 hex characters")
    elif which == "job_id":
        if not request.job_id:
            raise InvalidArgument.field("job_id", "is required")
        trace_id = store.trace_of_job(request.job_id)
        if trace_id is None:
            raise not_held(store)
    else:
        raise InvalidArgument.field("selector", "set trace_id or job_id")
    spans = store.get(trace_id, caller)
    if spans is None:
        raise not_held(store)
    return api.GetTraceResponse(trace=api.Trace(trace_id=trace_id, spans=[span_pb(s) for s in spans]))
