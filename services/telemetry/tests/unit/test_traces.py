"""The trace store (bounds, eviction, job index, visibility), OTLP conversion, GetTrace and the
CLI's tree rendering."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api
from mlmesh.cli.trace import render_tree, request_for
from mlmesh.common.auth import Identity
from mlmesh.common.errors import InvalidArgument, NotFound
from mlmesh.telemetry.traces import TraceStore, get_trace
from mlmesh.telemetry.traces.otlp import spans_from_request
from mlmesh.telemetry.traces.store import StoredSpan

pytestmark = pytest.mark.timeout(30)

ADMIN = Identity("root", "platform", frozenset({"admin"}))
ALICE = Identity("alice", "team-a", frozenset({"developer"}))
BOB = Identity("bob", "team-b", frozenset({"developer"}))


def tid(n: int) -> str:
    return f"{n:032x}"


def span(trace: int, span_id: int, parent: int = 0, *, start: int = 0, end: int = 0, **attrs) -> StoredSpan:
    return StoredSpan(
        trace_id=tid(trace),
        span_id=f"{span_id:016x}",
        parent_span_id=f"{parent:016x}" if parent else "",
        name=f"op{span_id}",
        service="mlmesh-test",
        start_ns=start or span_id * 1_000_000,
        end_ns=end or span_id * 1_000_000 + 2_500_000,
        attributes={k.replace("_", ".", 1): v for k, v in attrs.items()},
    )


def test_oldest_trace_is_evicted_beyond_max_traces():
    store = TraceStore(max_traces=2, max_spans=100)
    store.add([span(1, 1), span(2, 1)])
    store.add([span(1, 2)])  # trace 1 updated: trace 2 is now the oldest
    store.add([span(3, 1)])
    assert store.get(tid(2), ADMIN) is None
    assert [s.span_id for s in store.get(tid(1), ADMIN)] == [f"{1:016x}", f"{2:016x}"]
    assert store.get(tid(3), ADMIN) is not None
    assert len(store) == 2 and store.span_count == 3


def test_span_bound_evicts_whole_traces_and_caps_one_trace():
    store = TraceStore(max_traces=10, max_spans=3)
    store.add([span(1, 1), span(1, 2), span(2, 1)])
    store.add([span(3, 1)])  # 4 spans: trace 1 (the oldest, 2 spans) goes
    assert store.get(tid(1), ADMIN) is None and store.span_count == 2
    refused = store.add([span(3, 2), span(3, 3), span(3, 4)])  # trace 3 alone fills the store
    assert refused == 1 and store.dropped_spans == 1
    assert len(store.get(tid(3), ADMIN)) == 3 and store.get(tid(2), ADMIN) is None
    assert store.span_count == 3


def test_a_resent_span_replaces_itself():
    store = TraceStore()
    store.add([span(1, 1), span(1, 1)])
    assert store.span_count == 1


def test_job_index_keeps_the_first_trace_and_forgets_evicted_ones():
    store = TraceStore(max_traces=2)
    store.add([span(1, 1, mlmesh_job_id="j1", mlmesh_team="team-a")])
    store.add([span(2, 1, mlmesh_job_id="j1", mlmesh_team="team-a")])  # a retried submit
    assert store.trace_of_job("j1") == tid(1)
    store.add([span(3, 1)])
    store.add([span(4, 1)])
    assert store.trace_of_job("j1") is None


def test_visibility_by_team_admin_and_service():
    store = TraceStore()
    store.add([span(1, 1, mlmesh_team="team-a"), span(1, 2, 1)])
    store.add([span(2, 1)])  # no team at all: admins and services only
    assert store.get(tid(1), ALICE) is not None
    assert store.get(tid(1), BOB) is None
    assert store.get(tid(1), ADMIN) is not None
    assert store.get(tid(2), ALICE) is None
    assert store.get(tid(2), Identity("service:x", "platform", frozenset({"service"}))) is not None


def test_get_trace_by_job_and_id_and_not_found_for_other_teams():
    store = TraceStore(max_traces=7)
    store.add([span(1, 1, mlmesh_job_id="j1", mlmesh_team="team-a"), span(1, 2, 1, mlmesh_team="team-a")])
    reply = get_trace(store, api.GetTraceRequest(job_id="j1"), ALICE)
    assert reply.trace.trace_id == tid(1)
    assert [(s.span_id, s.parent_span_id) for s in reply.trace.spans] == [
        (f"{1:016x}", ""),
        (f"{2:016x}", f"{1:016x}"),
    ]
    assert reply.trace.spans[0].attributes["mlmesh.job_id"] == "j1"
    assert reply.trace.spans[0].end_time.ToNanoseconds() - reply.trace.spans[0].start_time.ToNanoseconds() == 2_500_000
    assert get_trace(store, api.GetTraceRequest(trace_id=tid(1).upper()), ALICE).trace.trace_id == tid(1)
    for request, caller in (
        (api.GetTraceRequest(job_id="j1"), BOB),
        (api.GetTraceRequest(trace_id=tid(1)), BOB),
        (api.GetTraceRequest(job_id="j2"), ADMIN),
        (api.GetTraceRequest(trace_id=tid(9)), ADMIN),
    ):
        with pytest.raises(NotFound, match=r"trace not held \(the receiver keeps the most recent 7\)"):
            get_trace(store, request, caller)
    with pytest.raises(InvalidArgument):
        get_trace(store, api.GetTraceRequest(trace_id="xyz"), ADMIN)
    with pytest.raises(InvalidArgument):
        get_trace(store, api.GetTraceRequest(), ADMIN)
    assert NotFound("x").grpc_code == grpc.StatusCode.NOT_FOUND


def _kv(key: str, **value) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


def test_spans_from_an_otlp_request():
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", string_value="mlmesh-scheduler"))
    scope = rs.scope_spans.add()
    scope.spans.append(
        trace_pb2.Span(
            trace_id=bytes.fromhex(tid(5)),
            span_id=bytes.fromhex("00000000000000aa"),
            parent_span_id=bytes.fromhex("00000000000000bb"),
            name="scheduler.admit",
            start_time_unix_nano=10,
            end_time_unix_nano=20,
            attributes=[_kv("mlmesh.job_id", string_value="j5"), _kv("wait", double_value=1.5)],
            status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="boom"),
        )
    )
    scope.spans.append(trace_pb2.Span(trace_id=b"short", span_id=b"x", name="invalid"))
    [s] = spans_from_request(request)
    assert (s.trace_id, s.span_id, s.parent_span_id) == (tid(5), "00000000000000aa", "00000000000000bb")
    assert s.service == "mlmesh-scheduler" and s.error and s.status_message == "boom"
    assert s.attributes == {"mlmesh.job_id": "j5", "wait": "1.5"}


def _trace(*spans: StoredSpan) -> api.Trace:
    store = TraceStore()
    store.add(spans)
    return get_trace(store, api.GetTraceRequest(trace_id=spans[0].trace_id), ADMIN).trace


def test_tree_rendering_nests_children_by_start_and_marks_errors():
    failed = StoredSpan(tid(1), f"{4:016x}", f"{2:016x}", "save", "mlmesh-trainer-worker", 4_000_000, 5_000_000,
                        error=True, status_message="disk full")  # fmt: skip
    trace = _trace(
        span(1, 1),
        span(1, 3, 1),
        span(1, 2, 1),
        failed,
        span(1, 9, 77),  # its parent is not held: shown as a root
    )
    assert render_tree(trace) == [
        "test op1  2.5 ms",
        "├─ test op2  2.5 ms",
        "│  └─ trainer-worker save  1.0 ms  ✗ disk full",
        "└─ test op3  2.5 ms",
        "test op9  2.5 ms",
    ]


def test_cli_reads_a_trace_id_or_a_job_id():
    assert request_for(tid(1).upper()).trace_id == tid(1)
    assert request_for("j0123456789abcde").job_id == "j0123456789abcde"
