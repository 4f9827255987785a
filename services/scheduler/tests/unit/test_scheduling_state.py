"""The incremental scheduling state always equals a rebuild from scratch, whatever the order of
job changes: it is derived data, and a drift would mean overbooked GPUs or lost quota."""

from __future__ import annotations

import random

import pytest

from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2
from mlmesh.scheduler.convert import node_from_pb
from mlmesh.scheduler.domain import states
from mlmesh.scheduler.domain.model import PriorityClassInfo
from mlmesh.scheduler.job_factory import new_job
from mlmesh.scheduler.scheduling_state import SchedulingState
from mlmesh.scheduler.transitions import now_ts

from ..integration.conftest import gpu_node

pytestmark = pytest.mark.timeout(60)


def _queue(name: str, team: str) -> queue_pb2.Queue:
    q = queue_pb2.Queue(spec=queue_pb2.QueueSpec(team=team))
    q.meta.id = name
    q.spec.nominal_quota.gpus = 32
    return q


def _state() -> SchedulingState:
    return SchedulingState(lambda j: PriorityClassInfo("p", 10, True), lambda j: True, lambda parent: [])


def _snapshot(s: SchedulingState):
    return (
        {nid: n.free for nid, n in s.inv.nodes.items()},
        {name: q.used for name, q in s.queues.items()},
        sorted(j.id for j in s.pending),
        sorted(s.running),
        sorted(s.preempting),
    )


@pytest.mark.parametrize("seed", range(5))
def test_incremental_updates_match_a_rebuild(seed):
    rng = random.Random(seed)
    nodes = [node_from_pb(gpu_node(f"n{i}")) for i in range(6)]
    queues = [_queue("qa", "a"), _queue("qb", "b")]
    live = _state()
    live.rebuild([node_from_pb(gpu_node(f"n{i}")) for i in range(6)], 1, [], queues)
    jobs: dict[str, job_pb2.Job] = {}
    for step in range(400):
        if not jobs or rng.random() < 0.3:
            spec = job_pb2.JobSpec(name="x", kind=job_pb2.JOB_KIND_COMMAND, team="a", queue=rng.choice(["qa", "qb"]))
            spec.workers.count = rng.randint(1, 3)
            spec.workers.resources.gpus = rng.randint(1, 4)
            job = new_job(spec, f"j{step}", "u")
            jobs[job.meta.id] = job
            live.on_job_change(None, job)
            continue
        job = jobs[rng.choice(sorted(jobs))]
        options = sorted(states.ALLOWED[job.status.state] - {states.SKIPPED})
        if not options:
            continue
        dst = rng.choice(options)
        placement = None
        if dst == states.ADMITTED:
            # Place it where the live inventory has room, as the admission cycle would.
            per = job.spec.workers.resources.gpus
            fits = [n for n in live.inv.nodes.values() if n.free.gpus >= per * job.spec.workers.count]
            if not fits:
                continue
            placement = fits[0].id
        try:
            moved = states.transition(job, dst, "R", now=now_ts(), workerless=False)
        except Exception:
            continue
        if placement is not None:
            node = moved.status.placement.nodes.add(node_id=placement)
            for r in range(job.spec.workers.count):
                node.workers.add(rank=r)
        if rng.random() < 0.1:
            live.on_job_change(job, None)  # deleted
            del jobs[job.meta.id]
            continue
        jobs[job.meta.id] = moved
        live.on_job_change(job, moved)
        assert not live.dirty
    fresh = _state()
    fresh.rebuild(nodes, 1, list(jobs.values()), queues)
    assert _snapshot(live) == _snapshot(fresh)
