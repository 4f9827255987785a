"""The audit log without NATS: which methods are audited, what an entry holds, the hash chain, and
`verify`, whose detection of every kind of tampering is checked on random logs (hypothesis)."""

from __future__ import annotations

import asyncio
import copy
import importlib
import pkgutil

import grpc
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mlmesh.api
from mlmesh.common import audit
from mlmesh.common.audit import (
    DELETED,
    EDITED,
    GENESIS,
    REORDERED,
    TRUNCATED,
    UNKNOWN_START,
    Anchor,
    Chain,
    Stored,
    audit_subject,
    record_hash,
    verify,
)
from mlmesh.common.audit_log import AuditLog, _formatted
from mlmesh.common.audit_methods import EXCEPTIONS, ID_FIELDS, classify, object_ids
from mlmesh.common.errors import NotFound, PermissionDenied
from mlmesh.common.grpc_server import build_server, make_verifier

pytestmark = pytest.mark.timeout(120)


# --- which methods ----------------------------------------------------------------------------------
def _served_services():
    """Every service a mlmesh process serves: the mlmesh APIs, KServe v2 (gateway), OTLP traces
    (telemetry), health and reflection."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from tritonclient.grpc import service_pb2

    modules = [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(mlmesh.api.__path__, "mlmesh.api.")
        if m.name.endswith("_pb2")
    ]
    modules += [health_pb2, reflection_pb2, trace_service_pb2, service_pb2]
    return [s for mod in modules for s in mod.DESCRIPTOR.services_by_name.values()]


ALL_METHODS = [f"/{s.full_name}/{m.name}" for s in _served_services() for m in s.methods]


def test_every_served_method_is_decided_by_the_rule_or_the_table():
    assert len(ALL_METHODS) > 80
    undecided = [m for m in ALL_METHODS if classify(m)[1] == "default"]
    assert undecided == [], "add each to MUTATING_VERBS/READ_VERBS or EXCEPTIONS in audit_methods"
    # The table names no method that no longer exists.
    assert set(EXCEPTIONS) - set(ALL_METHODS) <= {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}


@pytest.mark.parametrize(
    ("method", "audited"),
    [
        ("/mlmesh.scheduler.v1.SchedulerService/SubmitJob", True),
        ("/mlmesh.scheduler.v1.SchedulerService/CancelJob", True),
        ("/mlmesh.scheduler.v1.SchedulerService/GetJob", False),
        ("/mlmesh.scheduler.v1.SchedulerService/WatchJobs", False),
        ("/mlmesh.fabric.v1.FabricService/Drain", True),
        ("/mlmesh.fabric.v1.FabricService/Heartbeat", False),
        ("/mlmesh.fabric.v1.FabricService/BenchmarkLinks", True),
        ("/mlmesh.storage.v1.StorageService/SetQuota", True),
        ("/mlmesh.storage.v1.StorageService/UploadChunks", True),
        ("/mlmesh.storage.v1.StorageService/Download", False),
        ("/mlmesh.storage.v1.ModelRegistryService/SetAlias", True),
        ("/mlmesh.gateway.v1.DeploymentService/DeleteDeployment", True),
        ("/mlmesh.trainer.v1.TrainerService/PlanRun", False),
        ("/mlmesh.telemetry.v1.TelemetryService/VerifyAuditLog", True),
        ("/inference.GRPCInferenceService/ModelInfer", False),
        ("/inference.GRPCInferenceService/RepositoryModelLoad", True),
        ("/mlmesh.x.v1.New/FrobnicateThing", True),  # unknown verb: audited (fail closed)
    ],
)
def test_classification(method, audited):
    assert classify(method)[0] is audited


def _reachable_ids(descriptor, depth=2) -> bool:
    for field in descriptor.fields:
        name = field.name[:-1] if field.name.endswith("s") else field.name
        if field.message_type is None and (field.name in ID_FIELDS or name in ID_FIELDS):
            return True
        nested = field.message_type is not None and depth and not field.is_repeated
        if nested and _reachable_ids(field.message_type, depth - 1):
            return True
    return False


def test_every_audited_mlmesh_method_names_an_object():
    blind = [
        f"/{s.full_name}/{m.name}"
        for s in _served_services()
        if s.full_name.startswith("mlmesh.")
        for m in s.methods
        if classify(f"/{s.full_name}/{m.name}")[0]
        and not (_reachable_ids(m.input_type) or _reachable_ids(m.output_type))
    ]
    # Reading the audit log names no object; everything else must.
    assert blind == ["/mlmesh.telemetry.v1.TelemetryService/VerifyAuditLog"]


def test_object_ids_take_ids_only():
    from mlmesh.api.fabric.v1 import fabric_service_pb2 as fabric
    from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as sched
    from mlmesh.api.storage.v1 import storage_service_pb2 as storage

    assert object_ids(sched.CancelJobRequest(job_id="j-1", reason="private words")) == {"job_id": "j-1"}
    submit = sched.SubmitJobRequest(request_id="r-1")
    submit.spec.name, submit.spec.team = "train", "team-a"
    submit.spec.command.env["TOKEN"] = "s3cret"
    created = sched.SubmitJobResponse()
    created.job.meta.id = "j-9"
    ids = object_ids(submit, created)
    assert ids["spec.name"] == "train" and ids["job.meta.id"] == "j-9"
    assert "s3cret" not in repr(ids) and "r-1" not in repr(ids)
    chunk = storage.UploadChunksRequest(upload_id="u-1", path="a.bin", data=b"payload")
    assert object_ids(chunk) == {"upload_id": "u-1"}
    many = object_ids(fabric.BenchmarkLinksRequest(node_ids=[f"n{i}" for i in range(20)]))
    assert many["node_ids"].endswith(",+12")
    assert len(object_ids(fabric.CordonRequest(node_id="x" * 1000))["node_id"]) == 128


# --- the chain ----------------------------------------------------------------------------------------
ENTRY = {"kind": "rpc", "time": "2026-01-01T00:00:00.000Z", "subject": "alice", "team": "team-a", "roles": []}


def _entry(i: int) -> dict:
    return {**ENTRY, "method": "/mlmesh.x.v1.S/CreateThing", "object": {"name": f"o{i}"}, "outcome": "OK"}


def test_records_link_and_hash_every_field():
    chain = Chain("scheduler", "abcd0001")
    first = chain.seal(_entry(1))
    assert first["seq"] == 1 and first["prev_hash"] == GENESIS and first["hash"] == record_hash(first)
    chain.advance(first, 7)
    second = chain.seal(_entry(2))
    assert second["seq"] == 2 and second["prev_hash"] == first["hash"] and second["prev_stream_seq"] == 7
    for key in second:
        if key != "hash":
            assert record_hash({**second, key: "changed"}) != second["hash"], key
    # Key order does not matter: the hash covers sorted-key JSON.
    assert record_hash(dict(reversed(list(second.items())))) == second["hash"]


# --- verify -------------------------------------------------------------------------------------------
SERVICE = "svc"


@st.composite
def logs(draw, min_len: int = 1):
    """A random log: up to 4 chains interleaved in one stream, each anchored at its head."""
    lengths = draw(st.lists(st.integers(min_len, 10), min_size=1, max_size=4))
    order = draw(st.permutations([c for c, n in enumerate(lengths) for _ in range(n)]))
    chains = [Chain(SERVICE, f"c{c:07d}") for c in range(len(lengths))]
    records = []
    for stream_seq, c in enumerate(order, start=1):
        record = chains[c].seal(_entry(stream_seq))
        chains[c].advance(record, stream_seq)
        records.append(Stored(stream_seq, audit_subject(SERVICE, chains[c].instance), record))
    anchors = [Anchor(ch.instance, SERVICE, ch.seq, ch.head, ch.stream_seq, "t") for ch in chains]
    return records, anchors


def _kinds(records, anchors, first=1) -> set[str]:
    return {p.kind for p in verify(records, anchors, first)}


def _positions(records, instance) -> list[int]:
    return [i for i, r in enumerate(records) if r.data["instance"] == instance]


def _chain_of(draw, records, anchors, min_len):
    candidates = [a.instance for a in anchors if len(_positions(records, a.instance)) >= min_len]
    assume(candidates)
    return draw(st.sampled_from(candidates))


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(logs(), st.data())
def test_an_intact_log_verifies_clean_even_partly_expired_and_anchored_early(log, data):
    records, anchors = log
    assert verify(records, anchors) == []
    # Anchors from earlier: the head a process wrote before its last records.
    early = []
    for a in anchors:
        mine = [r.data for r in records if r.data["instance"] == a.instance]
        rec = mine[data.draw(st.integers(0, len(mine) - 1))]
        early.append(Anchor(a.instance, SERVICE, rec["seq"], rec["hash"], 0, "t"))
    assert verify(records, early) == []
    # max_age expired the oldest records: not tampering.
    expired = data.draw(st.integers(0, len(records)))
    assert verify(records[expired:], anchors, first_stream_seq=expired + 1) == []


def _changed(value):
    if isinstance(value, bool) or value is None:
        return "x"
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    if isinstance(value, dict):
        return {**value, "x": "x"}
    raise AssertionError(type(value))


@SETTINGS
@given(logs(), st.data())
def test_any_edit_is_reported_as_edited(log, data):
    records, anchors = log
    tampered = copy.deepcopy(records)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(tampered) - 1))
        rec = dict(tampered[i].data)
        key = data.draw(st.sampled_from(sorted(rec)))
        rec[key] = _changed(rec[key])
        tampered[i] = Stored(tampered[i].stream_seq, tampered[i].subject, rec)
    assert EDITED in _kinds(tampered, anchors)


@SETTINGS
@given(logs(min_len=3), st.data())
def test_deleting_records_inside_a_chain_is_reported_as_deleted(log, data):
    records, anchors = log
    instance = _chain_of(data.draw, records, anchors, 3)
    inner = _positions(records, instance)[1:-1]
    gone = set(data.draw(st.lists(st.sampled_from(inner), min_size=1, unique=True)))
    tampered = [r for i, r in enumerate(records) if i not in gone]
    assert DELETED in _kinds(tampered, anchors)


@SETTINGS
@given(logs(min_len=2), st.data())
def test_deleting_the_start_of_a_chain_is_reported(log, data):
    records, anchors = log
    instance = _chain_of(data.draw, records, anchors, 2)
    mine = _positions(records, instance)
    gone = set(mine[: data.draw(st.integers(1, len(mine) - 1))])
    tampered = [r for i, r in enumerate(records) if i not in gone]
    assert UNKNOWN_START in _kinds(tampered, anchors)


@SETTINGS
@given(logs(), st.data())
def test_cutting_the_tail_is_reported_through_the_anchor(log, data):
    records, anchors = log
    instance = _chain_of(data.draw, records, anchors, 1)
    mine = _positions(records, instance)
    gone = set(mine[len(mine) - data.draw(st.integers(1, len(mine))) :])  # possibly the whole chain
    tampered = [r for i, r in enumerate(records) if i not in gone]
    assert TRUNCATED in _kinds(tampered, anchors)
    assert verify(tampered, []) == []  # why anchors exist: without one, a cut tail is invisible


@SETTINGS
@given(logs(), st.data())
def test_rewriting_the_tail_with_valid_hashes_is_reported_through_the_anchor(log, data):
    records, anchors = log
    instance = _chain_of(data.draw, records, anchors, 1)
    mine = _positions(records, instance)
    keep = data.draw(st.integers(0, len(mine) - 1))  # records of the chain left as they were
    forged = Chain(SERVICE, instance)
    for i in mine[:keep]:
        forged.advance(records[i].data, records[i].stream_seq)
    tampered = list(records)
    for i in mine[keep:]:
        record = forged.seal({**_entry(0), "object": {"name": "forged"}})
        forged.advance(record, records[i].stream_seq)
        tampered[i] = Stored(records[i].stream_seq, records[i].subject, record)
    kinds = _kinds(tampered, anchors)
    assert TRUNCATED in kinds and EDITED not in kinds and DELETED not in kinds


@SETTINGS
@given(logs(min_len=2), st.data())
def test_a_rehashed_forgery_inside_a_chain_breaks_the_next_link(log, data):
    records, anchors = log
    instance = _chain_of(data.draw, records, anchors, 2)
    i = data.draw(st.sampled_from(_positions(records, instance)[:-1]))
    forged = {**records[i].data, "subject": "mallory"}
    forged["hash"] = record_hash(forged)  # self-consistent: only the next record's prev_hash tells
    tampered = [*records[:i], Stored(records[i].stream_seq, records[i].subject, forged), *records[i + 1 :]]
    kinds = _kinds(tampered, anchors)
    assert DELETED in kinds and EDITED not in kinds


@SETTINGS
@given(logs(min_len=2), st.data())
def test_reordering_records_of_a_chain_is_reported_as_reordered(log, data):
    records, anchors = log
    instance = _chain_of(data.draw, records, anchors, 2)
    mine = _positions(records, instance)
    tampered = list(records)
    for _ in range(data.draw(st.integers(1, 3))):
        a, b = data.draw(st.lists(st.sampled_from(mine), min_size=2, max_size=2, unique=True))
        # Stream positions stay; the records move (a stream rewritten in another order).
        tampered[a], tampered[b] = (
            Stored(tampered[a].stream_seq, tampered[b].subject, tampered[b].data),
            Stored(tampered[b].stream_seq, tampered[a].subject, tampered[a].data),
        )
    seqs = [tampered[i].data["seq"] for i in mine]
    assume(seqs != sorted(seqs))
    assert REORDERED in _kinds(tampered, anchors)


@SETTINGS
@given(logs(min_len=2), st.data())
def test_any_mix_of_tampering_is_never_clean(log, data):
    records, anchors = log
    tampered = list(records)
    for _ in range(data.draw(st.integers(1, 4))):
        if not tampered:
            break
        i = data.draw(st.integers(0, len(tampered) - 1))
        op = data.draw(st.sampled_from(["edit", "delete", "swap", "duplicate"]))
        if op == "edit":
            rec = dict(tampered[i].data)
            key = data.draw(st.sampled_from(sorted(rec)))
            tampered[i] = Stored(tampered[i].stream_seq, tampered[i].subject, {**rec, key: _changed(rec[key])})
        elif op == "delete":
            del tampered[i]
        elif op == "duplicate":
            tampered.insert(i, tampered[i])
        else:
            j = data.draw(st.integers(0, len(tampered) - 1))
            tampered[i], tampered[j] = tampered[j], tampered[i]
    same_order = [r.data for r in tampered] == [r.data for r in records]
    assume(not same_order)
    # Swapping two records of different chains changes no chain: the only change that is no tampering.
    per_chain = {a.instance: [r.data for r in tampered if r.data.get("instance") == a.instance] for a in anchors}
    original = {a.instance: [r.data for r in records if r.data["instance"] == a.instance] for a in anchors}
    assume(per_chain != original or len(tampered) != len(records))
    assert verify(tampered, anchors) != []


def test_unreadable_records_and_wrong_subjects_are_edits():
    chain = Chain(SERVICE, "c0000001")
    record = chain.seal(_entry(1))
    assert _kinds([Stored(1, "mlmesh.audit.svc.c0000001", b"not json")], []) == {EDITED}
    assert _kinds([Stored(1, "mlmesh.audit.other.c0000001", record)], []) == {EDITED}
    assert _kinds([Stored(1, "mlmesh.audit.svc.c0000001", record)], []) == set()


def test_markers_for_dropped_records_and_a_taken_chain_are_reported():
    chain = Chain(SERVICE, "c0000002")
    dropped = chain.seal({"kind": audit.DROPPED_MARK, "time": "t", "count": 3})
    chain.advance(dropped, 1)
    forked = Chain(SERVICE, "c0000003").seal(
        {"kind": audit.FORKED_MARK, "time": "t", "forked_instance": "c0000002", "forked_at_seq": 1}
    )
    problems = verify([Stored(1, "", dropped), Stored(3, "", forked)])
    assert {(p.kind, p.instance) for p in problems} == {(audit.DROPPED, "c0000002"), (audit.FORKED, "c0000002")}


# --- the interceptor and the queue -------------------------------------------------------------------
PROBE = "mlmesh.commontest.v1.Probe"


async def _probe_server(make_settings, audit_log):
    from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as sched

    async def cancel(request, context):
        if request.job_id == "denied":
            raise PermissionDenied("not yours")
        if request.job_id == "missing":
            raise NotFound("no such job")
        return sched.CancelJobResponse()

    async def get(request, context):
        return sched.GetJobResponse()

    async def upload(request_iterator, context):
        async for _ in request_iterator:
            pass
        return sched.CancelJobResponse()

    handlers = {
        "CancelThing": grpc.unary_unary_rpc_method_handler(
            cancel, sched.CancelJobRequest.FromString, sched.CancelJobResponse.SerializeToString
        ),
        "GetThing": grpc.unary_unary_rpc_method_handler(
            get, sched.GetJobRequest.FromString, sched.GetJobResponse.SerializeToString
        ),
        "UploadThing": grpc.stream_unary_rpc_method_handler(
            upload, sched.CancelJobRequest.FromString, sched.CancelJobResponse.SerializeToString
        ),
    }
    settings_ = make_settings()
    server = build_server(settings_, make_verifier(settings_), audit_log)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(PROBE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _drain(audit_log: AuditLog) -> list[dict]:
    """The queued entries as the publisher will seal them."""
    out = []
    while not audit_log._queue.empty():
        out.append(_formatted(audit_log._queue.get_nowait()))
    return out


async def test_the_interceptor_records_mutations_of_callers_never_reads_tokens_or_payloads(make_settings, signing_key):
    from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as sched

    audit_log = AuditLog("commontest")  # not started: entries stay queued for the test to read
    server, port = await _probe_server(make_settings, audit_log)
    token = signing_key.token(subject="bob", team="team-b", roles=["developer"])
    meta = (("authorization", f"Bearer {token}"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            cancel = channel.unary_unary(
                f"/{PROBE}/CancelThing", sched.CancelJobRequest.SerializeToString, sched.CancelJobResponse.FromString
            )
            get = channel.unary_unary(
                f"/{PROBE}/GetThing", sched.GetJobRequest.SerializeToString, sched.GetJobResponse.FromString
            )
            await cancel(sched.CancelJobRequest(job_id="j-1", reason="private reason"), metadata=meta, timeout=5)
            await get(sched.GetJobRequest(job_id="j-1"), metadata=meta, timeout=5)
            upload = channel.stream_unary(
                f"/{PROBE}/UploadThing", sched.CancelJobRequest.SerializeToString, sched.CancelJobResponse.FromString
            )
            chunks = [sched.CancelJobRequest(job_id="u-1", reason="chunk") for _ in range(3)]
            await upload(iter(chunks), metadata=meta, timeout=5)
            for job in ("denied", "missing"):
                with pytest.raises(grpc.aio.AioRpcError):
                    await cancel(sched.CancelJobRequest(job_id=job), metadata=meta, timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as unauth:
                await cancel(sched.CancelJobRequest(job_id="j-2"), timeout=5)
            assert unauth.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)
    entries = _drain(audit_log)
    assert [(e["object"], e["outcome"]) for e in entries] == [
        ({"job_id": "j-1"}, "OK"),
        ({"job_id": "u-1"}, "OK"),  # a client stream: the ids of its first message
        ({"job_id": "denied"}, "PERMISSION_DENIED"),
        ({"job_id": "missing"}, "NOT_FOUND"),
    ]
    first = entries[0]
    assert first["subject"] == "bob" and first["team"] == "team-b" and first["roles"] == ["developer"]
    assert first["method"] == f"/{PROBE}/CancelThing" and first["kind"] == "rpc" and first["time"].endswith("Z")
    assert len(first["trace_id"]) in (0, 32)
    text = repr(entries)
    assert token not in text and "private reason" not in text


async def test_a_full_queue_drops_counts_and_leaves_a_marker():
    from prometheus_client import REGISTRY

    def dropped() -> float:
        return REGISTRY.get_sample_value("mlmesh_audit_dropped_total", {"service": "queuetest"}) or 0.0

    before = dropped()
    audit_log = AuditLog("queuetest", max_queue=2)
    for i in range(5):
        audit_log.record(_entry(i))  # never blocks, never raises
    assert dropped() - before == 3 and audit_log._queue.qsize() == 2
    marker = audit_log._dropped_marker()
    assert marker["kind"] == audit.DROPPED_MARK and marker["count"] == 3
    assert audit_log._dropped == 0
    await asyncio.sleep(0)
