"""Preemption: minimal lowest-priority victims, reclaim of borrowed quota, and no preemption loops."""

from __future__ import annotations

import pytest

from mlmesh.scheduler.domain.admission import run_cycle
from mlmesh.scheduler.domain.model import (
    BlockKind,
    GangRequest,
    Node,
    PendingJob,
    Preemption,
    QueueState,
    Res,
    RunningJob,
)
from mlmesh.scheduler.domain.placement import Inventory

pytestmark = pytest.mark.timeout(60)

GiB = 2**30
FULL = Res(8, 64_000, 512 * GiB)


def per_gpu(n: int) -> Res:
    return Res(n, 1_000 * n, GiB * n)


def queue(name: str, nominal: int, borrow: int = 0) -> QueueState:
    return QueueState(name, name, per_gpu(nominal), per_gpu(borrow))


def pending(jid: str, q: str, gpus: int, workers: int = 1, *, prio: int, seq: int = 100, preempt=True) -> PendingJob:
    return PendingJob(jid, q, q, prio, preempt, GangRequest(workers, per_gpu(gpus)), seq)


def run(jid: str, q: str, placement, gpus: int, *, prio: int, seq: int, borrowing=False, count=0) -> RunningJob:
    placement = tuple(placement)
    usage = per_gpu(gpus).times(sum(w for _, w in placement))
    return RunningJob(jid, q, q, prio, usage, placement, per_gpu(gpus), borrowing, seq, count)


def cluster(n_nodes: int, queues: dict[str, QueueState], running: list[RunningJob]) -> Inventory:
    """Inventory with the running jobs reserved and their usage charged to their queues."""
    inv = Inventory([Node(f"n{i}", FULL, FULL, gpu_model="H100", nvlink_domain="d0") for i in range(n_nodes)])
    for r in running:
        inv.reserve(r.placement, r.per_worker)
        queues[r.queue].used = queues[r.queue].used + r.usage
    return inv


def test_preempts_the_latest_admitted_of_the_lowest_priority_and_does_not_admit_yet():
    queues = {"a": queue("a", 64)}
    running = [
        run("old-low", "a", [("n0", 1)], 8, prio=10, seq=1),
        run("new-low", "a", [("n1", 1)], 8, prio=10, seq=2),
        run("mid", "a", [("n2", 1)], 8, prio=50, seq=3),
    ]
    inv = cluster(3, queues, running)
    result = run_cycle(inv, queues, [pending("high", "a", 8, prio=100)], running)
    assert result.preempted == [Preemption("new-low", "high", "HigherPriority")]
    assert result.admitted == []
    assert result.blocked["high"].kind == BlockKind.PREEMPTION_IN_PROGRESS
    assert inv.total_free().gpus == 0 and inv.excluded == ()  # nothing released until the victim stops


def test_lowest_priority_goes_first_whatever_its_age():
    queues = {"a": queue("a", 64)}
    running = [run("p10", "a", [("n0", 1)], 8, prio=10, seq=1), run("p20", "a", [("n1", 1)], 8, prio=20, seq=9)]
    inv = cluster(2, queues, running)
    result = run_cycle(inv, queues, [pending("high", "a", 8, prio=100)], running)
    assert [p.victim_id for p in result.preempted] == ["p10"]


def test_victim_set_is_minimal():
    queues = {"a": queue("a", 64)}
    # n0: b (2 GPUs) + 6 free; n1: a (2) + c (6). Releasing a (the latest) alone frees nothing whole,
    # releasing b then frees n0: a must be reprieved.
    running = [
        run("c", "a", [("n1", 1)], 6, prio=10, seq=1),
        run("b", "a", [("n0", 1)], 2, prio=10, seq=4),
        run("a", "a", [("n1", 1)], 2, prio=10, seq=5),
    ]
    inv = cluster(2, queues, running)
    result = run_cycle(inv, queues, [pending("high", "a", 8, prio=100)], running)
    assert [p.victim_id for p in result.preempted] == ["b"]


def test_gang_preemptor_takes_only_the_victims_it_needs():
    queues = {"a": queue("a", 64)}
    running = [run(f"r{i}", "a", [(f"n{i}", 1)], 8, prio=10, seq=i) for i in range(4)]
    inv = cluster(4, queues, running)
    result = run_cycle(inv, queues, [pending("gang", "a", 8, workers=2, prio=100)], running)
    assert sorted(p.victim_id for p in result.preempted) == ["r2", "r3"]  # the two latest


def test_never_preempts_equal_or_higher_priority():
    queues = {"a": queue("a", 64)}
    running = [run("same", "a", [("n0", 1)], 8, prio=100, seq=1), run("higher", "a", [("n1", 1)], 8, prio=200, seq=2)]
    inv = cluster(2, queues, running)
    result = run_cycle(inv, queues, [pending("p", "a", 8, prio=100)], running)
    assert result.preempted == []
    assert result.blocked["p"].kind == BlockKind.NO_FIT


def test_classes_that_cannot_preempt_only_wait():
    queues = {"a": queue("a", 64)}
    running = [run("low", "a", [("n0", 1)], 8, prio=1, seq=1)]
    inv = cluster(1, queues, running)
    result = run_cycle(inv, queues, [pending("p", "a", 8, prio=100, preempt=False)], running)
    assert result.preempted == [] and result.blocked["p"].kind == BlockKind.NO_FIT


def test_preemption_count_cap_protects_a_job():
    queues = {"a": queue("a", 64)}
    running = [run("tired", "a", [("n0", 1)], 8, prio=1, seq=1, count=3)]
    inv = cluster(1, queues, running)
    result = run_cycle(inv, queues, [pending("p", "a", 8, prio=100)], running, max_preemptions_per_job=3)
    assert result.preempted == []
    result = run_cycle(inv, queues, [pending("p", "a", 8, prio=100)], running, max_preemptions_per_job=4)
    assert [p.victim_id for p in result.preempted] == ["tired"]


def test_reclaims_borrowed_quota_even_from_equal_priority():
    queues = {"a": queue("a", 8), "b": queue("b", 8, borrow=8)}
    running = [
        run("b-own", "b", [("n0", 1)], 8, prio=100, seq=1),
        run("b-borrowed", "b", [("n1", 1)], 8, prio=100, seq=2, borrowing=True),
    ]
    inv = cluster(2, queues, running)
    result = run_cycle(inv, queues, [pending("a1", "a", 8, prio=100)], running)
    assert result.preempted == [Preemption("b-borrowed", "a1", "ReclaimQuota")]
    assert result.blocked["a1"].kind == BlockKind.PREEMPTION_IN_PROGRESS


def test_no_reclaim_when_the_preemptor_would_itself_borrow():
    queues = {"a": queue("a", 8, borrow=8), "b": queue("b", 8, borrow=8)}
    running = [
        run("b-own", "b", [("n0", 1)], 8, prio=100, seq=1),
        run("b-borrowed", "b", [("n1", 1)], 8, prio=100, seq=2, borrowing=True),
    ]
    inv = cluster(2, queues, running)
    queues["a"].used = per_gpu(8)  # a is at nominal already (its job runs elsewhere, not modelled here)
    result = run_cycle(inv, queues, [pending("a2", "a", 8, prio=100)], running)
    assert result.preempted == []


def test_no_reclaim_from_a_queue_back_within_nominal():
    queues = {"a": queue("a", 8), "b": queue("b", 8, borrow=8)}
    # Admitted while borrowing, but b's other jobs have finished since: b is within nominal now.
    running = [run("b-was-borrowing", "b", [("n1", 1)], 8, prio=100, seq=2, borrowing=True)]
    inv = cluster(2, queues, running)
    inv.reserve((("n0", 1),), per_gpu(8))  # something outside any queue fills n0
    result = run_cycle(inv, queues, [pending("a1", "a", 8, prio=100)], running)
    assert result.preempted == []


def test_waits_for_victims_already_stopping_instead_of_preempting_more():
    queues = {"a": queue("a", 64)}
    running = [run("stopping", "a", [("n0", 1)], 8, prio=10, seq=1), run("other", "a", [("n1", 1)], 8, prio=10, seq=2)]
    inv = cluster(2, queues, running)
    result = run_cycle(inv, queues, [pending("high", "a", 8, prio=100)], running, preempting=frozenset({"stopping"}))
    assert result.preempted == []
    assert result.blocked["high"].kind == BlockKind.PREEMPTION_IN_PROGRESS
    assert inv.total_free().gpus == 0  # a stopping job's capacity is not free capacity


def test_stopping_jobs_are_never_victims_again():
    queues = {"a": queue("a", 64)}
    running = [run("stopping", "a", [("n0", 1)], 8, prio=10, seq=1), run("other", "a", [("n1", 1)], 8, prio=10, seq=2)]
    inv = cluster(2, queues, running)
    result = run_cycle(
        inv, queues, [pending("gang", "a", 8, workers=2, prio=100)], running, preempting=frozenset({"stopping"})
    )
    assert [p.victim_id for p in result.preempted] == ["other"]


def test_room_a_preemptor_waits_for_is_held_from_later_jobs():
    queues = {"a": queue("a", 64)}
    running = [run("low", "a", [("n0", 1)], 4, prio=10, seq=1)]  # n0: 4 used, 4 free
    inv = cluster(1, queues, running)
    jobs = [pending("high", "a", 8, prio=100, seq=1), pending("small", "a", 4, prio=50, seq=2, preempt=False)]
    result = run_cycle(inv, queues, jobs, running)
    assert [p.victim_id for p in result.preempted] == ["low"]
    assert result.admitted == []  # "small" would take the room "high" is waiting for
    assert result.blocked["small"].kind in (BlockKind.RESERVATION, BlockKind.NO_FIT)


def test_one_victim_serves_one_preemptor():
    queues = {"a": queue("a", 64)}
    running = [run("low", "a", [("n0", 1)], 8, prio=10, seq=1)]
    inv = cluster(1, queues, running)
    jobs = [pending("h1", "a", 8, prio=100, seq=1), pending("h2", "a", 8, prio=100, seq=2)]
    result = run_cycle(inv, queues, jobs, running)
    assert result.preempted == [Preemption("low", "h1", "HigherPriority")]
    assert result.blocked["h2"].kind in (BlockKind.NO_FIT, BlockKind.RESERVATION)


def test_a_full_queue_gives_way_to_its_own_higher_priority_job():
    # Room on the cluster, but queue "a" (8 GPUs) is full of a low-priority job.
    queues = {"a": queue("a", 8), "b": queue("b", 8)}
    running = [
        run("low-a", "a", [("n0", 1)], 8, prio=10, seq=1),
        run("low-b", "b", [("n1", 1)], 4, prio=10, seq=2),
    ]
    inv = cluster(3, queues, running)
    high = pending("high", "a", 8, prio=100)
    result = run_cycle(inv, queues, [high], running)
    assert result.preempted == [Preemption("low-a", "high", "QueueQuota")]  # never another queue's job
    assert result.blocked["high"].kind == BlockKind.PREEMPTION_IN_PROGRESS
    assert not result.admitted

    # Next cycle, while the victim stops: no further victims, the job keeps waiting for it.
    queues = {"a": queue("a", 8), "b": queue("b", 8)}
    inv = cluster(3, queues, running)
    again = run_cycle(inv, queues, [high], running, preempting=frozenset({"low-a"}))
    assert again.preempted == [] and again.blocked["high"].kind == BlockKind.PREEMPTION_IN_PROGRESS


def test_quota_preemption_needs_strictly_lower_priority_and_permission():
    for prio, may in ((10, True), (100, False)):
        queues = {"a": queue("a", 8)}
        running = [run("peer", "a", [("n0", 1)], 8, prio=10, seq=1)]
        inv = cluster(2, queues, running)
        result = run_cycle(inv, queues, [pending("new", "a", 8, prio=prio, preempt=may)], running)
        assert result.preempted == []
        assert result.blocked["new"].kind == BlockKind.QUOTA


def test_quota_preemption_takes_a_minimal_set():
    queues = {"a": queue("a", 8)}
    running = [
        run("small-1", "a", [("n0", 1)], 2, prio=10, seq=1),
        run("small-2", "a", [("n0", 1)], 2, prio=10, seq=2),
        run("big", "a", [("n1", 1)], 4, prio=10, seq=3),
    ]
    inv = cluster(3, queues, running)
    result = run_cycle(inv, queues, [pending("high", "a", 4, prio=100)], running)
    victims = {p.victim_id for p in result.preempted}
    # Latest admitted first ("big" frees 4 GPUs: enough alone); the small ones are reprieved.
    assert victims == {"big"}


def _settle(queues_spec, running: list[RunningJob], pending_jobs: list[PendingJob], n_nodes: int = 1, cycles=12):
    """Cycles until nothing changes; a preempted job stops before the next cycle and is pending again
    (same seq, one more preemption). Returns (running, pending, preemptions)."""
    preemptions: list[Preemption] = []
    admitted_seq = 100
    for _ in range(cycles):
        queues = {name: queue(name, *limits) for name, limits in queues_spec.items()}
        inv = cluster(n_nodes, queues, running)
        result = run_cycle(inv, queues, pending_jobs, running)
        if not result.admitted and not result.preempted:
            break
        preemptions += result.preempted
        victims = {p.victim_id for p in result.preempted}
        for r in [r for r in running if r.id in victims]:
            running.remove(r)
            back = GangRequest(1, r.usage)
            pending_jobs.append(
                PendingJob(r.id, r.queue, r.team, r.priority, True, back, r.admitted_seq, r.preemption_count + 1)
            )
        by_id = {j.id: j for j in pending_jobs}
        for a in result.admitted:
            j = by_id[a.job_id]
            pending_jobs.remove(j)
            admitted_seq += 1
            where, per_worker = a.placement.assignments, j.request.per_worker
            running.append(
                RunningJob(
                    j.id,
                    j.queue,
                    j.team,
                    j.priority,
                    j.request.total,
                    where,
                    per_worker,
                    a.borrowing,
                    admitted_seq,
                    j.preemption_count,
                )
            )
    return running, pending_jobs, preemptions


@pytest.mark.parametrize("borrower_prio", [100, 200], ids=["equal-priority", "borrower-higher"])
def test_reclaimed_room_goes_to_the_owner_not_back_to_the_borrower(borrower_prio):
    # One 8-GPU node; a and b have 4 GPUs nominal each, a may borrow 4. a's 6-GPU job borrows b's idle
    # quota; then b submits a 4-GPU job, within its nominal, which does not fit beside it. b reclaims
    # once; a's job must then wait, not be re-admitted into the room b freed (and preempted again, up
    # to max_preemptions_per_job, as it once was), whatever its priority.
    spec = {"a": (4, 4), "b": (4, 0)}
    running = [run("a-borrows", "a", [("n0", 1)], 6, prio=borrower_prio, seq=1, borrowing=True)]
    running, waiting, preemptions = _settle(spec, running, [pending("b-owner", "b", 4, prio=100, seq=2)])
    assert [(p.victim_id, p.reason) for p in preemptions] == [("a-borrows", "ReclaimQuota")]
    assert [r.id for r in running] == ["b-owner"]
    assert [j.id for j in waiting] == ["a-borrows"]
    # b's job finishes: a's job is admitted again, once.
    running, waiting, preemptions = _settle(spec, [], waiting)
    assert [r.id for r in running] == ["a-borrows"] and not waiting and not preemptions


def test_a_borrowing_job_never_preempts_another_queue_within_its_nominal():
    # a (nominal 2) wants 4 GPUs at a higher priority, borrowing from c's idle quota. The node is full
    # of b's job, which is within b's nominal: preempting it would let b reclaim right back.
    spec = {"a": (2, 8), "b": (8, 0), "c": (8, 0)}
    running = [run("b-nominal", "b", [("n0", 1)], 8, prio=100, seq=1)]
    running, waiting, preemptions = _settle(spec, running, [pending("a-high", "a", 4, prio=200, seq=2)])
    assert preemptions == [] and [r.id for r in running] == ["b-nominal"] and [j.id for j in waiting] == ["a-high"]
    # Within its own nominal quota the same priority gap does preempt.
    spec = {"a": (4, 8), "b": (8, 0), "c": (8, 0)}
    running = [run("b-nominal", "b", [("n0", 1)], 8, prio=100, seq=1)]
    running, waiting, preemptions = _settle(spec, running, [pending("a-high", "a", 4, prio=200, seq=2)])
    assert [(p.victim_id, p.reason) for p in preemptions] == [("b-nominal", "HigherPriority")]
    assert [r.id for r in running] == ["a-high"]
