import pytest

from mlmesh.gateway.domain.retry_budget import RetryBudget

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _drain(budget: RetryBudget) -> int:
    n = 0
    while budget.try_withdraw():
        n += 1
    return n


def test_retries_are_a_fraction_of_requests_plus_the_floor() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, min_per_s=2, clock=clock)
    assert _drain(budget) == 2  # the floor
    for _ in range(100):
        budget.deposit()
    assert _drain(budget) == 10  # 10% of 100 requests


def test_the_floor_refills_with_time_and_is_capped() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.0, min_per_s=5, max_balance=20, clock=clock)
    _drain(budget)
    clock.now += 1
    assert _drain(budget) == 5
    clock.now += 3600  # an hour of calm banks no more than the cap
    assert _drain(budget) == 20


def test_no_floor_and_no_requests_means_no_retries() -> None:
    budget = RetryBudget(ratio=0.1, min_per_s=0, clock=Clock())
    assert not budget.try_withdraw()
    for _ in range(9):
        budget.deposit()
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()
