"""One trace follows a job: `mlmesh submit` → scheduler (SubmitJob, admission, StartRun) → trainer
(its run, the launch) → the worker process (a span per rank and its phases), on a real `mlmesh up`
mesh whose telemetry service is the OTLP receiver. Fetched with GetTrace by job id and printed by
`mlmesh trace <job-id>`; another team gets NOT_FOUND."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api
from mlmesh.api.telemetry.v1 import telemetry_service_pb2_grpc
from mlmesh.common.auth import mint_token
from mlmesh.sdk.client import Client, RpcFailure

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

MLMESH = [sys.executable, "-m", "mlmesh.cli.main"]
TEAM = "tracers"
SUBMIT = "/mlmesh.scheduler.v1.SchedulerService/SubmitJob"
START_RUN = "/mlmesh.trainer.v1.TrainerService/StartRun"
WORDS = ["spans", "follow", "the", "job", "through", "every", "service", "and", "worker"]


def cli(state: Path, token: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env.update({"MLMESH_STATE_DIR": str(state), "MLMESH_TOKEN": token, "COLUMNS": "200"})
    return subprocess.run([*MLMESH, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("trace-mesh") / "state"
    try:
        up = cli(state, "unused", "up", "--json", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        endpoints = json.loads((state / "endpoints.json").read_text())
        key = Path(endpoints["auth"]["signing_key"]).read_bytes()
        admin = Path(endpoints["auth"]["admin_token"]).read_text().strip()
        queue = cli(state, admin, "queues", "create", TEAM, "--team", TEAM, "--gpus", "0", "--default")
        assert queue.returncode == 0, queue.stdout + queue.stderr
        yield state, key
    finally:
        cli(state, "unused", "down", timeout=120)


def _job_yaml(tmp: Path) -> Path:
    rng = random.Random(3)
    data = tmp / "text.jsonl"
    data.write_text(
        "".join(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(30))}) + "\n" for _ in range(60))
    )
    spec = tmp / "job.yaml"
    spec.write_text(
        f"""name: traced
kind: finetune
workers: {{count: 1, cpu: "1", memory: 2Gi}}
trainer:
  model: builtin:gpt2-tiny
  method: lora
  dataset: file://{data}
  hyperparameters: {{max_steps: 3, max_seq_length: 32}}
checkpoint: {{every_n_steps: 2}}
"""
    )
    return spec


def _wait_for_trace(client: Client, job_id: str, needed: set[str], timeout: float = 60) -> api.Trace:
    """Spans arrive in batches (about a second apart) from four processes; wait for all of them."""
    deadline = time.monotonic() + timeout
    trace, names = None, set()
    while time.monotonic() < deadline:
        try:
            trace = client.call(client.stub.GetTrace, api.GetTraceRequest(job_id=job_id)).trace
            names = {s.name for s in trace.spans}
            if needed <= names:
                return trace
        except RpcFailure as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
        time.sleep(1)
    raise AssertionError(f"missing spans {needed - names}; have {sorted(names)}")


def test_one_trace_follows_a_job_from_submit_to_its_worker(mesh, tmp_path: Path):
    state, key = mesh
    erin = mint_token(key, subject="erin", team=TEAM, roles=["developer"])
    submitted = cli(state, erin, "submit", str(_job_yaml(tmp_path)), "--watch", timeout=300)
    logs = "\n".join((state / "logs" / f"{n}.log").read_text()[-2000:] for n in ("scheduler", "trainer", "telemetry"))
    assert submitted.returncode == 0 and "SUCCEEDED" in submitted.stdout, f"{submitted.stdout}{submitted.stderr}{logs}"
    job_id = submitted.stdout.splitlines()[0].split()[1]

    needed = {SUBMIT, "scheduler.admit", "scheduler.start_run", START_RUN, "trainer.run", "trainer.launch"}
    needed |= {"worker rank 0", "worker.load_model", "worker.train", "worker.checkpoint", "worker.finish"}
    with Client("telemetry", telemetry_service_pb2_grpc.TelemetryServiceStub, token=erin, state_dir=state) as client:
        trace = _wait_for_trace(client, job_id, needed)
    spans = {s.span_id: s for s in trace.spans}

    def one(name: str, service: str):
        [found] = [s for s in trace.spans if s.name == name and s.service == service]
        return found

    submit = one(SUBMIT, "mlmesh-scheduler")
    admit = one("scheduler.admit", "mlmesh-scheduler")
    dispatch = one("scheduler.start_run", "mlmesh-scheduler")
    call = one(START_RUN, "mlmesh-scheduler")  # the client span of the call
    served = one(START_RUN, "mlmesh-trainer")
    run = one("trainer.run", "mlmesh-trainer")
    launch = one("trainer.launch", "mlmesh-trainer")
    rank = one("worker rank 0", "mlmesh-trainer-worker")
    assert submit.parent_span_id == ""  # the CLI sent no trace: the submission is the root
    assert admit.parent_span_id == submit.span_id and dispatch.parent_span_id == submit.span_id
    assert float(admit.attributes["mlmesh.queue_wait_s"]) >= 0 and admit.attributes["mlmesh.queue"] == TEAM
    assert call.parent_span_id == dispatch.span_id and served.parent_span_id == call.span_id
    assert run.parent_span_id == served.span_id and launch.parent_span_id == run.span_id
    assert rank.parent_span_id == launch.span_id and rank.attributes["mlmesh.rank"] == "0"
    for phase in ("worker.load_model", "worker.train", "worker.finish"):
        assert one(phase, "mlmesh-trainer-worker").parent_span_id == rank.span_id
    checkpoint = one("worker.checkpoint", "mlmesh-trainer-worker")
    assert spans[checkpoint.parent_span_id].name == "worker.train"
    # Every span of the trace names the job and its team, and none failed.
    for span in trace.spans:
        assert (span.attributes.get("mlmesh.job_id"), span.attributes.get("mlmesh.team")) == (job_id, TEAM), span
    assert not [s.name for s in trace.spans if s.error]
    assert all(s.end_time.ToNanoseconds() >= s.start_time.ToNanoseconds() > 0 for s in trace.spans)

    printed = cli(state, erin, "trace", job_id)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0] == f"trace {trace.trace_id}  ({len(trace.spans)} spans)" or lines[0].startswith(
        f"trace {trace.trace_id}"
    )
    assert lines[1].startswith(f"scheduler {SUBMIT}  ") and lines[1].endswith(" ms")
    worker_line = next(line for line in lines if "trainer-worker worker rank 0" in line)
    launch_line = next(line for line in lines if "trainer trainer.launch" in line)
    # The worker sits one level under the launch in the tree.
    assert len(worker_line) - len(worker_line.lstrip("│ ├└─")) > len(launch_line) - len(launch_line.lstrip("│ ├└─"))
    as_json = json.loads(cli(state, erin, "trace", trace.trace_id, "--json").stdout)
    assert as_json["trace_id"] == trace.trace_id and len(as_json["spans"]) >= len(needed)

    mallory = mint_token(key, subject="mallory", team="others", roles=["developer"])
    hidden = cli(state, mallory, "trace", job_id)
    assert hidden.returncode == 1 and "trace not held (the receiver keeps the most recent" in hidden.stderr
