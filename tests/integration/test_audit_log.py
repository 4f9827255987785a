"""The audit log against a real nats-server: records from a served service's RPCs, the stream's
refusals, a second writer on one chain, tampering found in what is read back, and the telemetry
RPCs behind `mlmesh audit` (which exits non-zero on a tampered log)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time

import grpc
import nats
import pytest
from nats.js.errors import APIError, NotFoundError

from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as sched
from mlmesh.common import audit
from mlmesh.common.audit import AUDIT_ANCHORS, AUDIT_STREAM, Stored, audit_stream_config, verify
from mlmesh.common.audit_log import AuditLog, read_anchors, read_records
from mlmesh.common.grpc_server import Runtime, serve

pytestmark = pytest.mark.timeout(120)

PROBE = "mlmesh.commontest.v1.Probe"


async def _connect(nats_server):
    # The operator: the tests delete and recreate the whole audit stream.
    return await nats.connect(nats_server.url, user_credentials=str(nats_server.creds("admin")))


@pytest.fixture
async def js(nats_server):
    """A JetStream context on a fresh audit log: the stream refuses purges, so the whole stream and
    its anchors are removed (allowed) before and after each test."""
    nc = await _connect(nats_server)
    js = nc.jetstream()

    async def wipe():
        for name in (AUDIT_STREAM, f"KV_{AUDIT_ANCHORS}"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)

    await wipe()
    await audit.ensure_audit_stream(js)  # as its owner, the telemetry service, does at start
    try:
        yield js
    finally:
        await wipe()
        await nc.close()


async def _chain(js, instance: str) -> tuple[list[Stored], list[audit.Anchor]]:
    records = [s async for s in read_records(js, subject=audit.audit_subject("itest", instance))]
    return records, [a for a in await read_anchors(js) if a.instance == instance]


async def _publish(js, n: int) -> AuditLog:
    log = AuditLog("itest")
    await log.start(js)
    for i in range(n):
        log.record(
            {"kind": "rpc", "time": audit.utc_now(), "method": "/x.v1.S/CreateThing", "object": {"name": str(i)}}
        )
    await log.close()
    return log


# --- a served service ---------------------------------------------------------------------------------
async def _cancel(request, context):
    return sched.CancelJobResponse()


async def _get(request, context):
    return sched.GetJobResponse()


HANDLERS = grpc.method_handlers_generic_handler(
    PROBE,
    {
        "CancelThing": grpc.unary_unary_rpc_method_handler(
            _cancel, sched.CancelJobRequest.FromString, sched.CancelJobResponse.SerializeToString
        ),
        "GetThing": grpc.unary_unary_rpc_method_handler(
            _get, sched.GetJobRequest.FromString, sched.GetJobResponse.SerializeToString
        ),
    },
)


async def _wait_ready(path, task: asyncio.Task) -> dict:
    deadline = time.monotonic() + 30
    while not path.exists():
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "no ready file"
        await asyncio.sleep(0.05)
    return json.loads(path.read_text())


async def test_a_services_mutations_are_chained_records_and_reads_none(
    js, nats_server, make_settings, signing_key, tmp_path
):
    ready = tmp_path / "ready.json"
    # A test service is no platform identity: it connects as the operator.
    settings = make_settings(
        nats_url=nats_server.url, nats_creds_file=nats_server.creds("admin"), ready_file=ready, shutdown_grace_s=1.0
    )

    async def register(runtime: Runtime):
        runtime.server.add_generic_rpc_handlers((HANDLERS,))
        return [PROBE]

    who = f"auditor-{secrets.token_hex(3)}"
    token = signing_key.token(subject=who, team="team-a", roles=["developer"])
    meta = (("authorization", f"Bearer {token}"),)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, register, stop))
    try:
        port = (await _wait_ready(ready, task))["grpc_port"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            cancel = channel.unary_unary(
                f"/{PROBE}/CancelThing", sched.CancelJobRequest.SerializeToString, sched.CancelJobResponse.FromString
            )
            get = channel.unary_unary(
                f"/{PROBE}/GetThing", sched.GetJobRequest.SerializeToString, sched.GetJobResponse.FromString
            )
            for i in range(5):
                await cancel(sched.CancelJobRequest(job_id=f"j-{i}"), metadata=meta, timeout=5)
                await get(sched.GetJobRequest(job_id=f"j-{i}"), metadata=meta, timeout=5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # the shutdown hook flushes the queue and anchors the head

    records = [s async for s in read_records(js, subject=audit.service_audit_subjects("commontest"))]
    mine = [s for s in records if s.data and json.loads(s.data).get("subject") == who]
    bodies = [json.loads(s.data) for s in mine]
    assert [b["object"] for b in bodies] == [{"job_id": f"j-{i}"} for i in range(5)]  # no GetThing
    assert {b["method"] for b in bodies} == {f"/{PROBE}/CancelThing"}
    assert [b["seq"] for b in bodies] == [1, 2, 3, 4, 5] and len({b["instance"] for b in bodies}) == 1
    assert all(b["outcome"] == "OK" and b["team"] == "team-a" for b in bodies)
    assert token not in repr(records)
    instance = bodies[0]["instance"]
    anchors = [a for a in await read_anchors(js) if a.instance == instance]
    assert [(a.seq, a.hash) for a in anchors] == [(5, bodies[-1]["hash"])]
    assert verify(mine, anchors) == []


async def test_the_stream_refuses_delete_purge_and_lifting_the_refusal(js):
    await _publish(js, 3)
    info = await js.stream_info(AUDIT_STREAM)
    assert info.config.deny_delete and info.config.deny_purge and info.config.max_age >= 364 * 86400
    with pytest.raises(APIError):
        await js.delete_msg(AUDIT_STREAM, info.state.last_seq)
    with pytest.raises(APIError):
        await js.purge_stream(AUDIT_STREAM)
    lifted = audit_stream_config()
    lifted.deny_delete = lifted.deny_purge = False
    with pytest.raises(APIError):
        await js.update_stream(lifted)
    assert (await js.stream_info(AUDIT_STREAM)).state.messages == 3


async def test_a_second_writer_cannot_fork_a_chain(js):
    first = await _publish(js, 2)
    # A second process that believes it owns the same chain (a forger, or a cloned instance id).
    second = AuditLog("itest", instance=first.instance)
    await second.start(js)
    second.record({"kind": "rpc", "time": audit.utc_now(), "method": "/x.v1.S/DeleteThing", "object": {}})
    await second.close()
    assert second.instance != first.instance  # refused by Nats-Expected-Last-Subject-Sequence; moved on
    old, _ = await _chain(js, first.instance)
    assert [json.loads(s.data)["seq"] for s in old] == [1, 2]
    new, _ = await _chain(js, second.instance)
    assert [json.loads(s.data)["kind"] for s in new] == [audit.FORKED_MARK, "rpc"]
    problems = verify([*old, *new], await read_anchors(js))
    assert [(p.kind, p.instance, p.seq) for p in problems] == [(audit.FORKED, first.instance, 0)]


async def test_verify_finds_tampering_in_the_records_read_back(js):
    log = await _publish(js, 6)
    records, anchors = await _chain(js, log.instance)
    assert len(records) == 6 and verify(records, anchors) == []

    def kinds(tampered) -> set[str]:
        return {p.kind for p in verify(tampered, anchors)}

    edited = {**json.loads(records[2].data), "object": {"name": "other"}}
    assert kinds([*records[:2], Stored(records[2].stream_seq, records[2].subject, edited), *records[3:]]) == {
        audit.EDITED
    }
    assert kinds([*records[:2], *records[3:]]) == {audit.DELETED}
    assert kinds([records[0], records[2], records[1], *records[3:]]) == {audit.REORDERED}
    assert kinds(records[:4]) == {audit.TRUNCATED}  # the anchor names seq 6
    assert kinds(records[1:]) == {audit.UNKNOWN_START}


async def test_a_deleted_stream_is_recreated_and_shows_as_truncated(js):
    log = AuditLog("itest", ensure_stream=True)  # as the owner
    await log.start(js)
    log.record({"kind": "rpc", "time": audit.utc_now(), "method": "/x.v1.S/CreateThing", "object": {}})
    await asyncio.wait_for(log._queue.join(), 10)
    await log._anchor()
    old = log.instance
    await js.delete_stream(AUDIT_STREAM)  # allowed even with deny_delete: only the anchors tell
    log.record({"kind": "rpc", "time": audit.utc_now(), "method": "/x.v1.S/DeleteThing", "object": {}})
    await log.close()  # the publisher recreates the stream and goes on as a new chain
    assert log.instance != old
    records = [s async for s in read_records(js)]
    assert [json.loads(s.data)["kind"] for s in records] == [audit.FORKED_MARK, "rpc"]
    problems = {(p.kind, p.instance) for p in verify(records, await read_anchors(js))}
    assert problems == {(audit.TRUNCATED, old), (audit.FORKED, old)}


async def test_a_publisher_keeps_its_records_until_the_owner_creates_the_stream(js):
    await js.delete_stream(AUDIT_STREAM)
    log = AuditLog("itest")  # not the owner: it never creates the stream
    await log.start(js)
    log.record({"kind": "rpc", "time": audit.utc_now(), "method": "/x.v1.S/CreateThing", "object": {}})
    await asyncio.sleep(0.5)  # a few failed publishes, retried with backoff
    with pytest.raises(NotFoundError):
        await js.stream_info(AUDIT_STREAM)
    await audit.ensure_audit_stream(js)
    await log.close(timeout_s=10)
    records, anchors = await _chain(js, log.instance)
    assert [json.loads(s.data)["seq"] for s in records] == [1] and verify(records, anchors) == []


# --- the telemetry RPCs and the CLI -------------------------------------------------------------------
@pytest.fixture
def telemetry(nats_server, signing_key, tmp_path):
    ready = tmp_path / "telemetry-ready.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env.update(
        MLMESH_TELEMETRY_NATS_URL=nats_server.url,
        MLMESH_TELEMETRY_NATS_CREDS_FILE=str(nats_server.creds("telemetry")),
        MLMESH_TELEMETRY_AUTH_PUBLIC_KEY_FILE=str(signing_key.public_key_file),
        MLMESH_TELEMETRY_READY_FILE=str(ready),
        MLMESH_TELEMETRY_METRICS_PORT="-1",
    )
    proc = subprocess.Popen([sys.executable, "-m", "mlmesh.telemetry"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.is_file():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "telemetry never became ready"
            time.sleep(0.1)
        yield f"127.0.0.1:{json.loads(ready.read_text())['grpc_port']}"
    finally:
        proc.terminate()
        proc.wait(30)


def _cli(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLMESH_TOKEN": token, "MLMESH_STATE_DIR": "/nonexistent"}
    return subprocess.run(
        [sys.executable, "-c", "from mlmesh.cli.main import main; main()", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_mlmesh_audit_lists_verifies_and_fails_on_a_tampered_log(js, telemetry, signing_key):
    log = await _publish(js, 3)
    admin = signing_key.token(subject="root", team="platform", roles=["admin"])
    member = signing_key.token(subject="carol", team="team-a", roles=["developer"])

    denied = await asyncio.to_thread(_cli, "ls", "--endpoint", telemetry, token=member)
    assert denied.returncode == 1 and "permission_denied" in denied.stderr
    listed = await asyncio.to_thread(_cli, "ls", "--service", "itest", "--json", "--endpoint", telemetry, token=admin)
    assert listed.returncode == 0, listed.stderr
    assert [r["object"]["name"] for r in json.loads(listed.stdout)] == ["0", "1", "2"]
    clean = await asyncio.to_thread(_cli, "verify", "--endpoint", telemetry, token=admin)
    assert clean.returncode == 0 and "audit log intact" in clean.stdout, clean.stdout + clean.stderr

    # A rogue writer with publish rights appends to the chain a record it could not hash right.
    records, _ = await _chain(js, log.instance)
    last = json.loads(records[-1].data)
    forged = {**last, "seq": last["seq"] + 1, "prev_hash": last["hash"], "subject": "mallory"}
    await js.publish(log.subject, audit.encode(forged), stream=AUDIT_STREAM)
    tampered = await asyncio.to_thread(_cli, "verify", "--json", "--endpoint", telemetry, token=admin)
    assert tampered.returncode == 1
    problems = json.loads(tampered.stdout)["problems"]
    assert {(p["kind"], p["instance"]) for p in problems} == {("AUDIT_PROBLEM_KIND_EDITED", log.instance)}
