"""The node agent process (`mlmesh-fabric agent`): discovery, registration, heartbeats, workers.

Once its own gRPC server (NodeAgentService) is up, the agent registers the discovered node with
the fabric and gets an incarnation. It then publishes a heartbeat with a utilization sample on
`mlmesh.fabric.nodes.<node>.heartbeat` every interval. When the fabric declares it NotReady (for
example after the process was stopped for a while), its heartbeats are ignored. The agent sees the
NotReady event for its own incarnation and re-registers: nothing comes back silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import (
    fabric_service_pb2,
    fabric_service_pb2_grpc,
    node_agent_service_pb2,
    node_agent_service_pb2_grpc,
    node_pb2,
)
from mlmesh.common import contracts
from mlmesh.common.events import decode_event
from mlmesh.common.grpc_server import Runtime
from mlmesh.fabric.agent import gpu_metrics
from mlmesh.fabric.agent.discovery import DiscoveryConfig, LabelConfig, discover
from mlmesh.fabric.agent.servicer import NodeAgentServicer
from mlmesh.fabric.agent.utilization import Sampler
from mlmesh.fabric.agent.workers import WorkerManager
from mlmesh.fabric.domain import node_states as ns
from mlmesh.fabric.settings import AgentSettings

log = logging.getLogger("mlmesh.fabric.agent")
SERVICE_NAME = node_agent_service_pb2.DESCRIPTOR.services_by_name["NodeAgentService"].full_name
RPC_TIMEOUT_S = 10.0


class Agent:
    def __init__(self, runtime: Runtime, settings: AgentSettings, node: node_pb2.Node, workers: WorkerManager):
        self.runtime = runtime
        self.settings = settings
        self.node = node
        self.workers = workers
        token = settings.service_token_file.read_text().strip() if settings.service_token_file else ""
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channel = grpc.aio.insecure_channel(settings.fabric_address)
        self._fabric = fabric_service_pb2_grpc.FabricServiceStub(self._channel)
        self.incarnation = 0
        self.interval_s = 1.0
        self._registered = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._sampler = Sampler()
        self.gpu_metrics = gpu_metrics.install(node.id) if runtime.settings.metrics_port >= 0 else None

    async def start(self) -> None:
        """Called once the agent's gRPC server is SERVING, so its address is final."""
        host = self.settings.advertise_host or self.settings.host
        self.node.agent_address = f"{host}:{self.runtime.port}"
        self._tasks.append(asyncio.create_task(self._register_until_done(), name="agent-register"))
        self._tasks.append(asyncio.create_task(self._heartbeats(), name="agent-heartbeat"))
        subject = contracts.node_subject(self.node.id, contracts.NODE_STATE)
        self._state_sub = await self.runtime.nc.subscribe(subject, cb=self._on_state)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._state_sub.unsubscribe()
        # No orphans: workers stop with their agent (the node goes NotReady by missed heartbeats).
        await self.workers.stop_all(self.settings.stop_grace_s)
        await self._channel.close()

    async def register(self) -> None:
        reply = await self._fabric.RegisterNode(
            fabric_service_pb2.RegisterNodeRequest(node=self.node), metadata=self._metadata, timeout=RPC_TIMEOUT_S
        )
        self.incarnation = reply.incarnation
        self.interval_s = reply.heartbeat_interval.ToTimedelta().total_seconds() or 1.0
        self._registered.set()
        log.info(
            "registered",
            extra={"node": self.node.id, "incarnation": self.incarnation, "state": ns.state_name(reply.node.state)},
        )

    async def _register_until_done(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.register()
                return
            except grpc.aio.AioRpcError as exc:
                log.warning("registration failed (%s: %s); retrying in %.1fs", exc.code().name, exc.details(), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _heartbeats(self) -> None:
        await self._registered.wait()
        sequence = 0
        subject = contracts.node_subject(self.node.id, contracts.NODE_HEARTBEAT)
        while True:
            sequence += 1
            sent = Timestamp()
            sent.GetCurrentTime()
            sample = self._sampler.sample()
            if self.gpu_metrics is not None:
                self.gpu_metrics.update(sample)
            hb = events_pb2.NodeHeartbeat(
                node_id=self.node.id,
                incarnation=self.incarnation,
                sequence=sequence,
                utilization=sample,
                send_time=sent,
            )
            try:
                await self.runtime.publisher.publish(subject, hb, ce_subject=self.node.id, timeout_s=self.interval_s)
            except Exception as exc:
                log.warning("heartbeat not published: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def _on_state(self, msg) -> None:
        try:
            event = decode_event(msg, events_pb2.NodeStateChanged).data
        except Exception:
            return
        if event.to_state == ns.NOT_READY and event.incarnation == self.incarnation:
            log.warning("declared NotReady (%s); registering again", event.message)
            self._registered.clear()
            self._tasks.append(asyncio.create_task(self._register_until_done(), name="agent-reregister"))


async def register(runtime: Runtime) -> Iterable[str]:
    settings: AgentSettings = runtime.settings  # type: ignore[assignment]
    labels = LabelConfig(
        rack=settings.rack,
        switch=settings.switch,
        zone=settings.zone,
        pool=settings.pool,
        spot=settings.spot,
        nvlink_domain=settings.nvlink_domain,
    )
    config = DiscoveryConfig(
        node_id=settings.node_id or "",
        labels=labels,
        reserve_cpu_millis=settings.reserve_cpu_millis,
        reserve_memory_bytes=settings.reserve_memory_bytes,
    )
    node = await asyncio.to_thread(discover, config)
    workers = WorkerManager(node.id, runtime.publisher, settings.log_dir)
    node_agent_service_pb2_grpc.add_NodeAgentServiceServicer_to_server(NodeAgentServicer(workers), runtime.server)
    agent = Agent(runtime, settings, node, workers)
    runtime.on_serving.append(agent.start)
    runtime.on_shutdown.append(agent.stop)
    return [SERVICE_NAME]
