"""Durable scheduler state in JetStream KV: jobs, queues, priority classes, idempotency keys and
the leader lease. Every write is compare-and-set on the revision that was read."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import wrappers_pb2
from nats.js import JetStreamContext

from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2
from mlmesh.common import contracts
from mlmesh.common.kv import KvRepository, Versioned

JOBS_BUCKET = contracts.JOBS
QUEUES_BUCKET = contracts.QUEUES
PRIORITY_CLASSES_BUCKET = contracts.PRIORITY_CLASSES
REQUESTS_BUCKET = contracts.JOB_REQUESTS
LEASE_BUCKET = contracts.SCHEDULER_LEASE


@dataclass
class SchedulerStore:
    jobs: KvRepository[job_pb2.Job]
    queues: KvRepository[queue_pb2.Queue]
    priority_classes: KvRepository[queue_pb2.PriorityClass]
    requests: KvRepository[wrappers_pb2.StringValue]
    lease: KvRepository[wrappers_pb2.StringValue]

    @classmethod
    async def open(cls, js: JetStreamContext) -> SchedulerStore:
        return cls(
            jobs=await KvRepository.open(js, JOBS_BUCKET, job_pb2.Job, "job", history=1),
            queues=await KvRepository.open(js, QUEUES_BUCKET, queue_pb2.Queue, "queue"),
            priority_classes=await KvRepository.open(
                js, PRIORITY_CLASSES_BUCKET, queue_pb2.PriorityClass, "priority class"
            ),
            requests=await KvRepository.open(js, REQUESTS_BUCKET, wrappers_pb2.StringValue, "request", history=1),
            lease=await KvRepository.open(js, LEASE_BUCKET, wrappers_pb2.StringValue, "lease", history=1),
        )

    async def save_job(self, job: job_pb2.Job, revision: int) -> Versioned[job_pb2.Job]:
        """CAS write of a job read at `revision`; the stored copy carries its new revision."""
        new = await self.jobs.update(job.meta.id, job, revision)
        job.meta.revision = new
        return Versioned(job.meta.id, job, new)

    async def create_job(self, job: job_pb2.Job) -> int:
        rev = await self.jobs.create(job.meta.id, job)
        job.meta.revision = rev
        return rev
