"""kill -9 the scheduler in the middle of admission, restart it, and check from KV alone that no
job was lost, none was admitted twice and no GPU or quota is overbooked. Also: two replicas, one
lease holder, and takeover when it goes away."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format, wrappers_pb2

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2, scheduler_service_pb2_grpc
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as api
from mlmesh.common import events
from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.common.kv import KvRepository
from mlmesh.local.servers import NatsServer

from .conftest import command_spec, gpu_node

pytestmark = pytest.mark.timeout(180)
S = job_pb2
NODES = 20
GPUS_PER_NODE = 8


class Proc:
    def __init__(self, tmp: Path, name: str, nats: NatsServer):
        self.ready = tmp / f"{name}.ready.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
        p = "MLMESH_SCHEDULER_"
        env.update(
            {
                **{p + k: v for k, v in nats.service_settings("scheduler").items()},
                p + "AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem"),
                p + "INVENTORY_FILE": str(tmp / "nodes.json"),
                p + "READY_FILE": str(self.ready),
                p + "METRICS_PORT": "-1",
                p + "CYCLE_INTERVAL_S": "0.05",
                p + "LEASE_TTL_S": "2",
                p + "REPLICA_ID": name,
                p + "MAX_ADMISSIONS_PER_CYCLE": "5",  # small cycles: the kill lands mid-admission
            }
        )
        self.log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlmesh.scheduler"], env=env, stderr=self.log, stdout=self.log
        )

    def port(self, timeout=30.0) -> int:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            assert self.proc.poll() is None, "scheduler exited"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return json.loads(self.ready.read_text())["grpc_port"]

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def cluster(tmp_path: Path):
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    private, public = generate_signing_key()
    write_secret(tmp_path / "public.pem", public)
    nodes = [gpu_node(f"n{i:02d}", domain=f"nvl-{i // 4}", switch=f"sw-{i // 8}") for i in range(NODES)]
    (tmp_path / "nodes.json").write_text(json.dumps([json_format.MessageToDict(n) for n in nodes]))
    procs: list[Proc] = []
    try:
        yield tmp_path, nats, private, procs
    finally:
        for p in procs:
            p.stop(signal.SIGKILL)
        nats.stop()


def _stub(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, scheduler_service_pb2_grpc.SchedulerServiceStub(channel)


def _setup_queues(stub, admin: str, gpus: int = 64):
    md = (("authorization", f"Bearer {admin}"),)
    for team in ("team-a", "team-b"):
        spec = queue_pb2.QueueSpec(team=team, team_default=True)
        spec.nominal_quota.gpus = gpus
        spec.borrowing_limit.gpus = 64 - gpus  # lets jobs be accepted while nothing can be admitted
        spec.nominal_quota.cpu_millis = 10**9
        spec.nominal_quota.memory_bytes = 10**18
        stub.CreateQueue(api.CreateQueueRequest(name=f"q-{team}", spec=spec), metadata=md, timeout=10)


def _open_queues(stub, admin: str):
    md = (("authorization", f"Bearer {admin}"),)
    for team in ("team-a", "team-b"):
        req = api.UpdateQueueRequest(name=f"q-{team}")
        req.spec.nominal_quota.gpus = 64
        req.update_mask.paths.extend(["nominal_quota.gpus", "borrowing_limit"])
        stub.UpdateQueue(req, metadata=md, timeout=10)


async def _kv_jobs(nats: NatsServer) -> dict[str, job_pb2.Job]:
    nc = await events.connect(nats.url, "checker", **nats.client_options())
    try:
        repo = await KvRepository.open(nc.jetstream(), "jobs", job_pb2.Job)
        return {k: (await repo.get(k)).value for k in await repo.keys()}
    finally:
        await nc.close()


async def _admitted_events(nats: NatsServer) -> Counter:
    """How many distinct ADMITTED events each job got on the stream (after JetStream de-dup)."""
    nc = await events.connect(nats.url, "checker", **nats.client_options())
    try:
        js = nc.jetstream()
        sub = await js.subscribe("mlmesh.jobs.*.*.state", ordered_consumer=True)
        counts: Counter = Counter()
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception:
                break
            e = events.decode_event(msg, events_pb2.JobStateChanged).data
            if e.to_state == S.JOB_STATE_ADMITTED:
                counts[(e.job_id, e.attempt)] += 1
        return counts
    finally:
        await nc.close()


def _settled(jobs: dict[str, job_pb2.Job]) -> bool:
    used: dict[str, int] = defaultdict(int)
    smallest: dict[str, int] = {}
    for j in jobs.values():
        need = j.spec.workers.count * j.spec.workers.resources.gpus
        if j.status.state == S.JOB_STATE_ADMITTED:
            used[j.spec.queue] += need
        elif j.status.state == S.JOB_STATE_PENDING:
            smallest[j.spec.queue] = min(smallest.get(j.spec.queue, need), need)
    return all(used[q] + need > 64 for q, need in smallest.items())


def _check_invariants(jobs: dict[str, job_pb2.Job]) -> None:
    per_node: dict[str, int] = defaultdict(int)
    per_queue: dict[str, int] = defaultdict(int)
    for job in jobs.values():
        admits = Counter(h.attempt for h in job.status.history if h.to_state == S.JOB_STATE_ADMITTED)
        assert all(n == 1 for n in admits.values()), f"{job.meta.id} admitted twice: {admits}"
        if job.status.state in (S.JOB_STATE_ADMITTED, S.JOB_STATE_RUNNING, S.JOB_STATE_PREEMPTED):
            per_worker = job.spec.workers.resources.gpus
            assert sum(len(n.workers) for n in job.status.placement.nodes) == job.spec.workers.count
            for n in job.status.placement.nodes:
                per_node[n.node_id] += per_worker * len(n.workers)
            per_queue[job.spec.queue] += per_worker * job.spec.workers.count
        else:
            assert not job.status.placement.nodes
    assert all(g <= GPUS_PER_NODE for g in per_node.values()), per_node
    assert all(g <= 64 for g in per_queue.values()), per_queue


async def test_kill_9_mid_admission_loses_nothing_and_double_books_nothing(cluster):
    tmp, nats, private, procs = cluster
    admin = mint_token(private, subject="admin", team="platform", roles=["admin"])
    first = Proc(tmp, "s1", nats)
    procs.append(first)
    channel, stub = _stub(first.port())
    _setup_queues(stub, admin, gpus=0)  # nothing is admitted until the queues open
    submitted = []
    for i in range(120):
        team = "team-a" if i % 2 else "team-b"
        token = mint_token(private, subject=f"u{i}", team=team, roles=["developer"])
        spec = command_spec(name=f"job{i}", workers=1 + i % 3, gpus=1 + i % 4)
        reply = stub.SubmitJob(
            api.SubmitJobRequest(spec=spec), metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
        submitted.append(reply.job.meta.id)
    # Open the queues, and kill -9 the scheduler on its third admission event: mid-admission
    # (a cycle admits 5 jobs at most, and there are ~29 to admit).
    nc = await events.connect(nats.url, "killer", **nats.client_options())
    seen = asyncio.Event()
    count = 0

    async def on_state(msg):
        nonlocal count
        if events.decode_event(msg, events_pb2.JobStateChanged).data.to_state == S.JOB_STATE_ADMITTED:
            count += 1
            if count >= 3:
                seen.set()

    await nc.subscribe("mlmesh.jobs.*.*.state", cb=on_state)
    _open_queues(stub, admin)
    channel.close()
    await asyncio.wait_for(seen.wait(), 20)
    first.stop(signal.SIGKILL)
    await nc.close()
    at_kill = await _kv_jobs(nats)
    _check_invariants(at_kill)
    admitted_at_kill = sum(j.status.state == S.JOB_STATE_ADMITTED for j in at_kill.values())

    second = Proc(tmp, "s2", nats)
    procs.append(second)
    second.port()
    # The new replica waits out the dead one's lease, then carries on from KV until every queue is
    # full or empty (work-conserving): no queue has both idle quota for its smallest pending job
    # and that job still pending.
    deadline = time.monotonic() + 40
    while True:
        jobs = await _kv_jobs(nats)
        if _settled(jobs):
            break
        assert time.monotonic() < deadline, "the restarted scheduler did not finish admission"
        await asyncio.sleep(0.2)
    assert set(submitted) <= set(jobs), "a submitted job was lost"
    _check_invariants(jobs)
    assert sum(j.status.state == S.JOB_STATE_ADMITTED for j in jobs.values()) > admitted_at_kill
    events_per_admission = await _admitted_events(nats)
    assert events_per_admission and max(events_per_admission.values()) == 1


async def test_two_replicas_one_acts_and_the_other_takes_over(cluster):
    tmp, nats, private, procs = cluster
    admin = mint_token(private, subject="admin", team="platform", roles=["admin"])
    dev = mint_token(private, subject="u", team="team-a", roles=["developer"])
    a, b = Proc(tmp, "ra", nats), Proc(tmp, "rb", nats)
    procs += [a, b]
    ch_a, stub_a = _stub(a.port())
    ch_b, stub_b = _stub(b.port())
    _setup_queues(stub_a, admin)
    md = (("authorization", f"Bearer {dev}"),)
    job = stub_b.SubmitJob(api.SubmitJobRequest(spec=command_spec(name="x")), metadata=md, timeout=10).job
    deadline = time.monotonic() + 15
    while stub_a.GetJob(api.GetJobRequest(job_id=job.meta.id), metadata=md).job.status.state != S.JOB_STATE_ADMITTED:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    leader = json.loads(await _lease_holder(nats))["holder"]
    assert leader in ("ra", "rb")
    survivor_stub = stub_b if leader == "ra" else stub_a
    (a if leader == "ra" else b).stop(signal.SIGKILL)
    job2 = survivor_stub.SubmitJob(api.SubmitJobRequest(spec=command_spec(name="y")), metadata=md, timeout=10).job
    deadline = time.monotonic() + 20
    while survivor_stub.GetJob(api.GetJobRequest(job_id=job2.meta.id), metadata=md).job.status.state != (
        S.JOB_STATE_ADMITTED
    ):
        assert time.monotonic() < deadline, "the surviving replica never took over"
        await asyncio.sleep(0.05)
    assert json.loads(await _lease_holder(nats))["holder"] != leader
    ch_a.close()
    ch_b.close()


async def _lease_holder(nats: NatsServer) -> str:
    nc = await events.connect(nats.url, "checker", **nats.client_options())
    try:
        repo = await KvRepository.open(nc.jetstream(), "scheduler_lease", wrappers_pb2.StringValue)
        return (await repo.get("leader")).value.value
    finally:
        await nc.close()
