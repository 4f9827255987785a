"""Admission cycle: quota and borrowing, priority and DRF order, no head-of-line blocking, backfill."""

from __future__ import annotations

import pytest

from mlmesh.scheduler.domain.admission import PendingQueues, run_cycle
from mlmesh.scheduler.domain.model import BlockKind, GangRequest, Node, PendingJob, QueueState, Res
from mlmesh.scheduler.domain.placement import Inventory

pytestmark = pytest.mark.timeout(60)

GiB = 2**30
FULL = Res(8, 64_000, 512 * GiB)


def node(i: int, *, dom: str = "d0", zone: str = "z0", free: Res = FULL, **kw) -> Node:
    return Node(f"n{i:02d}", FULL, free, gpu_model="H100", zone=zone, switch=f"s-{dom}", nvlink_domain=dom, **kw)


def per_gpu(n: int) -> Res:
    return Res(n, 1_000 * n, GiB * n)


def queue(name: str, nominal_gpus: int, borrow_gpus: int = 0, used_gpus: int = 0, weight: float = 1.0) -> QueueState:
    return QueueState(name, name, per_gpu(nominal_gpus), per_gpu(borrow_gpus), weight, per_gpu(used_gpus))


def job(jid: str, q: str, gpus: int, workers: int = 1, *, prio: int = 100, seq: int = 0, preempt=False) -> PendingJob:
    return PendingJob(jid, q, q, prio, preempt, GangRequest(workers, per_gpu(gpus)), seq)


def admitted(result) -> list[str]:
    return [a.job_id for a in result.admitted]


def test_admits_within_quota_and_charges_queue_and_inventory():
    inv = Inventory([node(0), node(1)])
    queues = {"a": queue("a", 16)}
    result = run_cycle(inv, queues, [job("j1", "a", 8, workers=2)], [])
    assert admitted(result) == ["j1"]
    assert not result.admitted[0].borrowing
    assert queues["a"].used == per_gpu(16)
    assert inv.total_free().gpus == 0
    assert inv.excluded == ()


def test_quota_blocks_beyond_nominal_plus_borrowing_limit():
    inv = Inventory([node(i) for i in range(4)])
    queues = {"a": queue("a", 8, borrow_gpus=4), "b": queue("b", 24)}
    result = run_cycle(inv, queues, [job("big", "a", 8, workers=2, seq=1), job("ok", "a", 4, workers=3, seq=2)], [])
    assert admitted(result) == ["ok"]  # 12 = nominal 8 + 4 borrowed
    why = result.blocked["big"]
    assert why.kind == BlockKind.QUOTA
    assert why.requested.gpus == 16
    assert why.available.gpus == 12
    assert result.admitted[0].borrowing


def test_borrowing_only_from_idle_quota():
    inv = Inventory([node(i) for i in range(4)])
    # b uses its whole nominal: nothing is idle, so a cannot borrow even within its limit.
    queues = {"a": queue("a", 8, borrow_gpus=16), "b": queue("b", 8, used_gpus=8)}
    result = run_cycle(inv, queues, [job("j", "a", 8, workers=2)], [])
    assert result.blocked["j"].kind == BlockKind.QUOTA
    assert "idle quota" in result.blocked["j"].message
    # Once b's quota is idle, a may borrow it, and the admission is marked as borrowing.
    queues["b"].used = per_gpu(0)
    result = run_cycle(inv, queues, [job("j", "a", 8, workers=2)], [])
    assert admitted(result) == ["j"] and result.admitted[0].borrowing


def test_a_queue_that_keeps_its_idle_quota_lends_none_of_it():
    """The local admin's queue has unlimited nominal quota: lent, it would make every borrowing
    limit moot. Kept, others borrow only from lenders; the keeper still runs within its own quota."""
    inv = Inventory([node(i) for i in range(4)])
    keeper = queue("admin", 1_000)
    keeper.lends = False
    queues = {"a": queue("a", 8, borrow_gpus=16), "b": queue("b", 8, used_gpus=8), "admin": keeper}
    result = run_cycle(inv, queues, [job("j", "a", 8, workers=2, seq=1), job("mine", "admin", 8, seq=2)], [])
    assert admitted(result) == ["mine"] and not result.admitted[0].borrowing
    assert result.blocked["j"].kind == BlockKind.QUOTA and "idle quota" in result.blocked["j"].message
    keeper.lends = True  # the same queue lending: a borrows its idle quota
    keeper.used = per_gpu(0)
    result = run_cycle(inv, queues, [job("j", "a", 8, workers=2)], [])
    assert admitted(result) == ["j"] and result.admitted[0].borrowing


def test_borrowing_is_bounded_by_the_total_idle_quota():
    inv = Inventory([node(i) for i in range(8)])
    queues = {"a": queue("a", 8, borrow_gpus=64), "b": queue("b", 8)}
    jobs = [job(f"j{i}", "a", 8, seq=i) for i in range(4)]
    result = run_cycle(inv, queues, jobs, [])
    assert admitted(result) == ["j0", "j1"]  # 8 own + 8 of b's idle nominal
    assert [a.borrowing for a in result.admitted] == [False, True]
    assert {result.blocked[j].kind for j in ("j2", "j3")} == {BlockKind.QUOTA}


def test_higher_priority_first_across_queues():
    inv = Inventory([node(0)])
    queues = {"a": queue("a", 8), "b": queue("b", 8)}
    jobs = [job("low", "a", 8, prio=10, seq=1), job("high", "b", 8, prio=1000, seq=2)]
    result = run_cycle(inv, queues, jobs, [])
    assert admitted(result) == ["high"]
    assert result.blocked["low"].kind == BlockKind.NO_FIT


def test_dominant_resource_fairness_orders_queues():
    inv = Inventory([node(i) for i in range(4)])
    queues = {"a": queue("a", 32, used_gpus=8), "b": queue("b", 32), "c": queue("c", 32)}
    inv.reserve((("n00", 1),), per_gpu(8))  # a's running job
    # b and c submitted their jobs later than a, but a already holds the largest share.
    jobs = [job("a1", "a", 8, seq=1), job("b1", "b", 8, seq=2), job("b2", "b", 8, seq=3), job("c1", "c", 8, seq=4)]
    result = run_cycle(inv, queues, jobs, [])
    assert admitted(result) == ["b1", "c1", "a1"]  # b (0), c (0, b now 8), then a and b tie at 8: name order
    assert result.blocked["b2"].kind == BlockKind.NO_FIT


def test_queue_weight_scales_the_fair_share():
    inv = Inventory([node(i) for i in range(2)])
    queues = {"a": queue("a", 32, used_gpus=8, weight=4.0), "b": queue("b", 32, used_gpus=4)}
    jobs = [job("b1", "b", 8, seq=1), job("a1", "a", 8, seq=2)]
    result = run_cycle(inv, queues, jobs, [], max_admissions=1)
    assert admitted(result) == ["a1"]  # 8/4 < 4/1


def test_submit_order_within_a_queue():
    inv = Inventory([node(0)])
    queues = {"a": queue("a", 8)}
    result = run_cycle(inv, queues, [job("second", "a", 8, seq=2), job("first", "a", 8, seq=1)], [])
    assert admitted(result) == ["first"]


def test_no_head_of_line_blocking():
    inv = Inventory([node(0), node(1)])
    queues = {"a": queue("a", 8), "b": queue("b", 64)}
    jobs = [
        job("too-big", "b", 8, workers=4, seq=1),  # never fits two nodes
        job("over-quota", "a", 8, workers=2, seq=2),
        job("small", "a", 4, seq=3),
        job("other", "b", 8, seq=4),
    ]
    result = run_cycle(inv, queues, jobs, [])
    assert sorted(admitted(result)) == ["other", "small"]
    assert result.blocked["too-big"].kind == BlockKind.NO_FIT
    assert result.blocked["over-quota"].kind == BlockKind.QUOTA
    # a's jobs came first (equal shares: name order), so "small" already holds 4 GPUs of one node.
    assert dict(result.blocked["too-big"].rejections) == {"InsufficientGpus": 1}
    assert "1 node can host 1 worker each" in result.blocked["too-big"].message


def test_unknown_queue_is_blocked_not_fatal():
    inv = Inventory([node(0)])
    result = run_cycle(inv, {"a": queue("a", 8)}, [job("x", "ghost", 1), job("y", "a", 1, seq=1)], [])
    assert admitted(result) == ["y"]
    assert "does not exist" in result.blocked["x"].message


def test_max_admissions_bounds_the_cycle():
    inv = Inventory([node(i) for i in range(4)])
    queues = {"a": queue("a", 32)}
    jobs = [job(f"j{i}", "a", 8, seq=i) for i in range(4)]
    result = run_cycle(inv, queues, jobs, [], max_admissions=2)
    assert admitted(result) == ["j0", "j1"]
    assert "j2" not in result.blocked and "j3" not in result.blocked  # not reached: wait in queue order
    assert queues["a"].used.gpus == 16


def test_backfill_respects_the_reservation_of_the_blocked_head():
    nodes = [
        node(0, dom="d0"),  # 8 free
        node(1, dom="d0", free=FULL - per_gpu(4)),  # 4 free: a running job holds 4
        node(2, dom="d1", zone="z1", free=FULL - per_gpu(6)),  # 2 free, elsewhere
    ]
    inv = Inventory(nodes)
    queues = {"a": queue("a", 64), "b": queue("b", 64)}
    jobs = [
        job("head", "a", 8, workers=2, prio=500, seq=1),  # needs both d0 nodes whole: waits for n01
        job("fits-outside", "b", 2, prio=100, seq=2),
        job("would-delay-head", "b", 4, prio=100, seq=3),
    ]
    result = run_cycle(inv, queues, jobs, [])
    assert admitted(result) == ["fits-outside"]
    assert result.admitted[0].placement.assignments == (("n02", 1),)
    head = result.blocked["head"]
    assert head.kind == BlockKind.NO_FIT and "2 nodes reserved" in head.message
    assert result.blocked["would-delay-head"].kind == BlockKind.RESERVATION
    assert inv.excluded == ()  # reservations last one cycle
    # Without the head job, the same small job is admitted on the reserved nodes.
    result = run_cycle(Inventory(nodes), queues, jobs[2:], [])
    assert admitted(result) == ["would-delay-head"]


def test_pending_queues_give_the_same_decisions_as_a_list():
    def build():
        return Inventory([node(i, dom=f"d{i // 2}") for i in range(6)]), {
            "a": queue("a", 16, 16),
            "b": queue("b", 16, 16),
            "c": queue("c", 16),
        }

    jobs = [job(f"j{i}", "abc"[i % 3], 1 + i % 8, workers=1 + i % 3, prio=100 * (i % 2), seq=i) for i in range(30)]
    inv1, q1 = build()
    inv2, q2 = build()
    pq = PendingQueues(reversed(jobs))  # added out of order: sorted on read
    r1 = run_cycle(inv1, q1, jobs, [])
    r2 = run_cycle(inv2, q2, pq, [])
    assert r1.admitted == r2.admitted and r1.blocked == r2.blocked
    assert len(pq) == 30
    pq.remove("j0")
    assert "j0" not in pq and len(pq) == 29


def test_quota_message_reads_like_the_cli():
    from mlmesh.common.quantities import UNLIMITED_MEMORY_BYTES

    inv = Inventory([node(0)])
    # A queue whose memory is unlimited (the CLI's default): the message says so, not 1.07e+09 GiB.
    q = QueueState("a", "a", Res(0, 1_000, UNLIMITED_MEMORY_BYTES), Res(0, 0, 0))
    pend = PendingJob("big", "a", "a", 100, False, GangRequest(1, Res(0, 1_500, 256 * 2**20)), 0)
    result = run_cycle(inv, {"a": q}, [pend], [])
    message = result.blocked["big"].message
    assert "needs 0 GPUs, 1500m CPU, 256Mi memory" in message, message
    assert "nominal 0 GPUs, 1 CPU, unlimited memory" in message, message
