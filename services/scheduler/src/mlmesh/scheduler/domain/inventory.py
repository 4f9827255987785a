"""The node inventory gangs are placed on, with the indexes that keep a gang search fast at 10,000 nodes.

- Nodes with identical filter attributes (schedulable, GPU model and memory, pool, spot, labels) form a
  class, so a request's filters are evaluated once per class instead of once per node.
- Inside a class, nodes form a tree: zone > switch > NVLink domain > node.
- Every group of that tree counts its nodes by free GPUs, and so knows how many G-GPU workers it could
  host (`caps[G]`, GPUs only). Domains and switches are also bucketed by that number (in octaves), so
  the search jumps to a small group that can host a gang instead of scanning nodes.
- Upkeep: O(levels x GPUs per node) integer updates per node that reserve/release touches.

Nodes can be excluded (fenced) for a while, e.g. to hold a reservation: while excluded, the indexes see
them with no free GPUs; `node.free` itself is untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from mlmesh.scheduler.domain.model import ZERO, Level, Node, Placement, Res

Assignments = tuple[tuple[str, int], ...]


class IndexedSet:
    """A set with O(1) add/discard and dense iteration, in a deterministic order.

    Dicts as ordered sets degrade under churn: deleted slots stay in place until a resize, and
    iteration (the search's "first node in this bucket") walks over them.
    """

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list = []
        self.pos: dict = {}

    def add(self, x) -> None:
        if x not in self.pos:
            self.pos[x] = len(self.items)
            self.items.append(x)

    def discard(self, x) -> None:
        i = self.pos.pop(x, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):  # move the last item into the hole
            self.items[i] = last
            self.pos[last] = i

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __contains__(self, x) -> bool:
        return x in self.pos


class Group:
    """Nodes of one class under one zone, switch or NVLink domain."""

    __slots__ = ("alloc_cnt", "caps", "children", "cls", "cnt", "level", "node_ids")

    def __init__(self, cls: NodeClass, level: Level, max_gpus: int) -> None:
        self.cls = cls
        self.level = level
        self.children: list[Group] = []  # switches of a zone, domains of a switch
        self.node_ids: list[str] = []  # every node below this group
        self.cnt = [0] * (max_gpus + 1)  # nodes by indexed free GPUs
        self.alloc_cnt = [0] * (max_gpus + 1)  # nodes by allocatable GPUs (what it could host once drained)
        self.caps = [0] * (max_gpus + 1)  # caps[G]: G-GPU workers its free GPUs can host; caps[0] unused

    def static_cap(self, gpus: int) -> int:
        """Workers of `gpus` GPUs this group could host if all its nodes were empty."""
        return sum(c * (g // gpus) for g, c in enumerate(self.alloc_cnt) if c)


class CapIndex:
    """Groups of one level bucketed by `caps[G]` per G, in octaves: bucket r holds caps of bit length r
    ([1], [2, 3], [4, 7], ...). A group moves only when its capacity changes octave, which is what
    keeps reserve/release cheap; the search pays with best fit within a factor of two."""

    __slots__ = ("buckets",)

    def __init__(self, max_gpus: int) -> None:
        self.buckets: list[list[IndexedSet]] = [[] for _ in range(max_gpus + 1)]

    def add(self, gpus: int, group: Group, cap: int) -> None:
        if cap <= 0:  # full groups are never candidates: keep them out, it is most of a busy cluster
            return
        octave = cap.bit_length()
        buckets = self.buckets[gpus]
        while len(buckets) <= octave:
            buckets.append(IndexedSet())
        buckets[octave].add(group)

    def move(self, gpus: int, group: Group, old: int, new: int) -> None:
        if old.bit_length() != new.bit_length():
            if old > 0:
                self.buckets[gpus][old.bit_length()].discard(group)
            self.add(gpus, group, new)

    def at_least(self, gpus: int, workers: int, limit: int) -> list[Group]:
        """Up to `limit` groups with caps[gpus] >= workers, smaller first (best fit, within an octave)."""
        buckets, out = self.buckets[gpus], []
        first = max(workers, 1).bit_length()
        for octave in range(first, len(buckets)):
            for group in buckets[octave]:
                if octave > first or group.caps[gpus] >= workers:
                    out.append(group)
                    if len(out) >= limit:
                        break
            if len(out) >= limit:
                break
        out.sort(key=lambda g: g.caps[gpus])
        return out


class NodeClass:
    """Nodes that every filter treats alike; `sample` stands for all of them."""

    __slots__ = ("by_free", "domain_index", "excluded", "node_ids", "ordinal", "sample", "switch_index", "zones")

    def __init__(self, ordinal: int, sample: Node, max_gpus: int) -> None:
        self.ordinal = ordinal
        self.sample = sample
        self.node_ids: list[str] = []
        self.by_free: list[IndexedSet] = [IndexedSet() for _ in range(max_gpus + 1)]  # node ids by free GPUs
        self.zones: list[Group] = []
        self.domain_index = CapIndex(max_gpus)
        self.switch_index = CapIndex(max_gpus)
        self.excluded: dict[str, None] = {}  # excluded nodes of this class (indexed as 0 free GPUs)


def _class_key(n: Node) -> tuple:
    return (n.schedulable, n.gpu_model, n.gpu_memory_bytes, n.pool, n.spot, tuple(sorted(n.labels.items())))


class Inventory:
    """Free capacity of the cluster's nodes; `reserve`/`release` mutate `node.free` and keep indexes right.

    The Node objects are the caller's and are mutated in place. What-if questions (preemption) are asked
    with release/reserve pairs, which cost O(nodes touched); `snapshot()` is a full O(nodes) rebuild.
    """

    def __init__(self, nodes: Iterable[Node]) -> None:
        nodes = list(nodes)
        self.nodes: dict[str, Node] = {}
        self.max_gpus = max((n.allocatable.gpus for n in nodes), default=0)
        self.classes: list[NodeClass] = []
        self.filter_cache: dict[tuple, object] = {}  # request filters -> eligible classes (placement's)
        self._node_class: dict[str, NodeClass] = {}
        self._node_groups: dict[str, tuple[Group, Group, Group]] = {}  # domain, switch, zone
        self._indexed: dict[str, int] = {}  # free GPUs as the indexes see them (0 while excluded)
        self._excluded: dict[str, None] = {}
        self._alloc_total = ZERO
        self._free_total = ZERO
        self._gpu_counts = range(1, self.max_gpus + 1)
        # Buckets for 1, 2, 4, 8... GPUs per worker only: halves the upkeep; other sizes search the
        # buckets of the next smaller power of two, a superset (g // 3 <= g // 2), and filter.
        self._indexed_gpus = [g > 0 and g & (g - 1) == 0 for g in range(self.max_gpus + 1)]
        # (old free GPUs, new free GPUs) -> [(G, change of G-GPU workers a node hosts, G indexed?)]
        self._deltas = [
            [
                [(g, new // g - old // g, self._indexed_gpus[g]) for g in self._gpu_counts if new // g != old // g]
                for new in range(self.max_gpus + 1)
            ]
            for old in range(self.max_gpus + 1)
        ]
        classes: dict[tuple, NodeClass] = {}
        groups: dict[tuple, Group] = {}
        mg = self.max_gpus
        for n in nodes:
            if n.id in self.nodes:
                raise ValueError(f"duplicate node {n.id}")
            self.nodes[n.id] = n
            key = _class_key(n)
            cls = classes.get(key)
            if cls is None:
                cls = classes[key] = NodeClass(len(self.classes), n, mg)
                self.classes.append(cls)
            cls.node_ids.append(n.id)
            self._node_class[n.id] = cls
            # Unknown topology means no peers: the node is its own domain (and its domain's own switch).
            dom = n.nvlink_domain or f"~{n.id}"
            sw = n.switch or f"~{dom}"
            path = []
            for level, gkey in (
                (Level.SAME_ZONE, (cls.ordinal, n.zone)),
                (Level.SAME_SWITCH, (cls.ordinal, n.zone, sw)),
                (Level.SAME_NVLINK_DOMAIN, (cls.ordinal, n.zone, sw, dom)),
            ):
                g = groups.get(gkey)
                if g is None:
                    g = groups[gkey] = Group(cls, level, mg)
                    if path:
                        path[-1].children.append(g)
                    else:
                        cls.zones.append(g)
                path.append(g)
            for g in path:
                g.node_ids.append(n.id)
                g.alloc_cnt[min(max(n.allocatable.gpus, 0), mg)] += 1
            zone, switch, domain = path
            self._node_groups[n.id] = (domain, switch, zone)
            ig = min(max(n.free.gpus, 0), mg)
            self._indexed[n.id] = ig
            cls.by_free[ig].add(n.id)
            for g in path:
                g.cnt[ig] += 1
            if n.schedulable:
                self._alloc_total += n.allocatable
                self._free_total += n.free
        for g in groups.values():
            for gpus in range(1, mg + 1):
                g.caps[gpus] = sum(c * (f // gpus) for f, c in enumerate(g.cnt) if c)
            index = self._index_of(g)
            if index is not None:
                for gpus in self._gpu_counts:
                    if self._indexed_gpus[gpus]:
                        index.add(gpus, g, g.caps[gpus])

    # ---- queries -----------------------------------------------------------------------------------

    def total_allocatable(self) -> Res:
        """Allocatable capacity of schedulable nodes (the DRF denominator)."""
        return self._alloc_total

    def total_free(self) -> Res:
        """Free capacity of schedulable nodes, excluded ones included."""
        return self._free_total

    def class_of(self, node_id: str) -> NodeClass:
        return self._node_class[node_id]

    def groups_of(self, node_id: str) -> tuple[Group, Group, Group]:
        """The node's (NVLink domain, switch, zone) groups."""
        return self._node_groups[node_id]

    def candidates(self, index: CapIndex, gpus: int, workers: int, limit: int) -> list[Group]:
        """Up to `limit` groups of `index` whose caps[gpus] >= workers, smallest first."""
        if self._indexed_gpus[gpus]:
            return index.at_least(gpus, workers, limit)
        base = 1 << (gpus.bit_length() - 1)
        found = [g for g in index.at_least(base, workers, 64 * limit) if g.caps[gpus] >= workers]
        found.sort(key=lambda g: g.caps[gpus])
        return found[:limit]

    def is_excluded(self, node_id: str) -> bool:
        return node_id in self._excluded

    @property
    def excluded(self) -> tuple[str, ...]:
        return tuple(self._excluded)

    # ---- mutation ----------------------------------------------------------------------------------

    def reserve(self, placement: Placement | Assignments, per_worker: Res) -> None:
        """Take `per_worker` x workers on each assigned node; all or nothing, never below zero."""
        assignments = getattr(placement, "assignments", placement)
        done: list[tuple[str, int]] = []
        try:
            for nid, workers in assignments:
                node = self.nodes[nid]
                need = per_worker.times(workers)
                if not need.fits_in(node.free):
                    raise ValueError(f"node {nid} has {node.free} free, cannot take {need}")
                self._set_free(node, node.free - need)
                done.append((nid, workers))
        except BaseException:
            self.release(tuple(done), per_worker)
            raise

    def release(self, placement: Placement | Assignments, per_worker: Res) -> None:
        """Give back what `reserve` took; never above a node's allocatable."""
        assignments = getattr(placement, "assignments", placement)
        done: list[tuple[str, int]] = []
        try:
            for nid, workers in assignments:
                node = self.nodes[nid]
                free = node.free + per_worker.times(workers)
                if not free.fits_in(node.allocatable):
                    raise ValueError(f"node {nid} would have {free} free, above allocatable {node.allocatable}")
                self._set_free(node, free)
                done.append((nid, workers))
        except BaseException:
            self.reserve(tuple(done), per_worker)
            raise

    def exclude(self, node_ids: Iterable[str]) -> None:
        """Keep nodes out of placement (their free capacity stays as it is) until `include`."""
        for nid in node_ids:
            if nid not in self._excluded:
                self._excluded[nid] = None
                self._node_class[nid].excluded[nid] = None
                self._reindex(nid, 0)

    def include(self, node_ids: Iterable[str]) -> None:
        for nid in node_ids:
            if nid in self._excluded:
                del self._excluded[nid]
                del self._node_class[nid].excluded[nid]
                self._reindex(nid, min(max(self.nodes[nid].free.gpus, 0), self.max_gpus))

    def snapshot(self) -> Inventory:
        """An independent copy (copied nodes, same exclusions): O(nodes), for tests and offline what-ifs."""
        copy = Inventory(replace(n, labels=dict(n.labels)) for n in self.nodes.values())
        copy.exclude(self._excluded)
        return copy

    def verify(self) -> list[str]:
        """Problems found by rebuilding the indexes from scratch (empty when consistent); for tests."""
        fresh = Inventory(replace(n, labels=dict(n.labels)) for n in self.nodes.values())
        fresh.exclude(self._excluded)
        problems = []
        for nid, node in self.nodes.items():
            if not ZERO.fits_in(node.free) or not node.free.fits_in(node.allocatable):
                problems.append(f"node {nid} free {node.free} outside [0, {node.allocatable}]")
            if self._indexed[nid] != fresh._indexed[nid]:
                problems.append(f"node {nid} indexed with {self._indexed[nid]} GPUs, expected {fresh._indexed[nid]}")
        for mine, theirs in zip(self.classes, fresh.classes, strict=True):
            for g in range(self.max_gpus + 1):
                if set(mine.by_free[g]) != set(theirs.by_free[g]):
                    problems.append(f"class {mine.ordinal} bucket {g} differs")
            for za, zb in zip(mine.zones, theirs.zones, strict=True):
                for a, b in _walk(za, zb):
                    if a.cnt != b.cnt or a.caps != b.caps:
                        problems.append(f"group of {a.node_ids[0]} counts {a.cnt} != {b.cnt}")
            for attr in ("domain_index", "switch_index"):
                ia, ib = getattr(mine, attr), getattr(theirs, attr)
                for g in range(1, self.max_gpus + 1):
                    caps_a = [sorted(x.node_ids[0] for x in v) for v in ia.buckets[g]]
                    caps_b = [sorted(x.node_ids[0] for x in v) for v in ib.buckets[g]]
                    caps_a += [[]] * (len(caps_b) - len(caps_a))
                    caps_b += [[]] * (len(caps_a) - len(caps_b))
                    if caps_a != caps_b:
                        problems.append(f"class {mine.ordinal} {attr} for {g} GPUs differs")
        if self._free_total != fresh._free_total:
            problems.append(f"free total {self._free_total} != {fresh._free_total}")
        return problems

    # ---- internals ---------------------------------------------------------------------------------

    def _index_of(self, g: Group) -> CapIndex | None:
        if g.level == Level.SAME_NVLINK_DOMAIN:
            return g.cls.domain_index
        if g.level == Level.SAME_SWITCH:
            return g.cls.switch_index
        return None  # zones are few: scanned

    def _set_free(self, node: Node, free: Res) -> None:
        if node.schedulable:
            self._free_total = self._free_total - node.free + free
        node.free = free
        if node.id not in self._excluded:
            self._reindex(node.id, min(max(free.gpus, 0), self.max_gpus))

    def _reindex(self, nid: str, new: int) -> None:
        old = self._indexed[nid]
        if old == new:
            return
        self._indexed[nid] = new
        cls = self._node_class[nid]
        cls.by_free[old].discard(nid)
        cls.by_free[new].add(nid)
        domain, switch, zone = self._node_groups[nid]
        deltas = self._deltas[old][new]
        for g, index in ((domain, cls.domain_index), (switch, cls.switch_index)):
            g.cnt[old] -= 1
            g.cnt[new] += 1
            caps = g.caps
            for gpus, d, indexed in deltas:
                cap = caps[gpus]
                caps[gpus] = cap + d
                if indexed and cap.bit_length() != (cap + d).bit_length():
                    index.move(gpus, g, cap, cap + d)
        zone.cnt[old] -= 1
        zone.cnt[new] += 1
        caps = zone.caps
        for gpus, d, _ in deltas:
            caps[gpus] += d


def _walk(a: Group, b: Group):
    yield a, b
    for ca, cb in zip(a.children, b.children, strict=True):
        yield from _walk(ca, cb)
