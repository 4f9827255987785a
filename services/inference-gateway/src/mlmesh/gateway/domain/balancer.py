"""Least-outstanding-requests choice among the backends that can take a call now."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

from mlmesh.gateway.domain.breaker import CircuitBreaker


class Candidate(Protocol):
    @property
    def healthy(self) -> bool: ...

    @property
    def outstanding(self) -> int: ...

    @property
    def breaker(self) -> CircuitBreaker: ...


C = TypeVar("C", bound=Candidate)


class LeastOutstanding:
    """Picks the available backend with the fewest requests in flight. Ties rotate, so equal
    backends share the load instead of the first one taking it all."""

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, backends: Sequence[C], avoid: Collection[C] = ()) -> C | None:
        """An available backend, preferring those not in `avoid` (already tried for this request);
        None when no backend is healthy with a breaker that lets the call through."""
        available = [b for b in backends if b.healthy and b.breaker.allows()]
        if not available:
            return None
        fresh = [b for b in available if b not in avoid]
        pool = fresh or available
        least = min(b.outstanding for b in pool)
        tied = [b for b in pool if b.outstanding == least]
        choice = tied[self._turn % len(tied)]
        self._turn += 1
        return choice
