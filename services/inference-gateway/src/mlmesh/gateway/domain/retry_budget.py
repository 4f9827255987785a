"""A token-bucket retry budget: retries stay under a fraction of requests plus a small floor.

Every request deposits `ratio` tokens; a retry withdraws one. A floor of `min_per_s` tokens per
second refills with time, so a quiet gateway can still retry. The balance is capped, so a long calm
period cannot bank a retry storm.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RetryBudget:
    def __init__(
        self,
        ratio: float = 0.1,
        min_per_s: float = 10.0,
        max_balance: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if ratio < 0 or min_per_s < 0 or max_balance < 0:
            raise ValueError("retry budget parameters must be >= 0")
        self._ratio = ratio
        self._min_per_s = min_per_s
        self._cap = max(max_balance, min_per_s)
        self._clock = clock
        self._balance = min_per_s
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._balance = min(self._cap, self._balance + elapsed * self._min_per_s)

    def deposit(self) -> None:
        """One request arrived."""
        self._refill()
        self._balance = min(self._cap, self._balance + self._ratio)

    def try_withdraw(self) -> bool:
        """Take one retry if the budget has it."""
        self._refill()
        if self._balance >= 1.0 - 1e-9:  # 10 deposits of 0.1 make one retry despite float rounding
            self._balance = max(0.0, self._balance - 1.0)
            return True
        return False

    @property
    def balance(self) -> float:
        self._refill()
        return self._balance
