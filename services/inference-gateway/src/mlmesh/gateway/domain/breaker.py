"""A per-backend circuit breaker: closed → open after N consecutive failures → half-open probe."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed lets everything through and counts consecutive failures. At `failure_threshold` it
    opens and rejects for `open_s`. Then it is half-open: exactly one probe goes through; the probe's
    success closes the breaker, its failure opens it again for another `open_s`."""

    def __init__(self, failure_threshold: int = 5, open_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if open_s < 0:
            raise ValueError("open_s must be >= 0")
        self._threshold = failure_threshold
        self._open_s = open_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._open_s:
            return BreakerState.HALF_OPEN
        return self._state

    def allows(self) -> bool:
        """Whether `acquire` would succeed now; changes nothing."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN:
            return not self._probe_in_flight
        return False

    def acquire(self) -> bool:
        """Take permission for one call. In half-open, the first caller becomes the probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        if self._state is BreakerState.OPEN:
            return  # a call admitted before the breaker opened; it is open already
        self._failures += 1
        if self._failures >= self._threshold:
            self._open()

    def release(self) -> None:
        """The admitted call ended without a verdict on the backend (e.g. the caller went away):
        a half-open breaker lets another probe through."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self._probe_in_flight = False
