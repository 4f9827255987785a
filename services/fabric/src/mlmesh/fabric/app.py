"""Wiring of the fabric service: node inventory (KV), heartbeat intake, liveness monitor, API."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

from google.protobuf import wrappers_pb2

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import fabric_service_pb2, fabric_service_pb2_grpc, node_pb2
from mlmesh.common import contracts
from mlmesh.common.events import decode_event
from mlmesh.common.grpc_server import Runtime
from mlmesh.common.kv import KvRepository
from mlmesh.common.kv_index import KvIndex
from mlmesh.common.lease import Lease
from mlmesh.fabric.linkbench_runner import LinkBenchRunner
from mlmesh.fabric.monitor import LivenessMonitor
from mlmesh.fabric.registry import NODES_BUCKET, NodeRegistry
from mlmesh.fabric.servicer import FabricServicer
from mlmesh.fabric.settings import FabricSettings

log = logging.getLogger("mlmesh.fabric")
SERVICE_NAME = fabric_service_pb2.DESCRIPTOR.services_by_name["FabricService"].full_name
HEARTBEATS = contracts.node_subject(contracts.ANY, contracts.NODE_HEARTBEAT)


async def register(runtime: Runtime) -> Iterable[str]:
    settings: FabricSettings = runtime.settings  # type: ignore[assignment]
    repo = await KvRepository.open(runtime.js, NODES_BUCKET, node_pb2.Node, "node", history=5)
    index = KvIndex(repo)
    await index.start()
    runtime.on_shutdown.append(index.stop)
    registry = NodeRegistry(repo, index, runtime.publisher)

    async def on_heartbeat(msg) -> None:
        # Every replica listens (plain subscription, not a queue group), so whichever holds the
        # lease next already knows who is alive.
        try:
            hb = decode_event(msg, events_pb2.NodeHeartbeat).data
        except Exception:
            log.warning("undecodable heartbeat on %s", msg.subject)
            return
        registry.heartbeat(hb.node_id, hb.incarnation, hb.utilization if hb.HasField("utilization") else None)

    sub = await runtime.nc.subscribe(HEARTBEATS, cb=on_heartbeat)
    runtime.on_shutdown.append(sub.unsubscribe)
    lease_repo = await KvRepository.open(
        runtime.js, contracts.FABRIC_LEASE, wrappers_pb2.StringValue, "lease", history=1
    )
    lease = Lease(lease_repo, settings.replica_id or f"{socket.gethostname()}-{os.getpid()}", settings.lease_ttl_s)
    monitor = LivenessMonitor(registry, lease, settings.heartbeat_interval_s, settings.missed_heartbeats)
    await monitor.start()
    runtime.on_shutdown.append(monitor.stop)
    linkbench = None
    if settings.service_token_file:
        linkbench = LinkBenchRunner(settings.service_token_file.read_text().strip())
    servicer = FabricServicer(registry, settings.heartbeat_interval_s, linkbench=linkbench)
    fabric_service_pb2_grpc.add_FabricServiceServicer_to_server(servicer, runtime.server)
    return [SERVICE_NAME]
