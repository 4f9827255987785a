"""The deployment controller: deployments in KV `deployments` (key `<team>.<name>`), rolled out into
Triton's model repository and loaded on every backend, re-resolved when their alias moves, drained
and unloaded on delete.

Every replica mirrors the bucket (a KV watch) into its `Router`, so all replicas route alike. The
replica that takes a Create/Update/Delete call runs the rollout; a replica that starts resumes the
rollouts and drains a crash interrupted (the record says where it was), and every replica reloads
READY deployments a restarted Triton lost.

A rollout never takes a serving version away before its replacement serves: Triton first loads the
union of the old and new versions, then the record switches routing, then the old versions go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

from nats.js.api import DeliverPolicy

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.gateway.v1 import deployment_pb2 as d
from mlmesh.api.storage.v1 import model_registry_pb2 as mr
from mlmesh.common import contracts
from mlmesh.common.clock import now_ts
from mlmesh.common.errors import Conflict, FailedPrecondition, InvalidArgument, MlmeshError, NotFound
from mlmesh.common.events import Consumer, Event, EventPublisher
from mlmesh.common.kv import KvRepository, Versioned
from mlmesh.common.kv_index import KvIndex
from mlmesh.common.storage_client import StorageClient
from mlmesh.gateway.domain import deployments as dom
from mlmesh.gateway.domain.model_repository import CONTRACT, EntryConfig, render_config
from mlmesh.gateway.domain.naming import triton_name
from mlmesh.gateway.materialize import fill_version
from mlmesh.gateway.repository import ModelRepository
from mlmesh.gateway.routing import Router
from mlmesh.gateway.triton_admin import TritonAdmin

log = logging.getLogger("mlmesh.gateway.deployments")

S = d.DeploymentState
DRAIN_PROPAGATION_S = 0.5  # other replicas see DRAINING through the KV watch within this


@dataclass(frozen=True)
class Target:
    """The concrete versions a spec resolves to now."""

    primary: mr.ModelVersion
    canary: mr.ModelVersion | None

    @property
    def versions(self) -> tuple[int, ...]:
        if self.canary is None or self.canary.version == self.primary.version:
            return (self.primary.version,)
        return (self.primary.version, self.canary.version)


class DeploymentController:
    def __init__(
        self,
        repo: KvRepository[d.Deployment],
        publisher: EventPublisher,
        router: Router,
        admin: TritonAdmin,
        storage: StorageClient | None,
        model_repo: ModelRepository | None,
        *,
        drain_timeout_s: float = 30.0,
        reconcile_interval_s: float = 15.0,
        js=None,
    ):
        self.repo = repo
        self.index: KvIndex[d.Deployment] = KvIndex(repo)
        self.publisher = publisher
        self.router = router
        self.admin = admin
        self.storage = storage
        self.model_repo = model_repo
        self.drain_timeout_s = drain_timeout_s
        self.reconcile_interval_s = reconcile_interval_s
        self._js = js
        self._tasks: dict[str, asyncio.Task] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop_task: asyncio.Task | None = None
        self._aliases: Consumer | None = None

    @property
    def enabled(self) -> bool:
        return self.storage is not None and self.model_repo is not None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.index.subscribe(self._on_change)
        await self.index.start()
        if not self.enabled:
            return
        await self.model_repo.start()
        for key, deployment in list(self.index.items.items()):
            state = deployment.status.state
            if state in dom.ROLLING_STATES:
                self._spawn(key, self._rollout(key, "Resumed"))
            elif state == S.DEPLOYMENT_STATE_DRAINING:
                self._spawn(key, self._undeploy(key, self.drain_timeout_s))
        if self._js is not None:
            self._aliases = Consumer(
                self._js,
                stream=contracts.MODELS_STREAM.name,
                durable="gateway-aliases",
                filter_subject=contracts.model_subject(contracts.ANY, contracts.ANY, contracts.MODEL_ALIASED),
                message_type=events_pb2.ModelAliasChanged,
                handler=self._on_alias,
                deliver_policy=DeliverPolicy.NEW,
            )
            await self._aliases.start()
        self._loop_task = asyncio.create_task(self._reconcile_loop(), name="deployments-reconcile")

    async def stop(self) -> None:
        if self._aliases is not None:
            await self._aliases.stop()
        tasks = [t for t in (self._loop_task, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.index.stop()

    def _on_change(self, before: d.Deployment | None, after: d.Deployment | None) -> None:
        if after is None:
            if before is not None:
                self.router.remove(before.meta.team, before.meta.id)
            return
        served = dom.served(after)
        if served is None:
            self.router.remove(after.meta.team, after.meta.id)
        else:
            self.router.put(served)

    def _spawn(self, key: str, work) -> asyncio.Task:
        task = asyncio.create_task(work, name=f"deployment {key}")
        self._tasks[key] = task
        task.add_done_callback(lambda t, k=key: self._tasks.pop(k, None) if self._tasks.get(k) is t else None)
        return task

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise FailedPrecondition(
                "deployments are off: the gateway has no STORAGE_ADDRESS and MODEL_REPOSITORY configured"
            )

    # ---- reads -----------------------------------------------------------------------------

    def get(self, team: str, name: str) -> d.Deployment:
        deployment = self.index.items.get(dom.kv_key(team, name)) if dom.valid_name(name) else None
        if deployment is None or deployment.status.state == S.DEPLOYMENT_STATE_DELETED:
            raise NotFound(f"deployment {name} not found")
        return deployment

    def list(self, team: str, model_name: str = "") -> list[d.Deployment]:
        found = [
            dep
            for dep in self.index.items.values()
            if dep.meta.team == team
            and dep.status.state != S.DEPLOYMENT_STATE_DELETED
            and (not model_name or dep.spec.model.name == model_name)
        ]
        return sorted(found, key=lambda dep: dep.meta.id)

    # ---- resolution ------------------------------------------------------------------------

    async def _resolve_ref(self, ref: d.ModelRef, team: str, field: str) -> mr.ModelVersion:
        which = ref.WhichOneof("selector")
        try:
            version = await self.storage.model_version(
                ref.name, version=ref.version if which == "version" else 0, alias=ref.alias if which == "alias" else ""
            )
        except NotFound:
            raise NotFound(f"{field}: model {_ref_text(ref)} not found") from None
        if version.team != team:
            raise NotFound(f"{field}: model {_ref_text(ref)} not found")
        return version

    async def resolve(self, spec: d.DeploymentSpec, team: str) -> Target:
        primary = await self._resolve_ref(spec.model, team, "spec.model")
        canary = None
        if spec.HasField("canary") and spec.canary.percent > 0:
            canary = await self._resolve_ref(spec.canary.model, team, "spec.canary.model")
        return Target(primary, canary)

    @staticmethod
    def task_of(spec: d.DeploymentSpec, target: Target) -> int:
        task = spec.task or target.primary.task
        if task not in CONTRACT:
            raise FailedPrecondition(
                f"spec.task: model {target.primary.name} version {target.primary.version} names no servable task; "
                "set spec.task to TEXT_GENERATION, TEXT_CLASSIFICATION or EMBEDDING"
            )
        return task

    # ---- writes ----------------------------------------------------------------------------

    async def create(
        self, name: str, team: str, spec: d.DeploymentSpec, labels: dict[str, str], created_by: str
    ) -> d.Deployment:
        self._require_enabled()
        target = await self.resolve(spec, team)
        stored_spec = d.DeploymentSpec()
        stored_spec.CopyFrom(spec)
        stored_spec.task = self.task_of(spec, target)
        now = now_ts()
        deployment = d.Deployment(spec=stored_spec)
        deployment.meta.id, deployment.meta.team, deployment.meta.created_by = name, team, created_by
        deployment.meta.labels.update(labels)
        deployment.meta.create_time.CopyFrom(now)
        deployment.meta.update_time.CopyFrom(now)
        deployment.status.state = S.DEPLOYMENT_STATE_PENDING
        deployment.status.reason = "Created"
        key = dom.kv_key(team, name)
        existing = self.index.items.get(key)
        if existing is not None and existing.status.state == S.DEPLOYMENT_STATE_DELETED:
            revision = await self.repo.update(key, deployment, existing.meta.revision)
        else:
            revision = await self.repo.create(key, deployment)  # AlreadyExists when taken
        self.index.apply(key, deployment, revision)
        await self._publish(deployment, S.DEPLOYMENT_STATE_UNSPECIFIED)
        self._spawn(key, self._rollout(key, "Created"))
        return self.get(team, name)

    async def update(
        self, team: str, name: str, spec: d.DeploymentSpec, paths: list[str], expected_revision: int
    ) -> d.Deployment:
        self._require_enabled()
        current = self.get(team, name)
        if current.status.state == S.DEPLOYMENT_STATE_DRAINING:
            raise FailedPrecondition(f"deployment {name} is being undeployed")
        new_spec = dom.apply_update(current.spec, spec, paths)
        bad: dict[str, str] = {}
        dom.validate_spec(new_spec, bad)
        if bad:
            raise InvalidArgument("invalid UpdateDeployment request", bad)
        target = await self.resolve(new_spec, team)
        new_spec.task = self.task_of(new_spec, target)
        key = dom.kv_key(team, name)

        def change(dep: d.Deployment) -> d.Deployment:
            dep.spec.CopyFrom(new_spec)
            dep.meta.update_time.CopyFrom(now_ts())
            return dep

        await self._write(key, change, S.DEPLOYMENT_STATE_UNSPECIFIED, "SpecUpdated", expected_revision)
        previous = self._tasks.get(key)
        if previous is not None and not previous.done():
            previous.cancel()  # the newest spec wins; the rollout below starts from what serves
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous
        self._spawn(key, self._rollout(key, "Updated"))
        return self.get(team, name)

    async def delete(self, team: str, name: str, drain_timeout_s: float | None) -> asyncio.Task:
        """Start the undeploy; the returned task ends when it is DELETED."""
        current = self.get(team, name)
        key = dom.kv_key(team, name)
        timeout = self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        running = self._tasks.get(key)
        if current.status.state == S.DEPLOYMENT_STATE_DRAINING and running is not None:
            return running
        if running is not None and not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running

        def draining(dep: d.Deployment) -> d.Deployment:
            dep.status.state = S.DEPLOYMENT_STATE_DRAINING
            dep.status.reason, dep.status.message = "Undeploying", "draining in-flight requests"
            return dep

        await self._write(key, draining, None, "Undeploying")
        return self._spawn(key, self._undeploy(key, timeout))

    async def wait(self, task: asyncio.Task, timeout: float | None) -> None:
        """Wait for a rollout or undeploy within `timeout`, without cancelling it on timeout."""
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout)

    def task(self, team: str, name: str) -> asyncio.Task | None:
        return self._tasks.get(dom.kv_key(team, name))

    # ---- the work --------------------------------------------------------------------------

    async def _write(self, key: str, change, from_state, reason: str, expected_revision: int = 0) -> d.Deployment:
        """CAS-write a change; publish DeploymentChanged when the state or reason moved. With
        `expected_revision`, the write happens only at that KV revision (the caller's optimistic lock)."""
        before = self.index.items.get(key)
        before_state = before.status.state if before is not None else S.DEPLOYMENT_STATE_UNSPECIFIED
        if expected_revision:
            current = await self.repo.get(key)
            if current.revision != expected_revision:
                raise Conflict(
                    f"deployment {current.value.meta.id} is at revision {current.revision}, not {expected_revision}"
                )
            draft = d.Deployment()
            draft.CopyFrom(current.value)
            try:
                revision = await self.repo.update(key, change(draft), expected_revision)
            except Conflict:
                raise Conflict(f"deployment {current.value.meta.id} changed concurrently; read it again") from None
            stored = Versioned(key, draft, revision)
        else:
            stored = await self.repo.mutate(key, change)
        self.index.apply(key, stored.value, stored.revision)
        await self._publish(stored.value, before_state if from_state is None else from_state, reason)
        return stored.value

    async def _status(self, key: str, state: int, reason: str, message: str = "", **fields) -> d.Deployment:
        def change(dep: d.Deployment) -> d.Deployment:
            dep.status.state, dep.status.reason, dep.status.message = state, reason, message
            for name, value in fields.items():
                if name == "backend_model_names":
                    del dep.status.backend_model_names[:]
                    dep.status.backend_model_names.extend(value)
                elif name == "ready_time":
                    dep.status.ready_time.CopyFrom(value)
                else:
                    setattr(dep.status, name, value)
            dep.meta.update_time.CopyFrom(now_ts())
            return dep

        return await self._write(key, change, None, reason)

    async def _publish(self, deployment: d.Deployment, from_state: int, reason: str = "") -> None:
        event = events_pb2.DeploymentChanged(
            deployment=deployment, from_state=from_state, reason=reason or deployment.status.reason
        )
        event.change_time.CopyFrom(now_ts())
        subject = contracts.deployment_subject(deployment.meta.team, deployment.meta.id)
        try:
            await self.publisher.publish(
                subject, event, ce_subject=f"{deployment.meta.team}/{deployment.meta.id}", event_id=uuid.uuid4().hex
            )
        except Exception:  # the record is the truth; a lost event is logged, not fatal
            log.warning("could not publish DeploymentChanged", extra={"deployment": deployment.meta.id}, exc_info=True)

    async def _rollout(self, key: str, reason: str) -> None:
        # Rollouts and undeploys of one deployment run one at a time, in the order they came.
        async with self._lock(key):
            deployment = self.index.items.get(key)
            if deployment is None:
                return
            team, name = deployment.meta.team, deployment.meta.id
            triton = triton_name(team, name)
            serving = dom.served(deployment)
            old_versions = set(serving.versions) if serving is not None else set()
            first = serving is None
            state = S.DEPLOYMENT_STATE_LOADING if first else S.DEPLOYMENT_STATE_UPDATING
            try:
                target = await self.resolve(deployment.spec, team)
                versions = set(target.versions)
                await self._status(key, state, "Loading" if first else reason, _versions_text(versions))
                for version in (target.primary, target.canary):
                    if version is not None and not self.model_repo.has_version(triton, version.version):
                        await self.model_repo.build_version(
                            triton, version.version, lambda staging, v=version: fill_version(self.storage, v, staging)
                        )
                # Phase 1: the old and the new versions together, so nothing serving goes away.
                previous_config = self.model_repo.read_config(triton)
                await self.model_repo.write_config(
                    triton, render_config(_entry(triton, deployment.spec, versions | old_versions))
                )
                failures = [r for r in await self.admin.load(triton) if r.error]
                if failures:
                    if previous_config is not None and not first:
                        await self.model_repo.write_config(triton, previous_config)
                    raise FailedPrecondition("; ".join(f"{r.backend}: {r.error}" for r in failures))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = exc.message if isinstance(exc, MlmeshError) else f"{type(exc).__name__}: {exc}"
                log.warning("rollout failed", extra={"deployment": key, "error": message})
                if first:
                    await self._status(key, S.DEPLOYMENT_STATE_FAILED, "LoadFailed", message)
                else:
                    await self._status(key, S.DEPLOYMENT_STATE_READY, "UpdateFailed", message)
                return
            # Routing switches to the new versions on every replica.
            canary = target.canary.version if target.canary is not None and len(target.versions) > 1 else 0
            await self._status(
                key,
                S.DEPLOYMENT_STATE_READY,
                "Ready" if first else reason,
                _versions_text(versions),
                model_version=target.primary.version,
                canary_version=canary,
                backend_model_names=[triton],
                ready_instances=max(1, deployment.spec.instance_count) * len(self.admin.backends),
                ready_time=now_ts(),
            )
            # Phase 2: versions no longer routed leave Triton once their requests are done.
            retired = old_versions - versions
            if retired:
                await self._drain(team, name, self.drain_timeout_s)
                await self.model_repo.write_config(triton, render_config(_entry(triton, deployment.spec, versions)))
                await self.admin.load(triton)
                await self.model_repo.prune(triton, versions)

    async def _drain(self, team: str, name: str, timeout_s: float) -> None:
        """Wait for in-flight requests of the deployment on this replica (and for the other replicas
        to see the change), within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        await asyncio.sleep(min(DRAIN_PROPAGATION_S, timeout_s))
        await self.router.wait_idle(team, name, max(0.0, deadline - time.monotonic()))

    async def _undeploy(self, key: str, drain_timeout_s: float) -> None:
        async with self._lock(key):
            deployment = self.index.items.get(key)
            if deployment is None:
                return
            team, name = deployment.meta.team, deployment.meta.id
            triton = triton_name(team, name)
            await self._drain(team, name, drain_timeout_s)
            left = self.router.inflight(team, name)
            failures = [r for r in await self.admin.unload(triton) if r.error and "not found" not in r.error.lower()]
            if failures:
                log.warning("unload failed on some backends", extra={"deployment": key, "failures": str(failures)})
            await self.model_repo.remove(triton)
            message = f"{left} in-flight requests cut at the drain timeout" if left else "drained"
            final = await self._status(key, S.DEPLOYMENT_STATE_DELETED, "Drained", message)
            try:
                await self.repo.delete(key, final.meta.revision)
                self.index.apply(key, None)
            except Exception:
                log.warning("could not delete the record", extra={"deployment": key}, exc_info=True)

    # ---- background ------------------------------------------------------------------------

    async def _on_alias(self, event: Event[events_pb2.ModelAliasChanged]) -> None:
        moved = event.data
        if moved.version <= 0:
            return  # a deleted alias: what serves keeps serving until the spec changes
        for key, dep in list(self.index.items.items()):
            if dep.meta.team != moved.team or dep.status.state == S.DEPLOYMENT_STATE_DRAINING:
                continue
            refs = [dep.spec.model]
            if dep.spec.HasField("canary") and dep.spec.canary.percent > 0:
                refs.append(dep.spec.canary.model)
            if any(
                r.name == moved.name and r.WhichOneof("selector") == "alias" and r.alias == moved.alias for r in refs
            ):
                log.info("alias moved; rolling out", extra={"deployment": key, "alias": moved.alias})
                self._spawn(key, self._rollout(key, "AliasMoved"))

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval_s)
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reconcile failed", exc_info=True)

    async def reconcile_once(self) -> None:
        """Reload READY deployments on any backend that lost them (a restarted Triton)."""
        for key, dep in list(self.index.items.items()):
            if dep.status.state != S.DEPLOYMENT_STATE_READY or key in self._tasks:
                continue
            serving = dom.served(dep)
            if serving is None:
                continue
            triton = triton_name(dep.meta.team, dep.meta.id)
            missing = [
                b for b in self.admin.backends if b.healthy and not await self.admin.ready(b, triton, serving.versions)
            ]
            if not missing:
                continue
            if not all(self.model_repo.has_version(triton, v) for v in serving.versions):
                self._spawn(key, self._rollout(key, "Repaired"))
                continue
            log.info("reloading a deployment a backend lost", extra={"deployment": key})
            await self.admin.load(triton, missing)


def _entry(triton: str, spec: d.DeploymentSpec, versions: set[int]) -> EntryConfig:
    b = spec.batching
    return EntryConfig(
        triton_name=triton,
        task=spec.task,
        versions=sorted(versions),
        instance_count=max(1, spec.instance_count),
        gpu=spec.instance_kind == d.INSTANCE_KIND_GPU,
        max_batch_size=b.max_batch_size or 8,
        dynamic_batching=b.dynamic_batching or not b.max_batch_size,
        max_queue_delay_us=int(b.max_queue_delay.ToTimedelta().total_seconds() * 1e6)
        if b.HasField("max_queue_delay")
        else 2000,
        preferred_batch_sizes=list(b.preferred_batch_sizes),
        parameters=dict(spec.parameters),
    )


def _ref_text(ref: d.ModelRef) -> str:
    which = ref.WhichOneof("selector")
    return (
        f"{ref.name}@{ref.version}"
        if which == "version"
        else f"{ref.name}@{ref.alias}"
        if which == "alias"
        else ref.name
    )


def _versions_text(versions: set[int]) -> str:
    return "versions " + ", ".join(str(v) for v in sorted(versions))
