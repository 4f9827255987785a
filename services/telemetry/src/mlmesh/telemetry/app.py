"""Wiring of the telemetry service: event intake → aggregates → alert loop, the gateway scraper,
the aggregates on `/metrics`, and TelemetryService."""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Iterable

from google.protobuf import wrappers_pb2
from prometheus_client import REGISTRY

from mlmesh.api.telemetry.v1 import telemetry_service_pb2, telemetry_service_pb2_grpc
from mlmesh.common import contracts
from mlmesh.common.errors import InvalidArgument
from mlmesh.common.grpc_server import Runtime, StartupError
from mlmesh.common.kv import KvRepository
from mlmesh.common.lease import Lease
from mlmesh.telemetry.alerts import AlertEngine
from mlmesh.telemetry.audit import AuditReader
from mlmesh.telemetry.domain.aggregates import Aggregates
from mlmesh.telemetry.domain.rules import parse_rules
from mlmesh.telemetry.domain.signals import SIGNALS
from mlmesh.telemetry.exporter import AggregatesCollector
from mlmesh.telemetry.ingest import Ingest
from mlmesh.telemetry.scraper import Scraper
from mlmesh.telemetry.servicer import TelemetryServicer
from mlmesh.telemetry.settings import TelemetrySettings
from mlmesh.telemetry.traces import TraceStore, get_trace, register_trace_receiver

log = logging.getLogger("mlmesh.telemetry")
SERVICE_NAME = telemetry_service_pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name


def load_rules(settings: TelemetrySettings):
    try:
        text = settings.alert_rules_file.read_text()
    except OSError as exc:
        raise StartupError(f"MLMESH_TELEMETRY_ALERT_RULES_FILE {settings.alert_rules_file}: {exc.strerror}") from None
    try:
        return parse_rules(text, set(SIGNALS))
    except InvalidArgument as exc:
        raise StartupError(f"{settings.alert_rules_file}: {exc.message}") from None


async def register(runtime: Runtime) -> Iterable[str]:
    settings: TelemetrySettings = runtime.settings  # type: ignore[assignment]
    rules = load_rules(settings)
    agg = Aggregates(retention_s=settings.history_s)
    engine_box: list[AlertEngine] = []
    ingest = Ingest(runtime, agg, settings.history_s, on_alert_event=lambda a: engine_box[0].on_alert_event(a))
    scraper = Scraper(settings.targets(), interval_s=settings.scrape_interval_s, window_s=settings.latency_window_s)
    lease_repo = await KvRepository.open(
        runtime.js, contracts.TELEMETRY_LEASE, wrappers_pb2.StringValue, "lease", history=1
    )
    lease = Lease(lease_repo, settings.replica_id or f"{socket.gethostname()}-{os.getpid()}", settings.lease_ttl_s)
    engine = AlertEngine(rules, ingest, runtime.publisher, settings=settings, scraper=scraper, lease=lease)
    engine_box.append(engine)

    await ingest.start()  # replays the streams (restoring firing alerts) before anything is served
    runtime.on_shutdown.append(ingest.stop)
    scraper.start()
    runtime.on_shutdown.append(scraper.stop)
    engine.start()
    runtime.on_shutdown.append(engine.stop)
    if settings.metrics_port >= 0:
        collector = AggregatesCollector(ingest, engine)
        REGISTRY.register(collector)
        runtime.on_shutdown.append(_unregister(collector))

    # The local OTLP receiver's recent traces, for GetTrace (bounded: the oldest trace goes first).
    traces = TraceStore(max_traces=settings.trace_max_traces, max_spans=settings.trace_max_spans)
    receiver = register_trace_receiver(runtime, traces)
    servicer = TelemetryServicer(
        ingest,
        engine,
        traces=functools.partial(get_trace, traces),
        history_s=settings.history_s,
        audit=AuditReader(runtime.js),
    )
    telemetry_service_pb2_grpc.add_TelemetryServiceServicer_to_server(servicer, runtime.server)
    log.info(
        "telemetry ready",
        extra={"rules": len(rules), "scrape_targets": len(scraper.targets), "jobs": len(agg.jobs)},
    )
    return [SERVICE_NAME, receiver]


def _unregister(collector):
    async def run() -> None:
        REGISTRY.unregister(collector)

    return run
