"""Triton backends: connections, health checks, and the pool that balances, retries and breaks.

A call picks the backend with the fewest requests in flight among those healthy and allowed by
their breaker. It is retried only when the backend could not be reached (gRPC UNAVAILABLE, an HTTP
connect error), inside the caller's deadline and the retry budget. With no backend able to take
the call, the pool raises `Unavailable` at once, so an open breaker answers fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from tritonclient.grpc import service_pb2, service_pb2_grpc

from mlmesh.common import tracing
from mlmesh.common.errors import DeadlineExceeded, Unavailable
from mlmesh.gateway.domain.balancer import LeastOutstanding
from mlmesh.gateway.domain.breaker import CircuitBreaker
from mlmesh.gateway.domain.retry_budget import RetryBudget

log = logging.getLogger("mlmesh.gateway.backends")

MAX_ATTEMPTS = 3
HEALTH_TIMEOUT_S = 1.0
NO_BACKEND = "no inference backend is available"


class _Unreachable(Exception):
    """The backend could not be reached: the call did not run there, so another may take it."""


class BackendError(Exception):
    """Triton answered a gRPC call with an error: its code and message, for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class TritonBackend:
    """One Triton server: a gRPC channel and an HTTP session to it, its in-flight count, its
    breaker and its health (ServerLive every `health_interval_s`)."""

    def __init__(
        self,
        grpc_url: str,
        http_url: str,
        breaker: CircuitBreaker,
        *,
        max_message_bytes: int = 64 * 1024 * 1024,
        health_interval_s: float = 2.0,
        failures_unhealthy: int = 2,
    ):
        self.grpc_url = grpc_url
        self.http_url = (http_url if "://" in http_url else f"http://{http_url}").rstrip("/")
        self.breaker = breaker
        self.outstanding = 0
        self.healthy = True  # optimistic until the first check says otherwise
        self._health_interval_s = health_interval_s
        self._failures_unhealthy = failures_unhealthy
        self._health_failures = 0
        self._max_message_bytes = max_message_bytes
        self.channel: grpc.aio.Channel | None = None
        self.stub: service_pb2_grpc.GRPCInferenceServiceStub | None = None
        self.session: aiohttp.ClientSession | None = None
        self._health_task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"TritonBackend({self.grpc_url}, {self.http_url})"

    async def start(self) -> None:
        """Open the connections (lazily connecting) and start the health loop, in the running loop."""
        options = [
            ("grpc.max_receive_message_length", self._max_message_bytes),
            ("grpc.max_send_message_length", self._max_message_bytes),
            # A dead backend is retried quickly once it comes back, not after minutes of backoff.
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        self.channel = grpc.aio.insecure_channel(self.grpc_url, options=options)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.session = aiohttp.ClientSession(
            auto_decompress=False,  # bodies pass through as Triton encoded them
            connector=aiohttp.TCPConnector(limit=256),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        self._health_task = asyncio.create_task(self._health_loop(), name=f"health {self.grpc_url}")

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self.session is not None:
            await self.session.close()
        if self.channel is not None:
            await self.channel.close()

    async def check_health(self) -> bool:
        # Liveness, not ServerReady: under Triton's default strict readiness one model that is
        # loading (a deployment rolling out) makes the whole server "not ready", which would take a
        # backend out that still serves every other model. A model that is not ready answers its own
        # requests with UNAVAILABLE, which the retry loop already handles.
        try:
            reply = await self.stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=HEALTH_TIMEOUT_S)
            ready = bool(reply.live)
        except grpc.aio.AioRpcError:
            ready = False
        self.observe_health(ready)
        return ready

    def observe_health(self, ready: bool) -> None:
        if ready:
            if not self.healthy:
                log.info("backend healthy again", extra={"backend": self.grpc_url})
            self._health_failures = 0
            self.healthy = True
            return
        self._health_failures += 1
        if self.healthy and self._health_failures >= self._failures_unhealthy:
            log.warning("backend unhealthy", extra={"backend": self.grpc_url})
            self.healthy = False

    async def _health_loop(self) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(self._health_interval_s)


class BackendPool:
    """Balances calls over Triton backends with retries, deadlines and circuit breakers."""

    def __init__(
        self,
        backends: Sequence[TritonBackend],
        retry_budget: RetryBudget,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not backends:
            raise ValueError("at least one backend is required")
        self.backends = list(backends)
        self._budget = retry_budget
        self._balancer = LeastOutstanding()
        self._clock = clock

    async def start(self) -> None:
        for backend in self.backends:
            await backend.start()

    async def close(self) -> None:
        for backend in self.backends:
            await backend.close()

    def available(self) -> bool:
        return any(b.healthy and b.breaker.allows() for b in self.backends)

    def _acquire(self, tried: set[TritonBackend]) -> TritonBackend:
        # A picked backend's breaker may still refuse (a half-open probe is taken): pick again.
        for _ in range(len(self.backends) + 1):
            backend = self._balancer.pick(self.backends, avoid=tried)
            if backend is None:
                break
            if backend.breaker.acquire():
                return backend
        raise Unavailable(NO_BACKEND)

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded("deadline exceeded before a backend answered")
        return remaining

    async def _retry_pause(self, attempt: int, deadline: float) -> bool:
        """Back off with jitter before a retry; False when no retry is possible."""
        if attempt >= MAX_ATTEMPTS or not self._budget.try_withdraw():
            return False
        pause = random.uniform(0, 0.01 * 2**attempt)
        if self._clock() + pause >= deadline:
            return False
        await asyncio.sleep(pause)
        return True

    async def _call(self, timeout: float, once: Callable[[TritonBackend, float], Awaitable]):
        """Run `once(backend, remaining_s)` on a backend picked by least outstanding requests,
        moving to another when it raises `_Unreachable`, within the deadline and the retry budget.
        `once` settles the breaker for every other outcome."""
        deadline = self._clock() + timeout
        self._budget.deposit()
        tried: set[TritonBackend] = set()
        attempt = 0
        while True:
            attempt += 1
            backend = self._acquire(tried)
            tried.add(backend)
            backend.outstanding += 1
            try:
                return await once(backend, self._remaining(deadline))
            except _Unreachable:
                backend.breaker.record_failure()
                log.info("backend unreachable", extra={"backend": backend.grpc_url, "attempt": attempt})
                if await self._retry_pause(attempt, deadline):
                    continue
                raise Unavailable(NO_BACKEND) from None
            finally:
                backend.outstanding -= 1

    async def grpc(self, method: str, request, timeout: float):
        """Call `method` of GRPCInferenceService on a backend; Triton's own errors come back as
        `BackendError`, an unreachable pool as `Unavailable`."""

        async def once(backend: TritonBackend, remaining: float):
            with tracing.child_span(f"triton {method}", SpanKind.CLIENT, {"server.address": backend.grpc_url}) as span:
                # Triton continues the trace when it traces (its --trace-config mode=opentelemetry).
                metadata = tuple(tracing.outgoing_headers().items()) if span is not None else None
                return await grpc_once(backend, remaining, metadata)

        async def grpc_once(backend: TritonBackend, remaining: float, metadata):
            try:
                rpc = getattr(backend.stub, method)
                reply = await (
                    rpc(request, timeout=remaining, metadata=metadata) if metadata else rpc(request, timeout=remaining)
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code is grpc.StatusCode.UNAVAILABLE:
                    raise _Unreachable from None
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    backend.breaker.release()
                    raise DeadlineExceeded("the backend did not answer within the deadline") from None
                backend.breaker.record_success()  # it answered: the request was at fault
                raise BackendError(code, exc.details() or code.name) from None
            except BaseException:
                backend.breaker.release()
                raise
            backend.breaker.record_success()
            return reply

        return await self._call(timeout, once)

    async def http(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        """Forward an HTTP request to a backend's HTTP port; Triton's answer comes back whatever
        its status, an unreachable pool as `Unavailable`."""

        async def once(backend: TritonBackend, remaining: float) -> HttpResponse:
            attributes = {"server.address": backend.http_url, "url.path": path}
            with tracing.child_span(f"triton HTTP {method}", SpanKind.CLIENT, attributes) as span:
                sent = {**headers, **tracing.outgoing_headers()} if span is not None else dict(headers)
                return await http_once(backend, remaining, sent)

        async def http_once(backend: TritonBackend, remaining: float, sent: dict[str, str]) -> HttpResponse:
            try:
                client_timeout = aiohttp.ClientTimeout(total=remaining)
                async with backend.session.request(
                    method, backend.http_url + path, headers=sent, data=body, timeout=client_timeout
                ) as response:
                    result = HttpResponse(response.status, dict(response.headers), await response.read())
            except aiohttp.ClientConnectorError:
                raise _Unreachable from None
            except TimeoutError:
                backend.breaker.release()
                raise DeadlineExceeded("the backend did not answer within the deadline") from None
            except aiohttp.ClientError:
                # Reached but the exchange broke (reset, malformed reply): not retried, the call
                # may have run.
                backend.breaker.record_failure()
                raise Unavailable("the inference backend failed to answer") from None
            except BaseException:
                backend.breaker.release()
                raise
            if result.status == 503:
                backend.breaker.record_failure()
            else:
                backend.breaker.record_success()
            return result

        return await self._call(timeout, once)

    async def stream(
        self, requests: AsyncIterator[service_pb2.ModelInferRequest], timeout: float
    ) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        """ModelStreamInfer on one backend, picked as any call is: the requests go up as they come,
        the responses come back as Triton sends them. Only a stream that failed UNAVAILABLE before
        its first response is moved to another backend (the requests it took are sent again);
        after that a failure ends the stream (`Unavailable`; Triton's other errors as
        `BackendError`)."""
        deadline = self._clock() + timeout
        self._budget.deposit()
        # No span of its own (a span cannot stay current across an async generator's yields):
        # the stream continues the caller's trace at Triton.
        recording = trace.get_current_span().is_recording()
        trace_metadata = tuple(tracing.outgoing_headers().items()) if recording else None
        feed = _RequestFeed(requests)
        tried: set[TritonBackend] = set()
        attempt = 0
        try:
            while True:
                attempt += 1
                backend = self._acquire(tried)
                tried.add(backend)
                backend.outstanding += 1
                answered, settled = False, False
                call = writer = None
                try:
                    remaining = self._remaining(deadline)
                    call = (
                        backend.stub.ModelStreamInfer(timeout=remaining, metadata=trace_metadata)
                        if trace_metadata
                        else backend.stub.ModelStreamInfer(timeout=remaining)
                    )
                    writer = asyncio.create_task(_write_all(call, feed), name=f"stream to {backend.grpc_url}")
                    async for response in call:
                        if not answered:
                            answered = True
                            feed.commit()
                        yield response
                    backend.breaker.record_success()
                    settled = True
                    return
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    if code is grpc.StatusCode.UNAVAILABLE:
                        backend.breaker.record_failure()
                        settled = True
                        if answered:
                            raise Unavailable("the inference backend went away during the stream") from None
                        log.info("backend unreachable", extra={"backend": backend.grpc_url, "attempt": attempt})
                        if await self._retry_pause(attempt, deadline):
                            continue
                        raise Unavailable(NO_BACKEND) from None
                    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise DeadlineExceeded("the stream outlived its deadline") from None
                    backend.breaker.record_success()  # it answered: the stream was at fault
                    settled = True
                    raise BackendError(code, exc.details() or code.name) from None
                finally:
                    if not settled:  # cancelled, deadline, or the consumer stopped reading
                        backend.breaker.release()
                    if writer is not None:
                        writer.cancel()
                    if call is not None:
                        call.cancel()
                    backend.outstanding -= 1
        finally:
            await feed.close()


_END = object()


class _RequestFeed:
    """The requests of one stream, read by a single task (so a failed attempt never interrupts the
    caller's iterator mid-read), and the ones taken before the first response, for a retry."""

    def __init__(self, requests: AsyncIterator):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._taken: list = []
        self._committed = False
        self._reader = asyncio.create_task(self._read(requests), name="stream requests")

    async def _read(self, requests: AsyncIterator) -> None:
        try:
            async for request in requests:
                await self._queue.put(request)
        except Exception as exc:  # the caller's iterator failed: the stream's writer sees it
            await self._queue.put(exc)
        finally:
            await self._queue.put(_END)

    async def items(self) -> AsyncIterator:
        """The requests for one attempt: those an earlier attempt took, then new ones."""
        for request in list(self._taken):
            yield request
        while True:
            item = await self._queue.get()
            if item is _END or isinstance(item, Exception):
                self._queue.put_nowait(item)  # a later attempt ends (or fails) the same way
                if item is _END:
                    return
                raise item
            if not self._committed:
                self._taken.append(item)
            yield item

    def commit(self) -> None:
        """A backend answered: the stream stays there, nothing needs sending again."""
        self._committed = True
        self._taken.clear()

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def _write_all(call, feed: _RequestFeed) -> None:
    try:
        async for request in feed.items():
            await call.write(request)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the call ended: its reader reports how
    except Exception:
        log.exception("stream request writer failed")
        call.cancel()
