"""Job spec validation: every bad field is named, and pipelines are checked as DAGs."""

from __future__ import annotations

import pytest

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.scheduler.domain.pipeline import descendants, find_cycle, ready_steps
from mlmesh.scheduler.domain.validation import Catalog, validate_spec

pytestmark = pytest.mark.timeout(30)
CAT = Catalog(queues={"qa": "team-a", "qb": "team-b"}, priority_classes=frozenset({"training"}))


def _command(**kw) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(name="prep", kind=job_pb2.JOB_KIND_COMMAND, team="team-a", queue="qa")
    spec.workers.count = 2
    spec.workers.resources.gpus = 1
    spec.command.command.extend(["python", "prep.py"])
    for k, v in kw.items():
        setattr(spec, k, v)
    return spec


def test_valid_command_job():
    assert validate_spec(_command(), CAT) == {}


def test_every_bad_field_is_named():
    spec = _command(name="Bad Name", priority_class="nope")
    spec.workers.count = -1
    spec.workers.resources.gpus = 9000
    spec.workers.resources.memory_bytes = -5
    spec.labels["ok"] = "x" * 64
    spec.retry.max_retries = 99
    del spec.command.command[:]
    bad = validate_spec(spec, CAT)
    assert set(bad) == {
        "spec.name",
        "spec.priority_class",
        "spec.workers.count",
        "spec.workers.resources.gpus",
        "spec.workers.resources.memory_bytes",
        "spec.labels[ok]",
        "spec.retry.max_retries",
        "spec.command.command",
    }


def test_unknown_or_foreign_queue():
    assert "spec.queue" in validate_spec(_command(queue="nope"), CAT)
    assert "spec.queue" in validate_spec(_command(queue="qb"), CAT)


def test_a_foreign_queue_reads_like_a_missing_one():
    """Another team's queue must not be told apart from one that does not exist (its name leaked)."""
    foreign = validate_spec(_command(queue="qb"), CAT)["spec.queue"]
    missing = validate_spec(_command(queue="zz"), CAT)["spec.queue"]
    assert foreign.replace("qb", "zz") == missing
    assert "another team" not in foreign and "team-b" not in foreign


def test_ids_outside_the_alphabet():
    assert "spec.team" in validate_spec(_command(team="Team.A"), CAT)


def test_finetune_needs_model_and_dataset():
    spec = job_pb2.JobSpec(name="ft", kind=job_pb2.JOB_KIND_FINETUNE, team="team-a", queue="qa")
    spec.workers.count = 1
    spec.workers.resources.cpu_millis = 1000
    spec.trainer.model = "http://evil"
    bad = validate_spec(spec, CAT)
    assert {"spec.trainer.model", "spec.trainer.dataset"} <= set(bad)


def _pipeline(edges: dict[str, list[str]]) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(name="pipe", kind=job_pb2.JOB_KIND_PIPELINE, team="team-a", queue="qa")
    for name, deps in edges.items():
        step = spec.pipeline.steps.add(name=name, depends_on=deps)
        step.spec.CopyFrom(_command(name=name))
    return spec


def test_pipeline_cycle_is_rejected_naming_it():
    bad = validate_spec(_pipeline({"a": ["c"], "b": ["a"], "c": ["b"]}), CAT)
    assert "cycle" in bad["spec.pipeline.steps"] and "->" in bad["spec.pipeline.steps"]


def test_pipeline_step_errors_carry_their_path():
    spec = _pipeline({"prep": [], "train": ["prep", "ghost"]})
    spec.pipeline.steps[0].spec.workers.count = 0
    bad = validate_spec(spec, CAT)
    assert "spec.pipeline.steps[0].spec.workers.count" in bad
    assert "spec.pipeline.steps[1].depends_on" in bad


def test_nested_pipelines_and_duplicate_steps():
    spec = _pipeline({"a": [], "b": []})
    spec.pipeline.steps[1].name = "a"
    spec.pipeline.steps[0].spec.kind = job_pb2.JOB_KIND_PIPELINE
    bad = validate_spec(spec, CAT)
    assert "spec.pipeline.steps[1].name" in bad and "spec.pipeline.steps[0].spec.kind" in bad


def test_dag_helpers():
    deps = {"prep": [], "train": ["prep"], "eval": ["train"], "report": ["prep"]}
    assert find_cycle(deps) is None
    assert ready_steps(deps, succeeded=set(), started=set()) == ["prep"]
    assert ready_steps(deps, succeeded={"prep"}, started={"prep"}) == ["report", "train"]
    assert descendants(deps, "prep") == {"train", "eval", "report"}
    assert descendants(deps, "train") == {"eval"}
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    long_chain = {str(i): [str(i + 1)] for i in range(5000)}
    assert find_cycle(long_chain) is None  # no recursion limit


@pytest.mark.parametrize(
    ("field", "seconds", "nanos"),
    [
        ("max_runtime", 2**63 - 1, 0),  # ToTimedelta overflowed: INTERNAL instead of a named field
        ("max_runtime", 0, 0),
        ("retry.initial_backoff", -(2**63), 0),
        ("retry.max_backoff", 8 * 86400, 0),
        ("retry.max_backoff", 1, -1),  # signs disagree: not a Duration
        ("checkpoint.every_interval", 2**62, 0),
        ("checkpoint.every_interval", -1, 0),
    ],
)
def test_bad_durations_are_named(field, seconds, nanos):
    spec = _command()
    target = spec
    for part in field.split("."):
        target = getattr(target, part)
    target.seconds, target.nanos = seconds, nanos
    assert f"spec.{field}" in validate_spec(spec, CAT)
