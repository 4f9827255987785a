"""Submit -> ADMITTED per second through the whole scheduler: gRPC API, JetStream KV, NATS events.

A real nats-server and a `python -m mlmesh.scheduler` process (inventory: 100 nodes x 8 GPUs) on
this machine. N jobs are submitted over gRPC with 32 in flight; the clock stops when the last one
is ADMITTED (seen through WatchJobs). Baseline, same run: the same number of raw JetStream KV
create + CAS update pairs, i.e. the two durable writes every job needs, with no scheduling at all.

    .venv/bin/python benchmarks/bench_scheduler_e2e.py [--jobs 500] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2, scheduler_service_pb2_grpc
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as api
from mlmesh.common import events
from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.common.kv import KvRepository
from mlmesh.local.servers import NatsServer

INFLIGHT = 32


def _nodes(count: int) -> list[dict]:
    out = []
    for i in range(count):
        n = node_pb2.Node(id=f"n{i:03d}", state=node_pb2.NODE_STATE_READY)
        n.capacity.gpus, n.capacity.cpu_millis, n.capacity.memory_bytes = 8, 128_000, 1 << 40
        n.labels.nvlink_domain, n.labels.leaf_switch, n.labels.zone = f"d{i // 4}", f"s{i // 16}", "z"
        n.devices.add(id=f"n{i}-g0", kind=node_pb2.DEVICE_KIND_GPU, model="H100", memory_bytes=80 << 30)
        out.append(json_format.MessageToDict(n))
    return out


def _spec(i: int) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(name=f"b{i}", kind=job_pb2.JOB_KIND_COMMAND)
    spec.workers.count = 1
    spec.workers.resources.gpus = 1
    spec.workers.resources.cpu_millis = 100
    spec.command.command.append("true")
    return spec


async def _scheduler_run(tmp: Path, nats: NatsServer, jobs: int, run: int, private: bytes) -> float:
    ready = tmp / f"ready{run}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    p = "MLMESH_SCHEDULER_"
    env.update(
        {
            **{p + k: v for k, v in nats.service_settings("scheduler").items()},
            p + "AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem"),
            p + "INVENTORY_FILE": str(tmp / "nodes.json"),
            p + "READY_FILE": str(ready),
            p + "METRICS_PORT": "-1",
            p + "LOG_LEVEL": "WARNING",
        }
    )
    proc = subprocess.Popen([sys.executable, "-m", "mlmesh.scheduler"], env=env)  # noqa: ASYNC220 - starts once
    try:
        while not ready.exists():  # noqa: ASYNC110 - a file written by another process
            await asyncio.sleep(0.05)
        port = json.loads(ready.read_text())["grpc_port"]
        admin = (("authorization", f"Bearer {mint_token(private, subject='a', team='platform', roles=['admin'])}"),)
        team = f"team{run}"
        dev = (("authorization", f"Bearer {mint_token(private, subject='d', team=team, roles=['developer'])}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = scheduler_service_pb2_grpc.SchedulerServiceStub(channel)
            qspec = queue_pb2.QueueSpec(team=team, team_default=True)
            qspec.nominal_quota.gpus, qspec.nominal_quota.cpu_millis = 100_000, 10**9
            qspec.nominal_quota.memory_bytes = 10**18
            await stub.CreateQueue(api.CreateQueueRequest(name=f"q{run}", spec=qspec), metadata=admin)
            admitted: set[str] = set()
            done = asyncio.Event()

            async def watch():
                async for msg in stub.WatchJobs(api.WatchJobsRequest(team=team), metadata=dev):
                    if msg.job.status.state == job_pb2.JOB_STATE_ADMITTED:
                        admitted.add(msg.job.meta.id)
                        if len(admitted) >= jobs:
                            done.set()
                            return

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0.3)  # the watch is subscribed
            sem = asyncio.Semaphore(INFLIGHT)

            async def submit(i: int):
                async with sem:
                    await stub.SubmitJob(api.SubmitJobRequest(spec=_spec(i)), metadata=dev, timeout=30)

            started = time.perf_counter()
            await asyncio.gather(*(submit(i) for i in range(jobs)))
            submitted_s = time.perf_counter() - started
            await asyncio.wait_for(done.wait(), 300)
            elapsed = time.perf_counter() - started
            watcher.cancel()
            print(f"run {run}: all submitted after {submitted_s:.2f}s, all admitted after {elapsed:.2f}s")
            return jobs / elapsed
    finally:
        proc.terminate()
        proc.wait(30)


async def _kv_baseline(nats: NatsServer, jobs: int, run: int) -> float:
    nc = await events.connect(nats.url, "bench", **nats.client_options())
    repo = await KvRepository.open(nc.jetstream(), f"bench{run}", job_pb2.Job)
    sem = asyncio.Semaphore(INFLIGHT)
    job = job_pb2.Job()
    job.spec.CopyFrom(_spec(0))

    async def one(i: int):
        async with sem:
            rev = await repo.create(f"j{i}", job)
            await repo.update(f"j{i}", job, rev)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    elapsed = time.perf_counter() - started
    await nc.close()
    return jobs / elapsed


async def main(jobs: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        private, public = generate_signing_key()
        write_secret(tmp / "public.pem", public)
        (tmp / "nodes.json").write_text(json.dumps(_nodes(100)))
        e2e, base = [], []
        for run in range(runs):
            # A fresh server per run, so no run starts with another's jobs holding the GPUs.
            nats = NatsServer(tmp / f"nats{run}")
            nats.start()
            nats.bootstrap()
            try:
                base.append(await _kv_baseline(nats, jobs, run))
                e2e.append(await _scheduler_run(tmp, nats, jobs, run, private))
            finally:
                nats.stop()
    b, e = statistics.median(base), statistics.median(e2e)
    print(f"\nscheduler_e2e ({machine()}), {jobs} jobs x {runs} runs, {INFLIGHT} in flight")
    print(f"{'case':<52}{'median jobs/s':>16}{'runs':>30}")
    print(f"{'raw KV create + CAS update per job (baseline)':<52}{b:>16.0f}{[round(x) for x in base]!s:>30}")
    print(f"{'submit -> ADMITTED via gRPC, KV, NATS':<52}{e:>16.0f}{[round(x) for x in e2e]!s:>30}")
    print(f"ratio to baseline: {e / b:.2f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "scheduler_e2e.json").write_text(
        json.dumps({"machine": machine(), "jobs": jobs, "baseline_jobs_per_s": base, "e2e_jobs_per_s": e2e}, indent=2)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.runs))
