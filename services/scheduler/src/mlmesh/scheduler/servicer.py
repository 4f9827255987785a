"""SchedulerService: the job API and queue / priority-class admin.

Reads come from the KV-mirroring indexes; writes are compare-and-set into KV, then published.
Submissions and cancellations work on any replica; scheduling decisions only on the lease holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from google.protobuf import field_mask_pb2

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2, scheduler_service_pb2_grpc
from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as api
from mlmesh.common import tracing
from mlmesh.common.auth import ROLE_ADMIN, ROLE_DEVELOPER, Identity, current_identity
from mlmesh.common.clock import ts_ns
from mlmesh.common.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    TooLarge,
)
from mlmesh.common.labels import label_match
from mlmesh.scheduler import convert
from mlmesh.scheduler.adapters.trainer_client import TrainerClient
from mlmesh.scheduler.controller import Controller
from mlmesh.scheduler.domain import states
from mlmesh.scheduler.domain.admission import run_cycle
from mlmesh.scheduler.domain.model import Blocked
from mlmesh.scheduler.domain.validation import ID, WORKER_KINDS, Catalog, validate_spec
from mlmesh.scheduler.job_factory import build_child, default_priority_class, new_job, new_job_id
from mlmesh.scheduler.transitions import Transitioner, now_ts

log = logging.getLogger("mlmesh.scheduler.api")

MAX_SPEC_BYTES = 1 << 20
DEFAULT_PAGE = 100
MAX_PAGE = 1000
WATCH_BUFFER = 1000


def _check_id(value: str, field: str) -> str:
    if not ID.fullmatch(value or ""):
        raise InvalidArgument.field(field, "must be 1-63 characters of [a-z0-9_-]")
    return value


def _sort_key(job: job_pb2.Job) -> tuple[int, str]:
    return (ts_ns(job.meta.create_time), job.meta.id)


class SchedulerServicer(scheduler_service_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, controller: Controller, trainer: TrainerClient | None):
        self.c = controller
        self.trainer = trainer
        # API writes do not need the lease: they are CAS on one job, like any client's.
        self.tx = Transitioner(controller.store, controller.jobs, controller.transitions.publisher)

    # --- helpers -------------------------------------------------------------------------------

    def _visible_job(self, job_id: str, ident: Identity) -> job_pb2.Job:
        job = self.c.jobs.items.get(job_id or "")
        if job is None or not ident.can_access(job.meta.team):
            raise NotFound(f"job {job_id} not found")
        return job

    async def _job_anywhere(self, job_id: str) -> job_pb2.Job | None:
        """The job from this replica's view, else from the store; None if it does not exist."""
        job = self.c.jobs.items.get(job_id)
        if job is not None:
            return job
        try:
            return (await self.c.store.jobs.get(job_id)).value
        except (NotFound, InvalidArgument):
            return None

    def _catalog(self) -> Catalog:
        return Catalog(
            queues={name: q.spec.team for name, q in self.c.queues.items.items()},
            priority_classes=frozenset(self.c.priority_classes.items),
        )

    def _default_queue(self, team: str) -> str:
        mine = [q for q in self.c.queues.items.values() if q.spec.team == team]
        defaults = [q.meta.id for q in mine if q.spec.team_default]
        if defaults:
            return defaults[0]
        return mine[0].meta.id if len(mine) == 1 else ""

    # --- jobs ----------------------------------------------------------------------------------

    async def SubmitJob(self, request: api.SubmitJobRequest, context) -> api.SubmitJobResponse:
        ident = current_identity()
        ident.require_role(ROLE_DEVELOPER)
        if request.spec.ByteSize() > MAX_SPEC_BYTES:
            raise TooLarge(f"job spec is {request.spec.ByteSize()} bytes; the limit is {MAX_SPEC_BYTES}")
        if request.request_id:
            _check_id(request.request_id, "request_id")
        spec = job_pb2.JobSpec()
        spec.CopyFrom(request.spec)
        spec.team = spec.team or ident.team
        if spec.team != ident.team and not (ident.is_admin or ident.is_service):
            raise PermissionDenied(f"you may only submit jobs for team {ident.team}")
        spec.queue = spec.queue or self._default_queue(spec.team)
        queue = self.c.queues.items.get(spec.queue)
        spec.priority_class = default_priority_class(
            spec, self.c.priority_classes.items, queue.spec.default_priority_class if queue else ""
        )
        violations = validate_spec(spec, self._catalog())
        if violations:
            raise InvalidArgument(f"invalid job spec: {len(violations)} problem(s)", violations)
        self._check_never_fits(spec)
        job = new_job(spec, new_job_id(spec.team, request.request_id), ident.subject)
        tracing.tag(job_id=job.meta.id, team=spec.team)
        # The job's later work (admission, its runs and workers) continues this trace.
        job.status.traceparent = tracing.current_traceparent()
        if request.dry_run:
            return api.SubmitJobResponse(job=job)
        try:
            await self.c.store.create_job(job)
        except AlreadyExists:
            existing = await self.c.store.jobs.get(job.meta.id)
            if not request.request_id or existing.value.meta.team != spec.team:
                raise
            existing.value.meta.revision = existing.revision
            return api.SubmitJobResponse(job=existing.value)  # a retried submit: same job
        self.c.jobs.apply(job.meta.id, job, job.meta.revision)
        await self.tx.publish(job)
        for step in spec.pipeline.steps:
            child = build_child(job, step)
            with contextlib.suppress(AlreadyExists):
                await self.c.store.create_job(child)
                self.c.jobs.apply(child.meta.id, child, child.meta.revision)
                await self.tx.publish(child)
        log.info("job submitted", extra={"job": job.meta.id, "kind": job_pb2.JobKind.Name(spec.kind)})
        return api.SubmitJobResponse(job=job)

    def _check_never_fits(self, spec: job_pb2.JobSpec) -> None:
        """A gang bigger than its queue's nominal + borrowing can never be admitted: say so now."""
        if spec.kind not in WORKER_KINDS:
            return
        q = self.c.queues.items.get(spec.queue)
        need = convert.res(spec.workers.resources).times(spec.workers.count)
        cap = convert.res(q.spec.nominal_quota) + convert.res(q.spec.borrowing_limit)
        if not need.fits_in(cap):
            raise QuotaExceeded(
                f"job needs {need.gpus} GPUs, {need.cpu_millis}m CPU, {need.memory_bytes} B memory; queue "
                f"{spec.queue} allows at most {cap.gpus} GPUs, {cap.cpu_millis}m CPU, {cap.memory_bytes} B"
            )

    async def GetJob(self, request: api.GetJobRequest, context) -> api.GetJobResponse:
        return api.GetJobResponse(job=self._visible_job(request.job_id, current_identity()))

    async def CancelJob(self, request: api.CancelJobRequest, context) -> api.CancelJobResponse:
        ident = current_identity()
        job = self._visible_job(request.job_id, ident)
        ident.require_role(ROLE_DEVELOPER)
        message = (request.reason or f"cancelled by {ident.subject}")[:1024]
        # The pipeline first: once it is CANCELLED the controller no longer judges it by its steps
        # (which would make it FAILED when the first cancelled step lands).
        cancelled = await self._cancel_one(job, message, request.checkpoint)
        for child in [j for j in self.c.jobs.items.values() if j.parent_job_id == job.meta.id]:
            await self._cancel_one(child, message, request.checkpoint)
        return api.CancelJobResponse(job=cancelled)

    async def _cancel_one(self, job: job_pb2.Job, message: str, checkpoint: bool) -> job_pb2.Job:
        for _ in range(8):
            if job.status.state in states.TERMINAL:
                return job
            run_id = job.status.run_id
            try:
                moved = await self.tx.move(
                    job, states.CANCELLED, "Cancelled", message, workerless=job.spec.kind not in WORKER_KINDS
                )
            except Conflict:
                await asyncio.sleep(0.01)
                job = self.c.jobs.items.get(job.meta.id, job)
                continue
            if run_id and self.trainer is not None:
                try:
                    await self.trainer.stop_run(run_id, checkpoint=checkpoint, reason="Cancelled")
                except Exception as exc:
                    log.warning("StopRun for cancelled job %s failed: %s", job.meta.id, exc)
            return moved
        raise Conflict(f"job {job.meta.id} kept changing; try again")

    async def ListJobs(self, request: api.ListJobsRequest, context) -> api.ListJobsResponse:
        ident = current_identity()
        team = request.team or ident.team
        if not ident.can_access(team):
            raise PermissionDenied(f"you may only list jobs of team {ident.team}")
        size = request.page_size or DEFAULT_PAGE
        if not 0 < size <= MAX_PAGE:
            raise InvalidArgument.field("page_size", f"must be 1-{MAX_PAGE}")
        after = None
        if request.page_token:
            try:
                ns, _, jid = request.page_token.partition(":")
                after = (int(ns), jid)
            except ValueError:
                raise InvalidArgument.field("page_token", "not a token from a previous response") from None
        wanted = set(request.states)
        rows = [
            j
            for j in self.c.jobs.items.values()
            if j.meta.team == team
            and (not wanted or j.status.state in wanted)
            and (not request.queue or j.spec.queue == request.queue)
            and (not request.parent_job_id or j.parent_job_id == request.parent_job_id)
            and label_match(j.meta.labels, request.label_selector)
        ]
        rows.sort(key=_sort_key, reverse=True)  # newest first
        if after is not None:
            rows = [j for j in rows if _sort_key(j) < after]
        page = rows[:size]
        token = ""
        if len(rows) > size:
            last = _sort_key(page[-1])
            token = f"{last[0]}:{last[1]}"
        return api.ListJobsResponse(jobs=page, next_page_token=token)

    async def WatchJobs(self, request: api.WatchJobsRequest, context):
        ident = current_identity()
        team = request.team or ident.team
        if not ident.can_access(team):
            raise PermissionDenied(f"you may only watch jobs of team {ident.team}")
        ids, wanted = set(request.job_ids), set(request.states)
        if ids:
            # Named jobs are watched in their own team (an admin needs no `team`); a name that is
            # unknown or not the caller's is refused now rather than waited on for ever. The store
            # is asked too: this replica's view may lag a submit made through another one.
            missing = [i for i in sorted(ids) if not _watchable(await self._job_anywhere(i), ident, request.team)]
            if missing:
                raise NotFound(f"job_ids: {', '.join(missing)} not found")

        def matches(job: job_pb2.Job) -> bool:
            in_scope = job.meta.id in ids if ids else job.meta.team == team
            return in_scope and label_match(job.meta.labels, request.label_selector)

        queue: asyncio.Queue = asyncio.Queue(maxsize=WATCH_BUFFER)
        overflowed = False

        def on_change(before, after) -> None:
            nonlocal overflowed
            if after is None or not matches(after):
                return
            previous = before.status.state if before is not None else job_pb2.JOB_STATE_UNSPECIFIED
            if previous == after.status.state or (wanted and after.status.state not in wanted):
                return
            try:
                queue.put_nowait((after, previous))
            except asyncio.QueueFull:
                overflowed = True  # a slow client must not grow server memory without bound

        unsubscribe = self.c.jobs.subscribe(on_change)
        try:
            if request.send_initial:
                for job in sorted((j for j in self.c.jobs.items.values() if matches(j)), key=_sort_key):
                    if not wanted or job.status.state in wanted:
                        yield api.WatchJobsResponse(type=api.WATCH_EVENT_TYPE_SNAPSHOT, job=job)
                yield api.WatchJobsResponse(type=api.WATCH_EVENT_TYPE_SNAPSHOT_END)
            while True:
                job, previous = await queue.get()
                if overflowed:
                    raise QuotaExceeded("watcher fell too far behind; reconnect with send_initial")
                yield api.WatchJobsResponse(type=api.WATCH_EVENT_TYPE_CHANGED, job=job, previous_state=previous)
        finally:
            unsubscribe()

    async def ExplainJob(self, request: api.ExplainJobRequest, context) -> api.ExplainJobResponse:
        job = self._visible_job(request.job_id, current_identity())
        out = api.ExplainJobResponse(job=job)
        queue = self.c.queues.items.get(job.spec.queue)
        if queue is not None:
            out.queue.CopyFrom(self._with_status(queue))
        st = job.status.state
        if st == states.RETRYING:
            when = job.status.next_retry_time.ToDatetime().isoformat()
            out.blockers.add(kind=api.BLOCKER_KIND_BACKOFF, message=f"retrying after {when}Z")
        elif st == states.PENDING and job.spec.kind in WORKER_KINDS:
            await self._explain_pending(job, out)
        elif st == states.PENDING and job.spec.kind == job_pb2.JOB_KIND_PIPELINE:
            out.blockers.add(kind=api.BLOCKER_KIND_DEPENDENCIES, message="waiting for its steps to start")
        out.summary = self._summary(job, out)
        return out

    async def _explain_pending(self, job: job_pb2.Job, out: api.ExplainJobResponse) -> None:
        if not self.c.deps_ok(job):
            out.blockers.add(kind=api.BLOCKER_KIND_DEPENDENCIES, message="waiting for upstream pipeline steps")
            return
        state = await self.c.fresh_state()
        mine = sorted((p for p in state.pending if p.queue == job.spec.queue), key=lambda p: (-p.priority, p.seq))
        out.queue_length = len(mine)
        out.queue_position = next((i + 1 for i, p in enumerate(mine) if p.id == job.meta.id), 0)
        blocked: Blocked | None = self.c.last_result.blocked.get(job.meta.id) if self.c.is_leader else None
        if blocked is None:  # not the leader, or decided since: a dry run over current state
            result = run_cycle(
                state.inv,
                state.queues,
                state.pending,
                list(state.running.values()),
                preempting=frozenset(state.preempting),
            )
            blocked = result.blocked.get(job.meta.id)
        if blocked is None:
            out.blockers.add(kind=api.BLOCKER_KIND_QUEUE_ORDER, message="admissible; the next cycle admits it")
            return
        out.blockers.add(
            kind=int(blocked.kind),
            message=blocked.message,
            requested=convert.res_pb(blocked.requested),
            available=convert.res_pb(blocked.available),
        )
        for reason, count in blocked.rejections:
            out.node_rejections.add(reason=reason, node_count=count)

    @staticmethod
    def _summary(job: job_pb2.Job, out: api.ExplainJobResponse) -> str:
        state = states.state_name(job.status.state).lower()
        if not out.blockers:
            return f"job {job.meta.id} is {state}: {job.status.reason} {job.status.message}".strip()
        head = out.blockers[0]
        kind = api.BlockerKind.Name(head.kind).removeprefix("BLOCKER_KIND_").lower().replace("_", " ")
        where = f" (position {out.queue_position} of {out.queue_length} in queue {job.spec.queue})"
        return f"job {job.meta.id} is {state}{where if out.queue_position else ''}: {kind}: {head.message}"

    # --- queues --------------------------------------------------------------------------------

    def _with_status(self, q: queue_pb2.Queue) -> queue_pb2.Queue:
        out = queue_pb2.Queue()
        out.CopyFrom(q)
        used = convert.res(common_pb2.Resources())
        counts = {states.PENDING: 0, states.ADMITTED: 0, states.RUNNING: 0}
        for job in self.c.jobs.items.values():
            if job.spec.queue != q.meta.id:
                continue
            if job.status.state in counts:
                counts[job.status.state] += 1
            if job.status.state in states.HOLDING and job.status.placement.nodes:
                used = used + convert.res(job.spec.workers.resources).times(job.spec.workers.count)
        nominal = convert.res(q.spec.nominal_quota)
        out.status.used.CopyFrom(convert.res_pb(used))
        out.status.borrowed.CopyFrom(convert.res_pb((used - nominal).clamp_min_zero()))
        out.status.pending_jobs = counts[states.PENDING]
        out.status.admitted_jobs = counts[states.ADMITTED]
        out.status.running_jobs = counts[states.RUNNING]
        return out

    def _visible_queue(self, name: str, ident: Identity) -> queue_pb2.Queue:
        q = self.c.queues.items.get(name or "")
        if q is None or not ident.can_access(q.spec.team):
            raise NotFound(f"queue {name} not found")
        return q

    def _validate_queue(self, name: str, spec: queue_pb2.QueueSpec) -> None:
        bad: dict[str, str] = {}
        if not ID.fullmatch(name):
            bad["name"] = "must be 1-63 characters of [a-z0-9_-]"
        if not ID.fullmatch(spec.team):
            bad["spec.team"] = "must be 1-63 characters of [a-z0-9_-]"
        for field in ("nominal_quota", "borrowing_limit"):
            r = getattr(spec, field)
            for dim in ("gpus", "cpu_millis", "memory_bytes"):
                if getattr(r, dim) < 0:
                    bad[f"spec.{field}.{dim}"] = "must not be negative"
        if spec.weight < 0:
            bad["spec.weight"] = "must not be negative"
        if spec.default_priority_class and spec.default_priority_class not in self.c.priority_classes.items:
            bad["spec.default_priority_class"] = f"unknown priority class {spec.default_priority_class!r}"
        if bad:
            raise InvalidArgument("invalid queue", bad)
        if spec.team_default:
            others = [
                q.meta.id
                for q in self.c.queues.items.values()
                if q.spec.team == spec.team and q.spec.team_default and q.meta.id != name
            ]
            if others:
                raise FailedPrecondition(f"team {spec.team} already has a default queue: {others[0]}")

    async def CreateQueue(self, request: api.CreateQueueRequest, context) -> api.CreateQueueResponse:
        ident = current_identity()
        ident.require_role(ROLE_ADMIN)
        self._validate_queue(request.name, request.spec)
        q = queue_pb2.Queue(spec=request.spec)
        q.meta.id = request.name
        q.meta.team = request.spec.team
        q.meta.create_time.CopyFrom(now_ts())
        q.meta.update_time.CopyFrom(q.meta.create_time)
        q.meta.created_by = ident.subject
        q.meta.revision = await self.c.store.queues.create(request.name, q)
        self.c.queues.apply(q.meta.id, q, q.meta.revision)
        return api.CreateQueueResponse(queue=self._with_status(q))

    async def UpdateQueue(self, request: api.UpdateQueueRequest, context) -> api.UpdateQueueResponse:
        ident = current_identity()
        ident.require_role(ROLE_ADMIN)
        current = await self.c.store.queues.get(_check_id(request.name, "name"))
        if request.expected_revision and request.expected_revision != current.revision:
            raise FailedPrecondition(f"queue {request.name} is at revision {current.revision}")
        spec = queue_pb2.QueueSpec()
        spec.CopyFrom(current.value.spec)
        _apply_mask(spec, request.spec, request.update_mask, queue_pb2.QueueSpec)
        self._validate_queue(request.name, spec)
        if spec.team != current.value.spec.team:
            raise InvalidArgument.field("spec.team", "a queue cannot move to another team")
        q = queue_pb2.Queue()
        q.CopyFrom(current.value)
        q.spec.CopyFrom(spec)
        q.meta.update_time.CopyFrom(now_ts())
        q.meta.revision = await self.c.store.queues.update(request.name, q, current.revision)
        self.c.queues.apply(q.meta.id, q, q.meta.revision)
        return api.UpdateQueueResponse(queue=self._with_status(q))

    async def GetQueue(self, request: api.GetQueueRequest, context) -> api.GetQueueResponse:
        return api.GetQueueResponse(queue=self._with_status(self._visible_queue(request.name, current_identity())))

    async def ListQueues(self, request: api.ListQueuesRequest, context) -> api.ListQueuesResponse:
        ident = current_identity()
        rows = sorted(
            (
                q
                for q in self.c.queues.items.values()
                if ident.can_access(q.spec.team) and (not request.team or q.spec.team == request.team)
            ),
            key=lambda q: q.meta.id,
        )
        if request.page_token:
            rows = [q for q in rows if q.meta.id > request.page_token]
        size = request.page_size or DEFAULT_PAGE
        if not 0 < size <= MAX_PAGE:
            raise InvalidArgument.field("page_size", f"must be 1-{MAX_PAGE}")
        page = rows[:size]
        token = page[-1].meta.id if len(rows) > size else ""
        return api.ListQueuesResponse(queues=[self._with_status(q) for q in page], next_page_token=token)

    async def DeleteQueue(self, request: api.DeleteQueueRequest, context) -> api.DeleteQueueResponse:
        current_identity().require_role(ROLE_ADMIN)
        await self._delete_unused(self.c.store.queues, self.c.queues, request.name, "queue", "queue")
        return api.DeleteQueueResponse()

    async def _delete_unused(self, repo, index, name: str, what: str, spec_field: str) -> None:
        """Delete a queue or priority class that no unfinished job refers to (CAS on its revision)."""
        current = await repo.get(_check_id(name, "name"))
        live = [
            j.meta.id
            for j in self.c.jobs.items.values()
            if getattr(j.spec, spec_field) == name and j.status.state not in states.TERMINAL
        ]
        if live:
            raise FailedPrecondition(f"{what} {name} is used by {len(live)} unfinished jobs, e.g. {live[0]}")
        await repo.delete(name, revision=current.revision)
        index.apply(name, None)

    # --- priority classes ----------------------------------------------------------------------

    def _validate_class(self, pc: queue_pb2.PriorityClass) -> None:
        bad = {}
        if not ID.fullmatch(pc.name):
            bad["priority_class.name"] = "must be 1-63 characters of [a-z0-9_-]"
        if not -1_000_000 <= pc.value <= 1_000_000:
            bad["priority_class.value"] = "must be within +-1,000,000"
        if pc.preemption_policy not in queue_pb2.PreemptionPolicy.values():
            bad["priority_class.preemption_policy"] = "unknown policy"
        if len(pc.description) > 1024:
            bad["priority_class.description"] = "at most 1024 characters"
        if bad:
            raise InvalidArgument("invalid priority class", bad)
        if pc.global_default:
            others = [p.name for p in self.c.priority_classes.items.values() if p.global_default and p.name != pc.name]
            if others:
                raise FailedPrecondition(f"{others[0]} is already the global default class")

    async def CreatePriorityClass(self, request, context) -> api.CreatePriorityClassResponse:
        current_identity().require_role(ROLE_ADMIN)
        pc = queue_pb2.PriorityClass()
        pc.CopyFrom(request.priority_class)
        pc.revision = 0
        pc.preemption_policy = pc.preemption_policy or queue_pb2.PREEMPTION_POLICY_PREEMPT_LOWER_PRIORITY
        self._validate_class(pc)
        pc.revision = await self.c.store.priority_classes.create(pc.name, pc)
        self.c.priority_classes.apply(pc.name, pc, pc.revision)
        return api.CreatePriorityClassResponse(priority_class=pc)

    async def UpdatePriorityClass(self, request, context) -> api.UpdatePriorityClassResponse:
        current_identity().require_role(ROLE_ADMIN)
        name = _check_id(request.priority_class.name, "priority_class.name")
        current = await self.c.store.priority_classes.get(name)
        if request.priority_class.revision and request.priority_class.revision != current.revision:
            raise FailedPrecondition(f"priority class {name} is at revision {current.revision}")
        pc = queue_pb2.PriorityClass()
        pc.CopyFrom(current.value)
        _apply_mask(pc, request.priority_class, request.update_mask, queue_pb2.PriorityClass)
        pc.name = name
        self._validate_class(pc)
        pc.revision = await self.c.store.priority_classes.update(name, pc, current.revision)
        self.c.priority_classes.apply(name, pc, pc.revision)
        return api.UpdatePriorityClassResponse(priority_class=pc)

    async def GetPriorityClass(self, request, context) -> api.GetPriorityClassResponse:
        current_identity()
        pc = self.c.priority_classes.items.get(request.name or "")
        if pc is None:
            raise NotFound(f"priority class {request.name} not found")
        return api.GetPriorityClassResponse(priority_class=pc)

    async def ListPriorityClasses(self, request, context) -> api.ListPriorityClassesResponse:
        current_identity()
        rows = sorted(self.c.priority_classes.items.values(), key=lambda p: (-p.value, p.name))
        return api.ListPriorityClassesResponse(priority_classes=rows)

    async def DeletePriorityClass(self, request, context) -> api.DeletePriorityClassResponse:
        current_identity().require_role(ROLE_ADMIN)
        await self._delete_unused(
            self.c.store.priority_classes, self.c.priority_classes, request.name, "priority class", "priority_class"
        )
        return api.DeletePriorityClassResponse()


def _apply_mask(target, source, mask: field_mask_pb2.FieldMask, message_type) -> None:
    """Copy the masked paths of `source` into `target` (all fields when the mask is empty)."""
    if not mask.paths:
        target.CopyFrom(source)
        return
    for path in mask.paths:
        if not _valid_path(message_type.DESCRIPTOR, path):
            raise InvalidArgument.field("update_mask", f"unknown path {path!r}")
    mask.MergeMessage(source, target, replace_message_field=True, replace_repeated_field=True)


def _valid_path(descriptor, path: str) -> bool:
    for part in path.split("."):
        field = descriptor.fields_by_name.get(part)
        if field is None:
            return False
        descriptor = field.message_type
        if descriptor is None:
            return part == path.split(".")[-1]
    return True


def _watchable(job: job_pb2.Job | None, ident: Identity, team: str) -> bool:
    return job is not None and ident.can_access(job.meta.team) and (not team or job.meta.team == team)
