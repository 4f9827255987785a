"""ResultCache and RateLimiter against a valkey that is not there: misses and allows, fast, no raise."""

import socket
import time

import pytest

from mlmesh.gateway.cache import CACHE_ERRORS, GuardedValkey, ResultCache
from mlmesh.gateway.domain.breaker import BreakerState
from mlmesh.gateway.rate_limit import RateLimiter

pytestmark = pytest.mark.timeout(10)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


async def test_dead_valkey_is_a_miss_then_skipped() -> None:
    store = GuardedValkey(dead_url(), "secret")
    cache = ResultCache(store, default_ttl_s=60)
    errors = CACHE_ERRORS._value.get()
    try:
        for _ in range(3):
            assert await cache.get("k") is None
            assert await cache.set("k", b"v") is False
        assert CACHE_ERRORS._value.get() > errors
        assert store.breaker.state is BreakerState.OPEN
        counted = CACHE_ERRORS._value.get()
        started = time.perf_counter()
        for _ in range(100):
            assert await cache.get("k") is None
        assert time.perf_counter() - started < 0.05  # the open circuit skips valkey
        assert CACHE_ERRORS._value.get() == counted
        limiter = RateLimiter(store, rate_per_s=1, burst=1)
        for _ in range(5):
            await limiter.check("team-a")  # fails open
    finally:
        await store.close()


async def test_inactive_cache_does_nothing() -> None:
    assert not ResultCache(None, 60).active
    assert await ResultCache(None, 60).get("k") is None
    assert not RateLimiter(None, 10, 10).active
