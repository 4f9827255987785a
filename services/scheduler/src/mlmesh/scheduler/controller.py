"""The scheduler's control loop: lease, retry timers, pipelines, admission, preemption, dispatch,
and the trainer's run events.

Every replica runs it, but only the lease holder acts. All inputs come from the KV-backed indexes,
so a replica that restarts (even after kill -9) rebuilds exactly what it needs from KV: held
resources are the placements recorded on ADMITTED/RUNNING/PREEMPTED jobs, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.api.scheduler.v1 import job_pb2, queue_pb2
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.common import tracing
from mlmesh.common.clock import ts_ns
from mlmesh.common.errors import Conflict, FailedPrecondition, MlmeshError, NotFound, Unavailable
from mlmesh.common.events import Event, EventPublisher
from mlmesh.common.kv_index import KvIndex
from mlmesh.common.lease import Lease
from mlmesh.scheduler import convert
from mlmesh.scheduler.adapters.control_client import ControlClient
from mlmesh.scheduler.adapters.inventory import InventorySource
from mlmesh.scheduler.adapters.store import SchedulerStore
from mlmesh.scheduler.adapters.trainer_client import TrainerClient
from mlmesh.scheduler.control_runner import ControlStepRunner
from mlmesh.scheduler.domain import states
from mlmesh.scheduler.domain.admission import run_cycle
from mlmesh.scheduler.domain.control_steps import CONTROL_KINDS
from mlmesh.scheduler.domain.model import CycleResult, PriorityClassInfo
from mlmesh.scheduler.domain.pipeline import descendants
from mlmesh.scheduler.job_factory import build_child, child_job_id
from mlmesh.scheduler.scheduling_state import SchedulingState
from mlmesh.scheduler.transitions import Transitioner, now_ts

log = logging.getLogger("mlmesh.scheduler.controller")

R = run_pb2.RunState
NODE_NOT_READY, NODE_DRAINING = node_pb2.NODE_STATE_NOT_READY, node_pb2.NODE_STATE_DRAINING
REPUBLISH_WINDOW_S = 110.0  # inside JetStream's 120 s duplicate window
COALESCE_S = 0.01


def _job_span(name: str, job: job_pb2.Job, attributes_of: Callable[..., dict], *args):
    """A span under the job's submission; nothing (not even its attributes) when the submission
    was not traced."""
    if not tracing.is_sampled(job.status.traceparent):
        return contextlib.nullcontext()
    return tracing.job_span(name, job.status.traceparent, job.meta.id, job.meta.team, attributes_of(job, *args))


def _run_attributes(job: job_pb2.Job) -> dict:
    return {"mlmesh.attempt": job.status.attempt}


def _admit_attributes(job: job_pb2.Job, placement) -> dict:
    """What an admission span tells: how long the job waited in its queue, and where it goes."""
    waited_ns = time.time_ns() - ts_ns(job.status.last_transition_time)
    return {
        "mlmesh.queue": job.spec.queue,
        "mlmesh.attempt": job.status.attempt,
        "mlmesh.queue_wait_s": round(max(0, waited_ns) / 1e9, 3),
        "mlmesh.world_size": placement.world_size,
        "mlmesh.nodes": len(placement.nodes),
    }


class Controller:
    def __init__(
        self,
        *,
        store: SchedulerStore,
        jobs: KvIndex[job_pb2.Job],
        queues: KvIndex[queue_pb2.Queue],
        priority_classes: KvIndex[queue_pb2.PriorityClass],
        inventory: InventorySource,
        lease: Lease,
        publisher: EventPublisher,
        trainer: TrainerClient | None,
        control: ControlClient | None = None,
        interval_s: float = 0.5,
        max_admissions: int = 5000,
    ):
        self.store = store
        self.jobs = jobs
        self.queues = queues
        self.priority_classes = priority_classes
        self.inventory = inventory
        self.lease = lease
        self.trainer = trainer
        self.control = ControlStepRunner(self, control)
        self.interval_s = interval_s
        self.max_admissions = max_admissions
        self.transitions = Transitioner(store, jobs, publisher, may_write=lease.valid)
        self.last_result = CycleResult()
        self._task: asyncio.Task | None = None
        self._was_leader = False
        self._stop_sent: set[str] = set()
        self._dispatch_after: dict[str, float] = {}
        # () -> Consumer, set by the app: run events and node events, consumed by the leader only.
        self.consumer_factories: list = []
        self._consumers: list = []
        self.state = SchedulingState(self.priority_of, self.deps_ok, self._children_of)
        jobs.subscribe(self.state.on_job_change)
        # Job ids by state (and live pipelines and control-plane steps), so the loop's passes over
        # retrying, preempted, admitted, pipeline and control jobs never scan a deep pending queue.
        self.by_state: dict[int, set[str]] = {}
        self.pipelines: set[str] = set()
        self.control_steps: set[str] = set()
        for job in jobs.items.values():
            self._track(None, job)
        jobs.subscribe(self._track)
        queues.subscribe(self._mark_dirty)
        priority_classes.subscribe(self._mark_dirty)

    def _track(self, before: job_pb2.Job | None, after: job_pb2.Job | None) -> None:
        if before is not None:
            self.by_state.get(before.status.state, set()).discard(before.meta.id)
            self.pipelines.discard(before.meta.id)
            self.control_steps.discard(before.meta.id)
        if after is not None:
            self.by_state.setdefault(after.status.state, set()).add(after.meta.id)
            if after.status.state not in states.TERMINAL:
                if after.spec.kind == job_pb2.JOB_KIND_PIPELINE:
                    self.pipelines.add(after.meta.id)
                elif after.spec.kind in CONTROL_KINDS:
                    self.control_steps.add(after.meta.id)

    def jobs_in(self, state: int) -> list[job_pb2.Job]:
        items = self.jobs.items
        return [items[i] for i in sorted(self.by_state.get(state, ())) if i in items]

    def _mark_dirty(self, before, after) -> None:
        self.state.dirty = True

    def _children_of(self, parent_id: str):
        parent = self.jobs.items.get(parent_id)
        if parent is None:
            return []
        ids = (child_job_id(parent_id, s.name) for s in parent.spec.pipeline.steps)
        return [c for c in (self.jobs.items.get(i) for i in ids) if c is not None]

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler-controller")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.control.stop()
        await self._stop_consumers()
        with contextlib.suppress(Exception):
            await self.lease.release()

    async def _stop_consumers(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        self._consumers = []

    async def _loop(self) -> None:
        while True:
            self.jobs.changed.clear()
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduling cycle failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.jobs.changed.wait(), self.interval_s)
                # Let a burst of submissions land so that one cycle admits them together.
                await asyncio.sleep(COALESCE_S)

    @property
    def is_leader(self) -> bool:
        return self.lease.valid()

    async def cycle(self) -> None:
        if not await self.lease.acquire_or_renew():
            if self._was_leader:
                log.warning("lost the scheduler lease")
                await self._stop_consumers()
            self._was_leader = False
            return
        if not self._was_leader:
            log.info("acquired the scheduler lease", extra={"holder": self.lease.holder})
            self._was_leader = True
            await self._republish_recent()
            for factory in self.consumer_factories:
                consumer = factory()
                await consumer.start()
                self._consumers.append(consumer)
        await self._release_retries()
        await self._advance_pipelines()
        await self.control.advance()
        await self._admit()
        await self._stop_preempted()
        await self._dispatch()

    # --- helpers -------------------------------------------------------------------------------

    def priority_of(self, job: job_pb2.Job) -> PriorityClassInfo:
        pc = self.priority_classes.items.get(job.spec.priority_class)
        return convert.priority_info(pc) if pc else PriorityClassInfo(job.spec.priority_class or "none", 0, False)

    def deps_ok(self, job: job_pb2.Job) -> bool:
        """A pipeline child may be admitted once every step it depends on has succeeded."""
        if not job.parent_job_id:
            return True
        parent = self.jobs.items.get(job.parent_job_id)
        if parent is None:
            return False
        for step in parent.spec.pipeline.steps:
            if step.name == job.pipeline_step:
                return all(
                    (c := self.jobs.items.get(child_job_id(parent.meta.id, d))) is not None
                    and c.status.state == states.SUCCEEDED
                    for d in step.depends_on
                )
        return False

    async def _try_move(self, job: job_pb2.Job, dst: int, reason: str, message: str = "", **kw) -> bool:
        try:
            await self.transitions.move(job, dst, reason, message, **kw)
            return True
        except (Conflict, FailedPrecondition) as exc:
            log.info("transition of %s to %s skipped: %s", job.meta.id, states.state_name(dst), exc.message)
            return False

    async def _republish_recent(self) -> None:
        """A previous leader may have died between a KV write and its event; publish again (same
        event id, so JetStream drops the ones that did go out)."""
        cutoff = time.time() - REPUBLISH_WINDOW_S
        for job in list(self.jobs.items.values()):
            if job.status.last_transition_time.seconds >= cutoff:
                with contextlib.suppress(Exception):
                    await self.transitions.publish(job)

    # --- retries and pipelines -------------------------------------------------------------------

    async def _release_retries(self) -> None:
        now = time.time()
        for job in self.jobs_in(states.RETRYING):
            if job.status.next_retry_time.seconds <= now:
                await self._try_move(job, states.PENDING, "RetryBackoffElapsed", f"attempt {job.status.attempt + 1}")

    async def _advance_pipelines(self) -> None:
        for parent in [self.jobs.items[i] for i in sorted(self.pipelines) if i in self.jobs.items]:
            if parent.status.state in states.TERMINAL:
                continue
            await self._advance_pipeline(parent)

    async def _advance_pipeline(self, parent: job_pb2.Job) -> None:
        steps = parent.spec.pipeline.steps
        deps = {s.name: list(s.depends_on) for s in steps}
        children: dict[str, job_pb2.Job] = {}
        for step in steps:
            child = self.jobs.items.get(child_job_id(parent.meta.id, step.name))
            if child is None:  # the submit was interrupted before creating it: finish the job
                child = build_child(parent, step)
                with contextlib.suppress(MlmeshError):
                    await self.store.create_job(child)
                    self.jobs.apply(child.meta.id, child, child.meta.revision)
                    await self.transitions.publish(child)
            children[step.name] = child
        bad = {n for n, c in children.items() if c.status.state in (states.FAILED, states.CANCELLED, states.SKIPPED)}
        for name in sorted(set().union(*(descendants(deps, b) for b in bad)) if bad else set()):
            child = children[name]
            if child.status.state == states.PENDING:
                await self._try_move(
                    child,
                    states.SKIPPED,
                    "DependencyFailed",
                    "an upstream step did not succeed",
                    edit=lambda j: setattr(j.status, "failure_class", job_pb2.FAILURE_CLASS_DEPENDENCY_FAILED),
                )
        current = [c if (c2 := self.jobs.items.get(c.meta.id)) is None else c2 for c in children.values()]
        step_status = [
            job_pb2.PipelineStepStatus(name=c.pipeline_step, job_id=c.meta.id, state=c.status.state) for c in current
        ]
        all_done = all(c.status.state in states.TERMINAL for c in current)
        started = any(c.status.state != states.PENDING for c in current)

        def record(j: job_pb2.Job) -> None:
            del j.status.steps[:]
            j.status.steps.extend(step_status)

        if all_done:
            ok = all(c.status.state == states.SUCCEEDED for c in current)
            if parent.status.state == states.PENDING or parent.status.state == states.RUNNING:
                await self._try_move(
                    parent,
                    states.SUCCEEDED if ok else states.FAILED,
                    "AllStepsSucceeded" if ok else "StepFailed",
                    "" if ok else "steps failed: " + ", ".join(sorted(bad)),
                    workerless=True,
                    edit=record,
                )
        elif started and parent.status.state == states.PENDING:
            await self._try_move(parent, states.RUNNING, "StepsStarted", workerless=True, edit=record)
        elif list(parent.status.steps) != step_status:
            updated = job_pb2.Job()
            updated.CopyFrom(parent)
            record(updated)
            with contextlib.suppress(Conflict, Unavailable):
                await self.transitions.save(updated, parent.meta.revision, publish=False)

    # --- admission and preemption ----------------------------------------------------------------

    async def fresh_state(self) -> SchedulingState:
        """Policy inputs rebuilt from the indexes, apart from the live ones: for dry runs (Explain)."""
        state = SchedulingState(self.priority_of, self.deps_ok, self._children_of)
        state.rebuild(await self.inventory.nodes(), None, list(self.jobs.items.values()), self.queues.items.values())
        return state

    async def _admit(self) -> None:
        state = self.state
        version = self.inventory.version()
        if state.needs_rebuild(version):
            nodes = await self.inventory.nodes()
            state.rebuild(nodes, version, list(self.jobs.items.values()), list(self.queues.items.values()))
        if not state.pending:
            self.last_result = CycleResult()
            return
        result = run_cycle(
            state.inv,
            state.queues,
            state.pending,
            list(state.running.values()),
            max_admissions=self.max_admissions,
            preempting=frozenset(state.preempting),
        )
        # Before any write: the durable ADMITTED records come back through the index and count then.
        state.undo_cycle(result)
        self.last_result = result
        agents = state.agents
        for adm in result.admitted:
            job = self.jobs.items.get(adm.job_id)
            if job is None or job.status.state != states.PENDING:
                continue
            placement = convert.placement_pb(adm.placement, convert.res(job.spec.workers.resources), agents)
            placement.decide_time.CopyFrom(now_ts())

            def edit(j: job_pb2.Job, placement=placement, borrowing=adm.borrowing) -> None:
                j.status.placement.CopyFrom(placement)
                j.status.borrowing = borrowing

            nodes = len(adm.placement.assignments)
            msg = f"{placement.world_size} workers on {nodes} node{'s' * (nodes != 1)} ({adm.placement.level.name})"
            with _job_span("scheduler.admit", job, _admit_attributes, placement):
                moved = await self._try_move(job, states.ADMITTED, "Admitted", msg, edit=edit)
            if not moved:
                return  # state moved under us: the next cycle starts from the new state
        for pre in result.preempted:
            victim = self.jobs.items.get(pre.victim_id)
            if victim is None or victim.status.state not in (states.ADMITTED, states.RUNNING):
                continue
            await self._try_move(
                victim,
                states.PREEMPTED,
                pre.reason,
                f"preempted for job {pre.for_job_id}",
                edit=lambda j: setattr(j.status, "failure_class", job_pb2.FAILURE_CLASS_PREEMPTED),
            )

    async def _stop_preempted(self) -> None:
        """Victims checkpoint then stop; one with no run yet goes straight back to PENDING."""
        for job in self.jobs_in(states.PREEMPTED):
            if not job.status.run_id:
                await self._try_move(job, states.PENDING, "Preempted", "requeued; it had not started")
                continue
            if self.trainer is None or job.status.run_id in self._stop_sent:
                continue
            try:
                await self.trainer.stop_run(job.status.run_id, checkpoint=True, reason="Preempted")
                self._stop_sent.add(job.status.run_id)
            except Exception as exc:
                log.warning("StopRun for %s failed (%s); retrying next cycle", job.meta.id, exc)

    async def _dispatch(self) -> None:
        if self.trainer is None:
            return
        now = time.monotonic()
        for job in self.jobs_in(states.ADMITTED):
            if job.status.run_id:
                continue
            if self._dispatch_after.get(job.meta.id, 0) > now:
                continue
            try:
                with _job_span("scheduler.start_run", job, _run_attributes) as span:
                    run_id = await self.trainer.start_run(job)
                    if span is not None:
                        span.set_attribute("mlmesh.run_id", run_id)
            except Exception as exc:
                log.warning("StartRun for %s failed (%s); retrying", job.meta.id, exc)
                self._dispatch_after[job.meta.id] = now + 2.0
                continue
            updated = job_pb2.Job()
            updated.CopyFrom(job)
            updated.status.run_id = run_id
            with contextlib.suppress(Conflict, Unavailable):
                await self.transitions.save(updated, job.meta.revision, publish=False)

    # --- the trainer's events ------------------------------------------------------------------

    async def on_run_event(self, event: Event[events_pb2.RunStateChanged]) -> None:
        if not self.is_leader:
            raise Unavailable("not the leader; redeliver")  # nak: the lease holder handles it
        e = event.data
        job = self.jobs.items.get(e.job_id)
        if job is None or e.attempt != job.status.attempt:
            return  # unknown job or an old attempt's event: nothing to do
        st = job.status.state
        if e.to_state in (R.RUN_STATE_STARTING, R.RUN_STATE_RUNNING, R.RUN_STATE_RESTARTING):
            if st == states.ADMITTED:
                await self._move_or_retry(job, states.RUNNING, "Running", e.message, run_id=e.run_id)
        elif e.to_state == R.RUN_STATE_SUCCEEDED:
            if st in (states.ADMITTED, states.RUNNING):
                await self._move_or_retry(job, states.SUCCEEDED, "Succeeded", e.message, outputs=e.outputs)
        elif e.to_state == R.RUN_STATE_FAILED:
            if st in (states.ADMITTED, states.RUNNING):
                await self._fail(job, e)
        elif e.to_state == R.RUN_STATE_STOPPED:
            if st == states.PREEMPTED:
                await self._move_or_retry(
                    job, states.PENDING, "Preempted", "stopped after a checkpoint", outputs=e.outputs
                )
                self._stop_sent.discard(e.run_id)
            elif st in (states.ADMITTED, states.RUNNING):
                e.failure_class = e.failure_class or job_pb2.FAILURE_CLASS_INFRASTRUCTURE
                await self._fail(job, e)

    # --- the fabric's node events ----------------------------------------------------------------

    async def on_node_event(self, event: Event[events_pb2.NodeStateChanged]) -> None:
        """A dead node fails its jobs' attempts (retried as NODE_LOST); a draining node's jobs are
        preempted with a checkpoint, so they move elsewhere."""
        if not self.is_leader:
            raise Unavailable("not the leader; redeliver")
        e = event.data
        if e.to_state not in (NODE_NOT_READY, NODE_DRAINING):
            return
        happened = ts_ns(e.transition_time) if e.HasField("transition_time") else None
        on_node = [
            j
            for j in list(self.jobs.items.values())
            if j.status.state in states.HOLDING
            and any(n.node_id == e.node_id for n in j.status.placement.nodes)
            # A job admitted after the event (a redelivered or late one) was placed on the node's
            # next incarnation: the event is not about it.
            and (happened is None or ts_ns(j.status.admit_time) <= happened)
        ]
        for job in on_node:
            if e.to_state == NODE_DRAINING:
                if job.status.state in (states.ADMITTED, states.RUNNING):
                    await self._try_move(
                        job,
                        states.PREEMPTED,
                        "NodeDraining",
                        f"node {e.node_id} is draining",
                        edit=lambda j: setattr(j.status, "failure_class", job_pb2.FAILURE_CLASS_PREEMPTED),
                    )
                continue
            if job.status.state == states.PREEMPTED:
                # Its stop can never be confirmed by a dead node: requeue it now.
                await self._try_move(job, states.PENDING, "NodeLost", f"node {e.node_id} is not ready")
                continue
            lost = events_pb2.RunStateChanged(
                job_id=job.meta.id,
                attempt=job.status.attempt,
                failure_class=job_pb2.FAILURE_CLASS_NODE_LOST,
                message=f"node {e.node_id} is not ready ({e.message})",
            )
            run_id = job.status.run_id
            await self._fail(job, lost)
            if run_id and self.trainer is not None:
                with contextlib.suppress(Exception):  # the workers left on live nodes must stop
                    await self.trainer.stop_run(run_id, checkpoint=False, reason="NodeLost")

    async def _fail(self, job: job_pb2.Job, e: events_pb2.RunStateChanged) -> None:
        fc = e.failure_class or job_pb2.FAILURE_CLASS_INFRASTRUCTURE
        name = job_pb2.FailureClass.Name(fc).removeprefix("FAILURE_CLASS_").title().replace("_", "")
        if states.should_retry(job, fc):
            delay = states.retry_backoff_s(job)

            def edit(j: job_pb2.Job) -> None:
                j.status.failure_class = fc
                j.status.next_retry_time.FromDatetime(now_ts().ToDatetime() + timedelta(seconds=delay))

            await self._move_or_retry(job, states.RETRYING, name, f"{e.message} (retry in {delay:.0f}s)", edit=edit)
        else:
            await self._move_or_retry(
                job, states.FAILED, name, e.message, edit=lambda j: setattr(j.status, "failure_class", fc)
            )

    async def _move_or_retry(self, job, dst, reason, message, *, run_id="", outputs=None, edit=None) -> None:
        def apply(j: job_pb2.Job) -> None:
            if run_id:
                j.status.run_id = run_id
            if outputs is not None and outputs.ByteSize():
                j.status.outputs.MergeFrom(outputs)
            if edit is not None:
                edit(j)

        try:
            await self.transitions.move(job, dst, reason, message, edit=apply)
        except FailedPrecondition:
            return  # a duplicate or late event: the job already moved on
        except (Conflict, NotFound):
            raise  # nak: redelivered and re-evaluated against the new state
