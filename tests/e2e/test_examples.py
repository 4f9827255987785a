"""The examples under examples/ as a user runs them, against one real local mesh (`mlmesh up`).

- the two-team quota/preemption scenario (examples/quota-preemption/run.py) ends as its README says;
- the causal-LM LoRA fine-tune (examples/causal-lm-finetune.yaml) succeeds on 2 CPU workers and
  registers a model version;
- every example job file parses (`load_job_spec`) and passes a server-side `mlmesh submit --dry-run`.

The scenario runs first, on queues as a fresh mesh has them (only team-a's and team-b's).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlmesh.sdk.jobspec import load_job_spec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MLMESH = [sys.executable, "-m", "mlmesh.cli.main"]
JOB_FILES = sorted([*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("*/*.yaml")])


class Mesh:
    def __init__(self, state: Path):
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
        # Only this mesh: nothing may fall back to a developer's own (.mlmesh) or a token in the env.
        self.env = {**base, "MLMESH_STATE_DIR": str(state), "COLUMNS": "200"}
        self.state = state

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*MLMESH, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def ok(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"mlmesh {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--json").stdout)

    def job(self, job_id: str) -> dict:
        return self.json("jobs", "get", job_id)

    def ensure_queue(self, name: str, team: str) -> None:
        """A default queue for `team` with CPU and memory not limited (idempotent)."""
        if name not in {q["meta"]["id"] for q in self.json("queues", "list").get("queues", [])}:
            self.ok("queues", "create", name, "--team", team, "--gpus", "0", "--default")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("examples") / "state")
    try:
        up = m.run("up", timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        yield m
    finally:
        m.run("down", timeout=120)  # also after a failed `up`: it stops whatever was recorded


def _states(job: dict) -> list[tuple[str, str]]:
    return [(h["to_state"].removeprefix("JOB_STATE_"), h.get("reason", "")) for h in job["status"]["history"]]


def _time_of(job: dict, state: str, nth: int = 0) -> str:
    """When the job entered `state` for the nth time (RFC 3339 UTC, so strings compare in order)."""
    times = [h["transition_time"] for h in job["status"]["history"] if h["to_state"] == f"JOB_STATE_{state}"]
    assert len(times) > nth, f"{job['meta']['id']} never entered {state} {nth + 1} time(s): {_states(job)}"
    return times[nth]


def test_quota_preemption_scenario_ends_as_the_readme_says(mesh: Mesh, tmp_path: Path):
    summary = tmp_path / "summary.json"
    script = EXAMPLES / "quota-preemption" / "run.py"
    done = subprocess.run(
        [sys.executable, str(script), "--summary", str(summary)],
        env=mesh.env,
        capture_output=True,
        text=True,
        timeout=280,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    ids = json.loads(summary.read_text())
    assert ids["problems"] == []
    # While B runs, A waits for quota: on a fresh mesh there is no idle quota left to borrow.
    assert "idle quota" in " ".join(ids["explain_a_while_b_runs"].split()), ids["explain_a_while_b_runs"]
    a, b = mesh.job(ids["team_a_job"]), mesh.job(ids["team_b_job"])

    # Team A's job ran on borrowed quota, was preempted once for team B's job, went back to PENDING
    # (attempt 2), was admitted and ran again, and succeeded.
    assert a["meta"]["team"] == "team-a" and b["meta"]["team"] == "team-b"
    assert [s for s, _ in _states(a)] == [
        "PENDING",
        "ADMITTED",
        "RUNNING",
        "PREEMPTED",
        "PENDING",
        "ADMITTED",
        "RUNNING",
        "SUCCEEDED",
    ], _states(a)
    preempted = next(h for h in a["status"]["history"] if h["to_state"] == "JOB_STATE_PREEMPTED")
    assert preempted["reason"] == "HigherPriority" and ids["team_b_job"] in preempted.get("message", "")
    assert a["status"]["attempt"] == 2 and a["status"]["state"] == "JOB_STATE_SUCCEEDED"

    # Team B's job: admitted once, right after A stopped; not after A finished.
    assert [s for s, _ in _states(b)] == ["PENDING", "ADMITTED", "RUNNING", "SUCCEEDED"], _states(b)
    b_admitted = _time_of(b, "ADMITTED")
    assert _time_of(a, "PREEMPTED") <= b_admitted < _time_of(a, "RUNNING", nth=1) < _time_of(a, "SUCCEEDED")
    # ... and A came back only once B was done with the room.
    assert _time_of(b, "SUCCEEDED") <= _time_of(a, "ADMITTED", nth=1)

    # `mlmesh jobs watch` shows each job's end (and exits for a finished job): a named job is
    # watched in its own team, so the admin needs `--team` for neither; an unknown id is an error.
    for job, team in ((a, ("--team", "team-a")), (b, ())):
        watched = mesh.ok("jobs", "watch", job["meta"]["id"], *team, timeout=30).stdout
        assert "SUCCEEDED" in watched, watched
    unknown = mesh.run("jobs", "watch", "j0123456789abcde", timeout=30)
    assert unknown.returncode != 0 and "j0123456789abcde not found" in unknown.stderr, unknown

    # The queues hold nothing any more.
    queues = {q["meta"]["id"]: q for q in mesh.json("queues", "list")["queues"]}
    for name in ("team-a", "team-b"):
        assert int(queues[name]["status"].get("used", {}).get("cpu_millis", 0)) == 0, queues[name]


def test_causal_lm_finetune_succeeds_and_registers_a_model(mesh: Mesh):
    mesh.ensure_queue("platform", "platform")  # the admin's team: `mlmesh up`'s token
    done = mesh.ok("submit", str(EXAMPLES / "causal-lm-finetune.yaml"), "--watch", timeout=270)
    job_id = re.search(r"\b(j[0-9a-f]{15})\b", done.stdout).group(1)
    job = mesh.job(job_id)
    assert job["status"]["state"] == "JOB_STATE_SUCCEEDED", job["status"]
    assert job["status"]["attempt"] == 1
    out = job["status"]["outputs"]
    assert out["model_name"] == "forecasts-lm" and out["model_version"], out
    assert out["checkpoint_artifact_id"], out

    version = mesh.json("models", "get", f"forecasts-lm:{out['model_version']}")
    assert version["task"] == "MODEL_TASK_TEXT_GENERATION"
    assert version["weights_kind"] == "WEIGHTS_KIND_ADAPTER" and version["base_model"] == "builtin:gpt2-tiny"
    assert "candidate" in version["aliases"]
    assert version["lineage"]["job_id"] == job_id
    metrics = version["metrics"]
    # Random init starts near ln(vocab) = ln(30522) ~ 10.3; 40 LoRA steps bring it down somewhat.
    assert math.isfinite(metrics["eval_loss"]) and metrics["loss"] < 10.0, metrics
    assert mesh.json("models", "get", "forecasts-lm@candidate")["version"] == out["model_version"]


@pytest.mark.parametrize("path", JOB_FILES, ids=[str(p.relative_to(EXAMPLES)) for p in JOB_FILES])
def test_every_example_parses_and_passes_a_dry_run(mesh: Mesh, path: Path):
    spec = load_job_spec(path)
    assert spec.name and spec.kind
    for name, team in (("platform", "platform"), ("team-a", "team-a"), ("team-b", "team-b")):
        mesh.ensure_queue(name, team)
    done = mesh.ok("submit", str(path), "--dry-run")
    assert "valid" in done.stdout + done.stderr, done.stdout + done.stderr


def test_nodes_list_prints_the_local_node_as_a_table(mesh: Mesh):
    listed = mesh.ok("nodes", "list")
    assert "READY" in listed.stdout.upper() and "local" in listed.stdout  # `mlmesh up` labels its node zone=local
