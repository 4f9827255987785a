"""Runs the control-plane pipeline steps (register_model, deploy_model) on the scheduler's leader.

A step whose upstream steps succeeded moves PENDING → RUNNING (it holds no resources, so it is never
admitted), runs as a task, and ends SUCCEEDED with its outputs (the registered version, the
deployment) or FAILED with the reason. A transient failure (UNAVAILABLE, a timeout) leaves it
RUNNING and it runs again after a back-off; so does a step that was RUNNING when a leader died.
Both steps are idempotent, so running one twice does no harm.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.scheduler.adapters.control_client import ControlClient, StepError
from mlmesh.scheduler.domain import control_steps, states
from mlmesh.scheduler.job_factory import child_job_id

log = logging.getLogger("mlmesh.scheduler.control")
K = job_pb2.JobKind
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)
RETRY_AFTER_S = 5.0
DEFAULT_DEPLOY_TIMEOUT_S = 900.0


class ControlStepRunner:
    def __init__(self, controller, client: ControlClient | None):
        self.c = controller
        self.client = client
        self.tasks: dict[str, asyncio.Task] = {}
        self.after: dict[str, float] = {}

    async def advance(self) -> None:
        now = time.monotonic()
        items = self.c.jobs.items
        for job in [items[i] for i in sorted(self.c.control_steps) if i in items]:
            if job.meta.id in self.tasks or job.status.state not in (states.PENDING, states.RUNNING):
                continue
            if self.after.get(job.meta.id, 0.0) > now:
                continue
            if job.status.state == states.PENDING:
                if not self.c.deps_ok(job):
                    continue
                what = "registering" if job.spec.kind == K.JOB_KIND_REGISTER_MODEL else "deploying"
                if not await self.c._try_move(job, states.RUNNING, "StepStarted", what, workerless=True):
                    continue
            task = asyncio.create_task(self._run(job.meta.id), name=f"control-step-{job.meta.id}")
            self.tasks[job.meta.id] = task
            task.add_done_callback(lambda _t, i=job.meta.id: self.tasks.pop(i, None))

    async def stop(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        if self.client is not None:
            await self.client.close()

    def _sibling(self, job: job_pb2.Job, step: str) -> job_pb2.Job | None:
        if not step:
            return None
        source = self.c.jobs.items.get(child_job_id(job.parent_job_id, step))
        if source is None or source.status.state != states.SUCCEEDED:
            raise StepError(f"step {step!r} has not succeeded")
        return source

    async def _run(self, job_id: str) -> None:
        job = self.c.jobs.items.get(job_id)
        if job is None or job.status.state != states.RUNNING:
            return
        try:
            if self.client is None:
                raise StepError("this scheduler has no STORAGE_ADDRESS / GATEWAY_ADDRESS for control-plane steps")
            if job.spec.kind == K.JOB_KIND_REGISTER_MODEL:
                outputs, message = await self._register(job)
            else:
                outputs, message = await self._deploy(job)
        except (StepError, ValueError) as exc:
            await self._finish(job_id, states.FAILED, "StepFailed", str(exc), failure=job_pb2.FAILURE_CLASS_USER_ERROR)
            return
        except grpc.aio.AioRpcError as err:
            if err.code() in TRANSIENT:
                log.warning("step %s: %s (%s); retrying", job_id, err.code().name, err.details())
                self.after[job_id] = time.monotonic() + RETRY_AFTER_S
                return
            await self._finish(
                job_id,
                states.FAILED,
                "StepFailed",
                f"{err.code().name.lower()}: {err.details()}",
                failure=job_pb2.FAILURE_CLASS_USER_ERROR,
            )
            return
        await self._finish(job_id, states.SUCCEEDED, "StepSucceeded", message, outputs=outputs)

    async def _register(self, job: job_pb2.Job) -> tuple[job_pb2.JobOutputs, str]:
        r = job.spec.register_model
        source = self._sibling(job, r.from_step)
        adapter = False
        if source is not None:
            files = []
            if source.spec.trainer.method == job_pb2.TRAINING_METHOD_UNSPECIFIED:
                files = await self.client.artifact_files(source.status.outputs.model_artifact_id)
            adapter = control_steps.is_adapter(source.spec.trainer, files)
        version, aliases = control_steps.registration(job, source, adapter)
        registered = await self.client.register(version, aliases, request_id=job.meta.id)
        outputs = job_pb2.JobOutputs(
            model_artifact_id=registered.artifact_id,
            model_name=registered.name,
            model_version=registered.version,
            metrics=dict(registered.metrics),
        )
        aka = f" (aliases {', '.join(aliases)})" if aliases else ""
        return outputs, f"registered {registered.name} version {registered.version}{aka}"

    async def _deploy(self, job: job_pb2.Job) -> tuple[job_pb2.JobOutputs, str]:
        d = job.spec.deploy_model
        source = self._sibling(job, d.from_step)
        spec = control_steps.deployment_spec(job, source)
        timeout = DEFAULT_DEPLOY_TIMEOUT_S
        if job.spec.HasField("max_runtime"):
            timeout = job.spec.max_runtime.ToTimedelta().total_seconds()
        deployment = await self.client.deploy(
            d.deployment_name, job.meta.team, spec, timeout_s=timeout, at_version=control_steps.at_version
        )
        outputs = job_pb2.JobOutputs(
            deployment_name=deployment.meta.id,
            model_name=deployment.spec.model.name,
            model_version=deployment.status.model_version,
        )
        return outputs, f"{deployment.meta.id} serves {spec.model.name} version {deployment.status.model_version}"

    async def _finish(self, job_id: str, dst: int, reason: str, message: str, *, outputs=None, failure=0) -> None:
        job = self.c.jobs.items.get(job_id)
        if job is None or job.status.state != states.RUNNING:
            return

        def edit(j: job_pb2.Job) -> None:
            if outputs is not None:
                j.status.outputs.MergeFrom(outputs)
            if failure:
                j.status.failure_class = failure

        if not await self.c._try_move(job, dst, reason, message, edit=edit):
            self.after[job_id] = time.monotonic() + 1.0  # changed under us: look again next cycle
