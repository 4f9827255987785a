"""Failure detection: which nodes missed too many heartbeats."""

from __future__ import annotations

from collections.abc import Mapping


def overdue(last_seen: Mapping[str, float], now: float, interval_s: float, misses: int) -> list[str]:
    """Nodes silent for longer than `misses` heartbeat intervals, sorted.

    With 1 s heartbeats and 3 misses a node is declared NotReady between 3 and 3 + one check
    period after its last heartbeat; the monitor checks every interval/4 to stay within 3.5 s."""
    limit = interval_s * misses
    return sorted(node for node, seen in last_seen.items() if now - seen > limit)
