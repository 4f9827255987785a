from dataclasses import dataclass, field

import pytest

from mlmesh.gateway.domain.balancer import LeastOutstanding
from mlmesh.gateway.domain.breaker import CircuitBreaker

pytestmark = pytest.mark.timeout(10)


@dataclass(eq=False)
class Backend:
    name: str
    outstanding: int = 0
    healthy: bool = True
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(failure_threshold=1, open_s=60))


def test_picks_the_backend_with_fewest_outstanding_requests() -> None:
    a, b, c = Backend("a", 3), Backend("b", 1), Backend("c", 2)
    assert LeastOutstanding().pick([a, b, c]) is b


def test_ties_rotate() -> None:
    a, b, c = Backend("a"), Backend("b"), Backend("c", outstanding=1)
    balancer = LeastOutstanding()
    picks = [balancer.pick([a, b, c]).name for _ in range(4)]
    assert picks == ["a", "b", "a", "b"]


def test_skips_unhealthy_and_open_breakers() -> None:
    sick, broken, busy = Backend("sick", healthy=False), Backend("broken"), Backend("busy", outstanding=9)
    broken.breaker.record_failure()
    assert LeastOutstanding().pick([sick, broken, busy]) is busy
    busy.healthy = False
    assert LeastOutstanding().pick([sick, broken, busy]) is None


def test_prefers_backends_not_yet_tried_but_falls_back_to_them() -> None:
    a, b = Backend("a"), Backend("b", outstanding=5)
    balancer = LeastOutstanding()
    assert balancer.pick([a, b], avoid={a}) is b
    assert balancer.pick([a], avoid={a}) is a
