"""The run controller: one task per active run. It plans, launches the workers through an
executor, watches exits, heartbeats and reports, restarts the gang from the last checkpoint on a
retryable failure, stops on request, registers the output and publishes every state change."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from pathlib import Path

from opentelemetry.trace import StatusCode

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.storage.v1 import model_registry_pb2
from mlmesh.api.trainer.v1 import run_pb2
from mlmesh.api.trainer.v1 import trainer_service_pb2 as api
from mlmesh.common import contracts, tracing
from mlmesh.common.clock import now_ts
from mlmesh.common.errors import AlreadyExists, Conflict, DeadlineExceeded, MlmeshError, NotFound, Unavailable
from mlmesh.common.events import EventPublisher
from mlmesh.common.kv import KvRepository
from mlmesh.common.storage_client import StorageClient
from mlmesh.common.tracing import TRACEPARENT_ENV
from mlmesh.trainer import preparation
from mlmesh.trainer.adapters import metrics
from mlmesh.trainer.domain import failures, runs
from mlmesh.trainer.domain.failures import Failure
from mlmesh.trainer.executors.base import LaunchSpec, RankLaunch, WorkerExit
from mlmesh.trainer.settings import TrainerSettings
from mlmesh.trainer.worker.config import NATS_CREDS_ENV, OTLP_ENV, TOKEN_ENV, WorkerConfig
from mlmesh.trainer.worker.reporter import subject as report_subject

log = logging.getLogger(__name__)
R = run_pb2
TERMINATE_GRACE_ON_FAILURE_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user_failure(exc: MlmeshError) -> Failure:
    """Preparation errors: bad input is the user's (not retried); an unreachable dependency is not."""
    if isinstance(exc, (Unavailable, DeadlineExceeded)):
        return Failure(job_pb2.FAILURE_CLASS_INFRASTRUCTURE, "InfrastructureError", exc.message)
    details = "; ".join(f"{v.field}: {v.description}" for v in getattr(exc, "violations", []))
    return Failure(job_pb2.FAILURE_CLASS_USER_ERROR, "InvalidRun", details or exc.message)


class RunController:
    def __init__(
        self,
        settings: TrainerSettings,
        repo: KvRepository,
        publisher: EventPublisher,
        nc,
        executor,
        storage: StorageClient | None,
        token: str,
    ):
        self.settings = settings
        self.repo = repo
        self.publisher = publisher
        self.nc = nc
        self.executor = executor
        self.storage = storage
        self.token = token
        # Read once at start: a missing file is a configuration error, not a per-run failure.
        creds_file = settings.worker_nats_creds_file
        self.worker_nats_creds = creds_file.read_text() if creds_file else ""
        self.active: dict[str, ActiveRun] = {}
        self._sub = None
        self.work_dir = Path(settings.work_dir).resolve()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(report_subject(contracts.ANY, contracts.ANY), cb=self._on_report)
        await self._fail_orphans()

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for run in list(self.active.values()):
            await run.shutdown()

    async def _fail_orphans(self) -> None:
        """Runs left active by a previous trainer process lost their workers (they die with it):
        they fail as an infrastructure fault, which the scheduler retries from the checkpoint."""
        for key in await self.repo.keys():
            with contextlib.suppress(NotFound):
                current = await self.repo.get(key)
                if current.value.state in runs.ACTIVE and key not in self.active:
                    orphan = ActiveRun(self, current.value, resume="")
                    orphan.revision = current.revision
                    await orphan.move(
                        R.RUN_STATE_FAILED,
                        "TrainerRestarted",
                        "the trainer restarted while the run was active; its workers are gone",
                        failure_class=job_pb2.FAILURE_CLASS_INFRASTRUCTURE,
                    )

    async def _on_report(self, msg) -> None:
        parts = msg.subject.split(".")
        if len(parts) != 5:
            return
        run = self.active.get(parts[3])
        if run is None:
            return
        with contextlib.suppress(ValueError):
            await run.on_report(parts[4], json.loads(msg.data))

    # --- API ----------------------------------------------------------------------------------------

    async def start_run(self, request: api.StartRunRequest) -> run_pb2.Run:
        run_id = runs.run_id_for(request.job_id, request.attempt)
        with contextlib.suppress(NotFound):
            return (await self.repo.get(run_id)).value  # idempotent on (job, attempt)
        run = run_pb2.Run(
            run_id=run_id,
            job_id=request.job_id,
            team=request.team,
            attempt=request.attempt,
            spec=request.spec,
            placement=request.placement,
            state=R.RUN_STATE_PENDING,
            reason="Accepted",
            executor=self.executor.kind,
            create_time=now_ts(),
        )
        try:
            revision = await self.repo.create(run_id, run)
        except AlreadyExists:
            return (await self.repo.get(run_id)).value
        resume = request.resume_from_checkpoint or request.spec.trainer.resume_from_checkpoint
        active = ActiveRun(self, run, resume=resume)
        active.revision = revision
        self.active[run_id] = active
        await active.publish_state(R.RUN_STATE_UNSPECIFIED)
        # The run's span is a child of this StartRun's: its spans and calls, and its workers',
        # join the job's trace.
        active.traceparent = tracing.current_traceparent()
        active.task = asyncio.create_task(active.main(), name=f"run-{run_id}")
        return run

    async def stop_run(self, run_id: str, *, checkpoint: bool, grace_s: float, reason: str) -> run_pb2.Run:
        active = self.active.get(run_id)
        if active is None:
            return (await self.repo.get(run_id)).value  # terminal (or unknown: NotFound)
        active.request_stop(checkpoint, grace_s, reason)
        await active.stop_seen.wait()
        return active.snapshot()


class ActiveRun:
    def __init__(self, controller: RunController, run: run_pb2.Run, resume: str):
        self.c = controller
        self.run = run
        self.revision = 0
        self.resume_artifact = resume
        self.traceparent = ""  # of the StartRun that began it: the parent of its spans
        self.task: asyncio.Task | None = None
        self.group = None
        self.heartbeats: dict[int, float] = {}
        self.launched_at = 0.0
        self.result: dict | None = None
        self.stop_request: tuple[bool, float, str] | None = None
        self.stop_event = asyncio.Event()
        self.stop_seen = asyncio.Event()
        self._last_progress_event = 0.0
        self._last_progress_save = 0.0
        self.run_dir = controller.work_dir / run.run_id
        self.dataset_artifact = ""
        self.base_model = run.spec.trainer.model
        self.kind = run.spec.kind

    def snapshot(self) -> run_pb2.Run:
        out = run_pb2.Run()
        out.CopyFrom(self.run)
        if self.group is not None:
            del out.workers[:]
            out.workers.extend(self.group.statuses())
        out.revision = self.revision
        return out

    # --- persistence and events ---------------------------------------------------------------------

    async def save(self) -> None:
        for _ in range(5):
            try:
                self.revision = await self.c.repo.update(self.run.run_id, self.snapshot(), self.revision)
                return
            except Conflict:  # only this task writes a live run; re-read and overwrite
                self.revision = (await self.c.repo.get(self.run.run_id)).revision

    async def move(self, state: int, reason: str, message: str = "", *, failure_class: int = 0) -> None:
        src = self.run.state
        if src == state and state != R.RUN_STATE_RESTARTING:
            return
        if not runs.can_move(src, state):
            log.error("run %s: refusing %s -> %s", self.run.run_id, runs.state_name(src), runs.state_name(state))
            return
        self.run.state, self.run.reason, self.run.message = state, reason, message
        if failure_class:
            self.run.failure_class = failure_class
        if state == R.RUN_STATE_RUNNING and not self.run.HasField("start_time"):
            self.run.start_time.CopyFrom(now_ts())
        if state in runs.TERMINAL:
            self.run.finish_time.CopyFrom(now_ts())
            metrics.RUNS.labels(runs.state_name(state)).inc()
            metrics.forget(self.run.team, self.run.job_id)
        await self.save()
        await self.publish_state(src)
        log.info(
            "run %s %s -> %s (%s) %s", self.run.run_id, runs.state_name(src), runs.state_name(state), reason, message
        )

    async def publish_state(self, src: int) -> None:
        r = self.run
        event = events_pb2.RunStateChanged(
            job_id=r.job_id,
            team=r.team,
            run_id=r.run_id,
            attempt=r.attempt,
            from_state=src,
            to_state=r.state,
            reason=r.reason,
            message=r.message,
            failure_class=r.failure_class,
            restarts=r.restarts,
            outputs=r.outputs,
            transition_time=now_ts(),
        )
        with contextlib.suppress(Exception):  # an event lost to a NATS outage: the KV record stands
            await self.c.publisher.publish(
                contracts.job_subject(r.team, r.job_id, contracts.JOB_RUN),
                event,
                ce_subject=r.run_id,
                event_id=f"{r.run_id}-{runs.state_name(r.state).lower()}-{r.restarts}",
            )

    # --- reports from the workers -------------------------------------------------------------------

    async def on_report(self, kind: str, payload: dict) -> None:
        if kind == "heartbeat":
            self.heartbeats[int(payload.get("rank", -1))] = time.monotonic()
        elif kind == "progress":
            self.heartbeats[0] = time.monotonic()
            await self._progress(payload)
        elif kind == "checkpoint":
            self.run.progress.latest_checkpoint_artifact_id = payload["artifact_id"]
            self.run.progress.latest_checkpoint_step = int(payload["step"])
            self.resume_artifact = payload["artifact_id"]
            self.run.outputs.checkpoint_artifact_id = payload["artifact_id"]
            await self.save()  # a restart must find it even if this process dies next
        elif kind == "result":
            self.result = payload

    async def _progress(self, p: dict) -> None:
        prog = self.run.progress
        prog.step = int(p.get("step", 0))
        prog.total_steps = int(p.get("total_steps", 0))
        prog.epoch = float(p.get("epoch", 0.0))
        prog.loss = float(p.get("loss", 0.0))
        prog.learning_rate = float(p.get("learning_rate", 0.0))
        prog.tokens_per_second = float(p.get("tokens_per_second", 0.0))
        prog.samples_per_second = float(p.get("samples_per_second", 0.0))
        prog.mfu = float(p.get("mfu", 0.0))
        prog.eta.FromMilliseconds(int(float(p.get("eta_s", 0.0)) * 1000))
        prog.report_time.CopyFrom(now_ts())
        metrics.record_progress(self.run.team, self.run.job_id, p)
        now = time.monotonic()
        if (
            now - self._last_progress_event >= self.c.settings.progress_event_interval_s
            or prog.step == prog.total_steps
        ):
            self._last_progress_event = now
            event = events_pb2.JobProgress(
                job_id=self.run.job_id, team=self.run.team, run_id=self.run.run_id, attempt=self.run.attempt
            )
            event.progress.CopyFrom(prog)
            with contextlib.suppress(Exception):
                await self.c.publisher.publish(
                    contracts.job_subject(self.run.team, self.run.job_id, contracts.JOB_PROGRESS),
                    event,
                    ce_subject=self.run.run_id,
                    event_id=f"{self.run.run_id}-p{self.run.restarts}-{prog.step}",
                )
        if now - self._last_progress_save >= 5.0:
            self._last_progress_save = now
            await self.save()

    # --- lifecycle ------------------------------------------------------------------------------------

    def request_stop(self, checkpoint: bool, grace_s: float, reason: str) -> None:
        if self.stop_request is None:
            self.stop_request = (checkpoint, grace_s, reason or "Stopped")
            self.stop_event.set()
        if self.run.state in runs.TERMINAL:
            self.stop_seen.set()

    async def main(self) -> None:
        attributes = {"mlmesh.run_id": self.run.run_id, "mlmesh.attempt": self.run.attempt}
        with tracing.job_span("trainer.run", self.traceparent, self.run.job_id, self.run.team, attributes) as span:
            await self._main()
            if span is not None and self.run.state == R.RUN_STATE_FAILED:
                span.set_status(StatusCode.ERROR, self.run.reason)

    async def _main(self) -> None:
        try:
            with tracing.child_span("trainer.prepare"):
                spec = await self.prepare()
            if self.stop_request is not None:
                await self._finish_stop()
                return
            await self.launch(spec)
            await self.monitor(spec)
        except MlmeshError as exc:
            f = _user_failure(exc)
            await self._fail(f)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("run %s: controller error", self.run.run_id)
            await self._fail(
                Failure(job_pb2.FAILURE_CLASS_INFRASTRUCTURE, "TrainerError", f"{type(exc).__name__}: {exc}")
            )
        finally:
            if self.group is not None and self.group.alive():
                with contextlib.suppress(Exception):
                    await self.group.terminate(0)
            self.stop_seen.set()
            self.c.active.pop(self.run.run_id, None)

    async def shutdown(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task

    async def _fail(self, f: Failure) -> None:
        if self.run.state not in runs.TERMINAL:
            await self.move(R.RUN_STATE_FAILED, f.reason, f.message, failure_class=f.failure_class)

    async def prepare(self) -> LaunchSpec:
        """PENDING: resolve inputs and plan (trainer jobs); build the launch spec."""
        await asyncio.to_thread(self.run_dir.mkdir, parents=True, exist_ok=True)
        ranks = self._ranks()
        spec = self.run.spec
        env = {"PYTHONUNBUFFERED": "1", "MLMESH_NATS_URL": self.c.settings.nats_url}
        secret: dict[str, str] = {}
        if self.kind in runs.TRAINER_KINDS:
            resolved = await preparation.resolve_model(spec.trainer.model, self.run.team, self.c.storage)
            dataset, self.dataset_artifact = await preparation.resolve_dataset(
                spec.trainer.dataset, self.run.team, self.c.storage
            )
            device, gpn = preparation.device_for(self.run.placement, {})
            plan = preparation.make_plan(resolved, spec, device, len(ranks), gpn)
            self.run.plan.CopyFrom(plan)
            cfg = self._worker_config(resolved.ref, dataset, plan, device)
            path = self.run_dir / "worker-config.json"
            await asyncio.to_thread(path.write_text, cfg.to_json())
            argv = [self.c.settings.worker_python, "-m", "mlmesh.trainer.worker", "--config", str(path)]
            # `-m` puts the working directory first on sys.path; a `triton/` there (`mlmesh up`'s
            # state dir has one) shadows the real package and torch fails to import.
            env["PYTHONSAFEPATH"] = "1"
            if self.c.storage is not None or self.c.settings.otlp_endpoint:
                secret[TOKEN_ENV] = self.c.token
            if self.c.worker_nats_creds:
                secret[NATS_CREDS_ENV] = self.c.worker_nats_creds
            if not any(r.device_ids for r in ranks):
                # CPU ranks share the host's cores; unbounded, every rank spawns one thread per core.
                env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(ranks)))
        else:
            argv = list(spec.command.command) or ["true"]
            env.update(spec.command.env)
        await self.save()
        return LaunchSpec(
            run_id=self.run.run_id,
            job_id=self.run.job_id,
            launch_id=0,
            world_size=len(ranks),
            argv=argv,
            env=env,
            ranks=ranks,
            log_dir=self.run_dir / "logs",
            working_dir=spec.command.working_dir,
            secret_env=secret,
        )

    def _ranks(self) -> list[RankLaunch]:
        out = [
            RankLaunch(w.rank, w.local_rank, n.node_id or "local", n.agent_address, tuple(w.device_ids))
            for n in self.run.placement.nodes
            for w in n.workers
        ]
        if not out:
            count = max(1, self.run.spec.workers.count)
            out = [RankLaunch(r, r) for r in range(count)]
        return sorted(out, key=lambda r: r.rank)

    def _worker_config(self, model_ref: str, dataset: Path, plan, device) -> WorkerConfig:
        spec = self.run.spec
        ck = spec.checkpoint
        every_s = ck.every_interval.ToTimedelta().total_seconds() if ck.HasField("every_interval") else 0.0
        if not ck.every_n_steps and not every_s:
            every_s = self.c.settings.default_checkpoint_interval_s
        return WorkerConfig(
            run_id=self.run.run_id,
            job_id=self.run.job_id,
            team=self.run.team,
            model=model_ref,
            dataset=str(dataset),
            task=preparation.task_name(spec.trainer),
            plan=preparation.proto_json(plan),
            hyperparameters=preparation.proto_json(spec.trainer.hyperparameters),
            column_mapping=dict(spec.trainer.column_mapping),
            output_dir=str(self.run_dir / "output"),
            checkpoint_every_n_steps=int(ck.every_n_steps),
            checkpoint_every_s=every_s,
            async_checkpoint=ck.async_save,
            retention=preparation.proto_json(ck.retention),
            storage_address=self.c.settings.storage_address or "",
            nats_url=self.c.settings.nats_url,
            heartbeat_interval_s=self.c.settings.heartbeat_interval_s,
            progress_file=str(self.run_dir / "progress.jsonl"),
            collective_timeout_s=self.c.settings.collective_timeout_s,
            peak_flops_per_device=device.peak_flops_per_second,
            extra=preparation.proto_json(spec.trainer.extra),
        )

    async def launch(self, spec: LaunchSpec) -> None:
        """STARTING: (re)start the whole gang, resuming from the latest checkpoint."""
        await self.move(R.RUN_STATE_STARTING, "Launching", f"{spec.world_size} worker(s)")
        self._set_resume(spec)
        spec.master_addr = self._master_addr(spec)
        spec.master_port = free_port() if spec.master_addr == "127.0.0.1" else random.randint(20000, 40000)
        self.heartbeats.clear()
        self.result = None
        with tracing.child_span("trainer.launch", attributes={"mlmesh.world_size": spec.world_size}):
            self._trace_workers(spec)
            self.group = await self.c.executor.launch(spec)
        self.launched_at = time.monotonic()
        self.run.resumed_from_checkpoint = self.resume_artifact
        await self.save()

    def _trace_workers(self, spec: LaunchSpec) -> None:
        """Workers continue this launch's span when the trainer exports spans."""
        spec.env.pop(TRACEPARENT_ENV, None)
        traceparent = tracing.current_traceparent()
        if self.c.settings.otlp_endpoint and tracing.is_sampled(traceparent):
            spec.env[TRACEPARENT_ENV] = traceparent
            spec.env[OTLP_ENV] = self.c.settings.otlp_endpoint

    def _set_resume(self, spec: LaunchSpec) -> None:
        if self.kind not in runs.TRAINER_KINDS:
            return
        path = Path(spec.argv[-1])
        cfg = WorkerConfig.load(path)
        cfg.resume_artifact_id = self.resume_artifact
        path.write_text(cfg.to_json())

    @staticmethod
    def _master_addr(spec: LaunchSpec) -> str:
        first = spec.ranks[0]
        if not first.agent_address or first.node_id == "local":
            return "127.0.0.1"
        return first.agent_address.rsplit(":", 1)[0]

    async def monitor(self, spec: LaunchSpec) -> None:
        finished: set[int] = set()
        exit_task: asyncio.Task | None = None
        try:
            while True:
                if exit_task is None:
                    exit_task = asyncio.ensure_future(self.group.next_exit())
                stop_task = asyncio.ensure_future(self.stop_event.wait())
                done, _ = await asyncio.wait({exit_task, stop_task}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                stop_task.cancel()
                if self.stop_request is not None:
                    exit_task.cancel()
                    await self._handle_stop()
                    return
                if self.run.state == R.RUN_STATE_STARTING and (self.heartbeats or self.kind not in runs.TRAINER_KINDS):
                    await self.move(R.RUN_STATE_RUNNING, "Running", "all workers started")
                if self.result is not None and not getattr(self.group, "reports_exits", True):
                    # An executor that does not watch exits (Kubernetes): rank 0's result, sent
                    # after every rank finished, is the success; the silence that follows is not
                    # a failure.
                    await self._succeed()
                    return
                failure: Failure | None = None
                if exit_task in done:
                    ex: WorkerExit = exit_task.result()
                    exit_task = None
                    if ex.ok:
                        finished.add(ex.rank)
                        if finished == {r.rank for r in spec.ranks}:
                            await self._succeed()
                            return
                        continue
                    failure = failures.classify(ex.exit_code, ex.signal, ex.log_tail)
                    failure = Failure(failure.failure_class, failure.reason, f"rank {ex.rank}: {failure.message}")
                else:
                    failure = self._heartbeat_failure()
                if failure is not None:
                    if exit_task is not None:
                        exit_task.cancel()
                        exit_task = None
                    finished.clear()
                    if not await self._recover(failure, spec):
                        return
        finally:
            if exit_task is not None:
                exit_task.cancel()

    def _heartbeat_failure(self) -> Failure | None:
        if self.kind not in runs.TRAINER_KINDS or self.c.nc is None:
            return None
        now = time.monotonic()
        for rank in self.group.alive():
            last = self.heartbeats.get(rank)
            if last is None:
                if now - self.launched_at > self.c.settings.startup_timeout_s:
                    return failures.missed_heartbeat(rank, now - self.launched_at)
            elif now - last > self.c.settings.heartbeat_timeout_s:
                return failures.missed_heartbeat(rank, now - last)
        return None

    async def _recover(self, f: Failure, spec: LaunchSpec) -> bool:
        """Stop the gang; restart it from the last checkpoint when the failure is retryable and
        restarts remain, else fail. True when the run goes on."""
        await self.group.terminate(TERMINATE_GRACE_ON_FAILURE_S)
        limit = self.run.spec.trainer.max_restarts or self.c.settings.default_max_restarts
        if not f.retryable or self.run.restarts >= limit:
            why = f.message if not f.retryable else f"{f.message}; {self.run.restarts} restart(s) used of {limit}"
            await self.move(R.RUN_STATE_FAILED, f.reason, why, failure_class=f.failure_class)
            return False
        self.run.restarts += 1
        metrics.RESTARTS.labels(job_pb2.FailureClass.Name(f.failure_class)).inc()
        where = f"checkpoint step {self.run.progress.latest_checkpoint_step}" if self.resume_artifact else "the start"
        await self.move(
            R.RUN_STATE_RESTARTING,
            f.reason,
            f"{f.message}; restart {self.run.restarts}/{limit} from {where}",
            failure_class=f.failure_class,
        )
        spec.launch_id = self.run.restarts
        await self.launch(spec)
        return True

    async def _succeed(self) -> None:
        outputs = self.run.outputs
        if self.kind in runs.TRAINER_KINDS:
            result = self.result or await asyncio.to_thread(self._read_result)
            outputs.model_artifact_id = result.get("model_artifact_id", "")
            for k, v in (result.get("metrics") or {}).items():
                if isinstance(v, (int, float)) and v == v:
                    outputs.metrics[k] = float(v)
            ck = result.get("checkpoint") or {}
            if ck.get("artifact_id") and self.c.storage is not None:
                outputs.checkpoint_artifact_id = ck["artifact_id"]
            await self._register()
        await self.move(R.RUN_STATE_SUCCEEDED, "Succeeded", self._summary())

    def _read_result(self) -> dict:
        path = self.run_dir / "output" / "result.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _summary(self) -> str:
        m = self.run.outputs.metrics
        parts = [f"{k}={v:.4g}" for k, v in sorted(m.items())]
        return ", ".join(parts) or "done"

    async def _register(self) -> None:
        t = self.run.spec.trainer
        out = self.run.outputs
        if not t.output_model_name or not out.model_artifact_id or self.c.storage is None:
            return
        adapter = self.run.plan.method in (job_pb2.TRAINING_METHOD_LORA, job_pb2.TRAINING_METHOD_QLORA)
        lineage = model_registry_pb2.Lineage(
            job_id=self.run.job_id,
            run_id=self.run.run_id,
            dataset_artifact_id=self.dataset_artifact,
            checkpoint_artifact_id=out.checkpoint_artifact_id,
            code_version="mlmesh-trainer 0.1.0",
        )
        task = t.task or (2 if preparation.task_name(t) == "text_classification" else 1)
        version = await self.c.storage.register(
            name=t.output_model_name,
            team=self.run.team,
            artifact_id=out.model_artifact_id,
            adapter=adapter,
            base_model=self.base_model,
            task=task,
            metrics=dict(out.metrics),
            lineage=lineage,
            aliases=list(t.output_aliases),
            properties={"plan_method": job_pb2.TrainingMethod.Name(self.run.plan.method)},
            request_id=f"{self.run.run_id}-register",
        )
        out.model_name, out.model_version = version.name, version.version

    async def _handle_stop(self) -> None:
        checkpoint, grace_s, reason = self.stop_request
        await self.move(R.RUN_STATE_STOPPING, reason, "checkpoint, then stop" if checkpoint else "stopping now")
        self.stop_seen.set()
        before = self.run.progress.latest_checkpoint_step
        # SIGTERM: a worker saves a checkpoint at the next step and exits; no grace = SIGKILL at once.
        await self.group.terminate(grace_s if checkpoint else 0.0)
        if checkpoint and self.c.storage is not None:
            for _ in range(20):  # the checkpoint report may trail the exit by a moment
                if self.run.progress.latest_checkpoint_step > before:
                    break
                await asyncio.sleep(0.1)
        await self._finish_stop()

    async def _finish_stop(self) -> None:
        _, _, reason = self.stop_request
        if self.run.state != R.RUN_STATE_STOPPING:
            await self.move(R.RUN_STATE_STOPPING, reason, "")
        self.stop_seen.set()
        ck = self.run.progress.latest_checkpoint_artifact_id
        await self.move(R.RUN_STATE_STOPPED, reason, f"latest checkpoint {ck}" if ck else "no checkpoint")
