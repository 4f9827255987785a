"""Checkpoint retention (pure): per job, keep the latest N and the best N by a named metric.

A checkpoint is deletable only when it is neither among the latest `keep_latest`, nor among the
best `keep_best`, nor pinned. An ambiguous policy deletes nothing: deleting is the one mistake
that cannot be undone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mlmesh.api.common.v1 import common_pb2

MINIMIZE = common_pb2.METRIC_GOAL_MINIMIZE
MAXIMIZE = common_pb2.METRIC_GOAL_MAXIMIZE


@dataclass(frozen=True)
class CheckpointRef:
    id: str
    step: int
    create_time_s: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    pinned: bool = False


@dataclass(frozen=True)
class Retention:
    keep_latest: int = 0  # 0 keeps all
    keep_best: int = 0  # 0 disables keep-best
    best_metric: str = ""
    goal: int = common_pb2.METRIC_GOAL_UNSPECIFIED


def select_deletions(checkpoints: Iterable[CheckpointRef], policy: Retention) -> list[str]:
    """Ids of the checkpoints the policy lets go, sorted by (step, id)."""
    items = list(checkpoints)
    if policy.keep_latest <= 0:
        return []
    if policy.keep_best > 0 and (not policy.best_metric or policy.goal not in (MINIMIZE, MAXIMIZE)):
        return []  # keep-best asked for but not defined: keep everything
    newest_first = sorted(items, key=lambda c: (c.step, c.create_time_s, c.id), reverse=True)
    keep = {c.id for c in newest_first[: policy.keep_latest]}
    if policy.keep_best > 0:
        scored = [
            c
            for c in items
            if isinstance(c.metrics.get(policy.best_metric), (int, float))
            and math.isfinite(c.metrics[policy.best_metric])
        ]
        sign = 1.0 if policy.goal == MINIMIZE else -1.0
        # Ties go to the newer checkpoint.
        scored.sort(key=lambda c: (sign * c.metrics[policy.best_metric], -c.step, c.id))
        keep |= {c.id for c in scored[: policy.keep_best]}
    keep |= {c.id for c in items if c.pinned}
    return [c.id for c in sorted(items, key=lambda c: (c.step, c.id)) if c.id not in keep]
