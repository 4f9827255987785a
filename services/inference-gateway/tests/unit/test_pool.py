"""BackendPool with fake stubs: what is retried, what opens breakers, and deadlines."""

import asyncio

import grpc
import pytest

from mlmesh.common.errors import Unavailable
from mlmesh.gateway.backends import BackendError, BackendPool, TritonBackend
from mlmesh.gateway.domain.breaker import BreakerState, CircuitBreaker
from mlmesh.gateway.domain.retry_budget import RetryBudget

pytestmark = pytest.mark.timeout(10)


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=f"{code.name} from triton")


class FakeStub:
    """ModelInfer answers from a script: an exception to raise or a value to return, per call."""

    def __init__(self, *script):
        self.script = list(script)
        self.timeouts: list[float] = []

    async def ModelInfer(self, request, timeout=None):
        self.timeouts.append(timeout)
        outcome = self.script.pop(0) if self.script else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def backend(name: str, *script, threshold: int = 5) -> TritonBackend:
    b = TritonBackend(f"{name}:1", f"http://{name}:2", CircuitBreaker(threshold, 60))
    b.stub = FakeStub(*script)
    return b


def budget(floor: float = 10) -> RetryBudget:
    return RetryBudget(ratio=0.1, min_per_s=floor)


async def test_unavailable_is_retried_on_another_backend() -> None:
    a = backend("a", rpc_error(grpc.StatusCode.UNAVAILABLE))
    b = backend("b", "from b")
    pool = BackendPool([a, b], budget())
    assert await pool.grpc("ModelInfer", object(), timeout=5) == "from b"
    assert len(a.stub.timeouts) == 1 and len(b.stub.timeouts) == 1
    assert a.outstanding == b.outstanding == 0


async def test_other_errors_are_not_retried_and_keep_their_code() -> None:
    a = backend("a", rpc_error(grpc.StatusCode.INVALID_ARGUMENT))
    b = backend("b")
    pool = BackendPool([a, b], budget())
    with pytest.raises(BackendError) as err:
        await pool.grpc("ModelInfer", object(), timeout=5)
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert b.stub.timeouts == []  # not retried
    assert a.breaker.state is BreakerState.CLOSED  # the backend answered: not its failure


async def test_no_retry_without_budget() -> None:
    a = backend("a", rpc_error(grpc.StatusCode.UNAVAILABLE))
    b = backend("b")
    pool = BackendPool([a, b], budget(floor=0))
    with pytest.raises(Unavailable):
        await pool.grpc("ModelInfer", object(), timeout=5)
    assert b.stub.timeouts == []


async def test_open_breakers_answer_unavailable_without_calling() -> None:
    a = backend("a", *[rpc_error(grpc.StatusCode.UNAVAILABLE)] * 10, threshold=2)
    pool = BackendPool([a], budget())
    with pytest.raises(Unavailable):
        await pool.grpc("ModelInfer", object(), timeout=5)  # first try + retry: two failures
    assert a.breaker.state is BreakerState.OPEN
    calls = len(a.stub.timeouts)
    with pytest.raises(Unavailable):
        await pool.grpc("ModelInfer", object(), timeout=5)
    assert len(a.stub.timeouts) == calls


async def test_unhealthy_backends_are_skipped() -> None:
    a, b = backend("a"), backend("b", "from b")
    a.observe_health(False)
    a.observe_health(False)
    assert not a.healthy
    pool = BackendPool([a, b], budget())
    for _ in range(3):
        assert await pool.grpc("ModelInfer", object(), timeout=5) in ("from b", "ok")
    assert a.stub.timeouts == []


async def test_the_deadline_travels_to_the_backend() -> None:
    a = backend("a", "ok")
    pool = BackendPool([a], budget())
    await pool.grpc("ModelInfer", object(), timeout=0.5)
    assert 0 < a.stub.timeouts[0] <= 0.5


class FakeStreamCall:
    """A ModelStreamInfer call: answers each request written with one response, or fails with
    `error` when request number `fail_at` (0-based) arrives."""

    def __init__(self, fail_at: int | None = None, error: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
        self.written: list = []
        self._incoming: asyncio.Queue = asyncio.Queue()
        self._fail_at, self._error = fail_at, error

    async def write(self, request) -> None:
        self.written.append(request)
        await self._incoming.put(request)

    async def done_writing(self) -> None:
        await self._incoming.put(None)

    def cancel(self) -> None:
        pass

    async def __aiter__(self):
        count = 0
        while (request := await self._incoming.get()) is not None:
            if count == self._fail_at:
                raise rpc_error(self._error)
            count += 1
            yield f"answer to {request}"


class FakeStreamStub:
    def __init__(self, call: FakeStreamCall):
        self.call = call
        self.opened = 0

    def ModelStreamInfer(self, timeout=None):
        self.opened += 1
        return self.call


def stream_backend(name: str, call: FakeStreamCall) -> TritonBackend:
    b = TritonBackend(f"{name}:1", f"http://{name}:2", CircuitBreaker(5, 60))
    b.stub = FakeStreamStub(call)
    return b


async def _requests(*items):
    for item in items:
        yield item
        await asyncio.sleep(0)


async def test_a_stream_that_cannot_open_moves_with_the_requests_it_took() -> None:
    a = stream_backend("a", FakeStreamCall(fail_at=0))
    b = stream_backend("b", FakeStreamCall())
    pool = BackendPool([a, b], budget())
    answers = [r async for r in pool.stream(_requests("r1", "r2", "r3"), timeout=5)]
    assert answers == ["answer to r1", "answer to r2", "answer to r3"]
    assert a.stub.call.written[:1] == ["r1"] and b.stub.call.written == ["r1", "r2", "r3"]
    assert a.outstanding == b.outstanding == 0


async def test_a_stream_that_answered_is_not_moved() -> None:
    a = stream_backend("a", FakeStreamCall(fail_at=1))
    b = stream_backend("b", FakeStreamCall())
    pool = BackendPool([a, b], budget())
    answers = []
    with pytest.raises(Unavailable):
        async for answer in pool.stream(_requests("r1", "r2"), timeout=5):
            answers.append(answer)
    assert answers == ["answer to r1"] and b.stub.opened == 0
    assert a.outstanding == 0


async def test_a_stream_error_keeps_its_code() -> None:
    a = stream_backend("a", FakeStreamCall(fail_at=0, error=grpc.StatusCode.INVALID_ARGUMENT))
    b = stream_backend("b", FakeStreamCall())
    pool = BackendPool([a, b], budget())
    with pytest.raises(BackendError) as err:
        async for _ in pool.stream(_requests("r1"), timeout=5):
            pass
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT and b.stub.opened == 0
