"""Job spec validation: one field violation per bad field, so a user fixes everything in one go.

Pure: the caller passes what it knows about queues and priority classes. Limits reject "absurd"
requests early (a typo of 8000 GPUs per worker), long before placement would say "no fit".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.common.clock import valid_duration_s
from mlmesh.scheduler.domain import control_steps
from mlmesh.scheduler.domain.pipeline import find_cycle

K = job_pb2.JobKind
ID = re.compile(r"[a-z0-9_-]{1,63}")
LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MODEL_REF = re.compile(
    r"(model://[a-z0-9_-]{1,63}@[a-z0-9_.-]{1,63}|artifact://[a-z0-9_-]{1,63}|file:///.+|builtin:[a-z0-9_.-]{1,63})"
)
DATASET_REF = re.compile(r"(artifact://[a-z0-9_-]{1,63}|file:///.+|builtin:[a-z0-9_.-]{1,63})")

MAX_WORKERS = 4096
MAX_GPUS_PER_WORKER = 64
MAX_CPU_MILLIS_PER_WORKER = 512_000
MAX_MEMORY_PER_WORKER = 8 << 40  # 8 TiB
MAX_LABELS = 64
MAX_RETRIES = 20
MAX_BACKOFF_S = 7 * 86400
MAX_PIPELINE_STEPS = 100
MAX_COMMAND_BYTES = 64 << 10
MAX_STRING = 4096

WORKER_KINDS = frozenset({K.JOB_KIND_TRAIN, K.JOB_KIND_FINETUNE, K.JOB_KIND_COMMAND})


@dataclass(frozen=True)
class Catalog:
    """What validation needs to know: queue name -> owning team, and priority class names."""

    queues: dict[str, str]
    priority_classes: frozenset[str]


def validate_spec(
    spec: job_pb2.JobSpec, catalog: Catalog, prefix: str = "spec", steps: dict[str, job_pb2.JobSpec] | None = None
) -> dict[str, str]:
    """Field path -> problem, for every problem found; empty when the spec is valid.

    Expects `team` and `queue` already resolved (defaults filled by the caller). `steps`: the
    pipeline's step specs by name, when `spec` is one of them."""
    bad: dict[str, str] = {}
    f = f"{prefix}."
    if not ID.fullmatch(spec.name):
        bad[f + "name"] = "must be 1-63 characters of [a-z0-9_-]"
    if spec.kind == K.JOB_KIND_UNSPECIFIED or spec.kind not in K.values():
        bad[f + "kind"] = "must be one of train, finetune, command, pipeline, register_model, deploy_model"
    if not ID.fullmatch(spec.team):
        bad[f + "team"] = "must be 1-63 characters of [a-z0-9_-]"
    if spec.kind != K.JOB_KIND_PIPELINE:
        # Another team's queue reads exactly like one that does not exist: its name must not leak.
        if catalog.queues.get(spec.queue) != spec.team:
            bad[f + "queue"] = (
                f"team {spec.team} has no queue {spec.queue!r}"
                if spec.queue
                else "no queue given and the team has no default"
            )
        if spec.priority_class and spec.priority_class not in catalog.priority_classes:
            bad[f + "priority_class"] = f"unknown priority class {spec.priority_class!r}"
    _labels(spec.labels, f + "labels", bad)
    _retry(spec.retry, f + "retry", bad)
    if spec.HasField("max_runtime") and (valid_duration_s(spec.max_runtime) or 0) <= 0:
        bad[f + "max_runtime"] = "must be a positive duration"
    every = valid_duration_s(spec.checkpoint.every_interval)
    if every is None or every < 0:  # telemetry and the trainer convert it; a bad one broke them
        bad[f + "checkpoint.every_interval"] = "must be a duration, 0 or more"
    if spec.kind in WORKER_KINDS:
        _workers(spec.workers, f + "workers", bad)
        _selector(spec.accelerator, f + "accelerator", bad)
    elif spec.HasField("workers") and spec.workers.count and spec.kind not in control_steps.CONTROL_KINDS:
        bad[f + "workers"] = "only train, finetune and command jobs have workers"
    if spec.kind == K.JOB_KIND_COMMAND:
        _command(spec.command, f + "command", bad)
    if spec.kind in (K.JOB_KIND_TRAIN, K.JOB_KIND_FINETUNE):
        _trainer(spec, f + "trainer", bad)
    if spec.kind == K.JOB_KIND_PIPELINE:
        _pipeline(spec, catalog, f + "pipeline", bad)
    if spec.kind in control_steps.CONTROL_KINDS:
        bad.update(control_steps.validate(spec, f, steps))
    return bad


def _labels(labels, field: str, bad: dict[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        bad[field] = f"at most {MAX_LABELS} labels"
        return
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key) or len(key) > 253:
            bad[f"{field}[{key[:40]}]"] = "label keys are [prefix/]name of letters, digits, -_. (63 max)"
        elif len(value) > 63:
            bad[f"{field}[{key}]"] = "label values are at most 63 characters"


def _retry(retry: job_pb2.RetryPolicy, field: str, bad: dict[str, str]) -> None:
    if not 0 <= retry.max_retries <= MAX_RETRIES:
        bad[field + ".max_retries"] = f"must be 0-{MAX_RETRIES}"
    if retry.backoff_multiplier and retry.backoff_multiplier < 1:
        bad[field + ".backoff_multiplier"] = "must be >= 1"
    for name in ("initial_backoff", "max_backoff"):
        # The controller adds a backoff to the clock: past MAX_BACKOFF_S it could leave the calendar.
        seconds = valid_duration_s(getattr(retry, name))
        if seconds is None or not 0 <= seconds <= MAX_BACKOFF_S:
            bad[f"{field}.{name}"] = f"must be 0-{MAX_BACKOFF_S // 86400} days"


def _workers(w: job_pb2.WorkerResources, field: str, bad: dict[str, str]) -> None:
    if not 1 <= w.count <= MAX_WORKERS:
        bad[field + ".count"] = f"must be 1-{MAX_WORKERS}"
    r = w.resources
    if not 0 <= r.gpus <= MAX_GPUS_PER_WORKER:
        bad[field + ".resources.gpus"] = f"must be 0-{MAX_GPUS_PER_WORKER} per worker"
    if not 0 <= r.cpu_millis <= MAX_CPU_MILLIS_PER_WORKER:
        bad[field + ".resources.cpu_millis"] = f"must be 0-{MAX_CPU_MILLIS_PER_WORKER} per worker"
    if not 0 <= r.memory_bytes <= MAX_MEMORY_PER_WORKER:
        bad[field + ".resources.memory_bytes"] = "must be 0-8 TiB per worker"
    if r.gpus == 0 and r.cpu_millis == 0 and field + ".resources.gpus" not in bad:
        bad[field + ".resources"] = "request at least one GPU or some CPU per worker"


def _selector(sel: job_pb2.AcceleratorSelector, field: str, bad: dict[str, str]) -> None:
    if sel.min_gpu_memory_bytes < 0:
        bad[field + ".min_gpu_memory_bytes"] = "must not be negative"
    for i, model in enumerate(sel.gpu_models):
        if not model or len(model) > 63:
            bad[f"{field}.gpu_models[{i}]"] = "must be 1-63 characters"


def _command(cmd: job_pb2.CommandSpec, field: str, bad: dict[str, str]) -> None:
    if not cmd.command:
        bad[field + ".command"] = "command jobs need an argv, e.g. ['python', 'prep.py']"
    size = sum(len(a) for a in cmd.command) + sum(len(k) + len(v) for k, v in cmd.env.items())
    if size > MAX_COMMAND_BYTES:
        bad[field] = f"argv and env together must be under {MAX_COMMAND_BYTES} bytes"
    for key in cmd.env:
        if not ENV_KEY.fullmatch(key):
            bad[f"{field}.env[{key[:40]}]"] = "environment names are [A-Za-z_][A-Za-z0-9_]*"
    if len(cmd.image) > MAX_STRING or len(cmd.working_dir) > MAX_STRING:
        bad[field] = "image and working_dir must be under 4096 characters"


def _trainer(spec: job_pb2.JobSpec, field: str, bad: dict[str, str]) -> None:
    t = spec.trainer
    if not MODEL_REF.fullmatch(t.model):
        bad[field + ".model"] = "must be model://name@version, artifact://id, file:///path or builtin:name"
    if spec.kind == K.JOB_KIND_FINETUNE and not t.dataset:
        bad[field + ".dataset"] = "fine-tuning needs a dataset"
    elif t.dataset and not DATASET_REF.fullmatch(t.dataset):
        bad[field + ".dataset"] = "must be artifact://id, file:///path or builtin:name"
    h = t.hyperparameters
    if h.learning_rate < 0 or h.learning_rate > 10:
        bad[field + ".hyperparameters.learning_rate"] = "must be in [0, 10]"
    if h.epochs < 0 or h.max_steps < 0 or h.global_batch_size < 0 or h.max_seq_length < 0:
        bad[field + ".hyperparameters"] = "epochs, max_steps, global_batch_size and max_seq_length must not be negative"
    if t.output_model_name and not ID.fullmatch(t.output_model_name):
        bad[field + ".output_model_name"] = "must be 1-63 characters of [a-z0-9_-]"


def _pipeline(spec: job_pb2.JobSpec, catalog: Catalog, field: str, bad: dict[str, str]) -> None:
    steps = spec.pipeline.steps
    if not 1 <= len(steps) <= MAX_PIPELINE_STEPS:
        bad[field + ".steps"] = f"a pipeline has 1-{MAX_PIPELINE_STEPS} steps"
        return
    names = [s.name for s in steps]
    deps: dict[str, list[str]] = {}
    for i, step in enumerate(steps):
        sf = f"{field}.steps[{i}]"
        if not ID.fullmatch(step.name):
            bad[sf + ".name"] = "must be 1-63 characters of [a-z0-9_-]"
        elif names.count(step.name) > 1:
            bad[sf + ".name"] = f"duplicate step name {step.name!r}"
        for d in step.depends_on:
            if d not in names:
                bad[sf + ".depends_on"] = f"unknown step {d!r}"
            elif d == step.name:
                bad[sf + ".depends_on"] = "a step cannot depend on itself"
        deps[step.name] = list(step.depends_on)
        if step.spec.kind == K.JOB_KIND_PIPELINE:
            bad[sf + ".spec.kind"] = "pipelines cannot be nested"
            continue
        child = job_pb2.JobSpec()
        child.CopyFrom(step.spec)
        child.team = spec.team
        child.queue = child.queue or spec.queue
        if not child.name:
            child.name = step.name
        bad.update(validate_spec(child, catalog, prefix=sf + ".spec", steps={s.name: s.spec for s in steps}))
    cycle = find_cycle(deps)
    if cycle:
        bad[field + ".steps"] = "dependency cycle: " + " -> ".join(cycle)
