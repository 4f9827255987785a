"""Scheduler -> trainer -> workers on a real `mlmesh up` mesh (this host's node agent registers its
CPU slots; the trainer runs workers with its local executor): a LoRA fine-tune submitted with
`mlmesh submit --watch`, followed to SUCCEEDED with live progress, its run events on NATS and its
model in the registry; and a command job submitted through the SDK client."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.scheduler.v1 import job_pb2, scheduler_service_pb2, scheduler_service_pb2_grpc
from mlmesh.api.storage.v1 import model_registry_service_pb2, model_registry_service_pb2_grpc
from mlmesh.api.trainer.v1 import run_pb2, trainer_service_pb2, trainer_service_pb2_grpc
from mlmesh.common.auth import mint_token
from mlmesh.common.events import decode_event
from mlmesh.sdk.client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MLMESH = [sys.executable, "-m", "mlmesh.cli.main"]
TEAM = "e2e"
R = run_pb2
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
WORDS = ["the", "model", "learns", "while", "data", "flows", "through", "many", "layers", "of", "tokens"]


@dataclass
class Mesh:
    state: Path
    endpoints: dict
    token: str  # a developer of team e2e

    def cli(self, *args: str, token: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
        env.update({"MLMESH_STATE_DIR": str(self.state), "MLMESH_TOKEN": token or self.token, "COLUMNS": "200"})
        return subprocess.run([*MLMESH, *args], env=env, capture_output=True, text=True, timeout=timeout)

    def client(self, service: str, stub) -> Client:
        return Client(service, stub, token=self.token, state_dir=self.state)

    def logs(self) -> str:
        names = ("scheduler", "trainer", "fabric-agent")
        return "\n".join(f"--- {n}\n{(self.state / 'logs' / f'{n}.log').read_text()[-3000:]}" for n in names)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("mesh") / "state"
    probe = Mesh(state, {}, "")
    try:
        up = probe.cli("up", "--json", token="unused", timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        endpoints = json.loads((state / "endpoints.json").read_text())
        signing_key = Path(endpoints["auth"]["signing_key"]).read_bytes()
        admin = Path(endpoints["auth"]["admin_token"]).read_text().strip()
        m = Mesh(state, endpoints, mint_token(signing_key, subject="erin", team=TEAM, roles=["developer"]))
        queue = m.cli("queues", "create", "e2e", "--team", TEAM, "--gpus", "0", "--default", token=admin)
        assert queue.returncode == 0, queue.stdout + queue.stderr
        yield m
    finally:
        probe.cli("down", token="unused", timeout=120)


def _write_dataset(path: Path, rows: int = 100) -> Path:
    rng = random.Random(7)
    with path.open("w") as f:
        for _ in range(rows):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(40))}) + "\n")
    return path


def _finetune_yaml(path: Path, dataset: Path) -> Path:
    path.write_text(
        f"""name: e2e-ft
kind: finetune
workers: {{count: 1, cpu: "1", memory: 2Gi}}
trainer:
  model: builtin:gpt2-tiny
  method: lora
  dataset: file://{dataset}
  output_model_name: e2e-model
  hyperparameters: {{max_steps: 6, max_seq_length: 32}}
"""
    )
    return path


def _type(msg) -> str:
    """The event's message name, from its CloudEvents type header."""
    return (msg.headers or {}).get("ce-type", "").removeprefix("mlmesh.events.v1.")


async def test_finetune_runs_through_scheduler_and_trainer(mesh: Mesh, tmp_path: Path):
    spec_file = _finetune_yaml(tmp_path / "ft.yaml", _write_dataset(tmp_path / "text.jsonl"))
    nc = await nats.connect(
        mesh.endpoints["infra"]["nats"]["url"], user_credentials=mesh.endpoints["auth"]["nats_admin_creds"]
    )
    received = []

    async def on_msg(msg) -> None:
        received.append(msg)

    # The job id is not known before submitting: listen to the team's jobs, keep this one's below.
    sub = await nc.subscribe(f"mlmesh.jobs.{TEAM}.>", cb=on_msg)
    try:
        watched = await asyncio.to_thread(mesh.cli, "submit", str(spec_file), "--watch", timeout=240)
        out = watched.stdout
        assert watched.returncode == 0, f"{out}\n{watched.stderr}\n{mesh.logs()}"
        first = out.splitlines()[0]
        assert first.startswith("submitted "), out
        job_id = first.split()[1]
        # State lines from WatchJobs, and progress lines from the trainer in between.
        assert "RUNNING" in out and "SUCCEEDED" in out, out
        assert re.search(r"step [1-6]/6  loss \d+\.\d{4}", out), out
        assert "step 6/6" in out, out
        assert out.index("step 6/6") < out.index("SUCCEEDED"), out

        with mesh.client("scheduler", scheduler_service_pb2_grpc.SchedulerServiceStub) as scheduler:
            job = scheduler.call(scheduler.stub.GetJob, scheduler_service_pb2.GetJobRequest(job_id=job_id)).job
        assert job.status.state == job_pb2.JOB_STATE_SUCCEEDED, job.status
        assert job_pb2.JOB_STATE_RUNNING in [t.to_state for t in job.status.history]
        outputs = job.status.outputs
        assert outputs.model_artifact_id and outputs.model_name == "e2e-model" and outputs.model_version >= 1

        with mesh.client("storage", model_registry_service_pb2_grpc.ModelRegistryServiceStub) as registry:
            request = model_registry_service_pb2.GetModelVersionRequest(name="e2e-model", version=outputs.model_version)
            mv = registry.call(registry.stub.GetModelVersion, request).model_version
        assert mv.team == TEAM and mv.artifact_id == outputs.model_artifact_id
        assert mv.base_model == "builtin:gpt2-tiny" and mv.lineage.job_id == job_id

        prefix = f"mlmesh.jobs.{TEAM}.{job_id}."
        deadline = time.monotonic() + 10
        while True:  # the trainer publishes SUCCEEDED before the scheduler records it; allow transit
            mine = [m for m in received if m.subject.startswith(prefix)]
            runs = [decode_event(m, events_pb2.RunStateChanged).data for m in mine if _type(m) == "RunStateChanged"]
            if (runs and runs[-1].to_state == R.RUN_STATE_SUCCEEDED) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert [r.to_state for r in runs] == [
            R.RUN_STATE_PENDING,
            R.RUN_STATE_STARTING,
            R.RUN_STATE_RUNNING,
            R.RUN_STATE_SUCCEEDED,
        ], runs
        assert all(r.job_id == job_id and r.team == TEAM and r.run_id == job.status.run_id for r in runs)
        assert runs[-1].outputs.model_artifact_id == outputs.model_artifact_id
        progress = [decode_event(m, events_pb2.JobProgress).data.progress for m in mine if _type(m) == "JobProgress"]
        assert progress and all(1 <= p.step <= 6 and p.total_steps == 6 and p.loss > 0 for p in progress), progress
        assert progress[-1].step == 6
    finally:
        await sub.unsubscribe()
        await nc.close()


def test_command_job_runs_on_the_trainers_local_executor(mesh: Mesh):
    spec = job_pb2.JobSpec(name="hi", kind=job_pb2.JOB_KIND_COMMAND)
    spec.workers.count = 1
    spec.workers.resources.cpu_millis = 500
    spec.workers.resources.memory_bytes = 256 << 20
    spec.command.command.extend(["python", "-c", "print('hi')"])
    with mesh.client("scheduler", scheduler_service_pb2_grpc.SchedulerServiceStub) as scheduler:
        request = scheduler_service_pb2.SubmitJobRequest(spec=spec, request_id=uuid.uuid4().hex)
        job = scheduler.call(scheduler.stub.SubmitJob, request).job
        deadline = time.monotonic() + 120
        while job.status.state not in TERMINAL:
            assert time.monotonic() < deadline, f"stuck in {job.status}\n{mesh.logs()}"
            time.sleep(0.5)
            job = scheduler.call(scheduler.stub.GetJob, scheduler_service_pb2.GetJobRequest(job_id=job.meta.id)).job
    assert job.status.state == job_pb2.JOB_STATE_SUCCEEDED, f"{job.status}\n{mesh.logs()}"
    assert job.status.run_id
    with mesh.client("trainer", trainer_service_pb2_grpc.TrainerServiceStub) as trainer:
        run = trainer.call(trainer.stub.GetRun, trainer_service_pb2.GetRunRequest(run_id=job.status.run_id)).run
    assert run.state == R.RUN_STATE_SUCCEEDED and run.executor == R.EXECUTOR_KIND_LOCAL
    # Placed by the scheduler on the node this host's agent registered.
    [node] = run.placement.nodes
    assert node.agent_address == mesh.endpoints["services"]["fabric-agent"]["grpc"]
    [worker] = run.workers
    assert worker.exit_code == 0 and "hi" in Path(worker.log_path).read_text().splitlines()
