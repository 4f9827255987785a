"""Durable scheduler state in JetStream KV: jobs, queues, priority classes, idempotency keys and
the leader lease. Every write is compare-and-set on the revision that was read."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

from google.protobuf import wrappers_pb2
from nats.js import JetStreamContext

from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2
from mlmesh.common.errors import AlreadyExists, Conflict, NotFound
from mlmesh.common.kv import KvRepository, Versioned

JOBS_BUCKET = "jobs"
QUEUES_BUCKET = "queues"
PRIORITY_CLASSES_BUCKET = "priority_classes"
REQUESTS_BUCKET = "job_requests"
LEASE_BUCKET = "scheduler_lease"
LEASE_KEY = "leader"


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


class Lease:
    """Leader election on one KV key: a holder id and an expiry, renewed by compare-and-set.

    Only the holder acts. A replica that misses renewals loses the key to another, and its next
    CAS fails, so it stops acting; `valid()` also turns false before the expiry by a safety margin,
    since the old holder cannot know it lost until it tries to write."""

    def __init__(self, repo: KvRepository[wrappers_pb2.StringValue], holder: str, ttl_s: float = 6.0):
        self._repo = repo
        self.holder = holder
        self.ttl_s = ttl_s
        self._revision: int | None = None
        self._expires = 0.0

    def valid(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._revision is not None and now < self._expires - self.ttl_s / 3

    async def acquire_or_renew(self) -> bool:
        now = time.time()
        if self._revision is not None and now < self._expires - 2 * self.ttl_s / 3:
            return True  # renewed recently: skip two KV round trips on this cycle
        value = wrappers_pb2.StringValue(value=json.dumps({"holder": self.holder, "expires": now + self.ttl_s}))
        try:
            current = await self._repo.get(LEASE_KEY)
        except NotFound:
            try:
                self._revision = await self._repo.create(LEASE_KEY, value)
            except AlreadyExists:
                return self._lose()
            self._expires = now + self.ttl_s
            return True
        info = json.loads(current.value.value or "{}")
        if info.get("holder") != self.holder and info.get("expires", 0) > now:
            return self._lose()
        try:
            self._revision = await self._repo.update(LEASE_KEY, value, current.revision)
        except Conflict:
            return self._lose()
        self._expires = now + self.ttl_s
        return True

    async def release(self) -> None:
        if self._revision is not None:
            with contextlib.suppress(Conflict, NotFound):
                await self._repo.delete(LEASE_KEY, revision=self._revision)
        self._lose()

    def _lose(self) -> bool:
        self._revision = None
        self._expires = 0.0
        return False
