"""FabricService: registration and heartbeats from agents, the node inventory, admin state
changes, topology, network profiles and link benchmarks."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from mlmesh.api.fabric.v1 import fabric_service_pb2 as api
from mlmesh.api.fabric.v1 import fabric_service_pb2_grpc, node_pb2
from mlmesh.common.auth import ROLE_ADMIN, ROLE_SERVICE, current_identity
from mlmesh.common.errors import FailedPrecondition, InvalidArgument, NotFound
from mlmesh.common.labels import label_match
from mlmesh.fabric.domain import network, topology
from mlmesh.fabric.domain import node_states as ns
from mlmesh.fabric.linkbench_runner import DEFAULT_ITERS, DEFAULT_SIZE, default_backend
from mlmesh.fabric.registry import NodeRegistry

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_PAIRS = 64


class FabricServicer(fabric_service_pb2_grpc.FabricServiceServicer):
    def __init__(self, registry: NodeRegistry, heartbeat_interval_s: float, linkbench=None):
        self.registry = registry
        self.interval = Duration()
        self.interval.FromNanoseconds(int(heartbeat_interval_s * 1e9))
        self.linkbench = linkbench
        self.measured: dict[tuple[str, str], object] = {}  # last successful benchmark per link

    async def RegisterNode(self, request, context) -> api.RegisterNodeResponse:
        current_identity().require_role(ROLE_SERVICE)  # node agents hold service tokens
        node = await self.registry.register(request.node)
        return api.RegisterNodeResponse(node=node, incarnation=node.incarnation, heartbeat_interval=self.interval)

    async def Heartbeat(self, request, context) -> api.HeartbeatResponse:
        current_identity().require_role(ROLE_SERVICE)
        util = request.utilization if request.HasField("utilization") else None
        state, reregister = self.registry.heartbeat(request.node_id, request.incarnation, util)
        return api.HeartbeatResponse(state=state, reregister_required=reregister)

    async def GetNode(self, request, context) -> api.GetNodeResponse:
        current_identity()  # nodes are cluster-wide: any authenticated caller may read them
        return api.GetNodeResponse(node=self.registry.get(request.node_id))

    async def ListNodes(self, request, context) -> api.ListNodesResponse:
        current_identity()
        size = request.page_size or DEFAULT_PAGE
        if not 0 < size <= MAX_PAGE:
            raise InvalidArgument.field("page_size", f"must be 1-{MAX_PAGE}")
        wanted = set(request.states)
        rows = sorted(
            (
                n
                for n in self.registry.index.items.values()
                if (not wanted or n.state in wanted)
                and (not request.pool or n.labels.pool == request.pool)
                and _labels_match(n, request.label_selector)
                and n.id > request.page_token
            ),
            key=lambda n: n.id,
        )
        page = rows[:size]
        token = page[-1].id if len(rows) > size else ""
        return api.ListNodesResponse(nodes=[self.registry.with_live_fields(n) for n in page], next_page_token=token)

    async def _admin(self, node_id: str, action: str, reason: str) -> node_pb2.Node:
        ident = current_identity()
        ident.require_role(ROLE_ADMIN)
        if node_id not in self.registry.index.items:
            raise NotFound(f"node {node_id} not found")
        why = {"cordon": "AdminCordon", "drain": "AdminDrain", "uncordon": "AdminUncordon"}[action]
        message = (reason or f"{action} by {ident.subject}")[:1024]
        node = await self.registry.change_state(node_id, lambda d: ns.admin_transition(d, action), why, message)
        return self.registry.with_live_fields(node)

    async def Cordon(self, request, context) -> api.CordonResponse:
        return api.CordonResponse(node=await self._admin(request.node_id, "cordon", request.reason))

    async def Drain(self, request, context) -> api.DrainResponse:
        return api.DrainResponse(node=await self._admin(request.node_id, "drain", request.reason))

    async def Uncordon(self, request, context) -> api.UncordonResponse:
        return api.UncordonResponse(node=await self._admin(request.node_id, "uncordon", ""))

    async def GetNetworkProfile(self, request, context) -> api.GetNetworkProfileResponse:
        current_identity()
        nodes = self.registry.index.items
        target = request.WhichOneof("target")
        if target == "node_pair":
            pair = request.node_pair
            for node_id in (pair.node_a, pair.node_b):
                if node_id not in nodes:
                    raise NotFound(f"node {node_id} not found")
            if pair.node_a == pair.node_b:
                raise InvalidArgument.field("node_pair", "name two different nodes")
            a, b = nodes[pair.node_a], nodes[pair.node_b]
            return api.GetNetworkProfileResponse(profile=network.profile_for_pair(a, b, self._rtt(a.id, b.id)))
        if target == "pool":
            members = sorted((n for n in nodes.values() if n.labels.pool == request.pool), key=lambda n: n.id)
            if len(members) < 2:
                raise FailedPrecondition("the pool needs at least two registered nodes")
            # The pool is as good as its worst link: pair the first node with every other one and
            # keep the weakest transport, then the lowest bandwidth.
            profiles = [network.profile_for_pair(members[0], n, self._rtt(members[0].id, n.id)) for n in members[1:]]
            worst = max(
                profiles, key=lambda p: (network.PREFERENCE_RANK[p.transport], -p.link_bandwidth_bits_per_second)
            )
            return api.GetNetworkProfileResponse(profile=worst)
        raise InvalidArgument.field("target", "set node_pair or pool")

    def _rtt(self, a: str, b: str) -> float | None:
        """A measured latency between the two nodes (from BenchmarkLinks), if there is one."""
        link = self.measured.get((a, b)) or self.measured.get((b, a))
        return link.latency_microseconds / 1e6 if link is not None and link.latency_microseconds else None

    async def BenchmarkLinks(self, request, context) -> api.BenchmarkLinksResponse:
        # It loads the links it measures, so only admins run it.
        current_identity().require_role(ROLE_ADMIN)
        if self.linkbench is None:
            raise FailedPrecondition("link benchmarks need the fabric's service token (SERVICE_TOKEN_FILE)")
        nodes = self.registry.index.items
        pairs = [(p.node_a, p.node_b) for p in request.pairs]
        if not pairs:
            ids = list(dict.fromkeys(request.node_ids))
            pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
        bad: dict[str, str] = {}
        if not pairs:
            bad["pairs"] = "name node pairs, or at least two node_ids"
        if len(pairs) > MAX_PAIRS:
            bad["pairs"] = f"at most {MAX_PAIRS} links per call"
        for i, (a, b) in enumerate(pairs):
            for side, node_id in (("node_a", a), ("node_b", b)):
                if node_id not in nodes:
                    bad[f"pairs[{i}].{side}"] = f"unknown node {node_id!r}"
                elif nodes[node_id].state != ns.READY:
                    bad[f"pairs[{i}].{side}"] = f"node {node_id} is {ns.state_name(nodes[node_id].state)}"
            if a == b:
                bad[f"pairs[{i}]"] = "a link needs two different nodes"
        size = request.message_size_bytes or DEFAULT_SIZE
        if not 1024 <= size <= 1 << 30:
            bad["message_size_bytes"] = "must be 1 KiB - 1 GiB"
        iters = request.iterations or DEFAULT_ITERS
        if not 1 <= iters <= 1000:
            bad["iterations"] = "must be 1-1000"
        if request.backend not in ("", "gloo", "nccl"):
            bad["backend"] = "must be gloo or nccl"
        if bad:
            raise InvalidArgument("invalid benchmark request", bad)
        results = []
        for a, b in pairs:
            backend = request.backend or default_backend(nodes[a], nodes[b])
            link = await self.linkbench.run_pair(nodes[a], nodes[b], size=size, iters=iters, backend=backend)
            if not link.error:
                self.measured[(a, b)] = link
            results.append(link)
        return api.BenchmarkLinksResponse(results=results)

    async def GetTopology(self, request, context) -> api.GetTopologyResponse:
        current_identity()
        nodes = self.registry.index.items
        missing = [n for n in request.node_ids if n not in nodes]
        if missing:
            raise NotFound(f"node {missing[0]} not found")
        chosen = [nodes[n] for n in request.node_ids] if request.node_ids else list(nodes.values())
        if request.include_pair_distances and len(chosen) > 2000:
            raise InvalidArgument.field("include_pair_distances", "at most 2000 nodes (O(n^2) pairs)")
        return api.GetTopologyResponse(topology=topology.build(chosen, pair_distances=request.include_pair_distances))


def _labels_match(node: node_pb2.Node, selector) -> bool:
    labels = dict(node.labels.extra)
    labels.update({k: v for k in ("rack", "zone", "leaf_switch", "nvlink_domain") if (v := getattr(node.labels, k))})
    return label_match(labels, selector)
