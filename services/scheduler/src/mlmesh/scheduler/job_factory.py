"""Building job records from a submitted spec: ids, server defaults, pipeline children."""

from __future__ import annotations

import hashlib
import uuid

from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2
from mlmesh.scheduler.domain import states
from mlmesh.scheduler.transitions import now_ts

K = job_pb2.JobKind

# Without a named class: training work outranks inference, which outranks preprocessing.
KIND_DEFAULT_CLASS = {
    K.JOB_KIND_TRAIN: "training",
    K.JOB_KIND_FINETUNE: "training",
    K.JOB_KIND_COMMAND: "preprocessing",
    K.JOB_KIND_PIPELINE: "training",
}

DEFAULT_PRIORITY_CLASSES = (
    queue_pb2.PriorityClass(
        name="training",
        value=1000,
        preemption_policy=queue_pb2.PREEMPTION_POLICY_PREEMPT_LOWER_PRIORITY,
        description="training and fine-tuning (default for train/finetune jobs)",
    ),
    queue_pb2.PriorityClass(
        name="inference",
        value=500,
        preemption_policy=queue_pb2.PREEMPTION_POLICY_PREEMPT_LOWER_PRIORITY,
        description="batch inference",
    ),
    queue_pb2.PriorityClass(
        name="preprocessing",
        value=100,
        preemption_policy=queue_pb2.PREEMPTION_POLICY_NEVER,
        description="data preparation (default for command jobs)",
    ),
)


def new_job_id(team: str, request_id: str = "") -> str:
    """Random, or derived from the idempotency key so a retried submit names the same job."""
    if request_id:
        return "j" + hashlib.sha256(f"{team}/{request_id}".encode()).hexdigest()[:15]
    return "j" + uuid.uuid4().hex[:15]


def default_priority_class(spec: job_pb2.JobSpec, classes: dict[str, queue_pb2.PriorityClass], queue_default: str):
    if spec.priority_class:
        return spec.priority_class
    if queue_default:
        return queue_default
    for pc in classes.values():
        if pc.global_default:
            return pc.name
    return KIND_DEFAULT_CLASS.get(spec.kind, "")


def new_job(spec: job_pb2.JobSpec, job_id: str, created_by: str) -> job_pb2.Job:
    now = now_ts()
    job = job_pb2.Job()
    job.meta.id = job_id
    job.meta.team = spec.team
    job.meta.labels.update(spec.labels)
    job.meta.create_time.CopyFrom(now)
    job.meta.update_time.CopyFrom(now)
    job.meta.created_by = created_by
    job.spec.CopyFrom(spec)
    job.status.state = states.PENDING
    job.status.reason = "Submitted"
    job.status.attempt = 1
    job.status.last_transition_time.CopyFrom(now)
    job.status.history.add(
        from_state=job_pb2.JOB_STATE_UNSPECIFIED,
        to_state=states.PENDING,
        reason="Submitted",
        attempt=1,
        transition_time=now,
    )
    if spec.kind == K.JOB_KIND_PIPELINE:
        for step in spec.pipeline.steps:
            job.status.steps.add(name=step.name, job_id=f"{job_id}-{step.name}", state=states.PENDING)
    return job


def child_spec(parent: job_pb2.Job, step: job_pb2.PipelineStep) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec()
    spec.CopyFrom(step.spec)
    spec.team = parent.meta.team
    spec.queue = spec.queue or parent.spec.queue
    spec.priority_class = spec.priority_class or parent.spec.priority_class
    spec.name = spec.name or step.name
    for k, v in parent.spec.labels.items():
        spec.labels.setdefault(k, v)
    return spec


def child_job_id(parent_id: str, step: str) -> str:
    return f"{parent_id}-{step}"


def build_child(parent: job_pb2.Job, step: job_pb2.PipelineStep) -> job_pb2.Job:
    child = new_job(child_spec(parent, step), child_job_id(parent.meta.id, step.name), parent.meta.created_by)
    child.parent_job_id = parent.meta.id
    child.pipeline_step = step.name
    child.status.traceparent = parent.status.traceparent  # one trace for the whole pipeline
    return child
