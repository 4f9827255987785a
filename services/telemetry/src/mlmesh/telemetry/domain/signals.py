"""The signals alert rules compare: computed from the aggregates and from scraped histograms.

Each signal is a list of (labels, value). Names are what a rule's `metric` may say.
"""

from __future__ import annotations

import math

from mlmesh.telemetry.domain.aggregates import RUNNING, Aggregates
from mlmesh.telemetry.domain.alerting import Samples

NODE_NOT_READY = 2  # mlmesh.fabric.v1.NodeState.NODE_STATE_NOT_READY

SIGNALS = {
    "gpu_memory_used_ratio": "used / total GPU memory per device, from the node agents' NVML samples",
    "gpu_utilization_ratio": "SM utilization per device (0..1), from the node agents' NVML samples",
    "node_not_ready": "1 while the fabric marks a node NotReady, else 0",
    "job_failure_rate": "failed / (failed + succeeded) jobs per team over the failure-rate window",
    "checkpoint_age_ratio": "time since a running job's last checkpoint / its checkpoint interval",
    "inference_p99_seconds": "p99 latency of inference requests through a gateway over the latency window",
}


def compute(
    agg: Aggregates,
    now: float,
    *,
    failure_window_s: float,
    min_finished_jobs: int = 1,
    inference_p99: dict[str, float] | None = None,
) -> Samples:
    out: Samples = {name: [] for name in SIGNALS}
    for gpu in agg.live_gpus(now):
        labels = {"node": gpu.node, "gpu": gpu.device_id}
        if gpu.memory_total > 0:
            out["gpu_memory_used_ratio"].append((labels, gpu.memory_used / gpu.memory_total))
        out["gpu_utilization_ratio"].append((labels, gpu.util))
    for node, (state, _reason, _since) in sorted(agg.nodes.items()):
        out["node_not_ready"].append(({"node": node}, 1.0 if state == NODE_NOT_READY else 0.0))
    lo = now - failure_window_s
    finished: dict[str, list[int]] = {}
    for t, team, outcome in agg.outcomes:
        if t >= lo and outcome in ("succeeded", "failed"):
            counts = finished.setdefault(team, [0, 0])
            counts[outcome == "failed"] += 1
    for team, (ok, failed) in sorted(finished.items()):
        if ok + failed >= min_finished_jobs:
            out["job_failure_rate"].append(({"team": team}, failed / (ok + failed)))
    for job in agg.jobs.values():
        if job.state != RUNNING or job.checkpoint_interval_s <= 0 or job.running_since is None:
            continue
        last = job.last_checkpoint_at if job.last_checkpoint_at is not None else job.running_since
        last = max(last, job.running_since)  # a resumed run starts its clock again
        out["checkpoint_age_ratio"].append(
            ({"job": job.job_id, "team": job.team}, (now - last) / job.checkpoint_interval_s)
        )
    for target, p99 in sorted((inference_p99 or {}).items()):
        if not math.isnan(p99):
            out["inference_p99_seconds"].append(({"target": target}, p99))
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets, +Inf last:
    linear interpolation inside the bucket that holds the rank; NaN without observations."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # the rank is past the last finite bound: report that bound
            width = count - prev_count
            return le if width <= 0 else prev_le + (le - prev_le) * (rank - prev_count) / width
        prev_le, prev_count = le, count
    return prev_le


def bucket_delta(new: dict[float, float], old: dict[float, float]) -> list[tuple[float, float]]:
    """Cumulative buckets observed between two scrapes; a counter reset (restart) counts from 0."""
    if any(new.get(le, 0.0) < count for le, count in old.items()):
        old = {}
    return [(le, count - old.get(le, 0.0)) for le, count in new.items()]
