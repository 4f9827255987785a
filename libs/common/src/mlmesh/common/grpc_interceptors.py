"""Server interceptors: domain errors → gRPC status with google.rpc details, and bearer-token auth.

Both wrap the method handler's behaviour (rather than acting in `intercept_service`) so that the
identity context variable is set in the task that runs the servicer, and so that an auth failure
flows through the same error mapping as any other domain error.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from mlmesh.common.auth import TokenVerifier, reset_current_identity, set_current_identity
from mlmesh.common.errors import INTERNAL_MESSAGE, InvalidArgument, MlmeshError
from mlmesh.common.telemetry import RpcMetrics

log = logging.getLogger("mlmesh.grpc")

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Probes and service discovery must work without a token.
AUTH_EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
    # KServe v2 liveness and readiness, as the HTTP front's /v2/health/* (load balancer probes).
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)

_AbortError = getattr(grpc.aio, "AbortError", ())


def to_rpc_status(exc: MlmeshError) -> status_pb2.Status:
    """The google.rpc.Status for a domain error, with a BadRequest naming each bad field."""
    status = status_pb2.Status(code=exc.grpc_code.value[0], message=exc.message)
    if isinstance(exc, InvalidArgument) and exc.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    return status


def internal_status() -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message=INTERNAL_MESSAGE)


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, MlmeshError):
        status = to_rpc_status(exc)
        code = exc.grpc_code
        log.info("rpc %s failed: %s %s", method, code.name, exc.message)
    else:
        status = internal_status()
        code = grpc.StatusCode.INTERNAL
        log.exception("rpc %s raised an unexpected error", method, exc_info=exc)
    await context.abort(code, status.message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),))


Wrapper = Callable[[Callable, str], Callable]


def wrap_handler(handler: grpc.RpcMethodHandler, method: str, unary: Wrapper, stream: Wrapper):
    """Rebuild `handler` with its behaviour wrapped; `unary` wraps single-response kinds, `stream`
    wraps streaming-response kinds."""
    if handler is None:
        return None
    ser = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary, method), **ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary, method), **ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream, method), **ser)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream, method), **ser)
    return handler


async def _call(fn, request, context):
    result = fn(request, context)
    return await result if inspect.isawaitable(result) else result


async def _iterate(fn, request, context):
    # A streaming behaviour is either an async generator or a coroutine that uses context.write().
    result = fn(request, context)
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result
    else:
        for item in result:
            yield item


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps `MlmeshError` to its status code (with details) and anything else to INTERNAL."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        return wrap_handler(handler, handler_call_details.method, self._unary, self._stream)

    @staticmethod
    def _unary(fn, method):
        async def run(request, context):
            try:
                return await _call(fn, request, context)
            except _AbortError:
                raise
            except Exception as exc:
                await abort_with(context, exc, method)

        return run

    @staticmethod
    def _stream(fn, method):
        async def run(request, context):
            try:
                async for item in _iterate(fn, request, context):
                    yield item
            except _AbortError:
                raise
            except Exception as exc:
                await abort_with(context, exc, method)

        return run


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires a valid bearer token on every method except health and reflection."""

    def __init__(self, verifier: TokenVerifier, exempt_prefixes: tuple[str, ...] = AUTH_EXEMPT_PREFIXES):
        self._verifier = verifier
        self._exempt = exempt_prefixes

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith(self._exempt):
            return handler
        return wrap_handler(handler, handler_call_details.method, self._unary, self._stream)

    async def _authenticate(self, context):
        metadata = dict(context.invocation_metadata() or ())
        return await self._verifier.verify_header_async(metadata.get("authorization"))

    def _unary(self, fn, method):
        async def run(request, context):
            token = set_current_identity(await self._authenticate(context))
            try:
                return await _call(fn, request, context)
            finally:
                reset_current_identity(token)

        return run

    def _stream(self, fn, method):
        async def run(request, context):
            token = set_current_identity(await self._authenticate(context))
            try:
                async for item in _iterate(fn, request, context):
                    yield item
            finally:
                reset_current_identity(token)

        return run


def _code_name(context) -> str:
    code = context.code() if hasattr(context, "code") else None
    return code.name if isinstance(code, grpc.StatusCode) else "OK"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts RPCs by method and final status code, and records their latency."""

    def __init__(self, metrics: RpcMetrics):
        self._metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        return wrap_handler(handler, handler_call_details.method, self._unary, self._stream)

    def _unary(self, fn, method):
        async def run(request, context):
            started = time.perf_counter()
            try:
                return await _call(fn, request, context)
            finally:
                self._metrics.observe(method, _code_name(context), started)

        return run

    def _stream(self, fn, method):
        async def run(request, context):
            started = time.perf_counter()
            try:
                async for item in _iterate(fn, request, context):
                    yield item
            finally:
                self._metrics.observe(method, _code_name(context), started)

        return run
