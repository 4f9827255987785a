"""The node inventory: KV-backed node records, registration, heartbeats, state changes.

Node records live in the JetStream KV bucket `nodes` (the scheduler reads the same bucket), each
write compare-and-set. Heartbeats are not written to KV: at one per node per second that would be
10,000 writes a second on a large cluster. Each replica keeps the last-seen time and utilization in
memory, fed by the heartbeat subject; only state changes are written and published.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.common import contracts
from mlmesh.common.clock import now_ts
from mlmesh.common.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from mlmesh.common.events import EventPublisher, is_token
from mlmesh.common.kv import KvRepository
from mlmesh.common.kv_index import KvIndex
from mlmesh.fabric.domain import node_states as ns

log = logging.getLogger("mlmesh.fabric.registry")

NODES_BUCKET = contracts.NODES


def validate_node(node: node_pb2.Node) -> None:
    bad: dict[str, str] = {}
    if not is_token(node.id):
        bad["node.id"] = "must be 1-128 characters of [a-z0-9_-]"
    host, _, port = node.agent_address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        bad["node.agent_address"] = "must be host:port"
    for dim in ("gpus", "cpu_millis", "memory_bytes"):
        if getattr(node.capacity, dim) < 0:
            bad[f"node.capacity.{dim}"] = "must not be negative"
    if node.capacity.gpus > 1024 or node.capacity.cpu_millis > 100_000_000:
        bad["node.capacity"] = "implausibly large"
    if bad:
        raise InvalidArgument("invalid node", bad)


class NodeRegistry:
    def __init__(self, repo: KvRepository[node_pb2.Node], index: KvIndex[node_pb2.Node], publisher: EventPublisher):
        self.repo = repo
        self.index = index
        self.publisher = publisher
        self.last_seen: dict[str, float] = {}
        self.utilization: dict[str, node_pb2.NodeUtilization] = {}
        self.heartbeat_time: dict[str, Timestamp] = {}
        self.ignored_heartbeats = 0
        index.subscribe(self._on_change)

    def _on_change(self, before: node_pb2.Node | None, after: node_pb2.Node | None) -> None:
        # A (re-)registration starts the liveness clock afresh, on every replica.
        if after is not None and (before is None or before.incarnation != after.incarnation):
            self.last_seen[after.id] = time.monotonic()

    def get(self, node_id: str) -> node_pb2.Node:
        node = self.index.items.get(node_id or "")
        if node is None:
            raise NotFound(f"node {node_id} not found")
        return self.with_live_fields(node)

    def with_live_fields(self, node: node_pb2.Node) -> node_pb2.Node:
        out = node_pb2.Node()
        out.CopyFrom(node)
        if node.id in self.utilization:
            out.utilization.CopyFrom(self.utilization[node.id])
        if node.id in self.heartbeat_time:
            out.last_heartbeat_time.CopyFrom(self.heartbeat_time[node.id])
        return out

    async def register(self, node: node_pb2.Node) -> node_pb2.Node:
        """Create or replace a node's record with a new incarnation; an admin hold survives."""
        validate_node(node)
        for _ in range(8):
            current = self.index.items.get(node.id)
            new = node_pb2.Node()
            new.CopyFrom(node)
            new.register_time.CopyFrom(now_ts())
            new.ClearField("utilization")
            if current is not None and ns.ADMIN_HOLD in current.labels.extra:
                new.labels.extra[ns.ADMIN_HOLD] = current.labels.extra[ns.ADMIN_HOLD]
            new.incarnation = (current.incarnation if current is not None else 0) + 1
            new.state = ns.after_registration(new)
            new.state_reason = "Registered"
            new.state_message = f"incarnation {new.incarnation}"
            new.state_change_time.CopyFrom(new.register_time)
            try:
                if current is None:
                    rev = await self.repo.create(node.id, new)
                else:
                    rev = await self.repo.update(node.id, new, current.revision)
            except (Conflict, AlreadyExists):
                continue  # another replica registered it meanwhile: read again
            self.index.apply(node.id, new, rev)
            await self._publish(current.state if current else node_pb2.NODE_STATE_UNSPECIFIED, new)
            log.info("node registered", extra={"node": node.id, "incarnation": new.incarnation})
            return new
        raise Conflict(f"node {node.id} kept changing; try again")

    def heartbeat(
        self, node_id: str, incarnation: int, utilization: node_pb2.NodeUtilization | None
    ) -> tuple[int, bool]:
        """Record a heartbeat; (state, re-registration required). A heartbeat from an old
        incarnation, or for a node already declared NotReady, is ignored."""
        node = self.index.items.get(node_id)
        if node is None:
            return node_pb2.NODE_STATE_UNSPECIFIED, True
        if incarnation != node.incarnation or not ns.live(node.state):
            self.ignored_heartbeats += 1
            return node.state, True
        self.last_seen[node_id] = time.monotonic()
        self.heartbeat_time[node_id] = now_ts()
        if utilization is not None:
            self.utilization[node_id] = utilization
        return node.state, False

    async def change_state(
        self,
        node_id: str,
        decide: Callable[[node_pb2.Node], int | None],
        reason: str,
        message: str = "",
    ) -> node_pb2.Node:
        """CAS a state change; `decide` may edit the draft (labels) and returns the new state, or
        None for no change."""
        for _ in range(8):
            current = self.index.items.get(node_id)
            if current is None:
                raise NotFound(f"node {node_id} not found")
            draft = node_pb2.Node()
            draft.CopyFrom(current)
            new_state = decide(draft)
            if new_state is None or (new_state == current.state and draft == current):
                return current
            draft.state = new_state
            if new_state != current.state:
                draft.state_reason = reason
                draft.state_message = message
                draft.state_change_time.CopyFrom(now_ts())
            try:
                rev = await self.repo.update(node_id, draft, current.revision)
            except Conflict:
                continue
            self.index.apply(node_id, draft, rev)
            if new_state != current.state:
                await self._publish(current.state, draft)
            return draft
        raise Conflict(f"node {node_id} kept changing; try again")

    async def _publish(self, from_state: int, node: node_pb2.Node) -> None:
        event = events_pb2.NodeStateChanged(
            node_id=node.id,
            from_state=from_state,
            to_state=node.state,
            reason=node.state_reason,
            message=node.state_message,
            incarnation=node.incarnation,
            transition_time=node.state_change_time,
            labels=node.labels,
        )
        await self.publisher.publish(
            contracts.node_subject(node.id, contracts.NODE_STATE),
            event,
            ce_subject=node.id,
            event_id=f"{node.id}-{node.incarnation}-{node.revision}-{node.state}",
        )
