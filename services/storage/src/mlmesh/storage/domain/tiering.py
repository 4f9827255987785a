"""Tier placement policy (pure).

- New artifacts land hot (the commit does that).
- hot -> warm after `hot_idle_s` without a read, and, while hot holds more distinct blob bytes than
  `hot_capacity_bytes`, least recently used first.
- warm -> cold after `warm_idle_s` without a read (when a cold tier exists).
- Reads promote to hot (the read path asks for that; see `promotion`).
- Pinned artifacts never move.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mlmesh.api.storage.v1 import artifact_pb2

HOT = artifact_pb2.STORAGE_TIER_HOT
WARM = artifact_pb2.STORAGE_TIER_WARM
COLD = artifact_pb2.STORAGE_TIER_COLD


@dataclass(frozen=True)
class TierItem:
    id: str
    tier: int
    last_access_s: float
    blobs: Mapping[str, int] = field(default_factory=dict)  # sha256 -> size
    pinned: bool = False


@dataclass(frozen=True)
class TierPolicy:
    hot_idle_s: float = 24 * 3600.0
    warm_idle_s: float = 7 * 24 * 3600.0
    hot_capacity_bytes: int = 0  # 0 = unbounded
    cold_enabled: bool = True


@dataclass(frozen=True)
class Move:
    id: str
    source: int
    target: int
    reason: str


def plan_moves(items: Iterable[TierItem], policy: TierPolicy, now_s: float) -> list[Move]:
    """The moves that bring the tiers in line with the policy, in the order to run them."""
    items = list(items)
    moves: list[Move] = []
    hot = [i for i in items if i.tier == HOT]
    staying: list[TierItem] = []
    for item in hot:
        if not item.pinned and now_s - item.last_access_s > policy.hot_idle_s:
            moves.append(Move(item.id, HOT, WARM, "idle"))
        else:
            staying.append(item)
    if policy.hot_capacity_bytes > 0:
        moves += _evict_lru(staying, policy.hot_capacity_bytes)
    if policy.cold_enabled:
        for item in items:
            if item.tier == WARM and not item.pinned and now_s - item.last_access_s > policy.warm_idle_s:
                moves.append(Move(item.id, WARM, COLD, "idle"))
    return moves


def _evict_lru(hot: list[TierItem], capacity: int) -> list[Move]:
    """Demote least recently used artifacts until the distinct blob bytes left fit `capacity`
    (a blob shared by two artifacts is freed only once both have left; pinned ones stay and
    still count)."""
    refs: Counter[str] = Counter()
    sizes: dict[str, int] = {}
    for item in hot:
        for digest, size in item.blobs.items():
            refs[digest] += 1
            sizes[digest] = size
    used = sum(sizes.values())
    moves = []
    for item in sorted(hot, key=lambda i: (i.last_access_s, i.id)):
        if used <= capacity:
            break
        if item.pinned:
            continue
        moves.append(Move(item.id, HOT, WARM, "capacity"))
        for digest in item.blobs:
            refs[digest] -= 1
            if refs[digest] == 0:
                used -= sizes[digest]
    return moves


def hot_used_bytes(items: Iterable[TierItem]) -> int:
    sizes: dict[str, int] = {}
    for item in items:
        if item.tier == HOT:
            sizes.update(item.blobs)
    return sum(sizes.values())


def promotion(item: TierItem) -> Move | None:
    """The move a read asks for: to hot, unless already there or pinned."""
    if item.pinned or item.tier == HOT:
        return None
    return Move(item.id, item.tier, HOT, "read")
