"""Queue quotas with borrowing, and dominant-resource fair shares.

A queue may hold up to nominal + borrowing_limit in each dimension. What it holds above nominal is
borrowed, and may only come out of idle quota: in every dimension where the queue goes above nominal,
the sum of all queues' usage must stay within the sum of all nominal quotas. A queue that keeps its
idle quota (`lends=False`) adds nothing to what others may borrow; what it borrows itself still
comes out of the others'. (Cluster capacity bounds everything else; placement enforces it.)
"""

from __future__ import annotations

from mlmesh.common.quantities import fmt_resources
from mlmesh.scheduler.domain.model import ZERO, Blocked, BlockKind, QueueState, Res

_DIMS = ("gpus", "cpu_millis", "memory_bytes")


def _fmt(r: Res) -> str:
    return fmt_resources(r.gpus, r.cpu_millis, r.memory_bytes)


def _min(a: Res, b: Res) -> Res:
    return Res(min(a.gpus, b.gpus), min(a.cpu_millis, b.cpu_millis), min(a.memory_bytes, b.memory_bytes))


def _max(a: Res, b: Res) -> Res:
    return Res(max(a.gpus, b.gpus), max(a.cpu_millis, b.cpu_millis), max(a.memory_bytes, b.memory_bytes))


class QuotaBook:
    """Quota checks and charges for one cycle; charges mutate `QueueState.used`."""

    def __init__(self, queues: dict[str, QueueState], cluster_total: Res) -> None:
        self.queues = queues
        self.cluster_total = cluster_total
        # Idle quota others may borrow, kept current by `charge`: the lenders' unused nominal quota,
        # less what every queue already borrows. Per dimension; negative when over-committed.
        self.idle = sum((self._lent(q) for q in queues.values()), ZERO)

    @staticmethod
    def _lent(q: QueueState) -> Res:
        if q.lends:
            return q.nominal - q.used
        return ZERO - (q.used - q.nominal).clamp_min_zero()

    def available(self, q: QueueState) -> Res:
        """How much more the queue may take now: up to its limit, and beyond nominal only from idle quota."""
        to_limit = q.nominal + q.borrowing_limit - q.used
        return _min(to_limit, _max(q.nominal - q.used, self.idle)).clamp_min_zero()

    def check(self, q: QueueState, total: Res) -> Blocked | None:
        """None when `total` may be admitted to `q`; otherwise why not."""
        new = q.used + total
        if new.fits_in(q.nominal):
            return None
        if new.fits_in(q.nominal + q.borrowing_limit):
            within = (getattr(new, d) <= getattr(q.nominal, d) for d in _DIMS)
            if all(ok or getattr(total, d) <= getattr(self.idle, d) for ok, d in zip(within, _DIMS, strict=True)):
                return None
            why = "borrowing beyond nominal needs idle quota of other queues, and there is not enough"
        else:
            why = "over nominal + borrowing limit"
        available = self.available(q)
        return Blocked(
            BlockKind.QUOTA,
            f"queue {q.name}: needs {_fmt(total)}, {_fmt(available)} available ({why}; "
            f"nominal {_fmt(q.nominal)}, borrowing limit {_fmt(q.borrowing_limit)}, used {_fmt(q.used)})",
            requested=total,
            available=available,
        )

    def charge(self, q: QueueState, total: Res) -> bool:
        """Add an admission to the queue; True when that takes the queue above nominal (borrowing)."""
        before = self._lent(q)
        q.used = q.used + total
        self.idle = self.idle + self._lent(q) - before
        return not q.used.fits_in(q.nominal)

    def share(self, q: QueueState) -> float:
        """Dominant resource share per unit of weight: lower goes first."""
        return q.used.dominant_share(self.cluster_total) / max(q.weight, 1e-9)

    @staticmethod
    def above_nominal(q: QueueState, minus: Res = ZERO) -> bool:
        """Whether the queue, less `minus`, still holds more than nominal in some dimension (borrows)."""
        return not (q.used - minus).fits_in(q.nominal)
