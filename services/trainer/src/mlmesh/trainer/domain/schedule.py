"""Deterministic data order and learning-rate schedules: pure functions of (seed, step), which is
what makes a resumed run see exactly the samples and rates an uninterrupted run would."""

from __future__ import annotations

import math
import random


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) that depends only on (seed, epoch)."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def global_batch_indices(n: int, seed: int, step: int, global_batch: int) -> list[int]:
    """Sample indices of optimizer step `step` (0-based): consecutive slices of the epoch orders,
    wrapping into the next epoch, so every sample is seen once per epoch."""
    start = step * global_batch
    out: list[int] = []
    while len(out) < global_batch:
        epoch, offset = divmod(start + len(out), n)
        order = epoch_order(n, seed, epoch)
        take = min(global_batch - len(out), n - offset)
        out.extend(order[offset : offset + take])
    return out


def rank_micro_batches(indices: list[int], rank: int, world: int, micro: int, accumulation: int) -> list[list[int]]:
    """Rank `rank`'s micro-batches of one global batch: micro-batch j of rank r is slice j*world + r."""
    return [indices[(j * world + rank) * micro : (j * world + rank + 1) * micro] for j in range(accumulation)]


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Factor on the peak learning rate at `step`: linear warmup, then linear, cosine or constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def total_steps(n_samples: int, global_batch: int, epochs: float, max_steps: int) -> int:
    if max_steps > 0:
        return max_steps
    return max(1, math.ceil(n_samples * max(epochs, 0.0) / global_batch))
