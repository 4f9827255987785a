"""Single flight with a fake backend."""

import asyncio

import pytest

from mlmesh.gateway.domain.single_flight import SingleFlight

pytestmark = pytest.mark.timeout(10)


class FakeBackend:
    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail
        self.release = asyncio.Event()

    async def infer(self) -> str:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise RuntimeError("backend failed")
        return f"result {self.calls}"


async def _gather(flight: SingleFlight, backend: FakeBackend, n: int = 16):
    tasks = [asyncio.create_task(flight.do("k", backend.infer)) for _ in range(n)]
    await asyncio.sleep(0.01)
    backend.release.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_concurrent_identical_calls_share_one_backend_call() -> None:
    flight, backend = SingleFlight(), FakeBackend()
    results = await _gather(flight, backend)
    assert backend.calls == 1
    assert results == ["result 1"] * 16
    assert len(flight) == 0
    # Once landed, the next call runs again.
    assert await flight.do("k", backend.infer) == "result 2"


async def test_a_failure_reaches_every_caller() -> None:
    flight, backend = SingleFlight(), FakeBackend(fail=True)
    results = await _gather(flight, backend)
    assert backend.calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(flight) == 0


async def test_other_keys_do_not_share() -> None:
    flight, backend = SingleFlight(), FakeBackend()
    backend.release.set()
    await asyncio.gather(flight.do("a", backend.infer), flight.do("b", backend.infer))
    assert backend.calls == 2


async def test_a_caller_that_leaves_does_not_cancel_the_others() -> None:
    flight, backend = SingleFlight(), FakeBackend()
    first = asyncio.create_task(flight.do("k", backend.infer))
    second = asyncio.create_task(flight.do("k", backend.infer))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0)
    backend.release.set()
    assert await second == "result 1"
    assert first.cancelled()
