"""Cluster and per-team aggregates built from the event streams: pure state, time passed in.

GPU-hours come from job placements (a job holds its GPUs from RUNNING until it leaves RUNNING);
utilization from the node agents' NVML samples in heartbeats, attributed to the team whose running
job holds that device; queue wait is submit (PENDING) to ADMITTED; outcomes count terminal states;
series keep each job's progress reports (loss, throughput) for QueryJobMetrics.

Everything is bounded: finished jobs are forgotten after `retention_s`, series keep at most
`max_points` points (older halves are thinned, so a long run keeps its whole shape).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

# Job states (mlmesh.scheduler.v1.JobState), as plain ints so this module needs no protobuf.
PENDING, ADMITTED, RUNNING, SUCCEEDED, FAILED, CANCELLED, PREEMPTED, RETRYING, SKIPPED = range(1, 10)
TERMINAL = {SUCCEEDED: "succeeded", FAILED: "failed", CANCELLED: "cancelled", SKIPPED: "skipped"}
WAIT_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
SERIES = ("loss", "learning_rate", "tokens_per_second", "samples_per_second", "mfu")


@dataclass
class Interval:
    """GPUs a job held over [start, end); end None while it still holds them."""

    team: str
    gpus: int
    start: float
    end: float | None = None

    def hours_in(self, lo: float, hi: float) -> float:
        end = hi if self.end is None else min(self.end, hi)
        return self.gpus * max(0.0, end - max(self.start, lo)) / 3600.0


@dataclass
class Job:
    job_id: str
    team: str
    queue: str = ""
    state: int = 0
    submitted_at: float | None = None
    devices: tuple[tuple[str, str], ...] = ()  # (node, device id) held while RUNNING
    gpus: int = 0
    running_since: float | None = None
    interval: Interval | None = None  # the GPUs it holds while RUNNING
    finished_at: float | None = None
    last_checkpoint_at: float | None = None
    last_checkpoint_id: str = ""
    checkpoint_interval_s: float = 0.0  # 0 = no time-based checkpoint policy known
    series: dict[str, list[tuple[float, int, float]]] = field(default_factory=dict)


@dataclass
class Gpu:
    node: str
    device_id: str
    util: float  # 0..1
    memory_used: int
    memory_total: int
    temperature_c: float
    power_w: float
    seen_at: float


@dataclass
class WaitHistogram:
    """Cumulative since the process started (Prometheus counter semantics: never drops on prune)."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(WAIT_BUCKETS))
    count: int = 0
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(WAIT_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
        self.count += 1
        self.total += seconds


@dataclass(frozen=True)
class Usage:
    team: str
    gpu_hours: float
    gpu_utilization: float
    queue_wait_p50_s: float
    queue_wait_p95_s: float
    outcomes: dict[str, int]
    gpus_in_use: int


class Aggregates:
    """All aggregates; every `apply_*` takes the event's own time so a replay rebuilds the same state."""

    def __init__(self, *, retention_s: float = 7 * 86400.0, max_points: int = 2000, gpu_stale_s: float = 120.0):
        self.retention_s = retention_s
        self.max_points = max_points
        self.gpu_stale_s = gpu_stale_s
        self.jobs: dict[str, Job] = {}
        self.intervals: list[Interval] = []
        self.waits: deque[tuple[float, str, float]] = deque()  # (admit time, team, wait seconds)
        self.outcomes: deque[tuple[float, str, str]] = deque()  # (time, team, outcome)
        self.gpus: dict[tuple[str, str], Gpu] = {}
        self.util_samples: deque[tuple[float, str, float]] = deque()  # (time, team, util 0..1)
        self.nodes: dict[str, tuple[int, str, float]] = {}  # node -> (NodeState, reason, since)
        # Running totals for /metrics counters: pruning the windows above must not make them drop.
        self.closed_hours: dict[str, float] = {}
        self.outcome_totals: dict[tuple[str, str], int] = {}
        self.wait_totals: dict[str, WaitHistogram] = {}

    # --- events ----------------------------------------------------------------------------------

    def apply_job_state(
        self,
        *,
        job_id: str,
        team: str,
        queue: str,
        to_state: int,
        at: float,
        devices: tuple[tuple[str, str], ...] = (),
        gpus: int = 0,
    ) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            job = self.jobs[job_id] = Job(job_id, team, queue)
        if to_state == PENDING and job.submitted_at is None:
            job.submitted_at = at
        if to_state == ADMITTED and job.submitted_at is not None and job.state == PENDING:
            wait = max(0.0, at - job.submitted_at)
            self.waits.append((at, team, wait))
            self.wait_totals.setdefault(team, WaitHistogram()).observe(wait)
        if job.state == RUNNING and to_state != RUNNING:
            self._release(job, at)
        if to_state == RUNNING and job.state != RUNNING:
            job.devices, job.gpus, job.running_since = devices, gpus, at
            if gpus:
                job.interval = Interval(team, gpus, at)
                self.intervals.append(job.interval)
        outcome = None
        if to_state == PREEMPTED:
            outcome = "preempted"
        elif to_state == RETRYING:
            outcome = "retried"
        elif to_state in TERMINAL and job.state not in TERMINAL:
            outcome = TERMINAL[to_state]
            job.finished_at = at
        if outcome is not None:
            self.outcomes.append((at, team, outcome))
            self.outcome_totals[(team, outcome)] = self.outcome_totals.get((team, outcome), 0) + 1
        job.state = to_state
        return job

    def _release(self, job: Job, at: float) -> None:
        interval = job.interval
        if interval is not None and interval.end is None:
            interval.end = at
            self.closed_hours[job.team] = self.closed_hours.get(job.team, 0.0) + interval.hours_in(interval.start, at)
        job.devices, job.gpus, job.running_since, job.interval = (), 0, None, None

    def apply_progress(self, *, job_id: str, team: str, at: float, step: int, values: dict[str, float]) -> None:
        job = self.jobs.get(job_id) or self.jobs.setdefault(job_id, Job(job_id, team))
        for name, value in values.items():
            points = job.series.setdefault(name, [])
            if points and step and points[-1][1] == step:
                points[-1] = (at, step, value)  # a re-sent report of the same step replaces it
            else:
                points.append((at, step, value))
            if len(points) > self.max_points:
                job.series[name] = thin(points, self.max_points)

    def apply_checkpoint(self, *, job_id: str, team: str, at: float, artifact_id: str) -> None:
        job = self.jobs.get(job_id) or self.jobs.setdefault(job_id, Job(job_id, team))
        if artifact_id and artifact_id != job.last_checkpoint_id:
            job.last_checkpoint_id = artifact_id
            job.last_checkpoint_at = at

    def apply_heartbeat(self, *, node: str, at: float, gpus: list[Gpu]) -> None:
        holders = {dev: job.team for job in self.jobs.values() if job.state == RUNNING for dev in job.devices}
        for gpu in gpus:
            self.gpus[(node, gpu.device_id)] = gpu
            team = holders.get((node, gpu.device_id))
            if team is not None:
                self.util_samples.append((at, team, gpu.util))

    def apply_node_state(self, *, node: str, state: int, reason: str, at: float) -> None:
        self.nodes[node] = (state, reason, at)

    # --- queries ---------------------------------------------------------------------------------

    def usage(self, team: str | None, window_s: float, now: float) -> Usage:
        """One team's aggregates over [now - window_s, now]; team None = the cluster."""
        lo = now - window_s

        def mine(t: str) -> bool:
            return team is None or t == team

        hours = sum(i.hours_in(lo, now) for i in self.intervals if mine(i.team))
        utils = [u for t, tm, u in self.util_samples if t >= lo and mine(tm)]
        waits = sorted(w for t, tm, w in self.waits if t >= lo and mine(tm))
        outcomes = {k: 0 for k in ("succeeded", "failed", "cancelled", "preempted", "retried")}
        for t, tm, what in self.outcomes:
            if t >= lo and mine(tm) and what in outcomes:
                outcomes[what] += 1
        in_use = sum(i.gpus for i in self.intervals if i.end is None and mine(i.team))
        return Usage(
            team=team or "",
            gpu_hours=hours,
            gpu_utilization=statistics.fmean(utils) if utils else 0.0,
            queue_wait_p50_s=percentile(waits, 0.5),
            queue_wait_p95_s=percentile(waits, 0.95),
            outcomes=outcomes,
            gpus_in_use=in_use,
        )

    def teams(self) -> list[str]:
        return sorted({j.team for j in self.jobs.values()} | {i.team for i in self.intervals})

    def gpu_hours_total(self, now: float) -> dict[str, float]:
        """GPU-hours since this process started counting (its replay included): closed intervals
        plus the running ones so far. Monotonic, as a Prometheus counter must be."""
        out = dict(self.closed_hours)
        for i in self.intervals:
            if i.end is None:
                out[i.team] = out.get(i.team, 0.0) + i.hours_in(i.start, now)
        return out

    def live_gpus(self, now: float) -> list[Gpu]:
        return [g for g in self.gpus.values() if now - g.seen_at <= self.gpu_stale_s]

    def series(
        self, job_id: str, names: list[str], lo: float | None, hi: float | None, max_points: int
    ) -> dict[str, list[tuple[float, int, float]]]:
        job = self.jobs[job_id]
        out = {}
        for name in names or sorted(job.series):
            points = [p for p in job.series.get(name, []) if (lo is None or p[0] >= lo) and (hi is None or p[0] <= hi)]
            out[name] = thin(points, max_points) if max_points and len(points) > max_points else points
        return out

    # --- bounds ----------------------------------------------------------------------------------

    def prune(self, now: float) -> None:
        """Forget what is older than the retention: finished jobs, closed intervals, samples."""
        cut = now - self.retention_s
        for job_id in [j.job_id for j in self.jobs.values() if j.finished_at is not None and j.finished_at < cut]:
            del self.jobs[job_id]
        self.intervals = [i for i in self.intervals if i.end is None or i.end >= cut]
        for dq in (self.waits, self.outcomes, self.util_samples):
            while dq and dq[0][0] < cut:
                dq.popleft()
        for key in [k for k, g in self.gpus.items() if g.seen_at < cut]:
            del self.gpus[key]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list; 0 for an empty one."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values), max(1, math.ceil(q * len(sorted_values)))) - 1]


def thin(points: list, limit: int) -> list:
    """At most `limit` points, evenly spaced over the list, always keeping the first and last."""
    if limit <= 0 or len(points) <= limit:
        return list(points)
    if limit == 1:
        return [points[-1]]
    step = (len(points) - 1) / (limit - 1)
    picks = sorted({round(i * step) for i in range(limit)})
    return [points[i] for i in picks]
