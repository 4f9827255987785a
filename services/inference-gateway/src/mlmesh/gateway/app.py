"""Wiring of the inference-gateway service: what it registers on the shared gRPC server bootstrap.

The KServe v2 data plane over Triton: the gRPC front (Triton's own GRPCInferenceService) on the
service's gRPC server, and the HTTP front (KServe v2 REST) served by uvicorn in the same event loop.
Both forward through one `BackendPool`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mlmesh.api.gateway.v1 import deployment_pb2, deployment_service_pb2, deployment_service_pb2_grpc
from mlmesh.common import contracts
from mlmesh.common.grpc_server import Runtime, StartupError
from mlmesh.common.kv import KvRepository
from mlmesh.common.storage_client import StorageClient
from mlmesh.common.telemetry import HttpMetrics, instrument_fastapi
from mlmesh.gateway import grpc_front
from mlmesh.gateway.backends import BackendPool, TritonBackend
from mlmesh.gateway.cache import GuardedValkey, ResultCache
from mlmesh.gateway.cached import Cached
from mlmesh.gateway.deployment_servicer import DeploymentServicer
from mlmesh.gateway.deployments import DeploymentController
from mlmesh.gateway.domain.breaker import CircuitBreaker
from mlmesh.gateway.domain.retry_budget import RetryBudget
from mlmesh.gateway.http_front import HttpFront, create_app
from mlmesh.gateway.rate_limit import RateLimiter
from mlmesh.gateway.repository import ModelRepository
from mlmesh.gateway.routing import Router
from mlmesh.gateway.settings import GatewaySettings
from mlmesh.gateway.triton_admin import TritonAdmin
from mlmesh.gateway.versions import VersionResolver

log = logging.getLogger("mlmesh.gateway")

DEPLOYMENTS_BUCKET = contracts.DEPLOYMENTS


def build_pool(settings: GatewaySettings) -> BackendPool:
    backends = [
        TritonBackend(
            grpc_url,
            http_url,
            CircuitBreaker(settings.breaker_failure_threshold, settings.breaker_open_s),
            max_message_bytes=max(settings.max_message_bytes, settings.max_request_bytes),
            health_interval_s=settings.health_interval_s,
            failures_unhealthy=settings.health_failures_unhealthy,
        )
        for grpc_url, http_url in settings.backend_urls
    ]
    return BackendPool(backends, RetryBudget(settings.retry_ratio, settings.retry_min_per_s))


async def register(runtime: Runtime) -> Iterable[str]:
    settings = runtime.settings
    assert isinstance(settings, GatewaySettings)
    # Durable state lives in JetStream KV; open (and on first start create) the bucket now, so a
    # broken NATS fails the start rather than the first request.
    repo = await KvRepository.open(runtime.js, DEPLOYMENTS_BUCKET, deployment_pb2.Deployment, "deployment")

    pool = build_pool(settings)
    await pool.start()
    runtime.on_shutdown.append(pool.close)  # hooks run in reverse: the HTTP front stops first

    store = None
    if settings.valkey_url is not None:
        password = settings.valkey_password.get_secret_value() if settings.valkey_password else None
        store = GuardedValkey(settings.valkey_url.get_secret_value(), password, timeout_s=settings.valkey_timeout_s)
        runtime.on_shutdown.append(store.close)
    cached = Cached(
        ResultCache(store, settings.cache_ttl_s),
        RateLimiter(store, settings.rate_limit_per_s, settings.rate_limit_burst),
        VersionResolver(pool),
    )
    log.info(
        "result cache",
        extra={"cache": cached.cache.active, "cache_ttl_s": settings.cache_ttl_s, "rate_limit": cached.limiter.active},
    )

    router = Router()
    storage = None
    if settings.storage_address:
        token = settings.service_token_file.read_text().strip() if settings.service_token_file else ""
        storage = StorageClient(settings.storage_address, token)
        runtime.on_shutdown.append(storage.close)
    controller = DeploymentController(
        repo,
        runtime.publisher,
        router,
        TritonAdmin(pool, settings.load_timeout_s),
        storage,
        ModelRepository(settings.model_repository) if settings.model_repository else None,
        drain_timeout_s=settings.drain_timeout_s,
        reconcile_interval_s=settings.reconcile_interval_s,
        js=runtime.js,
    )
    await controller.start()
    runtime.on_shutdown.append(controller.stop)
    if not controller.enabled:
        log.warning("deployments are off: set STORAGE_ADDRESS and MODEL_REPOSITORY to deploy registry models")
    deployment_service_pb2_grpc.add_DeploymentServiceServicer_to_server(DeploymentServicer(controller), runtime.server)
    servicer = grpc_front.InferenceServicer(
        pool,
        max_request_bytes=settings.max_request_bytes,
        default_timeout_s=settings.request_timeout_s,
        cached=cached,
        router=router,
    )
    name = grpc_front.add_to_server(servicer, runtime.server)

    app = create_app(
        pool,
        runtime.verifier,
        max_request_bytes=settings.max_request_bytes,
        timeout_s=settings.request_timeout_s,
        cached=cached,
        router=router,
    )
    if settings.otlp_endpoint:  # HTTP server spans cost every request: only when traces go somewhere
        instrument_fastapi(app)
    host = settings.http_host or settings.host
    try:
        asgi = HttpMetrics(settings.service_name).middleware(app) if settings.metrics_port >= 0 else app
        front = HttpFront(asgi, host, settings.http_port, shutdown_grace_s=settings.shutdown_grace_s)
    except OSError as exc:
        raise StartupError(str(exc)) from None
    await front.start()
    runtime.on_shutdown.append(front.stop)
    runtime.ready_info["http_port"] = front.port
    log.info("http front serving", extra={"http_host": host, "http_port": front.port})
    return [name, deployment_service_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name]
