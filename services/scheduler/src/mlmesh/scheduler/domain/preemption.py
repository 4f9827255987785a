"""Choosing preemption victims: a minimal set, cheapest first, found by what-if release and place.

Who may be a victim of pending job P:
- a job of strictly lower priority ("HigherPriority"); when P would borrow (take its queue above
  nominal), only one of P's own queue or of a queue that itself borrows: a queue's nominal quota is
  guaranteed, and taking it for borrowed quota would be reclaimed at once (a preemption loop);
- a job of another queue admitted on borrowed quota (`borrowing`), whose queue still holds more than
  its nominal quota, when P's own queue stays within nominal after admitting P ("ReclaimQuota");
  only here may the victim's priority be equal or higher.
Never: jobs already stopping (`preempting`), jobs chosen earlier this cycle, jobs preempted
`max_preemptions_per_job` times already. Together these rules rule out preemption loops.

How: with the jobs already stopping counted as gone (their room is coming), release candidates one by
one (lowest priority, then latest admitted, first) until P fits; then take each chosen victim back,
most valuable first, and keep it running if P still fits (so no victim is superfluous). The inventory
is restored before returning.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlmesh.scheduler.domain.inventory import Inventory
from mlmesh.scheduler.domain.model import ZERO, GangRequest, PendingJob, Placement, QueueState, Res, RunningJob
from mlmesh.scheduler.domain.placement import eligibility, find_placement
from mlmesh.scheduler.domain.quota import QuotaBook

MAX_CANDIDATES = 128  # victims released per attempt; bounds the work one preemptor can cause


@dataclass(frozen=True, slots=True)
class PreemptionPlan:
    victims: tuple[tuple[RunningJob, str], ...]  # (victim, reason)
    target: Placement  # where the preemptor fits once the victims are gone


class VictimFinder:
    """Per-cycle preemption state over the running jobs."""

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
        self.taken: dict[str, None] = {}  # victims chosen this cycle
        self._reclaimed: dict[str, Res] = {}  # usage of this cycle's victims, per queue
        self._failed: dict[tuple, int] = {}  # shape -> fewest workers that found no victim set
        self._no_fit_after_stopping: set[GangRequest] = set()
        self._queue_failed: set[tuple] = set()  # (queue, priority, request) with no in-queue victim set
        self._by_queue: dict[str, list[RunningJob]] | None = None
        known = inv.nodes
        usable = [r for r in running if all(nid in known for nid, _ in r.placement)]
        self._stopping = [r for r in usable if r.id in preempting]
        # Built once per cycle, only when some job needs preemption: O(running log running).
        self._candidates = sorted(
            (r for r in usable if r.id not in preempting and r.preemption_count < max_preemptions_per_job),
            key=lambda r: (r.priority, -r.admitted_seq, r.id),
        )

    def fit_after_stopping(self, job: PendingJob) -> Placement | None:
        """Where the job fits once the victims already stopping have released (None: they won't suffice)."""
        if not self._stopping or job.request in self._no_fit_after_stopping:
            return None
        inv = self.inv
        for r in self._stopping:
            inv.release(r.placement, r.per_worker)
        try:
            found = find_placement(inv, job.request)
        finally:
            for r in reversed(self._stopping):
                inv.reserve(r.placement, r.per_worker)
        if found is None:  # capacity only shrinks during a cycle: remember
            self._no_fit_after_stopping.add(job.request)
        return found

    def plan(self, job: PendingJob, queue: QueueState) -> PreemptionPlan | None:
        """A minimal victim set after which the job fits, or None."""
        req = job.request
        reclaim = (queue.used + req.total).fits_in(queue.nominal)
        # Failures are remembered per shape without the worker count: candidates only shrink during a
        # cycle, so a gang no smaller than one that failed fails too. The queue matters to reclaim only.
        key = (
            req.per_worker,
            req.gpu_models,
            req.min_gpu_memory_bytes,
            req.match_labels,
            req.match_expressions,
            req.pool_preference,
            req.allow_spot,
            req.required_level,
            job.priority,
            job.queue,  # own-queue victims, and reclaim, depend on it
            reclaim,
        )
        if req.workers >= self._failed.get(key, 1 << 62):
            return None
        inv = self.inv
        classes = eligibility(inv, req).eligible
        eligible = {cls.ordinal for cls in classes}
        zones = [z for cls in classes for z in cls.zones]
        gpus = req.per_worker.gpus

        def may_fit() -> bool:
            """Cheap necessary condition (GPUs alone, any topology) before a real search."""
            if gpus <= 0:
                return True
            return gpus <= inv.max_gpus and sum(z.caps[gpus] for z in zones) >= req.workers

        chosen: list[tuple[RunningJob, str]] = []
        reclaimed_now: dict[str, Res] = {}
        fits = False
        for r in self._stopping:  # their room is coming anyway: count it, choose victims for the rest
            inv.release(r.placement, r.per_worker)
        try:
            for v in self._candidates:
                if v.priority >= job.priority and not reclaim:
                    break  # sorted by priority: no lower-priority candidates are left
                if v.id in self.taken:
                    continue
                reason = self._reason(job, v, reclaim, reclaimed_now)
                if reason is None:
                    continue
                if all(inv.class_of(nid).ordinal not in eligible or inv.is_excluded(nid) for nid, _ in v.placement):
                    continue  # releasing it frees nothing this job could use
                inv.release(v.placement, v.per_worker)
                chosen.append((v, reason))
                reclaimed_now[v.queue] = reclaimed_now.get(v.queue, ZERO) + v.usage
                if may_fit() and find_placement(inv, req) is not None:
                    fits = True
                    break
                if len(chosen) >= MAX_CANDIDATES:
                    break
            if not fits:
                self._failed[key] = min(req.workers, self._failed.get(key, 1 << 62))
                return None
            for i in range(len(chosen) - 1, -1, -1):  # reprieve: most valuable victims first
                v = chosen[i][0]
                inv.reserve(v.placement, v.per_worker)
                if may_fit() and find_placement(inv, req) is not None:
                    chosen.pop(i)
                else:
                    inv.release(v.placement, v.per_worker)
            placement = find_placement(inv, req)
            assert placement is not None  # the last state checked was a fit
        finally:
            for v, _ in reversed(chosen):
                inv.reserve(v.placement, v.per_worker)
            for r in reversed(self._stopping):
                inv.reserve(r.placement, r.per_worker)
        for v, _ in chosen:
            self.taken[v.id] = None
            self._reclaimed[v.queue] = self._reclaimed.get(v.queue, ZERO) + v.usage
        return PreemptionPlan(tuple(chosen), placement)

    def plan_in_queue(self, job: PendingJob, queue: QueueState, quota: QuotaBook) -> PreemptionPlan | None:
        """Victims of the job's own queue, of strictly lower priority, whose release brings the job
        within the queue's quota and gives it room; `victims` is empty when jobs of this queue that
        are already stopping suffice. None when no such set exists."""
        req = job.request
        key = (job.queue, job.priority, req)
        if key in self._queue_failed:  # candidates only shrink during a cycle: it fails again
            return None
        if self._by_queue is None:
            self._by_queue = {}
            for v in self._candidates:  # already lowest priority, latest admitted first
                self._by_queue.setdefault(v.queue, []).append(v)
        stopping_usage = sum((r.usage for r in self._stopping if r.queue == job.queue), ZERO)
        pool = [v for v in self._by_queue.get(job.queue, ()) if v.priority < job.priority and v.id not in self.taken]
        inv = self.inv

        def admissible(freed: Res) -> Placement | None:
            queue.used = queue.used - freed
            try:
                within = quota.check(queue, req.total) is None
            finally:
                queue.used = queue.used + freed
            return find_placement(inv, req) if within else None

        chosen: list[RunningJob] = []
        freed = stopping_usage
        for r in self._stopping:
            inv.release(r.placement, r.per_worker)
        try:
            candidates = iter(pool)
            while (target := admissible(freed)) is None:
                v = next(candidates, None)
                if v is None or len(chosen) >= MAX_CANDIDATES:
                    self._queue_failed.add(key)
                    return None
                inv.release(v.placement, v.per_worker)
                chosen.append(v)
                freed = freed + v.usage
            for i in range(len(chosen) - 1, -1, -1):  # reprieve: keep every victim that is not needed
                v = chosen[i]
                inv.reserve(v.placement, v.per_worker)
                if (kept := admissible(freed - v.usage)) is not None:
                    chosen.pop(i)
                    freed = freed - v.usage
                    target = kept
                else:
                    inv.release(v.placement, v.per_worker)
        finally:
            for v in reversed(chosen):
                inv.reserve(v.placement, v.per_worker)
            for r in reversed(self._stopping):
                inv.reserve(r.placement, r.per_worker)
        for v in chosen:
            self.taken[v.id] = None
        return PreemptionPlan(tuple((v, "QueueQuota") for v in chosen), target)

    def _reason(self, job: PendingJob, v: RunningJob, reclaim: bool, reclaimed_now: dict[str, Res]) -> str | None:
        # `reclaim`: the preemptor stays within its queue's nominal quota; otherwise it would borrow.
        if v.priority < job.priority and (reclaim or v.queue == job.queue or self._borrows(v, reclaimed_now)):
            return "HigherPriority"
        if reclaim and v.queue != job.queue and v.borrowing and self._borrows(v, reclaimed_now):
            return "ReclaimQuota"
        return None

    def _borrows(self, v: RunningJob, reclaimed_now: dict[str, Res]) -> bool:
        """Whether the victim's queue, less this cycle's victims, still holds more than nominal: a
        queue within nominal is never taken from for another queue's reclaim or borrowing."""
        owner = self.queues.get(v.queue)
        if owner is None:
            return False
        gone = self._reclaimed.get(v.queue, ZERO) + reclaimed_now.get(v.queue, ZERO)
        return QuotaBook.above_nominal(owner, gone)
