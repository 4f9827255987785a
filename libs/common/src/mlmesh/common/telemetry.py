"""OpenTelemetry tracing (OTLP), gRPC/FastAPI instrumentation and the Prometheus endpoint."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

log = logging.getLogger("mlmesh.telemetry")

_rpc_collectors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# 0.2 s is a bound of its own: the default inference-latency alert compares p99 against it.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2.5, 5, 10)


def setup_tracing(
    service: str, otlp_endpoint: str | None, *, token: str = "", sample_ratio: float = 1.0
) -> Callable[[], None]:
    """Install a tracer provider; spans go to `otlp_endpoint` when set. Returns a flush-and-shutdown.

    Without an endpoint nothing is recorded (spans still carry ids for logs and propagation), so
    an untraced service pays no span work. With one, new traces are sampled at `sample_ratio`
    and a caller's sampling decision is followed. The exporter sends `token` as a bearer token:
    the local receiver (the telemetry service) authenticates calls like every service does."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

    from mlmesh.common.tracing import JobAttributes

    sampler = ParentBased(TraceIdRatioBased(sample_ratio)) if otlp_endpoint else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create({"service.name": f"mlmesh-{service}"}), sampler=sampler)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # Plaintext only when asked for (http://) or on this host: the bearer token rides along.
        insecure = otlp_endpoint.startswith("http://") or otlp_endpoint.split("//")[-1].startswith(
            ("127.0.0.1", "localhost")
        )
        headers = {"authorization": f"Bearer {token}"} if token else None
        provider.add_span_processor(JobAttributes())
        exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=insecure, headers=headers, timeout=5)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)

    def shutdown() -> None:
        provider.force_flush(timeout_millis=5000)
        provider.shutdown()

    return shutdown


def grpc_server_tracing_interceptor() -> grpc.aio.ServerInterceptor:
    """Opens a server span per RPC, continuing the caller's `traceparent`."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor()


def instrument_fastapi(app) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="health,metrics")


class RpcMetrics:
    """Request count and latency per method and status code."""

    def __init__(self, service: str, registry: CollectorRegistry = REGISTRY):
        # The collectors are registered once per registry: a second server in one process (tests, or
        # a restart inside one interpreter) shares them instead of failing with DuplicatedTimeseries.
        if registry not in _rpc_collectors:
            _rpc_collectors[registry] = (
                Counter("mlmesh_rpc_requests_total", "RPCs handled", ["service", "method", "code"], registry=registry),
                Histogram(
                    "mlmesh_rpc_duration_seconds",
                    "RPC handling time",
                    ["service", "method"],
                    buckets=LATENCY_BUCKETS,
                    registry=registry,
                ),
            )
        self.requests, self.latency = _rpc_collectors[registry]
        self.service = service

    def observe(self, method: str, code: str, started: float) -> None:
        self.requests.labels(self.service, method, code).inc()
        self.latency.labels(self.service, method).observe(time.perf_counter() - started)


_http_collectors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class HttpMetrics:
    """HTTP request count and latency per route template (never the raw path: bounded labels)."""

    def __init__(self, service: str, registry: CollectorRegistry = REGISTRY):
        if registry not in _http_collectors:
            _http_collectors[registry] = (
                Counter(
                    "mlmesh_http_requests_total",
                    "HTTP requests handled",
                    ["service", "route", "method", "code"],
                    registry=registry,
                ),
                Histogram(
                    "mlmesh_http_request_duration_seconds",
                    "HTTP request handling time, to the last byte of the response",
                    ["service", "route"],
                    buckets=LATENCY_BUCKETS,
                    registry=registry,
                ),
            )
        self.requests, self.latency = _http_collectors[registry]
        self.service = service

    def middleware(self, app):
        """A pure ASGI middleware (cheaper than BaseHTTPMiddleware: no extra task per request)."""
        metrics = self

        async def asgi(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            started = time.perf_counter()
            status = [500]

            async def send_wrapper(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                # A mounted sub-app's route path leaves out its mount point (root_path): put it back.
                path = getattr(scope.get("route"), "path", None)
                route = (scope.get("root_path") or "") + path if path else "unmatched"
                metrics.requests.labels(metrics.service, route, scope.get("method", ""), str(status[0])).inc()
                metrics.latency.labels(metrics.service, route).observe(time.perf_counter() - started)

        return asgi


def start_metrics_server(host: str, port: int, registry: CollectorRegistry = REGISTRY):
    """Serve Prometheus `/metrics` (unauthenticated by design). Returns (server, bound port)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_address[1]
