"""Admissions per second of the scheduler's policy core (`run_cycle`), no I/O, at queue depth 1,000
(baseline) and 100,000.

Cluster: 10,000 nodes x 8 GPUs; 18 nodes per NVLink domain, 4 domains per switch, 4 zones; three zones
on-prem H100, one cloud A100 zone with a spot part. 50 teams, one queue each, nominal quota 1/50 of
the cluster, borrowing limit as much again. Jobs: 1-16 workers x 1, 2, 4 or 8 GPUs, priorities
training > inference > preprocessing, some with a GPU-model selector, some allowing spot.
The cluster is first loaded to about 40% by running jobs (untimed); each timed cycle then admits up
to `--admissions` jobs from a queue of the given depth, and is undone before the next run.
Pending jobs come as a plain list (grouped by `run_cycle` in one pass per cycle) or as a
`PendingQueues` that a service keeps across cycles (no per-cycle pass).

    .venv/bin/python benchmarks/bench_scheduler_core.py [--runs 11] [--admissions 1000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import report

from mlmesh.scheduler.domain.admission import PendingQueues, run_cycle
from mlmesh.scheduler.domain.model import GangRequest, Node, PendingJob, QueueState, Res, RunningJob
from mlmesh.scheduler.domain.placement import Inventory

GiB = 2**30
NODES, GPUS, TEAMS = 10_000, 8, 50
PER_NODE = Res(GPUS, 96_000, 1024 * GiB)
PRIORITIES = ((1000, True, 0.4), (500, False, 0.3), (100, False, 0.3))  # value, can_preempt, share


def build_nodes() -> list[Node]:
    switches = -(-NODES // 72)
    nodes = []
    for i in range(NODES):
        switch = i // 72
        zone = min(switch * 4 // switches, 3)
        cloud = zone == 3
        nodes.append(
            Node(
                id=f"node-{i:05d}",
                allocatable=PER_NODE,
                free=PER_NODE,
                gpu_model="NVIDIA A100-SXM4-80GB" if cloud else "NVIDIA H100 80GB HBM3",
                gpu_memory_bytes=80 * GiB,
                pool="cloud" if cloud else "onprem",
                spot=cloud and i >= NODES - 500,
                zone=f"zone-{zone}",
                switch=f"sw-{switch}",
                nvlink_domain=f"nvl-{i // 18}",
                labels={"mlmesh.io/accelerator": "a100" if cloud else "h100"},
            )
        )
    return nodes


def build_queues() -> dict[str, QueueState]:
    nominal = Res(NODES * GPUS // TEAMS, NODES * PER_NODE.cpu_millis // TEAMS, NODES * PER_NODE.memory_bytes // TEAMS)
    return {f"team-{t:02d}": QueueState(f"team-{t:02d}", f"team-{t:02d}", nominal, nominal) for t in range(TEAMS)}


def make_jobs(rng: random.Random, n: int, first_seq: int, prefix: str) -> list[PendingJob]:
    jobs = []
    for i in range(n):
        gpus = rng.choice((1, 2, 4, 8))
        workers = rng.randint(1, 16)
        value, can_preempt, _ = rng.choices(PRIORITIES, weights=[p[2] for p in PRIORITIES])[0]
        team = f"team-{rng.randrange(TEAMS):02d}"
        req = GangRequest(
            workers=workers,
            per_worker=Res(gpus, 8_000 * gpus, 64 * GiB * gpus),
            gpu_models=("H100",) if rng.random() < 0.15 else (),
            allow_spot=rng.random() < 0.1,
        )
        jobs.append(PendingJob(f"{prefix}-{i}", team, team, value, can_preempt, req, first_seq + i))
    return jobs


def preload(inv: Inventory, queues: dict[str, QueueState], rng: random.Random) -> list[RunningJob]:
    """Fill about 40% of the cluster with running jobs."""
    jobs = make_jobs(rng, 1_000, 0, "run")
    by_id = {j.id: j for j in jobs}
    result = run_cycle(inv, queues, jobs, [])
    return [
        RunningJob(
            a.job_id,
            by_id[a.job_id].queue,
            by_id[a.job_id].team,
            by_id[a.job_id].priority,
            by_id[a.job_id].request.total,
            a.placement.assignments,
            by_id[a.job_id].request.per_worker,
            a.borrowing,
            seq,
        )
        for seq, a in enumerate(result.admitted)
    ]


def timed_cycle(inv, queues, pending, running, limit) -> tuple[float, int]:
    used = {name: q.used for name, q in queues.items()}
    t = time.perf_counter()
    result = run_cycle(inv, queues, pending, running, max_admissions=limit)
    elapsed = time.perf_counter() - t
    by_id = {j.id: j for j in pending}
    for a in result.admitted:  # undo, so every run starts from the same state
        inv.release(a.placement, by_id[a.job_id].request.per_worker)
    for name, q in queues.items():
        q.used = used[name]
    return elapsed, len(result.admitted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--admissions", type=int, default=1000, help="max_admissions per timed cycle")
    parser.add_argument("--deep", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(7)
    t = time.perf_counter()
    inv = Inventory(build_nodes())
    build_s = time.perf_counter() - t
    queues = build_queues()
    running = preload(inv, queues, rng)
    shallow = make_jobs(rng, 1_000, 10_000, "shallow")
    deep = make_jobs(rng, args.deep, 10_000, "deep")
    t = time.perf_counter()
    deep_queues = PendingQueues(deep)
    add_us = (time.perf_counter() - t) / len(deep) * 1e6
    base = "list, depth 1,000 (baseline)"
    cases = {
        base: shallow,
        f"list, depth {args.deep:,}": deep,
        "PendingQueues, depth 1,000": PendingQueues(shallow),
        f"PendingQueues, depth {args.deep:,}": deep_queues,
    }
    print(
        f"inventory of {NODES:,} nodes built in {build_s * 1e3:.0f} ms; preloaded {len(running)} running jobs "
        f"({1 - inv.total_free().gpus / inv.total_allocatable().gpus:.0%} of GPUs); "
        f"PendingQueues.add {add_us:.1f} µs/job"
    )
    samples: dict[str, list[tuple[float, int]]] = {case: [] for case in cases}
    for _ in range(args.runs):  # alternate so machine drift hits every case alike
        for case, pending in cases.items():
            samples[case].append(timed_cycle(inv, queues, pending, running, args.admissions))
    rows = []
    for case, runs in samples.items():
        per_admission = sorted(s / max(n, 1) for s, n in runs)
        rows.append(
            {
                "case": case,
                "n": len(runs),
                "median_us": statistics.median(per_admission) * 1e6,
                "p99_us": per_admission[-1] * 1e6,
                "admissions_per_cycle": statistics.median(n for _, n in runs),
                "median_cycle_ms": statistics.median(s for s, _ in runs) * 1e3,
                "admissions_per_s": statistics.median(n / s for s, n in runs),
            }
        )
    report("scheduler_core_admission", rows, baseline=base)
    print("(µs columns: per admission; p99 column: the worst run)\n")
    for r in rows:
        print(
            f"{r['case']:<36}{r['admissions_per_s']:>10,.0f} admissions/s ({r['admissions_per_cycle']:.0f} per cycle)"
        )
    for kind, (a, b) in {"list": (rows[0], rows[1]), "PendingQueues": (rows[2], rows[3])}.items():
        ratio = b["admissions_per_s"] / a["admissions_per_s"]
        print(
            f"{kind}: deep/shallow {ratio:.2f} ({'met' if ratio >= 0.8 else 'NOT met'}: >= 0.8); "
            f"{b['admissions_per_s']:,.0f}/s at depth {args.deep:,} "
            f"({'met' if b['admissions_per_s'] >= 2000 else 'NOT met'}: >= 2,000/s)"
        )


if __name__ == "__main__":
    main()
