"""A scheduler served in-process against its own real nats-server, a stand-in trainer on real gRPC,
and helpers to drive jobs the way the trainer would (RunStateChanged events on NATS).

The trainer service is built in its own issue; until then `FakeTrainer` implements its gRPC
contract (StartRun/StopRun) and records the calls, so the scheduler's dispatch is exercised over a
real channel.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2, scheduler_service_pb2_grpc
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as api
from mlmesh.api.trainer.v1 import run_pb2, trainer_service_pb2, trainer_service_pb2_grpc
from mlmesh.common import events
from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.common.grpc_server import serve
from mlmesh.local.servers import NatsServer
from mlmesh.scheduler.app import register
from mlmesh.scheduler.settings import SchedulerSettings


def gpu_node(node_id: str, *, gpus=8, model="NVIDIA H100 80GB", domain="nvl-0", switch="sw-0", zone="z1", pool=1):
    n = node_pb2.Node(id=node_id, agent_address=f"{node_id}:7000", state=node_pb2.NODE_STATE_READY)
    n.capacity.gpus = gpus
    n.capacity.cpu_millis = 64_000
    n.capacity.memory_bytes = 512 << 30
    n.labels.nvlink_domain = domain
    n.labels.leaf_switch = switch
    n.labels.zone = zone
    n.labels.pool = pool
    for i in range(gpus):
        n.devices.add(id=f"{node_id}-gpu{i}", kind=node_pb2.DEVICE_KIND_GPU, model=model, memory_bytes=80 << 30)
    return n


class FakeTrainer(trainer_service_pb2_grpc.TrainerServiceServicer):
    def __init__(self):
        self.started: list[trainer_service_pb2.StartRunRequest] = []
        self.stopped: list[trainer_service_pb2.StopRunRequest] = []

    async def StartRun(self, request, context):
        self.started.append(request)
        run = run_pb2.Run(run_id=f"run-{request.job_id}-{request.attempt}", job_id=request.job_id)
        return trainer_service_pb2.StartRunResponse(run=run)

    async def StopRun(self, request, context):
        self.stopped.append(request)
        return trainer_service_pb2.StopRunResponse(run=run_pb2.Run(run_id=request.run_id))


class Harness:
    def __init__(self, tmp: Path, nats: NatsServer, trainer_port: int, trainer: FakeTrainer):
        self.tmp, self.nats, self.trainer = tmp, nats, trainer
        self.trainer_port = trainer_port
        self.private, public = generate_signing_key()
        write_secret(tmp / "public.pem", public)
        self.service_token = mint_token(self.private, subject="service:scheduler", team="platform", roles=["service"])
        write_secret(tmp / "svc.token", self.service_token)
        self.admin = self.token("admin", "platform", ["admin"])
        self.alice = self.token("alice", "team-a", ["developer"])
        self.bob = self.token("bob", "team-b", ["developer"])
        self.viewer = self.token("val", "team-a", [])
        self.servers: list[tuple[asyncio.Task, asyncio.Event, Path]] = []
        self.channel = None
        self.stub = None

    def token(self, subject, team, roles):
        return mint_token(self.private, subject=subject, team=team, roles=roles)

    def md(self, token: str):
        return (("authorization", f"Bearer {token}"),)

    def write_nodes(self, nodes: list[node_pb2.Node]) -> Path:
        path = self.tmp / "nodes.json"
        path.write_text(json.dumps([json_format.MessageToDict(n) for n in nodes]))
        return path

    async def start_scheduler(self, name: str = "s1") -> int:
        ready = self.tmp / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        settings = SchedulerSettings(
            nats_url=self.nats.url,
            nats_creds_file=self.nats.creds("scheduler"),
            auth_public_key_file=self.tmp / "public.pem",
            service_token_file=self.tmp / "svc.token",
            metrics_port=-1,
            ready_file=ready,
            trainer_address=f"127.0.0.1:{self.trainer_port}",
            inventory_file=self.tmp / "nodes.json",
            cycle_interval_s=0.1,
            lease_ttl_s=3,
            replica_id=name,
            shutdown_grace_s=1,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, register, stop))
        deadline = time.monotonic() + 30
        while not ready.exists():
            if task.done():
                task.result()
            assert time.monotonic() < deadline, "scheduler did not start"
            await asyncio.sleep(0.05)
        self.servers.append((task, stop, ready))
        port = json.loads(ready.read_text())["grpc_port"]
        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            self.stub = scheduler_service_pb2_grpc.SchedulerServiceStub(self.channel)
        return port

    async def stop_all(self):
        if self.channel is not None:
            await self.channel.close()
        for _task, stop, _ in self.servers:
            stop.set()
        for task, _, _ in self.servers:
            await asyncio.wait_for(task, 30)

    async def create_queue(self, name, team, gpus, borrow=0, default=True, cpu=10**9, mem=10**18):
        spec = queue_pb2.QueueSpec(team=team, team_default=default)
        spec.nominal_quota.gpus, spec.nominal_quota.cpu_millis, spec.nominal_quota.memory_bytes = gpus, cpu, mem
        spec.borrowing_limit.gpus = borrow
        req = api.CreateQueueRequest(name=name, spec=spec)
        return (await self.stub.CreateQueue(req, metadata=self.md(self.admin), timeout=5)).queue

    async def submit(self, spec: job_pb2.JobSpec, token=None, **kw) -> job_pb2.Job:
        req = api.SubmitJobRequest(spec=spec, **kw)
        return (await self.stub.SubmitJob(req, metadata=self.md(token or self.alice), timeout=5)).job

    async def get(self, job_id, token=None) -> job_pb2.Job:
        return (await self.stub.GetJob(api.GetJobRequest(job_id=job_id), metadata=self.md(token or self.alice))).job

    async def wait_state(self, job_id, state, timeout=15.0, token=None) -> job_pb2.Job:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get(job_id, token or self.admin)
            if job.status.state == state:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{job_id} is {job_pb2.JobState.Name(job.status.state)} ({job.status.reason}: "
                    f"{job.status.message}), wanted {job_pb2.JobState.Name(state)}"
                )
            await asyncio.sleep(0.05)

    async def run_event(self, job: job_pb2.Job, to_state, failure_class=0, attempt=None, message=""):
        """Publish what the trainer publishes when its run changes state."""
        nc = await events.connect(self.nats.url, "fake-trainer", **self.nats.client_options("trainer"))
        try:
            pub = events.EventPublisher(nc.jetstream(), source="//mlmesh/trainer")
            e = events_pb2.RunStateChanged(
                job_id=job.meta.id,
                team=job.meta.team,
                run_id=job.status.run_id or f"run-{job.meta.id}",
                attempt=attempt or job.status.attempt,
                to_state=to_state,
                failure_class=failure_class,
                message=message,
            )
            await pub.publish(f"mlmesh.jobs.{job.meta.team}.{job.meta.id}.run", e, ce_subject=job.meta.id)
        finally:
            await nc.close()


def command_spec(name="prep", workers=1, gpus=1, **kw) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(name=name, kind=job_pb2.JOB_KIND_COMMAND, **kw)
    spec.workers.count = workers
    spec.workers.resources.gpus = gpus
    spec.workers.resources.cpu_millis = 1000
    spec.workers.resources.memory_bytes = 1 << 30
    spec.command.command.extend(["python", "-c", "print(1)"])
    return spec


@pytest.fixture
async def harness(tmp_path: Path):
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    nats.bootstrap()
    trainer = FakeTrainer()
    server = grpc.aio.server()
    trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(trainer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    h = Harness(tmp_path, nats, port, trainer)
    h.write_nodes([gpu_node(f"n{i}", domain=f"nvl-{i // 2}") for i in range(4)])
    try:
        yield h
    finally:
        await h.stop_all()
        await server.stop(None)
        nats.stop()
