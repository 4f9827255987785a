"""The policy's inputs, kept current from job changes instead of rebuilt every cycle.

With 100,000 queued jobs and 10,000 nodes, rebuilding pending queues, the inventory and queue usage
from scratch costs far more than admitting a batch. So this state follows each job change from the
KV index (PENDING in or out, placements held or released) and a cycle only pays for what it
admits. It is derived data: a full rebuild from the indexes (on start, when nodes, queues or
priority classes change, and periodically as a safety net) gives the same result.

A cycle's own tentative admissions are undone right after it (`undo_cycle`): the jobs' durable
ADMITTED writes then come back through the index and are applied like any other change, so the
state never counts an admission that failed to persist, nor counts one twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2
from mlmesh.common.clock import ts_ns
from mlmesh.scheduler import convert
from mlmesh.scheduler.domain import states
from mlmesh.scheduler.domain.model import CycleResult, Level, Node, Placement, PriorityClassInfo, QueueState, RunningJob
from mlmesh.scheduler.domain.pending import PendingQueues
from mlmesh.scheduler.domain.placement import Inventory
from mlmesh.scheduler.domain.validation import WORKER_KINDS

log = logging.getLogger("mlmesh.scheduler.state")

FULL_REBUILD_EVERY_S = 60.0


class SchedulingState:
    def __init__(
        self,
        priority_of: Callable[[job_pb2.Job], PriorityClassInfo],
        deps_ok: Callable[[job_pb2.Job], bool],
        siblings: Callable[[str], Iterable[job_pb2.Job]],
    ):
        self._priority_of = priority_of
        self._deps_ok = deps_ok
        self._siblings = siblings
        self.inv: Inventory | None = None
        self.queues: dict[str, QueueState] = {}
        self.pending = PendingQueues()
        self.running: dict[str, RunningJob] = {}
        self.preempting: set[str] = set()
        self.agents: dict[str, str] = {}
        self.dirty = True
        self._nodes_version: object = None
        self._rebuilt_at = 0.0

    def needs_rebuild(self, nodes_version: object) -> bool:
        return (
            self.dirty
            or nodes_version != self._nodes_version
            or time.monotonic() - self._rebuilt_at > FULL_REBUILD_EVERY_S
        )

    def rebuild(
        self,
        nodes: list[Node],
        nodes_version: object,
        jobs: Iterable[job_pb2.Job],
        queues: Iterable[queue_pb2.Queue],
    ) -> None:
        self.inv = Inventory(nodes)
        self.agents = {n.id: n.agent_address for n in nodes}
        self.queues = {q.meta.id: convert.queue_state(q) for q in queues}
        self.pending = PendingQueues()
        self.running.clear()
        self.preempting.clear()
        self.dirty = False  # before adding: a failed reserve below marks it dirty again
        for job in jobs:
            self._add(job)
        self._nodes_version = nodes_version
        self._rebuilt_at = time.monotonic()

    # --- incremental updates -------------------------------------------------------------------

    def on_job_change(self, before: job_pb2.Job | None, after: job_pb2.Job | None) -> None:
        if self.inv is None or self.dirty:
            return  # the next rebuild covers it
        job_id = (after or before).meta.id
        self._remove(job_id)
        if after is not None:
            self._add(after)
        parent = (after or before).parent_job_id
        if parent:  # a step finishing can make its siblings admissible
            for sibling in self._siblings(parent):
                if sibling.meta.id != job_id and sibling.meta.id not in self.pending:
                    self._add_pending(sibling)

    def _add(self, job: job_pb2.Job) -> None:
        st = job.status.state
        if st in states.HOLDING and job.status.placement.nodes:
            rj = convert.running_job(job, self._priority_of(job).value, ts_ns(job.status.admit_time))
            try:
                self.inv.reserve(Placement(rj.placement, Level.UNSPECIFIED, 0.0), rj.per_worker)
            except (KeyError, ValueError) as exc:
                # A node vanished or shrank under a running job: rebuild rather than guess.
                log.warning("job %s holds resources that no longer fit its nodes (%s)", job.meta.id, exc)
                self.dirty = True
                return
            self.running[rj.id] = rj
            if rj.queue in self.queues:
                q = self.queues[rj.queue]
                q.used = q.used + rj.usage
            if st == states.PREEMPTED:
                self.preempting.add(rj.id)
        else:
            self._add_pending(job)

    def _add_pending(self, job: job_pb2.Job) -> None:
        if job.status.state == states.PENDING and job.spec.kind in WORKER_KINDS and self._deps_ok(job):
            self.pending.add(convert.pending_job(job, self._priority_of(job), ts_ns(job.meta.create_time)))

    def _remove(self, job_id: str) -> None:
        self.pending.remove(job_id)
        rj = self.running.pop(job_id, None)
        self.preempting.discard(job_id)
        if rj is None:
            return
        self.inv.release(Placement(rj.placement, Level.UNSPECIFIED, 0.0), rj.per_worker)
        if rj.queue in self.queues:
            q = self.queues[rj.queue]
            q.used = (q.used - rj.usage).clamp_min_zero()

    # --- cycles --------------------------------------------------------------------------------

    def undo_cycle(self, result: CycleResult) -> None:
        """Take back what `run_cycle` reserved and charged for its admissions."""
        for adm in result.admitted:
            job = self.pending.get(adm.job_id)
            if job is None:
                continue
            self.inv.release(adm.placement, job.request.per_worker)
            q = self.queues.get(job.queue)
            if q is not None:
                q.used = (q.used - job.request.total).clamp_min_zero()
