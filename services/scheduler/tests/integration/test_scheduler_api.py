"""The scheduler against real NATS (JetStream KV + events) and a stand-in trainer over real gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as api
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.common import events

from .conftest import command_spec, gpu_node

pytestmark = pytest.mark.timeout(90)
S = job_pb2
R = run_pb2.RunState


def _violations(err: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(err)
    out = set()
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        detail.Unpack(bad)
        out |= {v.field for v in bad.field_violations}
    return out


async def _collect_state_events(h, team: str, into: list):
    """Subscribe before submitting: admission can be faster than a subscription made afterwards."""
    nc = await events.connect(h.nats.url, "test-sub", **h.nats.client_options())

    async def cb(msg):
        into.append((dict(msg.headers or {}), events.decode_event(msg, events_pb2.JobStateChanged).data))

    await nc.subscribe(f"mlmesh.jobs.{team}.*.state", cb=cb)
    return nc


async def test_job_lifecycle_writes_kv_then_publishes_each_transition(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    seen: list = []
    nc = await _collect_state_events(h, "team-a", seen)
    job = await h.submit(command_spec(workers=2, gpus=4))
    assert job.status.state == S.JOB_STATE_PENDING and job.spec.priority_class == "preprocessing"
    try:
        admitted = await h.wait_state(job.meta.id, S.JOB_STATE_ADMITTED)
        assert admitted.status.placement.world_size == 2
        # Both workers on one node: the tightest topology wins.
        assert [len(n.workers) for n in admitted.status.placement.nodes] == [2]
        for _ in range(100):
            if h.trainer.started and (await h.get(job.meta.id, h.admin)).status.run_id:
                break
            await asyncio.sleep(0.05)
        assert h.trainer.started[0].job_id == job.meta.id and h.trainer.started[0].placement.world_size == 2
        job = await h.get(job.meta.id)
        await h.run_event(job, R.RUN_STATE_RUNNING)
        await h.wait_state(job.meta.id, S.JOB_STATE_RUNNING)
        await h.run_event(job, R.RUN_STATE_SUCCEEDED)
        done = await h.wait_state(job.meta.id, S.JOB_STATE_SUCCEEDED)
        await asyncio.sleep(0.3)
    finally:
        await nc.close()
    assert [t.to_state for t in done.status.history][-3:] == [
        S.JOB_STATE_ADMITTED,
        S.JOB_STATE_RUNNING,
        S.JOB_STATE_SUCCEEDED,
    ]
    seen = [(headers, e) for headers, e in seen if e.job_id == job.meta.id]
    got = [(e.to_state, e.reason, e.attempt) for _, e in seen]
    assert got == [
        (S.JOB_STATE_PENDING, "Submitted", 1),
        (S.JOB_STATE_ADMITTED, "Admitted", 1),
        (S.JOB_STATE_RUNNING, "Running", 1),
        (S.JOB_STATE_SUCCEEDED, "Succeeded", 1),
    ]
    headers, first = seen[0]
    assert headers["ce-type"] == "mlmesh.events.v1.JobStateChanged"
    assert headers["Nats-Msg-Id"] == f"{job.meta.id}-{first.revision}"
    # The KV record was written before the event: its revision is at least the event's.
    assert done.meta.revision >= seen[-1][1].revision


async def test_invalid_spec_names_every_field_and_persists_nothing(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    spec = command_spec(name="Bad!", workers=0, gpus=-2, queue="missing", priority_class="ghost")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {
        "spec.name",
        "spec.workers.count",
        "spec.workers.resources.gpus",
        "spec.queue",
        "spec.priority_class",
    } <= _violations(err.value)
    listed = await h.stub.ListJobs(api.ListJobsRequest(), metadata=h.md(h.alice))
    assert list(listed.jobs) == []
    # A cyclic pipeline is rejected at submit.
    pipe = job_pb2.JobSpec(name="pipe", kind=S.JOB_KIND_PIPELINE)
    for name, deps in {"a": ["b"], "b": ["a"]}.items():
        pipe.pipeline.steps.add(name=name, depends_on=deps).spec.CopyFrom(command_spec(name=name))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(pipe)
    assert "spec.pipeline.steps" in _violations(err.value)


async def test_teams_roles_and_tokens(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    job = await h.submit(command_spec())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.get(job.meta.id, h.bob)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.CancelJob(api.CancelJobRequest(job_id=job.meta.id), metadata=h.md(h.bob))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(command_spec(), token=h.viewer)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.CreateQueue(api.CreateQueueRequest(name="qb"), metadata=h.md(h.alice))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GetJob(api.GetJobRequest(job_id=job.meta.id))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_idempotent_submit_returns_the_same_job(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    first = await h.submit(command_spec(), request_id="req-1")
    again = await h.submit(command_spec(), request_id="req-1")
    assert first.meta.id == again.meta.id
    listed = await h.stub.ListJobs(api.ListJobsRequest(), metadata=h.md(h.alice))
    assert [j.meta.id for j in listed.jobs] == [first.meta.id]


async def test_quota_blocks_without_head_of_line_blocking_and_explain_says_why(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=8)
    await h.create_queue("qb", "team-b", gpus=0, default=True)
    big = await h.submit(command_spec(name="big", workers=1, gpus=8))
    await h.wait_state(big.meta.id, S.JOB_STATE_ADMITTED)
    blocked = await h.submit(command_spec(name="more", workers=1, gpus=4))
    tiny_cpu = command_spec(name="cpu-only", workers=1, gpus=0)
    cpu_job = await h.submit(tiny_cpu)
    # The CPU-only job behind the blocked one is admitted: no head-of-line blocking.
    await h.wait_state(cpu_job.meta.id, S.JOB_STATE_ADMITTED)
    await asyncio.sleep(0.3)
    assert (await h.get(blocked.meta.id)).status.state == S.JOB_STATE_PENDING
    why = await h.stub.ExplainJob(api.ExplainJobRequest(job_id=blocked.meta.id), metadata=h.md(h.alice))
    assert why.blockers[0].kind == api.BLOCKER_KIND_QUOTA, why
    assert why.queue_position == 1 and "quota" in why.summary
    assert why.queue.status.used.gpus == 8
    # A job that can never fit the queue's quota is refused at submit.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(command_spec(name="huge", workers=4, gpus=8))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_no_fit_is_explained_by_node_rejections(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=64)
    spec = command_spec(name="needs-b200", gpus=1)
    spec.accelerator.gpu_models.append("B200")
    job = await h.submit(spec)
    await asyncio.sleep(0.5)
    why = await h.stub.ExplainJob(api.ExplainJobRequest(job_id=job.meta.id), metadata=h.md(h.alice))
    assert why.blockers[0].kind == api.BLOCKER_KIND_NO_FIT, why
    assert {r.reason: r.node_count for r in why.node_rejections}.get("GpuModelMismatch") == 4


async def test_retry_on_node_loss_but_not_on_user_error(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    spec = command_spec(name="flaky")
    spec.retry.max_retries = 1
    spec.retry.initial_backoff.nanos = 100_000_000
    job = await h.submit(spec)
    job = await h.wait_state(job.meta.id, S.JOB_STATE_ADMITTED)
    await h.run_event(job, R.RUN_STATE_FAILED, failure_class=S.FAILURE_CLASS_NODE_LOST)
    for _ in range(400):  # the first attempt is ADMITTED too: wait for the second one
        again = await h.get(job.meta.id)
        if again.status.state == S.JOB_STATE_ADMITTED and again.status.attempt > 1:
            break
        await asyncio.sleep(0.05)
    assert again.status.attempt == 2
    await h.run_event(again, R.RUN_STATE_FAILED, failure_class=S.FAILURE_CLASS_USER_ERROR)
    failed = await h.wait_state(job.meta.id, S.JOB_STATE_FAILED)
    assert failed.status.failure_class == S.FAILURE_CLASS_USER_ERROR
    # A late duplicate of an old attempt's event changes nothing.
    await h.run_event(job, R.RUN_STATE_SUCCEEDED, attempt=1)
    await asyncio.sleep(0.3)
    assert (await h.get(job.meta.id)).status.state == S.JOB_STATE_FAILED


async def test_pipeline_runs_children_in_order_and_skips_after_failure(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    pipe = job_pb2.JobSpec(name="flow", kind=S.JOB_KIND_PIPELINE)
    for name, deps in {"prep": [], "train": ["prep"], "eval": ["train"]}.items():
        pipe.pipeline.steps.add(name=name, depends_on=deps).spec.CopyFrom(command_spec(name=name))
    parent = await h.submit(pipe)
    prep = await h.wait_state(f"{parent.meta.id}-prep", S.JOB_STATE_ADMITTED)
    await asyncio.sleep(0.3)
    assert (await h.get(f"{parent.meta.id}-train")).status.state == S.JOB_STATE_PENDING
    await h.run_event(prep, R.RUN_STATE_SUCCEEDED)
    train = await h.wait_state(f"{parent.meta.id}-train", S.JOB_STATE_ADMITTED)
    assert (await h.get(parent.meta.id)).status.state == S.JOB_STATE_RUNNING
    await h.run_event(train, R.RUN_STATE_FAILED, failure_class=S.FAILURE_CLASS_USER_ERROR)
    skipped = await h.wait_state(f"{parent.meta.id}-eval", S.JOB_STATE_SKIPPED)
    assert skipped.status.failure_class == S.FAILURE_CLASS_DEPENDENCY_FAILED
    final = await h.wait_state(parent.meta.id, S.JOB_STATE_FAILED)
    assert {s.name: s.state for s in final.status.steps} == {
        "prep": S.JOB_STATE_SUCCEEDED,
        "train": S.JOB_STATE_FAILED,
        "eval": S.JOB_STATE_SKIPPED,
    }


async def test_cancel_stops_the_run(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    job = await h.submit(command_spec())
    await h.wait_state(job.meta.id, S.JOB_STATE_ADMITTED)
    for _ in range(100):
        if (await h.get(job.meta.id)).status.run_id:
            break
        await asyncio.sleep(0.05)
    reply = await h.stub.CancelJob(
        api.CancelJobRequest(job_id=job.meta.id, reason="no longer needed", checkpoint=True), metadata=h.md(h.alice)
    )
    assert reply.job.status.state == S.JOB_STATE_CANCELLED
    assert h.trainer.stopped[-1].checkpoint and h.trainer.stopped[-1].reason == "Cancelled"


async def test_higher_priority_preempts_with_checkpoint_and_victim_returns_to_pending(harness):
    h = harness
    h.write_nodes([gpu_node("n0")])  # one 8-GPU node: the second job cannot fit while the first runs
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    low = await h.submit(command_spec(name="low", gpus=8, priority_class="preprocessing"))
    low = await h.wait_state(low.meta.id, S.JOB_STATE_ADMITTED)
    for _ in range(100):
        low = await h.get(low.meta.id)
        if low.status.run_id:
            break
        await asyncio.sleep(0.05)
    await h.run_event(low, R.RUN_STATE_RUNNING)
    await h.wait_state(low.meta.id, S.JOB_STATE_RUNNING)
    high = await h.submit(command_spec(name="high", gpus=8, priority_class="training"))
    await h.wait_state(low.meta.id, S.JOB_STATE_PREEMPTED)
    for _ in range(100):
        if h.trainer.stopped:
            break
        await asyncio.sleep(0.05)
    assert h.trainer.stopped[0].checkpoint and h.trainer.stopped[0].reason == "Preempted"
    assert (await h.get(high.meta.id)).status.state == S.JOB_STATE_PENDING  # waits for the victim
    low = await h.get(low.meta.id)
    stopped = run_pb2.RunState.RUN_STATE_STOPPED
    await h.run_event(low, stopped)
    back = await h.wait_state(low.meta.id, S.JOB_STATE_PENDING)
    assert back.status.attempt == 2 and back.status.preemption_count == 1
    await h.wait_state(high.meta.id, S.JOB_STATE_ADMITTED)


async def test_reclaimed_quota_goes_to_its_owner_once(harness):
    # One 8-GPU node; team-a and team-b have 4 GPUs nominal each, team-a may borrow 4. Team A's 6-GPU
    # job borrows B's idle quota; B's 4-GPU job, of the same class, reclaims it. A is preempted once and
    # waits (it used to be re-admitted into the room it had freed and preempted again, 3 times).
    h = harness
    h.write_nodes([gpu_node("n0")])
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=4, borrow=4)
    await h.create_queue("qb", "team-b", gpus=4)

    async def running(job):
        job = await h.wait_state(job.meta.id, S.JOB_STATE_ADMITTED)
        for _ in range(100):
            if (job := await h.get(job.meta.id, h.admin)).status.run_id:
                break
            await asyncio.sleep(0.05)
        await h.run_event(job, R.RUN_STATE_RUNNING)
        return await h.wait_state(job.meta.id, S.JOB_STATE_RUNNING)

    a = await running(await h.submit(command_spec(name="borrower", gpus=6, priority_class="inference")))
    assert a.status.borrowing
    b = await h.submit(command_spec(name="owner", gpus=4, priority_class="inference"), token=h.bob)
    a = await h.wait_state(a.meta.id, S.JOB_STATE_PREEMPTED)
    assert a.status.reason == "ReclaimQuota", a.status
    await h.run_event(a, R.RUN_STATE_STOPPED)
    b = await running(b)
    await asyncio.sleep(1.0)  # several scheduling cycles
    a = await h.get(a.meta.id, h.admin)
    assert a.status.state == S.JOB_STATE_PENDING and a.status.preemption_count == 1, a.status
    assert (await h.get(b.meta.id, h.admin)).status.state == S.JOB_STATE_RUNNING
    await h.run_event(b, R.RUN_STATE_SUCCEEDED)
    await h.wait_state(a.meta.id, S.JOB_STATE_ADMITTED)


async def test_watch_streams_state_changes(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    first = await h.submit(command_spec(name="first"))
    stream = h.stub.WatchJobs(api.WatchJobsRequest(send_initial=True), metadata=h.md(h.alice), timeout=20)
    got = []
    async for msg in stream:
        got.append((msg.type, msg.job.meta.id, msg.job.status.state))
        if msg.type == api.WATCH_EVENT_TYPE_SNAPSHOT_END:
            second = await h.submit(command_spec(name="second"))
        changed = msg.type == api.WATCH_EVENT_TYPE_CHANGED
        if changed and msg.job.meta.id == second.meta.id and msg.job.status.state == S.JOB_STATE_ADMITTED:
            break
    stream.cancel()
    assert got[0][1] == first.meta.id and got[0][0] in (api.WATCH_EVENT_TYPE_SNAPSHOT,)
    assert (api.WATCH_EVENT_TYPE_CHANGED, second.meta.id, S.JOB_STATE_ADMITTED) in got


async def test_watch_named_jobs_in_their_own_team(harness):
    h = harness
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    job = await h.submit(command_spec(name="named"))

    async def first_message(who, **request):
        stream = h.stub.WatchJobs(api.WatchJobsRequest(send_initial=True, **request), metadata=h.md(who), timeout=20)
        try:
            async for msg in stream:
                return msg
        finally:
            stream.cancel()

    # An admin watching a team's job by id needs no `team` (it used to wait, silently, for ever).
    msg = await first_message(h.admin, job_ids=[job.meta.id])
    assert msg.type == api.WATCH_EVENT_TYPE_SNAPSHOT and msg.job.meta.id == job.meta.id
    # Another team's job, an unknown one, or a job outside the named team: NOT_FOUND, naming them.
    for who, request in (
        (h.bob, {"job_ids": [job.meta.id]}),
        (h.alice, {"job_ids": [job.meta.id, "no-such-job"]}),
        (h.admin, {"job_ids": [job.meta.id], "team": "team-b"}),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await first_message(who, **request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == f"job_ids: {request['job_ids'][-1]} not found"


async def test_queue_admin_and_priority_classes(harness):
    h = harness
    await h.start_scheduler()
    q = await h.create_queue("qa", "team-a", gpus=8)
    assert q.meta.revision > 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.UpdateQueue(
            api.UpdateQueueRequest(name="qa", spec=q.spec, expected_revision=q.meta.revision + 99),
            metadata=h.md(h.admin),
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    spec = q.spec
    spec.nominal_quota.gpus = 16
    req = api.UpdateQueueRequest(name="qa", spec=spec)
    req.update_mask.paths.append("nominal_quota.gpus")
    updated = (await h.stub.UpdateQueue(req, metadata=h.md(h.admin))).queue
    assert updated.spec.nominal_quota.gpus == 16
    classes = (
        await h.stub.ListPriorityClasses(api.ListPriorityClassesRequest(), metadata=h.md(h.alice))
    ).priority_classes
    assert [c.name for c in classes] == ["training", "inference", "preprocessing"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GetQueue(api.GetQueueRequest(name="qa"), metadata=h.md(h.bob))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def _node_event(h, node_id: str, to_state: int, incarnation: int = 1, at=None):
    from mlmesh.api.fabric.v1 import node_pb2

    nc = await events.connect(h.nats.url, "fake-fabric", **h.nats.client_options("fabric"))
    try:
        pub = events.EventPublisher(nc.jetstream(), source="//mlmesh/fabric")
        e = events_pb2.NodeStateChanged(
            node_id=node_id, from_state=node_pb2.NODE_STATE_READY, to_state=to_state, incarnation=incarnation
        )
        if at is not None:
            e.transition_time.CopyFrom(at)
        await pub.publish(f"mlmesh.fabric.nodes.{node_id}.state", e, ce_subject=node_id)
    finally:
        await nc.close()


async def test_node_lost_retries_its_jobs_and_draining_preempts_them(harness):
    from mlmesh.api.fabric.v1 import node_pb2

    h = harness
    h.write_nodes([gpu_node("n0"), gpu_node("n1")])
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=16)
    spec = command_spec(name="victim", gpus=8)
    spec.retry.max_retries = 2
    spec.retry.initial_backoff.seconds = 30  # stays RETRYING while we look
    job = await h.submit(spec)
    job = await h.wait_state(job.meta.id, S.JOB_STATE_ADMITTED)
    node = job.status.placement.nodes[0].node_id
    await h.run_event(await h.get(job.meta.id), R.RUN_STATE_RUNNING)
    await h.wait_state(job.meta.id, S.JOB_STATE_RUNNING)
    await _node_event(h, node, node_pb2.NODE_STATE_NOT_READY)
    lost = await h.wait_state(job.meta.id, S.JOB_STATE_RETRYING)
    assert lost.status.failure_class == S.FAILURE_CLASS_NODE_LOST and lost.status.reason == "NodeLost"
    assert not lost.status.placement.nodes  # its GPUs are free again

    other = await h.submit(command_spec(name="mover", gpus=8))
    other = await h.wait_state(other.meta.id, S.JOB_STATE_ADMITTED)
    target = other.status.placement.nodes[0].node_id
    # A late NotReady from before this job was admitted (the node has re-registered since) is not
    # about it: the job stays.
    stale = type(other.status.admit_time)()
    stale.FromSeconds(other.status.admit_time.seconds - 60)
    await _node_event(h, target, node_pb2.NODE_STATE_NOT_READY, at=stale)
    await asyncio.sleep(0.5)
    assert (await h.get(other.meta.id)).status.state == S.JOB_STATE_ADMITTED
    await _node_event(h, target, node_pb2.NODE_STATE_DRAINING)
    moved = await h.wait_state(other.meta.id, S.JOB_STATE_PREEMPTED)
    assert moved.status.reason == "NodeDraining"


async def test_full_queue_preempts_its_own_lower_priority_job(harness):
    h = harness  # 4 nodes x 8 GPUs: plenty of room; only the queue's quota is short
    await h.start_scheduler()
    await h.create_queue("qa", "team-a", gpus=8)
    low = await h.submit(command_spec(name="low", gpus=8, priority_class="inference"))
    low = await h.wait_state(low.meta.id, S.JOB_STATE_ADMITTED)
    for _ in range(100):
        low = await h.get(low.meta.id)
        if low.status.run_id:
            break
        await asyncio.sleep(0.05)
    await h.run_event(low, R.RUN_STATE_RUNNING)
    await h.wait_state(low.meta.id, S.JOB_STATE_RUNNING)
    high = await h.submit(command_spec(name="high", gpus=8, priority_class="training"))
    victim = await h.wait_state(low.meta.id, S.JOB_STATE_PREEMPTED)
    assert victim.status.reason == "QueueQuota"
    why = await h.stub.ExplainJob(api.ExplainJobRequest(job_id=high.meta.id), metadata=h.md(h.alice))
    assert why.blockers[0].kind == api.BLOCKER_KIND_PREEMPTION_IN_PROGRESS
    await h.run_event(await h.get(low.meta.id), run_pb2.RunState.RUN_STATE_STOPPED)
    await h.wait_state(high.meta.id, S.JOB_STATE_ADMITTED)
    assert (await h.get(low.meta.id)).status.state == S.JOB_STATE_PENDING
