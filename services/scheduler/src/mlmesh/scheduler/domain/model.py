"""Plain data the scheduling policy works on: resources, nodes, queues, pending and running jobs.

No protobuf and no I/O here: the policy (placement, admission, preemption) is pure functions over
these types, so it can be property-tested and benchmarked at 10,000 nodes without a server.
Adapters translate to and from the API messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


@dataclass(frozen=True, slots=True)
class Res:
    """A resource vector: whole GPUs, CPU millicores, memory bytes."""

    gpus: int = 0
    cpu_millis: int = 0
    memory_bytes: int = 0

    def __add__(self, other: Res) -> Res:
        return Res(self.gpus + other.gpus, self.cpu_millis + other.cpu_millis, self.memory_bytes + other.memory_bytes)

    def __sub__(self, other: Res) -> Res:
        return Res(self.gpus - other.gpus, self.cpu_millis - other.cpu_millis, self.memory_bytes - other.memory_bytes)

    def times(self, n: int) -> Res:
        return Res(self.gpus * n, self.cpu_millis * n, self.memory_bytes * n)

    def fits_in(self, other: Res) -> bool:
        return (
            self.gpus <= other.gpus and self.cpu_millis <= other.cpu_millis and self.memory_bytes <= other.memory_bytes
        )

    def clamp_min_zero(self) -> Res:
        return Res(max(0, self.gpus), max(0, self.cpu_millis), max(0, self.memory_bytes))

    def is_zero(self) -> bool:
        return self.gpus == 0 and self.cpu_millis == 0 and self.memory_bytes == 0

    def dominant_share(self, total: Res) -> float:
        """The largest fraction of `total` this vector takes in any dimension (DRF)."""
        shares = [
            self.gpus / total.gpus if total.gpus else 0.0,
            self.cpu_millis / total.cpu_millis if total.cpu_millis else 0.0,
            self.memory_bytes / total.memory_bytes if total.memory_bytes else 0.0,
        ]
        return max(shares)


ZERO = Res()


class Level(IntEnum):
    """Tightest topology level spanning a gang (mirrors mlmesh.common.v1.TopologyLevel); lower is tighter."""

    UNSPECIFIED = 0
    SAME_NODE = 1
    SAME_NVLINK_DOMAIN = 2
    SAME_SWITCH = 3
    SAME_ZONE = 4
    CROSS_ZONE = 5


@dataclass(slots=True)
class Node:
    """A node's capacity and labels as the fabric reports them; `free` is what placement may use."""

    id: str
    allocatable: Res
    free: Res
    gpu_model: str = ""
    gpu_memory_bytes: int = 0
    pool: str = "onprem"  # onprem | cloud
    spot: bool = False
    zone: str = ""
    switch: str = ""
    nvlink_domain: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    schedulable: bool = True  # Ready, and not cordoned or draining
    agent_address: str = ""


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GangRequest:
    """N workers, each needing `per_worker`, placed all together or not at all."""

    workers: int
    per_worker: Res
    gpu_models: tuple[str, ...] = ()  # substring match, case-insensitive; empty = any
    min_gpu_memory_bytes: int = 0
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelRequirement, ...] = ()
    pool_preference: tuple[str, ...] = ("onprem", "cloud")  # burst: on-prem first, then cloud
    allow_spot: bool = False
    required_level: Level = Level.UNSPECIFIED  # hard constraint; UNSPECIFIED = none

    @property
    def total(self) -> Res:
        return self.per_worker.times(self.workers)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a gang goes: (node id, workers on that node), in rank order."""

    assignments: tuple[tuple[str, int], ...]
    level: Level
    score: float


@dataclass(frozen=True, slots=True)
class NoFit:
    """Why no placement exists: node counts per rejection reason and a human sentence."""

    rejections: tuple[tuple[str, int], ...]
    message: str


@dataclass(slots=True)
class QueueState:
    name: str
    team: str
    nominal: Res
    borrowing_limit: Res = ZERO
    weight: float = 1.0
    used: Res = ZERO  # held by admitted and running jobs of this queue
    lends: bool = True  # whether other queues may borrow its unused nominal quota


@dataclass(frozen=True, slots=True)
class PriorityClassInfo:
    name: str
    value: int
    can_preempt: bool = True


@dataclass(frozen=True, slots=True)
class PendingJob:
    id: str
    queue: str
    team: str
    priority: int
    can_preempt: bool
    request: GangRequest
    seq: int  # submit order; earlier first among equals
    preemption_count: int = 0


@dataclass(frozen=True, slots=True)
class RunningJob:
    """An admitted or running job: what it holds and where."""

    id: str
    queue: str
    team: str
    priority: int
    usage: Res
    placement: tuple[tuple[str, int], ...]  # (node id, workers)
    per_worker: Res
    borrowing: bool
    admitted_seq: int  # admission order; later victims first among equals
    preemption_count: int = 0


class BlockKind(IntEnum):
    """Mirrors mlmesh.scheduler.v1.BlockerKind."""

    QUOTA = 1
    NO_FIT = 2
    QUEUE_ORDER = 3
    DEPENDENCIES = 4
    BACKOFF = 5
    RESERVATION = 6
    PREEMPTION_IN_PROGRESS = 7


@dataclass(frozen=True, slots=True)
class Blocked:
    kind: BlockKind
    message: str
    requested: Res = ZERO
    available: Res = ZERO
    rejections: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Admission:
    job_id: str
    placement: Placement
    borrowing: bool


@dataclass(frozen=True, slots=True)
class Preemption:
    victim_id: str
    for_job_id: str
    reason: str  # "ReclaimQuota" | "HigherPriority"


@dataclass(slots=True)
class CycleResult:
    """What one admission cycle decided."""

    admitted: list[Admission] = field(default_factory=list)
    preempted: list[Preemption] = field(default_factory=list)
    blocked: dict[str, Blocked] = field(default_factory=dict)
