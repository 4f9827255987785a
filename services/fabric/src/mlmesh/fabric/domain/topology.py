"""The topology graph and its distance function: the scheduler's placement scores by it.

distance(a, b) = the cost of the closest level a and b share: the same node, the same NVLink
domain, the same leaf switch, the same zone, or none (across zones).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.fabric.v1 import node_pb2, topology_pb2

L = common_pb2.TopologyLevel
DISTANCES = (
    (L.TOPOLOGY_LEVEL_SAME_NODE, 0),
    (L.TOPOLOGY_LEVEL_SAME_NVLINK_DOMAIN, 1),
    (L.TOPOLOGY_LEVEL_SAME_SWITCH, 2),
    (L.TOPOLOGY_LEVEL_SAME_ZONE, 4),
    (L.TOPOLOGY_LEVEL_CROSS_ZONE, 8),
)
_COST = dict(DISTANCES)


def level(a: node_pb2.Node, b: node_pb2.Node) -> int:
    if a.id == b.id:
        return L.TOPOLOGY_LEVEL_SAME_NODE
    la, lb = a.labels, b.labels
    if la.nvlink_domain and la.nvlink_domain == lb.nvlink_domain:
        return L.TOPOLOGY_LEVEL_SAME_NVLINK_DOMAIN
    if la.leaf_switch and la.leaf_switch == lb.leaf_switch:
        return L.TOPOLOGY_LEVEL_SAME_SWITCH
    if la.zone and la.zone == lb.zone:
        return L.TOPOLOGY_LEVEL_SAME_ZONE
    return L.TOPOLOGY_LEVEL_CROSS_ZONE


def distance(a: node_pb2.Node, b: node_pb2.Node) -> int:
    return _COST[level(a, b)]


def build(nodes: Iterable[node_pb2.Node], *, pair_distances: bool = False) -> topology_pb2.Topology:
    nodes = sorted(nodes, key=lambda n: n.id)
    topo = topology_pb2.Topology()
    groups: dict[tuple[int, str], list[str]] = defaultdict(list)
    parents: dict[tuple[int, str], str] = {}
    for n in nodes:
        lab = n.labels
        topo.nodes.add(
            node_id=n.id,
            nvlink_domain=lab.nvlink_domain,
            leaf_switch=lab.leaf_switch,
            zone=lab.zone,
            rack=lab.rack,
            pool=lab.pool,
            gpus=n.capacity.gpus,
        )
        for lvl, gid, parent in (
            (L.TOPOLOGY_LEVEL_SAME_NVLINK_DOMAIN, lab.nvlink_domain, lab.leaf_switch),
            (L.TOPOLOGY_LEVEL_SAME_SWITCH, lab.leaf_switch, lab.zone),
            (L.TOPOLOGY_LEVEL_SAME_ZONE, lab.zone, ""),
        ):
            if gid:
                groups[(lvl, gid)].append(n.id)
                parents.setdefault((lvl, gid), parent)
    target = {
        L.TOPOLOGY_LEVEL_SAME_NVLINK_DOMAIN: topo.nvlink_domains,
        L.TOPOLOGY_LEVEL_SAME_SWITCH: topo.switches,
        L.TOPOLOGY_LEVEL_SAME_ZONE: topo.zones,
    }
    for (lvl, gid), members in sorted(groups.items()):
        target[lvl].add(id=gid, level=lvl, node_ids=members, parent_id=parents[(lvl, gid)])
    for lvl, cost in DISTANCES:
        topo.distances.add(level=lvl, distance=cost)
    if pair_distances:
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                topo.pair_distances.add(node_a=a.id, node_b=b.id, level=level(a, b), distance=distance(a, b))
    return topo
