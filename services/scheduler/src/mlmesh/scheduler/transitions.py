"""Apply one job transition durably: CAS write to KV first, then the CloudEvent.

The event id is `<job>-<revision>`, so re-publishing a transition after a crash between the write
and the publish is de-duplicated by JetStream inside its window, and consumers (idempotent by
contract) see the same id beyond it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.common import contracts
from mlmesh.common.clock import now_ts
from mlmesh.common.errors import Unavailable
from mlmesh.common.events import EventPublisher
from mlmesh.common.kv_index import KvIndex
from mlmesh.scheduler.adapters.store import SchedulerStore
from mlmesh.scheduler.domain import states

log = logging.getLogger("mlmesh.scheduler.transitions")


def state_subject(job: job_pb2.Job) -> str:
    return contracts.job_subject(job.meta.team, job.meta.id, contracts.JOB_STATE)


def state_event(job: job_pb2.Job) -> events_pb2.JobStateChanged:
    last = job.status.history[-1] if job.status.history else job_pb2.JobTransition(to_state=job.status.state)
    event = events_pb2.JobStateChanged(
        job_id=job.meta.id,
        team=job.meta.team,
        queue=job.spec.queue,
        kind=job.spec.kind,
        parent_job_id=job.parent_job_id,
        from_state=last.from_state,
        to_state=last.to_state,
        reason=last.reason,
        message=last.message,
        attempt=last.attempt or job.status.attempt,
        failure_class=job.status.failure_class,
        revision=job.meta.revision,
        transition_time=last.transition_time,
        labels=dict(job.meta.labels),
    )
    if job.status.state in (states.ADMITTED, states.RUNNING):
        event.placement.CopyFrom(job.status.placement)
    if job.status.state == states.SUCCEEDED:
        event.outputs.CopyFrom(job.status.outputs)
    return event


class Transitioner:
    def __init__(
        self,
        store: SchedulerStore,
        index: KvIndex[job_pb2.Job],
        publisher: EventPublisher,
        may_write: Callable[[], bool] = lambda: True,
    ):
        self._store = store
        self._index = index
        self.publisher = publisher
        self._may_write = may_write

    async def publish(self, job: job_pb2.Job) -> None:
        await self.publisher.publish(
            state_subject(job), state_event(job), ce_subject=job.meta.id, event_id=f"{job.meta.id}-{job.meta.revision}"
        )

    async def save(self, job: job_pb2.Job, revision: int, *, publish: bool = True) -> job_pb2.Job:
        """CAS-write an already-changed job, mirror it in the index, then publish its last transition."""
        if not self._may_write():
            raise Unavailable("this scheduler replica does not hold the lease")
        saved = await self._store.save_job(job, revision)
        self._index.apply(job.meta.id, saved.value, saved.revision)
        if publish:
            await self.publish(saved.value)
        return saved.value

    async def move(
        self,
        job: job_pb2.Job,
        dst: int,
        reason: str,
        message: str = "",
        *,
        workerless: bool = False,
        edit: Callable[[job_pb2.Job], None] | None = None,
    ) -> job_pb2.Job:
        """Transition `job` (as read, with meta.revision) to `dst`; Conflict if it changed meanwhile."""
        moved = states.transition(job, dst, reason, message, now=now_ts(), workerless=workerless)
        if edit is not None:
            edit(moved)
        return await self.save(moved, job.meta.revision)
