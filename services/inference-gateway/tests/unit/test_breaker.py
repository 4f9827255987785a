import pytest

from mlmesh.gateway.domain.breaker import BreakerState, CircuitBreaker

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3, open_s=5, clock=Clock())
    for _ in range(2):
        assert breaker.acquire()
        breaker.record_failure()
    breaker.record_success()  # a success resets the count
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allows()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allows() and not breaker.acquire()


def test_half_open_lets_exactly_one_probe_and_its_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, open_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 4.9
    assert not breaker.acquire()
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.acquire()  # the probe
    assert not breaker.allows() and not breaker.acquire()  # nobody else meanwhile
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.acquire() for _ in range(10))


def test_failed_probe_reopens_for_another_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, open_s=5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 5
    assert breaker.acquire()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 4
    assert not breaker.acquire()
    clock.now += 1
    assert breaker.acquire()


def test_released_probe_lets_another_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, open_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.acquire()
    breaker.release()
    assert breaker.acquire()


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
