"""The demo flow (`make demo`) under pytest: every stage asserted, and the pipeline's events as a plain
NATS subscriber sees them (order, CloudEvents headers, no gaps). Real everything: nats-server,
valkey, SeaweedFS, tritonserver, the six services, DeepSpeed/peft workers on this CPU. On the same
mesh: one trace follows a job from submit to its worker."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import grpc
import pytest

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api
from mlmesh.api.telemetry.v1 import telemetry_service_pb2_grpc
from mlmesh.common.auth import mint_token
from mlmesh.local import demo, mesh
from mlmesh.sdk.client import Client, RpcFailure

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
S = job_pb2.JobState
STEPS = ["preprocess", "finetune", "register", "deploy", "deploy-embeddings"]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """The demo, once for the module; its mesh stays up for the trace test below (one mesh start
    instead of two), and comes down at the end: `down` raises if any process survives it."""
    root = tmp_path_factory.mktemp("demo") / "state"
    lines: list[str] = []
    try:
        results = demo.run(root, say=lines.append, keep=True)
        yield root, lines, results
    finally:
        mesh.down(root)
    assert not (root / "endpoints.json").exists()


def test_every_stage_of_the_demo(flow):
    root, lines, results = flow
    steps = results["steps"]
    assert {n: demo.state_name(j.status.state) for n, j in steps.items()} == {
        **{n: "succeeded" for n in STEPS},
        "pipeline": "succeeded",
    }
    text = "\n".join(lines)

    # Preprocess wrote the cleaned dataset the fine-tune read.
    prepared = demo.REPO / "examples/data/build/topics.prepared.jsonl"
    rows = [json.loads(line) for line in prepared.read_text().splitlines()]
    assert rows and {r["label"] for r in rows} == {"sports", "technology", "food", "weather"}

    # The fine-tune: live progress was shown, and it learned.
    assert "[finetune] step 40/40" in text and "ETA" in text
    metrics = steps["finetune"].status.outputs.metrics
    assert metrics["eval_accuracy"] > metrics["eval_accuracy_before"]
    assert metrics["eval_accuracy"] >= 0.8

    # Registered, then deployed at exactly that version, twice.
    reg = steps["register"].status.outputs
    assert reg.model_name == "topics" and reg.model_version >= 1
    assert reg.model_artifact_id == steps["finetune"].status.outputs.model_artifact_id
    for name, deployment in (("deploy", "topics"), ("deploy-embeddings", "topics-embed")):
        out = steps[name].status.outputs
        assert out.deployment_name == deployment and out.model_version == reg.model_version

    # Queries through the gateway: KServe v2 on every held-out sentence, OpenAI embeddings, a cache hit.
    kserve = results["kserve"]
    assert kserve["n"] == len(demo.held_out(prepared)) > 0 and kserve["accuracy"] >= 0.8
    embeddings = results["embeddings"]
    assert len(embeddings["vectors"]) == 3 and {len(v) for v in embeddings["vectors"]} == {384}
    assert results["cache"]["hits"] == 1 and results["cache"]["misses"] == 1

    # The summary.
    assert "== summary" in text and "before the fine-tune" in text and "through the gateway" in text
    assert (root / "logs" / "scheduler.log").is_file()


def test_job_events_as_a_plain_nats_subscriber_sees_them(flow):
    _root, _lines, results = flow
    events = results["events"]
    job_ids = {j.meta.id for j in results["steps"].values()}
    ids = [e.headers.get("ce-id") for e in events]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    per_job: dict[str, list] = defaultdict(list)
    for e in events:
        h = e.headers
        # CloudEvents (binary mode) on every message.
        assert h["ce-specversion"] == "1.0" and h["ce-source"] and h["ce-time"].endswith("Z")
        assert h["ce-datacontenttype"] == "application/json" and h["Nats-Msg-Id"] == h["ce-id"]
        assert h["ce-type"] in {f"mlmesh.events.v1.{t}" for t in ("JobStateChanged", "JobProgress", "RunStateChanged")}
        assert e.subject.startswith(f"mlmesh.jobs.{demo.TEAM}.")
        job_id = e.subject.split(".")[3]
        assert job_id in job_ids and e.data.get("jobId") == job_id
        per_job[job_id].append(e)

    for name, job in results["steps"].items():
        changes = [e.data for e in per_job[job.meta.id] if e.headers["ce-type"].endswith("JobStateChanged")]
        # No gaps: each event starts where the previous one ended, from creation to the final state.
        chain = [c.get("fromState", "JOB_STATE_UNSPECIFIED") for c in changes] + [changes[-1]["toState"]]
        assert chain[0] in ("JOB_STATE_UNSPECIFIED", "JOB_STATE_PENDING"), (name, chain)
        assert all(c["fromState"] == p["toState"] for p, c in itertools.pairwise(changes)), (name, chain)
        assert chain[-1] == "JOB_STATE_SUCCEEDED", (name, chain)
        # In order: KV revisions only grow.
        revisions = [int(c["revision"]) for c in changes]
        assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions), (name, revisions)
        # The events agree with the job's own history.
        history = [job_pb2.JobState.Name(t.to_state) for t in job.status.history]
        assert [c["toState"] for c in changes] == history[-len(changes) :], (name, history)

    # The trainer's run of the fine-tune, in order and without gaps, as well.
    runs = [
        e.data
        for e in per_job[results["steps"]["finetune"].meta.id]
        if e.headers["ce-type"].endswith("RunStateChanged")
    ]
    chain = [r.get("fromState", "RUN_STATE_UNSPECIFIED") for r in runs] + [runs[-1]["toState"]]
    assert all(c.get("fromState") == p["toState"] for p, c in itertools.pairwise(runs)), chain
    assert chain[-1] == "RUN_STATE_SUCCEEDED", chain

    progress = [e.data["progress"] for e in per_job[results["steps"]["finetune"].meta.id] if ".progress" in e.subject]
    steps = [int(p.get("step", 0)) for p in progress]
    assert steps and steps == sorted(steps) and steps[-1] == 40
    assert all("loss" in p for p in progress)


# --- tracing, on the same mesh ----------------------------------------------------------------

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
def traced_mesh(flow):
    """The demo's mesh, with a queue for the tracing team."""
    state = flow[0]
    endpoints = json.loads((state / "endpoints.json").read_text())
    key = Path(endpoints["auth"]["signing_key"]).read_bytes()
    admin = Path(endpoints["auth"]["admin_token"]).read_text().strip()
    queue = cli(state, admin, "queues", "create", TEAM, "--team", TEAM, "--gpus", "0", "--default")
    assert queue.returncode == 0, queue.stdout + queue.stderr
    return state, key


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


def test_one_trace_follows_a_job_from_submit_to_its_worker(traced_mesh, tmp_path: Path):
    """One trace follows a job: `mlmesh submit` → scheduler (SubmitJob, admission, StartRun) → trainer
    (its run, the launch) → the worker process (a span per rank and its phases); the telemetry service
    is the OTLP receiver. Fetched with GetTrace by job id and printed by `mlmesh trace <job-id>`;
    another team gets NOT_FOUND."""
    state, key = traced_mesh
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


def test_the_demo_takes_the_mesh_down_even_when_a_stage_fails(tmp_path, monkeypatch):
    """A failing stage still tears down: no process of the mesh survives."""

    def broken(self, path=demo.PIPELINE):
        raise demo.DemoError("submit refused (test)")

    monkeypatch.setattr(demo.Demo, "submit", broken)
    root = tmp_path / "state"
    with pytest.raises(demo.DemoError, match="submit refused"):
        demo.run(root, say=lambda _line: None)
    # `down` ran (it raises if any recorded process survives it) and removed the endpoints file.
    assert not (root / "endpoints.json").exists()
    assert sorted(Path(root / "logs").glob("*.log")), "the mesh was not even started"
