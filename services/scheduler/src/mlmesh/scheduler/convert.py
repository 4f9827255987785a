"""Translation between API messages and the policy's plain data (pure functions)."""

from __future__ import annotations

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2
from mlmesh.scheduler.domain.model import (
    GangRequest,
    LabelRequirement,
    Level,
    Node,
    PendingJob,
    Placement,
    PriorityClassInfo,
    QueueState,
    Res,
    RunningJob,
)

_POOLS = {common_pb2.NODE_POOL_ONPREM: "onprem", common_pb2.NODE_POOL_CLOUD: "cloud"}
_OPS = {
    common_pb2.LABEL_OPERATOR_IN: "In",
    common_pb2.LABEL_OPERATOR_NOT_IN: "NotIn",
    common_pb2.LABEL_OPERATOR_EXISTS: "Exists",
    common_pb2.LABEL_OPERATOR_DOES_NOT_EXIST: "DoesNotExist",
}


def res(r: common_pb2.Resources) -> Res:
    return Res(r.gpus, r.cpu_millis, r.memory_bytes)


def res_pb(r: Res) -> common_pb2.Resources:
    return common_pb2.Resources(gpus=r.gpus, cpu_millis=r.cpu_millis, memory_bytes=r.memory_bytes)


def node_from_pb(n: node_pb2.Node) -> Node:
    gpus = [d for d in n.devices if d.kind == node_pb2.DEVICE_KIND_GPU]
    labels = dict(n.labels.extra)
    labels.update({k: v for k, v in (("rack", n.labels.rack), ("zone", n.labels.zone)) if v})
    cap = res(n.capacity)
    return Node(
        id=n.id,
        allocatable=cap,
        free=cap,
        gpu_model=gpus[0].model if gpus else "",
        gpu_memory_bytes=min((d.memory_bytes for d in gpus), default=0),
        pool=_POOLS.get(n.labels.pool, "onprem"),
        spot=n.labels.spot,
        zone=n.labels.zone,
        switch=n.labels.leaf_switch,
        nvlink_domain=n.labels.nvlink_domain,
        labels=labels,
        schedulable=n.state == node_pb2.NODE_STATE_READY,
        agent_address=n.agent_address,
    )


def gang_request(spec: job_pb2.JobSpec) -> GangRequest:
    sel = spec.accelerator
    pools = tuple(_POOLS[p] for p in spec.placement.pool_preference if p in _POOLS) or ("onprem", "cloud")
    return GangRequest(
        workers=spec.workers.count,
        per_worker=res(spec.workers.resources),
        gpu_models=tuple(sel.gpu_models),
        min_gpu_memory_bytes=sel.min_gpu_memory_bytes,
        match_labels=tuple(sorted(sel.node_selector.match_labels.items())),
        match_expressions=tuple(
            LabelRequirement(e.key, _OPS.get(e.operator, "In"), tuple(e.values))
            for e in sel.node_selector.match_expressions
        ),
        pool_preference=pools,
        allow_spot=spec.placement.allow_spot,
        required_level=Level(spec.placement.required_topology or 0),
    )


def queue_state(q: queue_pb2.Queue) -> QueueState:
    return QueueState(
        name=q.meta.id,
        team=q.spec.team,
        nominal=res(q.spec.nominal_quota),
        borrowing_limit=res(q.spec.borrowing_limit),
        weight=q.spec.weight or 1.0,
        lends=not q.spec.keep_idle_quota,
    )


def priority_info(pc: queue_pb2.PriorityClass) -> PriorityClassInfo:
    return PriorityClassInfo(pc.name, pc.value, pc.preemption_policy != queue_pb2.PREEMPTION_POLICY_NEVER)


def pending_job(job: job_pb2.Job, pc: PriorityClassInfo, seq: int) -> PendingJob:
    return PendingJob(
        id=job.meta.id,
        queue=job.spec.queue,
        team=job.meta.team,
        priority=pc.value,
        can_preempt=pc.can_preempt,
        request=gang_request(job.spec),
        seq=seq,
        preemption_count=job.status.preemption_count,
    )


def placement_tuples(p: job_pb2.Placement) -> tuple[tuple[str, int], ...]:
    return tuple((n.node_id, len(n.workers)) for n in p.nodes)


def running_job(job: job_pb2.Job, priority: int, seq: int) -> RunningJob:
    per_worker = res(job.spec.workers.resources)
    return RunningJob(
        id=job.meta.id,
        queue=job.spec.queue,
        team=job.meta.team,
        priority=priority,
        usage=per_worker.times(job.spec.workers.count),
        placement=placement_tuples(job.status.placement),
        per_worker=per_worker,
        borrowing=job.status.borrowing,
        admitted_seq=seq,
        preemption_count=job.status.preemption_count,
    )


def placement_pb(p: Placement, per_worker: Res, agents: dict[str, str]) -> job_pb2.Placement:
    out = job_pb2.Placement(world_size=sum(n for _, n in p.assignments), topology_level=int(p.level), score=p.score)
    rank = 0
    for node_id, count in p.assignments:
        na = out.nodes.add(node_id=node_id, agent_address=agents.get(node_id, ""))
        for local in range(count):
            na.workers.add(rank=rank, local_rank=local, resources=res_pb(per_worker))
            rank += 1
    return out
