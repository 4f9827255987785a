"""The gRPC front: Triton's own `inference.GRPCInferenceService`, so tritonclient.grpc works unchanged.

Model calls map the caller's model name to its team's Triton name, forward the request proto as it
came (tensors are never decoded) and map the name back in the reply. Triton's errors keep their code.
ModelStreamInfer routes each request of a stream the same way, each on its own backend stream
(streaming.py).
"""

from __future__ import annotations

import contextlib

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from mlmesh.common import tracing
from mlmesh.common.auth import current_identity
from mlmesh.common.errors import TooLarge
from mlmesh.gateway.backends import BackendError, BackendPool
from mlmesh.gateway.cached import Cached
from mlmesh.gateway.domain.cache_key import cache_key, grpc_request_digest
from mlmesh.gateway.routing import Route, Router
from mlmesh.gateway.streaming import forward_stream

SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = SERVICE.full_name
SUPPORTED = {
    "ServerLive",
    "ServerReady",
    "ServerMetadata",
    "ModelReady",
    "ModelMetadata",
    "ModelConfig",
    "ModelInfer",
    "ModelStreamInfer",
}


def metadata_reader(context: grpc.aio.ServicerContext):
    """A lookup of the call's metadata by (lowercase) name, for sticky canaries."""

    def read(name: str) -> str | None:
        wanted = name.lower()
        for key, value in context.invocation_metadata() or ():
            if key == wanted:
                return value if isinstance(value, str) else None
        return None

    return read


class _Call:
    """One model call: its route, and the caller's and Triton's names, to rewrite requests, replies
    and errors."""

    def __init__(self, router: Router, model: str, version: str, context: grpc.aio.ServicerContext):
        self.model = model
        self.team = current_identity().team
        tracing.tag(team=self.team, model=model)
        self.route: Route = router.route(self.team, model, version, metadata_reader(context))
        self.triton = self.route.triton
        self.version = self.route.version

    def error(self, exc: BackendError) -> tuple[grpc.StatusCode, str]:
        return exc.code, exc.message.replace(self.triton, self.model)


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        pool: BackendPool,
        *,
        max_request_bytes: int,
        default_timeout_s: float,
        cached: Cached | None = None,
        router: Router | None = None,
    ):
        self._pool = pool
        self._router = router or Router()
        self._cached = cached
        self._max_request_bytes = max_request_bytes
        self._default_timeout_s = default_timeout_s

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return self._default_timeout_s if remaining is None else min(remaining, self._default_timeout_s)

    async def _forward(self, method: str, request, context, call: _Call | None = None):
        try:
            return await self._pool.grpc(method, request, self._timeout(context))
        except BackendError as exc:
            code, message = call.error(exc) if call else (exc.code, exc.message)
            await context.abort(code, message)

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self._pool.available())

    async def ServerMetadata(self, request, context):
        return await self._forward("ServerMetadata", request, context)

    async def ModelReady(self, request, context):
        call = _Call(self._router, request.name, request.version, context)
        forwarded = service_pb2.ModelReadyRequest()
        forwarded.CopyFrom(request)
        forwarded.name = call.triton
        forwarded.version = call.version
        return await self._forward("ModelReady", forwarded, context, call)

    async def ModelMetadata(self, request, context):
        call = _Call(self._router, request.name, request.version, context)
        forwarded = service_pb2.ModelMetadataRequest()
        forwarded.CopyFrom(request)
        forwarded.name = call.triton
        forwarded.version = call.version
        reply = await self._forward("ModelMetadata", forwarded, context, call)
        reply.name = call.model
        return reply

    async def ModelConfig(self, request, context):
        call = _Call(self._router, request.name, request.version, context)
        forwarded = service_pb2.ModelConfigRequest()
        forwarded.CopyFrom(request)
        forwarded.name = call.triton
        forwarded.version = call.version
        reply = await self._forward("ModelConfig", forwarded, context, call)
        reply.config.name = call.model
        return reply

    async def ModelInfer(self, request: service_pb2.ModelInferRequest, context):
        size = request.ByteSize()
        if size > self._max_request_bytes:
            raise TooLarge(f"request of {size} bytes exceeds the limit of {self._max_request_bytes} bytes")
        call = _Call(self._router, request.model_name, request.model_version, context)
        cached = self._cached
        with self._router.track(call.route):
            if cached is not None:
                await cached.limit(call.route)
                ttl = cached.cache.ttl_for(call.route.cache_ttl_s)
                if ttl > 0:
                    return await self._cached_infer(request, context, call, cached, ttl)
            # The request is forwarded as is; only its model name and version change (restored on
            # the way out of this handler, since grpc owns the object).
            asked = request.model_version
            request.model_name, request.model_version = call.triton, call.version
            try:
                reply = await self._forward("ModelInfer", request, context, call)
            finally:
                request.model_name, request.model_version = call.model, asked
            reply.model_name = call.model
            return reply

    async def ModelStreamInfer(self, request_iterator, context):
        """Each request routed as ModelInfer routes it, on a backend stream of its own (streaming.py)."""
        responses = forward_stream(
            request_iterator,
            pool=self._pool,
            router=self._router,
            route=lambda request: _Call(self._router, request.model_name, request.model_version, context),
            cached=self._cached,
            max_request_bytes=self._max_request_bytes,
            timeout=self._timeout(context),
        )
        try:
            async with contextlib.aclosing(responses):
                async for response in responses:
                    yield response
        except BackendError as exc:
            await context.abort(exc.code, exc.message)

    async def _cached_infer(
        self, request: service_pb2.ModelInferRequest, context, call: _Call, cached: Cached, ttl: float
    ):
        timeout = self._timeout(context)
        version = call.version or await cached.versions.resolve(call.triton, timeout)
        if version is None:  # Triton cannot name the version: uncached, Triton answers
            cached.cache.bypass()
            forwarded = _forwarded(request, call.triton, call.version)
            reply = await self._forward("ModelInfer", forwarded, context, call)
            reply.model_name = call.model
            return reply
        key = cache_key(call.team, call.model, version, grpc_request_digest(request))

        async def fetch() -> service_pb2.ModelInferResponse:
            # The lookup is inside the flight too: a caller that joins no flight looks up after
            # the last flight stored its reply.
            value = await cached.cache.get(key)
            if value is not None:
                return service_pb2.ModelInferResponse.FromString(value)
            # Forwarded with the concrete version, so what is stored is what the key names.
            forwarded = _forwarded(request, call.triton, version)
            reply = await self._pool.grpc("ModelInfer", forwarded, timeout)
            reply.model_name = call.model
            reply.id = ""
            await cached.cache.set(key, reply.SerializeToString(), ttl)
            return reply

        try:
            shared = await cached.flight.do(("grpc", key), fetch)
        except BackendError as exc:
            await context.abort(*call.error(exc))
        if shared.id == request.id:
            return shared
        reply = service_pb2.ModelInferResponse()
        reply.CopyFrom(shared)  # shared by every caller of the flight: not changed in place
        reply.id = request.id
        return reply


def _forwarded(request: service_pb2.ModelInferRequest, triton: str, version: str) -> service_pb2.ModelInferRequest:
    forwarded = service_pb2.ModelInferRequest()
    forwarded.CopyFrom(request)
    forwarded.model_name = triton
    forwarded.model_version = version
    return forwarded


def _unimplemented(name: str):
    async def handler(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not offered by the gateway")

    handler.__name__ = name
    return handler


def _unimplemented_stream(name: str):
    async def handler(self, request_iterator, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not offered by the gateway")
        yield  # pragma: no cover - makes this an async generator

    handler.__name__ = name
    return handler


# Every other method of the service answers UNIMPLEMENTED (the generated base raises
# NotImplementedError, which the error interceptor would report as INTERNAL).
for _method in SERVICE.methods:
    if _method.name not in SUPPORTED:
        _factory = _unimplemented_stream if _method.server_streaming else _unimplemented
        setattr(InferenceServicer, _method.name, _factory(_method.name))


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> str:
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    return SERVICE_NAME
