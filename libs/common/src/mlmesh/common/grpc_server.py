"""Service bootstrap: settings → logging/tracing → NATS → gRPC (health, reflection) → SERVING.

Every service's `__main__` calls `run_main(SettingsClass, register)`. `register` adds the service's
servicers to the server and returns their full names. On SIGTERM/SIGINT the service reports
NOT_SERVING, lets in-flight RPCs finish within the grace period, drains NATS and flushes telemetry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from mlmesh.common import contracts, events, kv
from mlmesh.common.audit_interceptor import AuditInterceptor
from mlmesh.common.audit_log import AuditLog
from mlmesh.common.auth import TokenVerifier
from mlmesh.common.claims import ClaimMapping
from mlmesh.common.errors import MlmeshError
from mlmesh.common.grpc_interceptors import AuthInterceptor, ErrorMappingInterceptor, MetricsInterceptor
from mlmesh.common.logging import configure_logging
from mlmesh.common.settings import ServiceSettings, SettingsError, load_settings
from mlmesh.common.telemetry import (
    RpcMetrics,
    grpc_server_tracing_interceptor,
    setup_tracing,
    start_metrics_server,
)

log = logging.getLogger("mlmesh.server")


class StartupError(Exception):
    """A service could not start; the message is one line for the operator."""


@dataclass
class Runtime:
    """What `register` gets to wire a service: settings, the server, NATS and the event publisher."""

    settings: ServiceSettings
    server: grpc.aio.Server
    nc: NatsClient
    js: JetStreamContext
    publisher: events.EventPublisher
    verifier: TokenVerifier
    health: health.aio.HealthServicer
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run once the server is bound and SERVING: e.g. a node agent registers its address then.
    on_serving: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    port: int = 0  # the bound gRPC port, set before on_serving runs
    # Extra facts for the ready file and the "serving" log line, e.g. a second front's port.
    ready_info: dict = field(default_factory=dict)


Register = Callable[[Runtime], Awaitable[Iterable[str]]]


def make_verifier(settings: ServiceSettings) -> TokenVerifier:
    common = {
        "issuer": settings.auth_issuer,
        "audience": settings.auth_audience,
        "claims": ClaimMapping(
            team_claim=settings.auth_team_claim,
            roles_claim=settings.auth_roles_claim,
            team_prefix=settings.auth_team_prefix,
            role_map=settings.auth_role_map,
        ),
    }
    if settings.auth_jwks_url:
        return TokenVerifier(jwks_url=settings.auth_jwks_url, **common)
    return TokenVerifier(public_key=settings.auth_public_key_file.read_bytes(), **common)


def read_service_token(settings: ServiceSettings) -> str:
    """The token this service sends to others ("" without a token file)."""
    if settings.service_token_file is None:
        return ""
    try:
        return settings.service_token_file.read_text().strip()
    except OSError as exc:
        raise StartupError(f"cannot read SERVICE_TOKEN_FILE {settings.service_token_file}: {exc.strerror}") from None


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def build_server(settings: ServiceSettings, verifier: TokenVerifier, audit: AuditLog | None = None) -> grpc.aio.Server:
    # Order matters: the first interceptor is outermost. Tracing sees everything; errors map what
    # auth and the servicer raise; the audit log records, innermost, what an identity did.
    interceptors = [
        grpc_server_tracing_interceptor(),
        MetricsInterceptor(RpcMetrics(settings.service_name)),
        ErrorMappingInterceptor(),
        AuthInterceptor(verifier),
    ]
    if audit is not None:
        interceptors.append(AuditInterceptor(audit))
    if settings.metrics_port < 0:  # metrics off: nothing would read them, so do not count
        interceptors = [i for i in interceptors if not isinstance(i, MetricsInterceptor)]
    return grpc.aio.server(interceptors=interceptors, options=server_options(settings.max_message_bytes))


def _bind(server: grpc.aio.Server, host: str, port: int) -> int:
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise StartupError(f"cannot bind gRPC to {host}:{port}: the port is in use or the address is invalid")
    return bound


def write_ready_file(path: Path, info: dict) -> None:
    """Tell a launcher which ports were bound (port 0 means 'pick one'), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


async def serve(settings: ServiceSettings, register: Register, stop: asyncio.Event | None = None) -> None:
    name = settings.service_name
    flush_tracing = setup_tracing(
        name, settings.otlp_endpoint, token=read_service_token(settings), sample_ratio=settings.trace_sample_ratio
    )
    verifier = make_verifier(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    connecting = asyncio.ensure_future(
        events.connect(
            settings.nats_url,
            name=f"mlmesh-{name}",
            timeout_s=settings.nats_connect_timeout_s,
            **events.identity_options(name, settings.nats_creds_file),
        )
    )
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():  # SIGTERM while still connecting: nothing to drain yet
        connecting.cancel()
        flush_tracing()
        return
    stopping.cancel()
    try:
        nc = connecting.result()
    except MlmeshError as exc:
        raise StartupError(exc.message) from None
    js = nc.jetstream()
    kv.BUCKET_REPLICAS = settings.stream_replicas
    await events.ensure_streams(js, contracts.streams_owned_by(name), replicas=settings.stream_replicas)

    audit_log = AuditLog(name, replicas=settings.stream_replicas)
    await audit_log.start(js)
    server = build_server(settings, verifier, audit_log)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    runtime = Runtime(
        settings=settings,
        server=server,
        nc=nc,
        js=js,
        publisher=events.EventPublisher(js, source=f"//mlmesh/{name}"),
        verifier=verifier,
        health=health_servicer,
    )
    runtime.on_shutdown.append(audit_log.close)  # hooks run in reverse: this one last, after the RPCs
    names = list(await register(runtime))
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    port = runtime.port = _bind(server, settings.host, settings.grpc_port)
    metrics_server, metrics_port = None, -1
    if settings.metrics_port >= 0:
        try:
            metrics_server, metrics_port = start_metrics_server(settings.host, settings.metrics_port)
        except OSError as exc:
            raise StartupError(
                f"cannot bind metrics to {settings.host}:{settings.metrics_port}: {exc.strerror}"
            ) from None

    await server.start()
    for svc in ["", *names]:
        await health_servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
    for hook in runtime.on_serving:
        await hook()
    info = {"service": name, "pid": os.getpid(), "grpc_port": port, "metrics_port": metrics_port, **runtime.ready_info}
    if settings.ready_file:
        write_ready_file(settings.ready_file, info)
    log.info("serving", extra=info)

    await stop.wait()
    started = time.monotonic()
    log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s})
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)
    for hook in reversed(runtime.on_shutdown):
        try:
            await hook()
        except Exception:
            log.exception("shutdown hook failed")
    await nc.drain()
    if metrics_server is not None:
        metrics_server.shutdown()
        metrics_server.server_close()
    log.info("stopped", extra={"took_s": round(time.monotonic() - started, 3)})
    flush_tracing()


def run_main(settings_cls: type[ServiceSettings], register: Register) -> None:
    """Process entry point: one clear line and a non-zero exit on any startup problem."""
    try:
        settings = load_settings(settings_cls)
    except SettingsError as exc:
        print(f"mlmesh-{settings_cls.service_name}: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    try:
        asyncio.run(serve(settings, register))
    except StartupError as exc:
        print(f"mlmesh-{settings.service_name}: {exc}", file=sys.stderr)
        sys.exit(1)
