"""One admission cycle: order, quota, placement, backfill reservations and preemption. Pure, no I/O.

Order: priority value (higher first, across all queues); within a priority, the queue with the lowest
dominant-resource share per weight (recomputed after each admission; shares are per queue, the normal
setup being one queue per team); within a queue, submit order `seq`. A job that cannot be admitted is
recorded in `blocked` and the cycle goes on with the jobs behind it (no head-of-line blocking).

Jobs that would borrow (above nominal, within the borrowing limit) go in a second pass, in the same
order, after every job that stays within its queue's nominal quota: quota is lent only while its
owner does not want it. (A queue leaves the first pass at its first job that would borrow, and the
jobs behind that one wait for the second pass too, which keeps the first pass's cost independent of
queue depth.)
Without this, a job preempted to reclaim borrowed quota was re-admitted, borrowing, into the room
its preemption had just freed (equal priority and an earlier submit, or a higher priority), and
preempted again, until `max_preemptions_per_job` made it immune and the owner waited.

For each job, in that order:
1. quota (`quota.QuotaBook`): blocked with QUOTA;
2. placement on the free capacity: admitted, reserved in `inv`, charged to `queues[...].used`;
3. otherwise, if its class may preempt: when the victims already stopping would make room it waits
   (PREEMPTION_IN_PROGRESS); else it picks a minimal victim set (`preemption.VictimFinder`), emits the
   preemptions and waits (PREEMPTION_IN_PROGRESS; it is admitted by a later cycle, after they stop);
4. otherwise blocked: RESERVATION when the free room it lacks is held for an earlier job, else NO_FIT.

Backfill reservations: the first NO_FIT job of each priority level reserves the nodes where it would
fit soonest (`placement.plan_reservation`). Every job after it in this cycle (any priority) must place
outside those nodes, so smaller jobs backfill around it without delaying it. The nodes a preemptor will
take are held the same way. Reservations live for one cycle (the next cycle computes them again) and
`inv` has none left when `run_cycle` returns.

Cost per examined job is O(1) dictionary work plus one indexed gang search; a NoFit is remembered per
request shape for the cycle (free capacity only shrinks during a cycle), so a deep queue of jobs that
do not fit costs a lookup each. Setup is one pass over a `pending` list, none for `PendingQueues`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from mlmesh.scheduler.domain.inventory import Inventory
from mlmesh.scheduler.domain.model import (
    Admission,
    Blocked,
    BlockKind,
    CycleResult,
    GangRequest,
    PendingJob,
    Placement,
    Preemption,
    QueueState,
    Res,
    RunningJob,
)
from mlmesh.scheduler.domain.pending import PendingQueues, group_list
from mlmesh.scheduler.domain.placement import diagnose, find_placement, plan_reservation
from mlmesh.scheduler.domain.preemption import VictimFinder
from mlmesh.scheduler.domain.quota import QuotaBook

__all__ = ["PendingQueues", "run_cycle"]

_Stream = tuple[str, PendingJob, Iterator[PendingJob]]  # a queue's next job, and the rest in order
_RESERVATION_TRIES_PER_LEVEL = 4  # NO_FIT jobs per priority level that may try to place a reservation


def run_cycle(
    inv: Inventory,
    queues: dict[str, QueueState],
    pending: list[PendingJob] | PendingQueues,
    running: list[RunningJob],
    *,
    max_admissions: int | None = None,
    preempting: frozenset[str] = frozenset(),
    max_preemptions_per_job: int = 3,
) -> CycleResult:
    """Admit what fits, preempt where allowed, and say why every other examined job waits.

    Mutates `inv` (reserves admitted placements) and `queues[*].used` (charges admissions). Jobs the
    cycle did not reach because `max_admissions` was reached are in neither `admitted` nor `blocked`:
    they wait in queue order (QUEUE_ORDER); listing them here would cost O(pending) per cycle.
    `pending`: a list (grouped in one pass per cycle; cheapest in `seq` order) or a `PendingQueues`
    the caller keeps across cycles (no per-cycle pass: cost independent of queue depth).
    """
    cycle = _Cycle(inv, queues, running, preempting, max_preemptions_per_job)
    try:
        cycle.run(pending, max_admissions)
    finally:
        inv.include(cycle.fenced)  # reservations are per cycle
    return cycle.result


class _Cycle:
    def __init__(
        self,
        inv: Inventory,
        queues: dict[str, QueueState],
        running: list[RunningJob],
        preempting: frozenset[str],
        max_preemptions_per_job: int,
    ) -> None:
        self.inv = inv
        self.queues = queues
        self.running = running
        self.preempting = preempting
        self.max_preemptions = max_preemptions_per_job
        self.quota = QuotaBook(queues, inv.total_allocatable())
        self.result = CycleResult()
        self.fenced: dict[str, None] = {}  # nodes held this cycle (reservations, preemptors' targets)
        # NoFit per request shape: a NoFit stays one as capacity only shrinks during a cycle. Cleared
        # when a reservation is placed (jobs behind it must say RESERVATION); a preemptor's fence
        # leaves it, so some reasons may count those nodes as free: a cheap, slightly stale answer.
        self.nofit: dict[GangRequest, Blocked] = {}
        self.over_quota: dict[tuple[str, Res], Blocked] = {}  # headroom only shrinks during a cycle
        self.reservation_tries: dict[int, int] = {}  # priority -> tries; -1 once it holds a reservation
        self._victims: VictimFinder | None = None

    # ---- order -------------------------------------------------------------------------------------

    def run(self, pending: list[PendingJob] | PendingQueues, max_admissions: int | None) -> None:
        levels = pending.levels() if isinstance(pending, PendingQueues) else group_list(pending)
        budget = len(pending) if max_admissions is None else max_admissions
        borrowers: dict[int, list[_Stream]] = {}
        for priority in sorted(levels, reverse=True):
            streams = []
            for name, jobs in levels[priority].items():
                it = iter(jobs)
                job = next(it, None)
                if job is not None:
                    streams.append((name, job, it))
            if not self._drain(streams, budget, borrowers.setdefault(priority, [])):
                return
        for priority in sorted(borrowers, reverse=True):
            if not self._drain(borrowers[priority], budget, None):
                return

    def _drain(self, streams: list[_Stream], budget: int, borrowers: list[_Stream] | None) -> bool:
        """Consider one priority level's jobs in DRF order; False once `budget` admissions are made.
        With `borrowers` given (the first pass), a queue whose next job would borrow stops there and
        is put in `borrowers` as it stands: O(queues), however deep the queues are."""
        admitted = self.result.admitted
        share = self._share
        heap = [(share(name), name, job, it) for name, job, it in streams]  # (share, name) is unique
        heapq.heapify(heap)
        while heap:
            if len(admitted) >= budget:
                return False
            _, name, job, it = heapq.heappop(heap)
            if borrowers is not None and self._would_borrow(job):
                borrowers.append((name, job, it))
                continue
            self._consider(job)
            job = next(it, None)
            if job is not None:
                # Only this queue's share changed, so every other heap key is still current.
                heapq.heappush(heap, (share(name), name, job, it))
        return True

    def _would_borrow(self, job: PendingJob) -> bool:
        """Above the queue's nominal quota but within its borrowing limit (a job beyond the limit
        never borrows: it waits on quota, or preempts within its queue, in the first pass)."""
        q = self.queues.get(job.queue)
        if q is None:
            return False
        new = q.used + job.request.total
        return not new.fits_in(q.nominal) and new.fits_in(q.nominal + q.borrowing_limit)

    def _share(self, name: str) -> float:
        q = self.queues.get(name)
        return self.quota.share(q) if q is not None else 0.0

    # ---- one job -----------------------------------------------------------------------------------

    def _consider(self, job: PendingJob) -> None:
        blocked = self.result.blocked
        q = self.queues.get(job.queue)
        if q is None:
            blocked[job.id] = Blocked(BlockKind.QUOTA, f"queue {job.queue} does not exist")
            return
        req = job.request
        total = req.total
        why = self.over_quota.get((q.name, total))
        if why is None:
            why = self.quota.check(q, total)
        if why is not None:
            # A higher-priority job held back by its own queue's quota takes it from the queue's
            # lower-priority jobs (checkpoint, then stop); other queues are never touched for this.
            if not (job.can_preempt and self._preempt_in_queue(job, q)):
                blocked[job.id] = self.over_quota.setdefault((q.name, total), why)
            return
        why = self.nofit.get(req)
        if why is None:
            placement = find_placement(self.inv, req)
            if placement is not None:
                self._admit(job, q, placement)
                return
        if job.can_preempt and self._preempt_for(job, q):
            return
        if why is None:
            why = self._no_fit(job)
        blocked[job.id] = why

    def _admit(self, job: PendingJob, q: QueueState, placement: Placement) -> None:
        self.inv.reserve(placement, job.request.per_worker)
        borrowing = self.quota.charge(q, job.request.total)
        self.result.admitted.append(Admission(job.id, placement, borrowing))

    def _no_fit(self, job: PendingJob) -> Blocked:
        """Why the job does not fit; may place this priority level's reservation. Cached per shape."""
        req = job.request
        d = diagnose(self.inv, req)
        rejections = d.nofit.rejections
        if d.hostable < req.workers <= d.hostable + d.reserved:
            why = Blocked(BlockKind.RESERVATION, f"room is reserved for an earlier job: {d.nofit.message}", req.total)
        else:
            why = Blocked(BlockKind.NO_FIT, d.nofit.message, req.total, rejections=rejections)
            tries = self.reservation_tries.get(job.priority, 0)
            if tries >= 0 and tries < _RESERVATION_TRIES_PER_LEVEL:
                nodes = plan_reservation(self.inv, req)
                if nodes:
                    self.reservation_tries[job.priority] = -1
                    self._fence(nodes)
                    self.nofit.clear()  # explanations must now count these nodes as reserved
                    # Not cached: the next job of this shape is behind the reservation and must say so.
                    return Blocked(
                        BlockKind.NO_FIT,
                        f"{d.nofit.message}; {len(nodes)} nodes reserved for it",
                        req.total,
                        rejections=rejections,
                    )
                self.reservation_tries[job.priority] = tries + 1
        self.nofit[req] = why
        return why

    def _preempt_for(self, job: PendingJob, q: QueueState) -> bool:
        """True when the job now waits for preemption (new victims or ones already stopping)."""
        if self._victims is None:
            self._victims = VictimFinder(self.inv, self.queues, self.running, self.preempting, self.max_preemptions)
        finder = self._victims
        target = finder.fit_after_stopping(job)
        if target is not None:
            self._fence(nid for nid, _ in target.assignments)
            self.result.blocked[job.id] = Blocked(
                BlockKind.PREEMPTION_IN_PROGRESS, "waiting for preempted jobs to stop", job.request.total
            )
            return True
        plan = finder.plan(job, q)
        if plan is None:
            return False
        self._fence(nid for nid, _ in plan.target.assignments)
        for victim, reason in plan.victims:
            self.result.preempted.append(Preemption(victim.id, job.id, reason))
        names = ", ".join(v.id for v, _ in plan.victims)
        self.result.blocked[job.id] = Blocked(
            BlockKind.PREEMPTION_IN_PROGRESS, f"preempting {names} to make room", job.request.total
        )
        return True

    def _preempt_in_queue(self, job: PendingJob, q: QueueState) -> bool:
        """True when the job now waits for lower-priority jobs of its queue to stop."""
        if self._victims is None:
            self._victims = VictimFinder(self.inv, self.queues, self.running, self.preempting, self.max_preemptions)
        plan = self._victims.plan_in_queue(job, q, self.quota)
        if plan is None:
            return False
        self._fence(nid for nid, _ in plan.target.assignments)
        for victim, reason in plan.victims:
            self.result.preempted.append(Preemption(victim.id, job.id, reason))
        names = ", ".join(v.id for v, _ in plan.victims) or "jobs already stopping"
        self.result.blocked[job.id] = Blocked(
            BlockKind.PREEMPTION_IN_PROGRESS, f"queue quota: waiting for {names} to stop", job.request.total
        )
        return True

    def _fence(self, node_ids) -> None:
        new = [nid for nid in node_ids if nid not in self.fenced and not self.inv.is_excluded(nid)]
        if new:
            self.fenced.update(dict.fromkeys(new))
            self.inv.exclude(new)
