"""Pending jobs grouped the way admission reads them: priority -> queue -> jobs in submit order.

`run_cycle` accepts a plain list (it groups it in one O(pending) pass per cycle) or a `PendingQueues`
kept up to date by the caller across cycles (O(1) per add/remove, no per-cycle pass), which is what
keeps a cycle's cost independent of queue depth.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from operator import attrgetter

from mlmesh.scheduler.domain.model import PendingJob

_by_seq = attrgetter("seq")


class PendingQueues:
    """Pending jobs by priority and queue; each group iterates in `seq` order."""

    def __init__(self, jobs: Iterable[PendingJob] = ()) -> None:
        self._levels: dict[int, dict[str, dict[str, PendingJob]]] = {}
        self._where: dict[str, tuple[int, str]] = {}  # job id -> (priority, queue)
        self._last_seq: dict[tuple[int, str], int] = {}
        self._unsorted: set[tuple[int, str]] = set()  # groups that got a job out of seq order
        for job in jobs:
            self.add(job)

    def add(self, job: PendingJob) -> None:
        """Add or replace a job (a replaced job may move to another priority or queue)."""
        if job.id in self._where:
            self.remove(job.id)
        key = (job.priority, job.queue)
        group = self._levels.setdefault(job.priority, {}).setdefault(job.queue, {})
        group[job.id] = job
        self._where[job.id] = key
        if job.seq < self._last_seq.get(key, job.seq):
            self._unsorted.add(key)  # e.g. a preempted job back with its old seq: sort before next read
        self._last_seq[key] = max(job.seq, self._last_seq.get(key, job.seq))

    def remove(self, job_id: str) -> PendingJob | None:
        """Drop a job (admitted, cancelled); None when it was not here."""
        key = self._where.pop(job_id, None)
        if key is None:
            return None
        priority, queue = key
        by_queue = self._levels[priority]
        job = by_queue[queue].pop(job_id)
        if not by_queue[queue]:
            del by_queue[queue]
            self._last_seq.pop(key, None)
            self._unsorted.discard(key)
            if not by_queue:
                del self._levels[priority]
        return job

    def get(self, job_id: str) -> PendingJob | None:
        key = self._where.get(job_id)
        if key is None:
            return None
        priority, queue = key
        return self._levels[priority][queue][job_id]

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._where

    def __iter__(self) -> Iterator[PendingJob]:
        for by_queue in self._levels.values():
            for group in by_queue.values():
                yield from group.values()

    def levels(self) -> dict[int, dict[str, Iterable[PendingJob]]]:
        """priority -> queue -> jobs in seq order; sorts only the groups that need it."""
        for priority, queue in self._unsorted:
            group = self._levels[priority][queue]
            ordered = sorted(group.values(), key=_by_seq)
            group.clear()
            group.update((j.id, j) for j in ordered)
        self._unsorted.clear()
        return {p: {q: g.values() for q, g in by_queue.items()} for p, by_queue in self._levels.items()}


def group_list(pending: list[PendingJob]) -> dict[int, dict[str, Iterable[PendingJob]]]:
    """The same grouping from a plain list, in one pass (the only O(pending) work of a cycle)."""
    levels: dict[int, dict[str, list[PendingJob]]] = {}
    last, in_order = -(1 << 62), True
    for job in pending:
        by_queue = levels.get(job.priority)
        if by_queue is None:
            by_queue = levels[job.priority] = {}
        jobs = by_queue.get(job.queue)
        if jobs is None:
            by_queue[job.queue] = [job]
        else:
            jobs.append(job)
        if job.seq < last:
            in_order = False
        last = job.seq
    if not in_order:
        for by_queue in levels.values():
            for jobs in by_queue.values():
                jobs.sort(key=_by_seq)
    return levels
