"""The result cache and its valkey connection; losing the cache loses nothing.

Every valkey call is bounded by a short socket timeout. Any error is a miss (or, for the rate
limiter, an allow): it is counted in `mlmesh_gateway_cache_errors_total`, logged at most once a
minute, and a circuit breaker skips valkey for a few seconds after repeated failures, so a dead
cache costs the request path nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import valkey.asyncio as valkey
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from valkey.backoff import NoBackoff
from valkey.retry import Retry

from mlmesh.common import tracing
from mlmesh.gateway.domain.breaker import CircuitBreaker

log = logging.getLogger("mlmesh.gateway.cache")

T = TypeVar("T")

CACHE_REQUESTS = Counter(
    "mlmesh_gateway_cache_requests_total", "Result-cache lookups by outcome (hit, miss, bypass)", ["result"]
)
CACHE_ERRORS = Counter("mlmesh_gateway_cache_errors_total", "valkey calls that failed or timed out")

ERROR_LOG_INTERVAL_S = 60.0
_DB = {"db.system": "valkey"}  # keys are never span attributes: they hash the caller's input


class Unreachable(Exception):
    """valkey was skipped (its breaker is open) or failed; the caller falls back."""


class GuardedValkey:
    """A valkey client whose calls fail fast and never raise anything but `Unreachable`."""

    def __init__(
        self,
        url: str,
        password: str | None = None,
        *,
        timeout_s: float = 0.05,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry_on_timeout": False,
            "retry": Retry(NoBackoff(), 0),
            "max_connections": 256,
        }
        if password:
            kwargs["password"] = password
        self.client = valkey.Valkey.from_url(url, **kwargs)
        self._timeout_s = timeout_s
        self.breaker = breaker or CircuitBreaker(failure_threshold=3, open_s=2.0, clock=clock)
        self._clock = clock
        self._last_log = -ERROR_LOG_INTERVAL_S

    async def call(self, what: str, fn: Callable[[valkey.Valkey], Awaitable[T]]) -> T:
        if not self.breaker.acquire():
            raise Unreachable("breaker open")
        try:
            # The socket timeout bounds each read; this bounds the whole call (connect included).
            result = await asyncio.wait_for(fn(self.client), timeout=self._timeout_s * 4)
        except asyncio.CancelledError:
            self.breaker.release()
            raise
        except Exception as exc:  # any valkey, socket or timeout error: the cache is optional
            self.breaker.record_failure()
            CACHE_ERRORS.inc()
            now = self._clock()
            if now - self._last_log >= ERROR_LOG_INTERVAL_S:
                self._last_log = now
                log.warning("valkey call failed; going on without it", extra={"op": what, "error": type(exc).__name__})
            raise Unreachable(what) from None
        self.breaker.record_success()
        return result

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection must not fail the shutdown
            await self.client.aclose()


class ResultCache:
    """get/set of cached replies (bytes) in valkey; `active` is False without valkey or with a TTL of 0."""

    def __init__(self, store: GuardedValkey | None, default_ttl_s: float):
        self.store = store
        self.default_ttl_s = default_ttl_s

    @property
    def active(self) -> bool:
        return self.store is not None and self.default_ttl_s > 0

    def ttl_for(self, deployment_ttl_s: float | None) -> float:
        """The TTL of a request's reply: its deployment's (0 = not cached), else the default; 0
        without valkey."""
        if self.store is None:
            return 0.0
        return self.default_ttl_s if deployment_ttl_s is None else deployment_ttl_s

    async def get(self, key: str) -> bytes | None:
        if self.store is None:
            CACHE_REQUESTS.labels("bypass").inc()
            return None
        if not self.store.breaker.allows():
            CACHE_REQUESTS.labels("bypass").inc()
            return None
        with tracing.child_span("cache get", SpanKind.CLIENT, _DB) as span:
            try:
                value = await self.store.call("get", lambda c: c.get(key))
            except Unreachable:
                CACHE_REQUESTS.labels("miss").inc()
                if span is not None:
                    span.set_attributes({"mlmesh.cache_hit": False, "mlmesh.cache_error": True})
                return None
            CACHE_REQUESTS.labels("hit" if value is not None else "miss").inc()
            if span is not None:
                span.set_attribute("mlmesh.cache_hit", value is not None)
            return value

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if self.store is None or ttl <= 0:
            return False
        with tracing.child_span("cache set", SpanKind.CLIENT, _DB) as span:
            try:
                await self.store.call("set", lambda c: c.set(key, value, px=max(1, int(ttl * 1000))))
            except Unreachable:
                if span is not None:
                    span.set_attribute("mlmesh.cache_error", True)
                return False
            return True

    @staticmethod
    def bypass() -> None:
        """Count a request that could not be keyed and went uncached."""
        CACHE_REQUESTS.labels("bypass").inc()
