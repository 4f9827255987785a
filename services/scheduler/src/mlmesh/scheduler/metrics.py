"""Queue depths and job counts on the scheduler's `/metrics`, read from the jobs index at scrape
time (every replica holds the index, so any replica answers the same; nothing to keep in step)."""

from __future__ import annotations

import time
from collections import Counter

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mlmesh.api.scheduler.v1 import job_pb2

_STATE_NAMES = {v: k.removeprefix("JOB_STATE_").lower() for k, v in job_pb2.JobState.items()}


def queue_depths(jobs) -> tuple[Counter, Counter, dict]:
    """(pending per (queue, team), jobs per state, oldest pending submit time per queue)."""
    pending: Counter = Counter()
    by_state: Counter = Counter()
    oldest: dict[str, float] = {}
    for job in jobs:
        st = job.status.state
        by_state[_STATE_NAMES.get(st, "unspecified")] += 1
        if st == job_pb2.JOB_STATE_PENDING:
            pending[(job.spec.queue, job.meta.team)] += 1
            created = job.meta.create_time.ToNanoseconds() / 1e9
            if created and created < oldest.get(job.spec.queue, float("inf")):
                oldest[job.spec.queue] = created
    return pending, by_state, oldest


class SchedulerCollector(Collector):
    def __init__(self, jobs_index):
        self.jobs_index = jobs_index

    def collect(self):
        pending, by_state, oldest = queue_depths(list(self.jobs_index.items.values()))
        depth = GaugeMetricFamily(
            "mlmesh_scheduler_queue_depth", "Jobs waiting for admission", labels=["queue", "team"]
        )
        for (queue, team), n in sorted(pending.items()):
            depth.add_metric([queue, team], n)
        states = GaugeMetricFamily("mlmesh_scheduler_jobs", "Jobs known to the scheduler by state", labels=["state"])
        for state, n in sorted(by_state.items()):
            states.add_metric([state], n)
        age = GaugeMetricFamily(
            "mlmesh_scheduler_oldest_pending_seconds", "Age of the oldest waiting job", labels=["queue"]
        )
        now = time.time()
        for queue, created in sorted(oldest.items()):
            age.add_metric([queue], max(0.0, now - created))
        yield from (depth, states, age)
