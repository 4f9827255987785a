"""All-or-nothing gang placement: filters, burst over pools, topology-aware best fit. Reads, never mutates.

Search, for each pool tier (burst: the first preferred pool alone, then the next pools added):
1. one node (best fit: the node with the fewest free GPUs that still takes the whole gang);
2. one NVLink domain, then one switch: the group with the smallest capacity that still hosts the gang
   (best fit keeps big empty groups for big gangs), found through the inventory's capacity buckets;
3. one zone; then across zones.
`required_level` stops the search at that level. Inside a group, workers go to its largest children
(fewer nodes) until the rest fits in one child, and that rest goes to the smallest child that takes it
(fills partly used nodes).

Scores are higher for tighter levels, then for fewer nodes: 100 x (6 - level) - nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter

from mlmesh.scheduler.domain.inventory import Assignments, Group, Inventory, NodeClass
from mlmesh.scheduler.domain.model import GangRequest, LabelRequirement, Level, Node, NoFit, Placement, Res

__all__ = [
    "REASONS",
    "Diagnosis",
    "Inventory",
    "diagnose",
    "eligibility",
    "find_placement",
    "level_of",
    "place_gang",
    "plan_reservation",
]

# Rejection reasons, in the order a node is checked. "Reserved": free, but held for another job this cycle.
REASONS = (
    "NotSchedulable",
    "GpuModelMismatch",
    "GpuMemoryTooSmall",
    "Selector",
    "Pool",
    "Spot",
    "Reserved",
    "InsufficientGpus",
    "InsufficientCpu",
    "InsufficientMemory",
    "Topology",
)
_CANDIDATES_PER_CLASS = 8  # groups tried per level and class; only CPU/memory shortfalls exhaust them
_SAME_NODE_TRIES = 64  # nodes with enough GPUs but too little CPU/memory tried before giving up on one node
_UNBOUNDED = 1 << 62
_EXACT_SCAN = 256  # nodes with room that diagnose checks one by one
_LEVEL_WORDS = {
    Level.SAME_NODE: "node",
    Level.SAME_NVLINK_DOMAIN: "NVLink domain",
    Level.SAME_SWITCH: "switch",
    Level.SAME_ZONE: "zone",
}


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Which node classes pass a request's filters, grouped into burst tiers."""

    tiers: tuple[tuple[NodeClass, ...], ...]
    eligible: tuple[NodeClass, ...]
    rejections: dict[str, int]  # static reasons: node counts


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A NoFit plus what admission needs to tell capacity from a reservation."""

    nofit: NoFit
    hostable: int  # workers the free, eligible, not excluded nodes could host
    reserved: int  # workers excluded (reserved) eligible nodes could host


# ---- filters --------------------------------------------------------------------------------------


def _labels_match(labels: dict[str, str], req: GangRequest) -> bool:
    for key, value in req.match_labels:
        if labels.get(key) != value:
            return False
    return all(_requirement_met(labels, r) for r in req.match_expressions)


def _requirement_met(labels: dict[str, str], r: LabelRequirement) -> bool:
    if r.operator == "In":
        return labels.get(r.key) in r.values
    if r.operator == "NotIn":
        return labels.get(r.key) not in r.values  # an absent key is "not in" (Kubernetes semantics)
    if r.operator == "Exists":
        return r.key in labels
    if r.operator == "DoesNotExist":
        return r.key not in labels
    return False  # unknown operators never match (validation rejects them at submit)


def _rejection(node: Node, req: GangRequest) -> str | None:
    if not node.schedulable:
        return "NotSchedulable"
    if req.gpu_models:
        model = node.gpu_model.lower()
        if not any(m.lower() in model for m in req.gpu_models):
            return "GpuModelMismatch"
    if req.min_gpu_memory_bytes and node.gpu_memory_bytes < req.min_gpu_memory_bytes:
        return "GpuMemoryTooSmall"
    if not _labels_match(node.labels, req):
        return "Selector"
    if req.pool_preference and node.pool not in req.pool_preference:
        return "Pool"
    if node.spot and not req.allow_spot:
        return "Spot"
    return None


def eligibility(inv: Inventory, req: GangRequest) -> Eligibility:
    """Filters evaluated once per node class, cached on the inventory by the request's filter fields."""
    key = (
        req.gpu_models,
        req.min_gpu_memory_bytes,
        req.match_labels,
        req.match_expressions,
        req.pool_preference,
        req.allow_spot,
    )
    found = inv.filter_cache.get(key)
    if found is not None:
        return found
    eligible: list[NodeClass] = []
    rejections: dict[str, int] = {}
    for cls in inv.classes:
        reason = _rejection(cls.sample, req)
        if reason is None:
            eligible.append(cls)
        else:
            rejections[reason] = rejections.get(reason, 0) + len(cls.node_ids)
    tiers: list[tuple[NodeClass, ...]] = []
    prefs = req.pool_preference
    for i in range(len(prefs) or 1):
        tier = tuple(c for c in eligible if not prefs or c.sample.pool in prefs[: i + 1])
        if tier and (not tiers or len(tier) != len(tiers[-1])):
            tiers.append(tier)
    result = Eligibility(tuple(tiers), tuple(eligible), rejections)
    inv.filter_cache[key] = result
    return result


# ---- search ---------------------------------------------------------------------------------------


def _hosts(free: Res, pw: Res) -> int:
    """How many workers of `pw` fit in `free`."""
    k = free.gpus // pw.gpus if pw.gpus > 0 else _UNBOUNDED
    if pw.cpu_millis > 0:
        k = min(k, free.cpu_millis // pw.cpu_millis)
    if pw.memory_bytes > 0:
        k = min(k, free.memory_bytes // pw.memory_bytes)
    return max(k, 0)


def _try_order(items: list[tuple[int, object]], workers: int) -> list[tuple[int, object]]:
    """Order to fill (capacity, child) items: largest first until the rest fits one child, then the
    smallest child that takes the rest; the others follow as fallbacks for CPU/memory shortfalls."""
    rest = sorted(items, key=itemgetter(0), reverse=True)  # stable: ties keep inventory order
    order = []
    need = workers
    while need > 0 and rest:
        pick = 0
        for i in range(len(rest) - 1, -1, -1):  # smallest capacity that still covers the rest
            if rest[i][0] >= need:
                pick = i
                break
        item = rest.pop(pick)
        order.append(item)
        need -= item[0]
    return order + rest


def _fill(inv: Inventory, group: Group, workers: int, pw: Res, out: list[tuple[str, int]]) -> int:
    """Assign up to `workers` workers inside `group`; returns how many it placed."""
    placed = 0
    if group.level == Level.SAME_NVLINK_DOMAIN:
        nodes, excluded = inv.nodes, inv.is_excluded
        items = []
        for nid in group.node_ids:
            if not excluded(nid):
                k = _hosts(nodes[nid].free, pw)
                if k > 0:
                    items.append((k, nid))
        for k, nid in _try_order(items, workers):
            take = min(k, workers - placed)
            out.append((nid, take))
            placed += take
            if placed == workers:
                break
        return placed
    gpus = pw.gpus
    items = [(c.caps[gpus], c) for c in group.children if c.caps[gpus] > 0]
    for _, child in _try_order(items, workers):
        placed += _fill(inv, child, workers - placed, pw, out)
        if placed == workers:
            break
    return placed


def _fill_all(inv: Inventory, groups: list[Group], workers: int, pw: Res) -> Assignments | None:
    gpus = pw.gpus
    out: list[tuple[str, int]] = []
    placed = 0
    for _, g in _try_order([(g.caps[gpus], g) for g in groups], workers):
        placed += _fill(inv, g, workers - placed, pw, out)
        if placed == workers:
            return tuple(out)
    return None


def _same_node(inv: Inventory, classes: tuple[NodeClass, ...], workers: int, pw: Res) -> Assignments | None:
    nodes, tries = inv.nodes, 0
    for g in range(workers * pw.gpus, inv.max_gpus + 1):  # fewest free GPUs first: best fit
        for cls in classes:
            for nid in cls.by_free[g]:
                if _hosts(nodes[nid].free, pw) >= workers:
                    return ((nid, workers),)
                tries += 1
                if tries >= _SAME_NODE_TRIES:
                    return None
    return None


def _search_gpu(inv: Inventory, classes: tuple[NodeClass, ...], req: GangRequest, limit: Level) -> Assignments | None:
    workers, pw = req.workers, req.per_worker
    gpus = pw.gpus
    if gpus > inv.max_gpus:
        return None
    if workers * gpus <= inv.max_gpus:
        found = _same_node(inv, classes, workers, pw)
        if found:
            return found
    for level in (Level.SAME_NVLINK_DOMAIN, Level.SAME_SWITCH):
        if level > limit:
            return None
        candidates = []
        for cls in classes:
            index = cls.domain_index if level == Level.SAME_NVLINK_DOMAIN else cls.switch_index
            found = inv.candidates(index, gpus, workers, _CANDIDATES_PER_CLASS)
            candidates.extend((g.caps[gpus], g) for g in found)
        candidates.sort(key=itemgetter(0))
        for _, g in candidates:
            found = _fill_all(inv, [g], workers, pw)
            if found:
                return found
    if limit < Level.SAME_ZONE:
        return None
    zones = [(z.caps[gpus], z) for cls in classes for z in cls.zones if z.caps[gpus] > 0]
    zones.sort(key=itemgetter(0))
    for cap, z in zones:
        if cap >= workers:
            found = _fill_all(inv, [z], workers, pw)
            if found:
                return found
    if limit < Level.CROSS_ZONE or sum(cap for cap, _ in zones) < workers:
        return None
    return _fill_all(inv, [z for _, z in zones], workers, pw)


def _search_cpu(inv: Inventory, classes: tuple[NodeClass, ...], req: GangRequest, limit: Level) -> Assignments | None:
    """CPU-only gangs: a scan, nodes with the fewest free GPUs first (keeps GPU nodes' CPU for GPU jobs),
    stopping at the first node that takes the whole gang."""
    workers, pw = req.workers, req.per_worker
    nodes, excluded = inv.nodes, inv.is_excluded
    items: list[tuple[int, str]] = []
    for g in range(inv.max_gpus + 1):
        for cls in classes:
            for nid in cls.by_free[g]:
                if excluded(nid):
                    continue
                k = _hosts(nodes[nid].free, pw)
                if k >= workers:
                    return ((nid, workers),)
                if k > 0:
                    items.append((k, nid))
    if limit == Level.SAME_NODE or sum(k for k, _ in items) < workers:
        return None
    for level, slot in ((Level.SAME_NVLINK_DOMAIN, 0), (Level.SAME_SWITCH, 1), (Level.SAME_ZONE, 2)):
        if level > limit:
            return None
        members: dict[Group, list[tuple[int, str]]] = {}
        for k, nid in items:
            members.setdefault(inv.groups_of(nid)[slot], []).append((k, nid))
        fitting = [(sum(k for k, _ in m), m) for m in members.values()]
        fitting = [f for f in fitting if f[0] >= workers]
        if fitting:
            return _take(min(fitting, key=itemgetter(0))[1], workers)
    return _take(items, workers)


def _take(items: list[tuple[int, str]], workers: int) -> Assignments:
    out, placed = [], 0
    for k, nid in _try_order(items, workers):
        take = min(k, workers - placed)
        out.append((nid, take))
        placed += take
        if placed == workers:
            break
    return tuple(out)


def level_of(inv: Inventory, assignments: Assignments) -> Level:
    """The tightest topology level spanning the assigned nodes."""
    if len(assignments) == 1:
        return Level.SAME_NODE
    nodes = [inv.nodes[nid] for nid, _ in assignments]
    first = nodes[0]
    if first.nvlink_domain and all(n.nvlink_domain == first.nvlink_domain for n in nodes):
        return Level.SAME_NVLINK_DOMAIN
    if first.switch and all(n.switch == first.switch for n in nodes):
        return Level.SAME_SWITCH
    if all(n.zone == first.zone for n in nodes):
        return Level.SAME_ZONE
    return Level.CROSS_ZONE


def find_placement(inv: Inventory, req: GangRequest) -> Placement | None:
    """The best placement, or None; no explanation, so it is cheap enough for what-if loops."""
    if req.workers <= 0:
        return None
    limit = req.required_level or Level.CROSS_ZONE
    search = _search_gpu if req.per_worker.gpus > 0 else _search_cpu
    for tier in eligibility(inv, req).tiers:
        found = search(inv, tier, req, limit)
        if found:
            level = level_of(inv, found)
            if level <= limit:
                return Placement(found, level, 100.0 * (Level.CROSS_ZONE + 1 - level) - len(found))
    return None


def place_gang(inv: Inventory, req: GangRequest) -> Placement | NoFit:
    """Where the gang goes, or why it cannot go anywhere now."""
    found = find_placement(inv, req)
    return found if found is not None else diagnose(inv, req).nofit


# ---- explanations ---------------------------------------------------------------------------------


def _fmt_res(r: Res) -> str:
    parts = []
    if r.gpus:
        parts.append(f"{r.gpus} GPU{'s' if r.gpus != 1 else ''}")
    if r.cpu_millis or not r.gpus:
        parts.append(f"{r.cpu_millis / 1000:g} CPU")
    if r.memory_bytes:
        parts.append(f"{r.memory_bytes / 2**30:g} GiB")
    return " + ".join(parts)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def diagnose(inv: Inventory, req: GangRequest) -> Diagnosis:
    """Count nodes per rejection reason and the workers free nodes could host.

    Scans the eligible nodes with enough free GPUs for one worker (few in a full cluster) and the
    excluded ones. Past `_EXACT_SCAN` such nodes it counts them from the free-GPU buckets instead, so
    their CPU and memory shortfalls go unseen. CPU-only gangs scan all eligible nodes."""
    el = eligibility(inv, req)
    pw, workers = req.per_worker, req.workers
    counts = dict(el.rejections)
    hosts: dict[int, int] = {}  # workers per node -> nodes
    reserved = 0
    nodes = inv.nodes

    def add(reason: str, n: int = 1) -> None:
        if n:
            counts[reason] = counts.get(reason, 0) + n

    first = min(max(pw.gpus, 0), inv.max_gpus + 1)
    top = inv.max_gpus + 1
    roomy = sum(len(cls.by_free[g]) for cls in el.eligible for g in range(first, top)) if pw.gpus > 0 else 0
    for cls in el.eligible:
        if pw.gpus > 0:
            add("InsufficientGpus", sum(len(cls.by_free[g]) for g in range(first)) - len(cls.excluded))
        if roomy > _EXACT_SCAN:  # many nodes with room: count them from the buckets, by GPUs alone
            for g in range(first, top):
                if cls.by_free[g]:
                    hosts[g // pw.gpus] = hosts.get(g // pw.gpus, 0) + len(cls.by_free[g])
            scan = list(cls.excluded)
        else:
            scan = [nid for g in range(first if pw.gpus > 0 else 0, top) for nid in cls.by_free[g]]
            scan.extend(cls.excluded)
        for nid in scan:
            free = nodes[nid].free
            k = _hosts(free, pw)
            if nid in cls.excluded:
                add("Reserved")
                reserved += min(k, workers)
            elif k > 0:
                hosts[k] = hosts.get(k, 0) + 1
            elif pw.gpus > free.gpus:
                add("InsufficientGpus")
            elif pw.cpu_millis > free.cpu_millis:
                add("InsufficientCpu")
            else:
                add("InsufficientMemory")
    hostable = sum(min(k, workers) * n for k, n in hosts.items())
    if hostable >= workers and workers > 0:
        add("Topology", sum(hosts.values()))  # room enough, but not within the required level
    need = f"needs {_plural(workers, 'worker')} x {_fmt_res(pw)}"
    if req.required_level and req.required_level in _LEVEL_WORDS:
        need += f" within one {_LEVEL_WORDS[req.required_level]}"
    if hosts:
        shown = sorted(hosts.items(), reverse=True)
        room = ", ".join(f"{_plural(n, 'node')} can host {_plural(k, 'worker')} each" for k, n in shown[:3])
        if len(shown) > 3:
            room += f" and {sum(n for _, n in shown[3:])} more"
        room += f" ({hostable} in all)"
    else:
        room = "no eligible node has room for one worker"
    rejections = tuple((r, counts[r]) for r in REASONS if counts.get(r))
    text = f"{need}; {room}"
    if rejections:
        text += "; nodes rejected: " + ", ".join(f"{n} {r}" for r, n in rejections)
    return Diagnosis(NoFit(rejections, text), hostable, reserved)


# ---- reservations ---------------------------------------------------------------------------------


def plan_reservation(inv: Inventory, req: GangRequest) -> tuple[str, ...] | None:
    """Nodes to hold for a gang that does not fit now: where it would fit soonest.

    Heuristic, without run-time estimates: the tightest group whose nodes could host the gang once
    drained (by allocatable GPUs) and that has the most free room now (workers it could host, then
    free GPUs: least to drain); inside it,
    the nodes with the most free room first. None when no group could ever host it (or for CPU-only
    gangs, which are small and need no reservation). O(groups of the eligible classes).
    """
    pw, workers = req.per_worker, req.workers
    gpus = pw.gpus
    if gpus <= 0 or gpus > inv.max_gpus or workers <= 0:
        return None
    limit = req.required_level or Level.CROSS_ZONE
    for tier in eligibility(inv, req).tiers:
        if workers * gpus <= inv.max_gpus:
            found = _drain_node(inv, tier, pw, workers)
            if found:
                return found
        if limit == Level.SAME_NODE:
            continue
        for level in (Level.SAME_NVLINK_DOMAIN, Level.SAME_SWITCH, Level.SAME_ZONE):
            if level > limit:
                break
            best = None
            for cls in tier:
                for group in _groups_at(cls, level):
                    static = group.static_cap(gpus)
                    if static >= workers:
                        free = sum(g * c for g, c in enumerate(group.cnt))
                        key = (group.caps[gpus], free, -static)  # most room now, then the smallest
                        if best is None or key > best[0]:
                            best = (key, group)
            if best is not None:
                found = _drain_order(inv, best[1].node_ids, pw, workers)
                if found:
                    return found
        if limit == Level.CROSS_ZONE:
            found = _drain_order(inv, [nid for cls in tier for nid in cls.node_ids], pw, workers)
            if found:
                return found
    return None


def _groups_at(cls: NodeClass, level: Level) -> list[Group]:
    zones = cls.zones
    if level == Level.SAME_ZONE:
        return zones
    switches = [s for z in zones for s in z.children]
    if level == Level.SAME_SWITCH:
        return switches
    return [d for s in switches for d in s.children]


def _drain_node(inv: Inventory, tier: tuple[NodeClass, ...], pw: Res, workers: int) -> tuple[str, ...] | None:
    """The node with the most free GPUs now that could host the whole gang once drained."""
    for g in range(inv.max_gpus, -1, -1):
        for cls in tier:
            for nid in cls.by_free[g]:
                if not inv.is_excluded(nid) and _hosts(inv.nodes[nid].allocatable, pw) >= workers:
                    return (nid,)
    return None


def _drain_order(inv: Inventory, node_ids: list[str], pw: Res, workers: int) -> tuple[str, ...] | None:
    """Not-excluded nodes by most free room first, until their drained capacity covers the gang."""
    items = []
    for nid in node_ids:
        node = inv.nodes[nid]
        if not inv.is_excluded(nid):
            cap = _hosts(node.allocatable, pw)
            if cap > 0:
                items.append((-_hosts(node.free, pw), -node.free.gpus, nid, cap))
    items.sort()
    out, total = [], 0
    for *_, nid, cap in items:
        out.append(nid)
        total += cap
        if total >= workers:
            return tuple(out)
    return None
