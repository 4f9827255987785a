"""The trainer as users run it: `python -m mlmesh.trainer` and `python -m mlmesh.storage` processes
on a real nats-server; workers are real DeepSpeed + peft processes (CPU, gloo, 2 ranks)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import grpc
import pytest

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.trainer.v1 import run_pb2, trainer_service_pb2_grpc
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.common.auth import generate_signing_key, mint_service_token, mint_token, write_secret
from mlmesh.local.process import ManagedProcess, start_service
from mlmesh.local.servers import NatsServer

TERMINAL = {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_STOPPED}
WORDS = [
    "the",
    "model",
    "learns",
    "fast",
    "while",
    "data",
    "flows",
    "through",
    "many",
    "layers",
    "of",
    "attention",
    "heads",
    "and",
    "the",
    "optimizer",
    "moves",
    "every",
    "weight",
    "a",
    "little",
    "toward",
    "a",
    "lower",
    "loss",
    "on",
    "the",
    "next",
    "batch",
    "of",
    "tokens",
]
POSITIVE = ["great", "wonderful", "excellent", "lovely", "fantastic", "delightful", "superb", "brilliant"]
NEGATIVE = ["terrible", "awful", "bad", "horrible", "poor", "dreadful", "boring", "disappointing"]
SUBJECTS = ["the movie", "this film", "the show", "the acting", "the story", "the ending", "the music"]


def write_text_dataset(path: Path, rows: int = 240, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(rows):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(40))}) + "\n")
    return path


def write_sentiment_dataset(path: Path, rows: int = 200, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(rows):
            positive = rng.random() < 0.5
            word = rng.choice(POSITIVE if positive else NEGATIVE)
            row = {"sentence": f"{rng.choice(SUBJECTS)} was {word}", "label": "positive" if positive else "negative"}
            f.write(json.dumps(row) + "\n")
    return path


class Services:
    """NATS, storage and the trainer, each a real process on 127.0.0.1."""

    def __init__(self, tmp: Path, trainer_env: dict[str, str] | None = None):
        self.tmp = tmp
        private, public = generate_signing_key()
        self.private_key = private  # for tests that start more services (the fabric, an agent)
        write_secret(tmp / "public.pem", public)
        self.scheduler_token = mint_service_token(private, "scheduler")
        write_secret(tmp / "trainer.token", mint_service_token(private, "trainer"))
        self.alice = mint_token(private, subject="alice", team="team-a", roles=["developer"])
        self.bob = mint_token(private, subject="bob", team="team-b", roles=["developer"])
        self.nats = NatsServer(tmp / "nats")
        self.nats.start()
        self.nats.bootstrap()
        self.procs: list[ManagedProcess] = []
        self.storage_address = self._start(
            "storage",
            {"HOT_DIR": str(tmp / "hot"), "WARM_DIR": str(tmp / "warm")},
        )
        self.trainer_address = self._start(
            "trainer",
            {
                "STORAGE_ADDRESS": self.storage_address,
                "SERVICE_TOKEN_FILE": str(tmp / "trainer.token"),
                "WORK_DIR": str(tmp / "runs"),
                "WORKER_NATS_CREDS_FILE": str(self.nats.creds("worker")),
                "HEARTBEAT_TIMEOUT_S": "20",
                "COLLECTIVE_TIMEOUT_S": "60",
                "DEFAULT_STOP_GRACE_S": "60",
                **(trainer_env or {}),
            },
        )
        self.channel = grpc.insecure_channel(self.trainer_address)
        self.stub = trainer_service_pb2_grpc.TrainerServiceStub(self.channel)

    def _start(self, name: str, extra: dict[str, str], *, module: str = "", args: tuple[str, ...] = ()) -> str:
        """Start `python -m mlmesh.<module or name> *args` with MLMESH_<NAME>_* settings; its address."""
        settings = {
            # The node agent runs `python -m mlmesh.fabric agent` with its own NATS identity.
            **self.nats.service_settings("fabric-agent" if args == ("agent",) else module or name),
            "AUTH_PUBLIC_KEY_FILE": str(self.tmp / "public.pem"),
            "METRICS_PORT": "-1",
            **extra,
        }
        proc, info = start_service(name, settings, self.tmp, module=module, args=args)
        self.procs.append(proc)
        return f"127.0.0.1:{info['grpc_port']}"

    def md(self, token: str | None = None):
        return (("authorization", f"Bearer {token or self.scheduler_token}"),)

    def start_run(self, job_id: str, spec: job_pb2.JobSpec, *, attempt: int = 1, team: str = "team-a", resume=""):
        request = api.StartRunRequest(
            job_id=job_id, team=team, attempt=attempt, spec=spec, resume_from_checkpoint=resume
        )
        return self.stub.StartRun(request, metadata=self.md(), timeout=30).run

    def get(self, run_id: str, token: str | None = None) -> run_pb2.Run:
        return self.stub.GetRun(api.GetRunRequest(run_id=run_id), metadata=self.md(token), timeout=10).run

    def wait(self, run_id: str, until=lambda r: r.state in TERMINAL, timeout: float = 240.0) -> run_pb2.Run:
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(run_id)
            if until(run):
                return run
            if run.state in TERMINAL or time.monotonic() > deadline:
                raise AssertionError(
                    f"run {run_id} ended in / stuck at {run_pb2.RunState.Name(run.state)}: "
                    f"{run.reason} {run.message}\n{self.worker_logs(run_id)}"
                )
            time.sleep(0.2)

    def run_dir(self, run_id: str) -> Path:
        return self.tmp / "runs" / run_id

    def progress(self, run_id: str) -> list[dict]:
        path = self.run_dir(run_id) / "progress.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def worker_logs(self, run_id: str) -> str:
        logs = sorted((self.run_dir(run_id) / "logs").glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)

    # Helpers for tests (test modules cannot import conftest under importlib mode).
    text_dataset = staticmethod(lambda *a, **k: write_text_dataset(*a, **k))
    sentiment_dataset = staticmethod(lambda *a, **k: write_sentiment_dataset(*a, **k))
    finetune_spec = staticmethod(lambda *a, **k: finetune_spec(*a, **k))

    def close(self) -> None:
        self.channel.close()
        for proc in reversed(self.procs):
            proc.stop(grace=15)
        self.nats.stop()


@pytest.fixture
def services(tmp_path: Path):
    svc = Services(tmp_path)
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def make_services(tmp_path: Path):
    """Services with other trainer settings: `make_services(trainer_env={"EXECUTOR": "agents"})`."""
    made: list[Services] = []

    def make(**kwargs) -> Services:
        made.append(Services(tmp_path, **kwargs))
        return made[-1]

    try:
        yield make
    finally:
        for svc in made:
            svc.close()


def finetune_spec(model: str, dataset: Path, **trainer_fields) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(name="ft", kind=job_pb2.JOB_KIND_FINETUNE)
    spec.workers.count = 2
    spec.trainer.model = model
    spec.trainer.dataset = f"file://{dataset}"
    for key, value in trainer_fields.items():
        if isinstance(value, dict):
            getattr(spec.trainer, key).update(value)
        else:
            setattr(spec.trainer, key, value)
    return spec
