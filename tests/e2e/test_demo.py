"""The demo flow (`make demo`) under pytest: every stage asserted, and the pipeline's events as a plain
NATS subscriber sees them (order, CloudEvents headers, no gaps). Real everything: nats-server,
valkey, SeaweedFS, tritonserver, the six services, DeepSpeed/peft workers on this CPU."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path

import pytest

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.local import demo

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
S = job_pb2.JobState
STEPS = ["preprocess", "finetune", "register", "deploy", "deploy-embeddings"]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "state"
    lines: list[str] = []
    results = demo.run(root, say=lines.append)
    return root, lines, results


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

    # The summary, and nothing left running.
    assert "== summary" in text and "before the fine-tune" in text and "through the gateway" in text
    assert not (root / "endpoints.json").exists()
    logs = root / "logs"
    assert (logs / "scheduler.log").is_file()


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
