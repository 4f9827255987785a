"""Property tests of the scheduling policy over random clusters, queues and jobs (hypothesis).

Invariants: quota is never exceeded except by borrowing within its limit and out of idle quota; every
admitted gang is complete and on eligible nodes; no GPU is double-booked (free capacity recomputed
from scratch matches, indexes too); preemption frees exactly what it claims and then the preemptor
fits; the same input gives the same decisions.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlmesh.scheduler.domain.admission import run_cycle
from mlmesh.scheduler.domain.model import (
    ZERO,
    GangRequest,
    LabelRequirement,
    Level,
    Node,
    PendingJob,
    Placement,
    QueueState,
    Res,
    RunningJob,
)
from mlmesh.scheduler.domain.placement import Inventory, level_of, place_gang

pytestmark = pytest.mark.timeout(60)

GiB = 2**30
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

nodes_st = st.lists(
    st.fixed_dictionaries(
        {
            "gpus": st.sampled_from([0, 4, 8, 8, 8]),
            "cpu": st.sampled_from([8_000, 32_000, 64_000]),
            "mem": st.sampled_from([64, 256]),
            "model": st.sampled_from(["NVIDIA H100 80GB", "NVIDIA A100 40GB"]),
            "pool": st.sampled_from(["onprem", "onprem", "cloud"]),
            "spot": st.booleans(),
            "schedulable": st.sampled_from([True, True, True, False]),
            "zone": st.integers(0, 1),
            "switch": st.integers(0, 2),
            "dom": st.integers(0, 3),
            "rack": st.sampled_from(["a", "b", None]),
        }
    ),
    min_size=1,
    max_size=10,
)


def requests(prios: list[int], queues: list[int], gpus: list[int], filters: bool = True):
    """Job requests; without `filters` they fit any GPU node (more contention, more preemption)."""
    maybe = st.sampled_from if filters else (lambda options: st.just(options[0]))
    return st.fixed_dictionaries(
        {
            "workers": st.integers(1, 4),
            "gpus": st.sampled_from(gpus),
            "cpu": st.sampled_from([500, 4_000, 16_000]),
            "mem": st.sampled_from([1, 16, 64]),
            "models": maybe([(), (), ("h100",), ("A100", "H100")]),
            "pools": maybe([("onprem", "cloud"), ("onprem", "cloud"), ("onprem",), ("cloud", "onprem")]),
            "spot": st.booleans() if filters else st.just(True),
            "rack": maybe([None, None, None, "a", "!b"]),
            "level": maybe([Level.UNSPECIFIED] * 4 + [Level.SAME_NVLINK_DOMAIN, Level.SAME_ZONE]),
            "prio": st.sampled_from(prios),
            "preempt": st.sampled_from([True, True, False]),
            "queue": st.sampled_from(queues),
        }
    )


def scenarios(filters: bool = True, min_preload: int = 0):
    return st.fixed_dictionaries(
        {
            "nodes": nodes_st,
            "queues": st.lists(
                st.tuples(st.integers(0, 24), st.integers(0, 32), st.sampled_from([1.0, 2.0]), st.booleans()),
                min_size=3,
                max_size=3,
            ),
            # Running jobs: lower priorities, mostly of q0 so that it borrows; pending: all of them.
            "preload": st.lists(
                requests([10, 50], [0, 0, 1, 2], [1, 2, 4, 8], filters), min_size=min_preload, max_size=10
            ),
            "pending": st.lists(requests([10, 50, 100], [0, 1, 2], [0, 1, 2, 4, 8], filters), max_size=14),
            "stopping": st.lists(st.integers(0, 7), max_size=2),
            "counts": st.lists(st.integers(0, 3), min_size=8, max_size=8),
            "max_admissions": st.sampled_from([None, None, 3]),
        }
    )


scenario_st = scenarios()
busy_st = scenarios(filters=False, min_preload=4)  # contention: preemption and reclaim happen often


def _res(gpus: int, cpu: int, mem_gib: int) -> Res:
    return Res(gpus, cpu, mem_gib * GiB)


def _request(r: dict) -> GangRequest:
    exprs = ()
    if r["rack"] == "a":
        exprs = (LabelRequirement("rack", "In", ("a",)),)
    elif r["rack"] == "!b":
        exprs = (LabelRequirement("rack", "NotIn", ("b",)),)
    return GangRequest(
        r["workers"],
        _res(r["gpus"], r["cpu"], r["mem"]),
        gpu_models=r["models"],
        match_expressions=exprs,
        pool_preference=r["pools"],
        allow_spot=r["spot"],
        required_level=r["level"],
    )


def _job(i: int, r: dict, prefix: str) -> PendingJob:
    q = f"q{r['queue']}"
    return PendingJob(f"{prefix}{i}", q, q, r["prio"], r["preempt"], _request(r), seq=i)


def build(sc: dict):
    """Fresh objects for a scenario: inventory and queues after a preload cycle, running jobs, pending."""
    nodes = []
    for i, n in enumerate(sc["nodes"]):
        alloc = _res(n["gpus"], n["cpu"], n["mem"])
        nodes.append(
            Node(
                f"n{i}",
                alloc,
                alloc,
                gpu_model=n["model"] if n["gpus"] else "",
                gpu_memory_bytes=80 * GiB,
                pool=n["pool"],
                spot=n["spot"],
                zone=f"z{n['zone']}",
                switch=f"s{n['zone']}{n['switch']}",
                nvlink_domain=f"d{n['zone']}{n['switch']}{n['dom']}",
                labels={"rack": n["rack"]} if n["rack"] else {},
                schedulable=n["schedulable"],
            )
        )
    queues = {
        f"q{i}": QueueState(
            f"q{i}", f"team{i}", _res(nom, nom * 8_000, nom * 32), _res(b, b * 8_000, b * 32), w, lends=lends
        )
        for i, (nom, b, w, lends) in enumerate(sc["queues"])
    }
    inv = Inventory(nodes)
    preload = [_job(i, r, "run") for i, r in enumerate(sc["preload"])]
    first = run_cycle(inv, queues, preload, [])
    by_id = {j.id: j for j in preload}
    running = []
    for seq, a in enumerate(first.admitted):
        j = by_id[a.job_id]
        count = sc["counts"][seq % len(sc["counts"])]
        running.append(
            RunningJob(
                j.id,
                j.queue,
                j.team,
                j.priority,
                j.request.total,
                a.placement.assignments,
                j.request.per_worker,
                a.borrowing,
                seq,
                count,
            )
        )
    stopping = frozenset(running[i].id for i in sc["stopping"] if i < len(running))
    pending = [_job(i, r, "job") for i, r in enumerate(sc["pending"])]
    return inv, queues, running, stopping, pending


def cycle(sc: dict):
    inv, queues, running, stopping, pending = build(sc)
    before = {name: q.used for name, q in queues.items()}
    result = run_cycle(inv, queues, pending, running, max_admissions=sc["max_admissions"], preempting=stopping)
    return inv, queues, running, stopping, pending, before, result


def _eligible(node: Node, req: GangRequest) -> bool:
    model_ok = not req.gpu_models or any(m.lower() in node.gpu_model.lower() for m in req.gpu_models)
    rack = node.labels.get("rack")
    labels_ok = all((rack in e.values) if e.operator == "In" else (rack not in e.values) for e in req.match_expressions)
    return (
        node.schedulable
        and model_ok
        and labels_ok
        and node.pool in req.pool_preference
        and (req.allow_spot or not node.spot)
    )


@PROPS
@given(scenario_st)
def test_quota_is_never_exceeded_except_by_borrowing_within_limits(sc):
    _inv, queues, _running, _stopping, pending, before, result = cycle(sc)
    by_id = {j.id: j for j in pending}
    used = dict(before)
    # Only lenders' nominal quota may be borrowed; a queue that keeps its idle quota counts only
    # what it borrows itself.
    lendable = sum((q.nominal for q in queues.values() if q.lends), ZERO)

    def committed() -> Res:
        return sum((used[n] if q.lends else (used[n] - q.nominal).clamp_min_zero() for n, q in queues.items()), ZERO)

    for a in result.admitted:  # replay in decision order
        j = by_id[a.job_id]
        q = queues[j.queue]
        used[j.queue] = used[j.queue] + j.request.total
        assert used[j.queue].fits_in(q.nominal + q.borrowing_limit)
        assert a.borrowing == (not used[j.queue].fits_in(q.nominal))
        if a.borrowing:  # borrowed only out of idle quota, in each dimension it borrows
            total = committed()
            for d in ("gpus", "cpu_millis", "memory_bytes"):
                if getattr(used[j.queue], d) > getattr(q.nominal, d):
                    assert getattr(total, d) <= getattr(lendable, d)
    assert {n: q.used for n, q in queues.items()} == used


@PROPS
@given(scenario_st)
def test_gangs_are_complete_and_no_gpu_is_double_booked(sc):
    inv, _queues, running, _stopping, pending, _before, result = cycle(sc)
    by_id = {j.id: j for j in pending}
    held: dict[str, Res] = {nid: ZERO for nid in inv.nodes}
    for r in running:
        for nid, w in r.placement:
            held[nid] = held[nid] + r.per_worker.times(w)
    for a in result.admitted:
        req = by_id[a.job_id].request
        ids = [nid for nid, _ in a.placement.assignments]
        assert sum(w for _, w in a.placement.assignments) == req.workers  # the whole gang
        assert len(set(ids)) == len(ids) and all(w > 0 for _, w in a.placement.assignments)
        assert all(_eligible(inv.nodes[nid], req) for nid in ids)
        assert a.placement.level == level_of(inv, a.placement.assignments)
        if req.required_level:
            assert a.placement.level <= req.required_level
        for nid, w in a.placement.assignments:
            held[nid] = held[nid] + req.per_worker.times(w)
    for nid, node in inv.nodes.items():
        assert node.free == node.allocatable - held[nid]  # recomputed from scratch
        assert ZERO.fits_in(node.free)
    assert inv.excluded == ()
    assert inv.verify() == []
    decided = {a.job_id for a in result.admitted}
    assert not decided & set(result.blocked)
    if sc["max_admissions"] is None:
        assert decided | set(result.blocked) == set(by_id)  # every job admitted or told why not


@PROPS
@given(st.one_of(scenario_st, busy_st))
def test_preemption_frees_exactly_what_it_claims_and_then_the_preemptor_fits(sc):
    inv, queues, running, stopping, pending, before, result = cycle(sc)
    by_pending = {j.id: j for j in pending}
    by_running = {r.id: r for r in running}
    victims = [p.victim_id for p in result.preempted]
    assert len(victims) == len(set(victims))
    admitted = {a.job_id for a in result.admitted}
    for p in result.preempted:
        v, job = by_running[p.victim_id], by_pending[p.for_job_id]
        assert v.id not in stopping and v.preemption_count < 3
        assert p.for_job_id not in admitted and job.can_preempt
        if p.reason == "HigherPriority":
            assert v.priority < job.priority
            if not (before[job.queue] + job.request.total).fits_in(queues[job.queue].nominal):
                # A borrowing preemptor takes only from its own queue or from one that borrows.
                assert v.queue == job.queue or not before[v.queue].fits_in(queues[v.queue].nominal)
        elif p.reason == "QueueQuota":  # the preemptor's own queue was full: lower priority, same queue
            assert v.priority < job.priority and v.queue == job.queue
        else:
            assert p.reason == "ReclaimQuota"
            assert v.borrowing and v.queue != job.queue
            assert (before[job.queue] + job.request.total).fits_in(queues[job.queue].nominal)
        assert v.usage == v.per_worker.times(sum(w for _, w in v.placement))
    # Release the victims (and the jobs already stopping): exactly their usage comes back.
    after = inv.snapshot()
    free_before = after.total_free()
    gone = [by_running[v] for v in victims] + [r for r in running if r.id in stopping]
    for r in gone:
        after.release(r.placement, r.per_worker)
    expected = sum((r.usage for r in gone if after.nodes[r.placement[0][0]].schedulable), ZERO)
    assert after.total_free() - free_before == expected
    for job_id in {p.for_job_id for p in result.preempted}:
        assert isinstance(place_gang(after, by_pending[job_id].request), Placement)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario_st)
def test_same_input_same_decisions(sc):
    first = cycle(sc)[-1]
    second = cycle(sc)[-1]
    assert first.admitted == second.admitted
    assert first.preempted == second.preempted
    assert first.blocked == second.blocked


def _hosts(free: Res, pw: Res) -> int:
    counts = [getattr(free, d) // getattr(pw, d) for d in ("gpus", "cpu_millis", "memory_bytes") if getattr(pw, d)]
    return max(0, min(counts)) if counts else 1 << 30


@PROPS
@given(scenario_st, requests([100], [0], [0, 1, 2, 4, 8]))
def test_placement_finds_a_gang_whenever_one_exists(sc, r):
    """The indexed search is complete: it fails only when no set of eligible nodes could host the gang."""
    inv = build(sc)[0]
    req = _request({**r, "level": Level.UNSPECIFIED})
    room = sum(min(_hosts(n.free, req.per_worker), req.workers) for n in inv.nodes.values() if _eligible(n, req))
    result = place_gang(inv, req)
    assert isinstance(result, Placement) == (room >= req.workers)
    if isinstance(result, Placement):
        for nid, w in result.assignments:
            assert req.per_worker.times(w).fits_in(inv.nodes[nid].free)
