"""Event intake: every stream under `mlmesh.>` feeds the aggregates.

The service keeps no state of its own (docs/architecture.md §2): on start it replays each stream from
`history_s` ago through an ordered consumer, then follows it live. Heartbeats (one a second per
node) are not replayed: a plain subscription gives the current samples, and the fabric's `nodes`
bucket gives each node's current state. A job's checkpoint interval comes from the scheduler's
`jobs` bucket the first time the job is seen running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.common import contracts
from mlmesh.common.errors import NotFound
from mlmesh.common.events import STREAMS, decode_event
from mlmesh.common.kv import KvRepository
from mlmesh.telemetry.convert import gpus_of, placement_devices, ts
from mlmesh.telemetry.domain.aggregates import RUNNING, Aggregates

log = logging.getLogger("mlmesh.telemetry.ingest")

INGESTED = Counter("mlmesh_telemetry_events_ingested_total", "Events the telemetry service applied", ["stream", "type"])
HEARTBEATS = contracts.node_subject(contracts.ANY, contracts.NODE_HEARTBEAT)
NODE_STATES = contracts.node_subject(contracts.ANY, contracts.NODE_STATE)
_T = "mlmesh.events.v1."


class Ingest:
    """Applies events to `agg`. `on_alert_event` gets AlertFired/AlertResolved (to restore alerts)."""

    def __init__(self, runtime, agg: Aggregates, history_s: float, on_alert_event: Callable | None = None):
        self.runtime = runtime
        self.agg = agg
        self.history_s = history_s
        self.on_alert_event = on_alert_event
        self.lock = asyncio.Lock()  # the evaluator reads while events are applied
        self._subs: list = []
        self._jobs_kv: KvRepository | None = None
        self._interval_tasks: set[asyncio.Task] = set()
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        js, nc = self.runtime.js, self.runtime.nc
        self._jobs_kv = await KvRepository.open(js, contracts.JOBS, job_pb2.Job, "job", history=1)
        await self._load_nodes()
        start = datetime.now(timezone.utc) - timedelta(seconds=self.history_s)
        pending = []
        for spec in STREAMS:
            subjects = [NODE_STATES] if spec is contracts.FABRIC_STREAM else list(spec.subjects)
            for subject in subjects:
                config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start.isoformat())
                done = asyncio.Event()
                pending.append(done)
                cb = self._callback(spec.name, done)
                sub = await js.subscribe(subject, cb=cb, ordered_consumer=True, config=config)
                self._subs.append(sub)
                try:
                    if (await sub.consumer_info()).num_pending == 0:
                        done.set()
                except Exception:  # the info is only a shortcut; the first message tells as well
                    done.set()
        self._subs.append(await nc.subscribe(HEARTBEATS, cb=self._on_heartbeat))
        # Serve only once the replay is in: until then usage would be under-counted.
        try:
            await asyncio.wait_for(asyncio.gather(*(d.wait() for d in pending)), timeout=60)
        except asyncio.TimeoutError:
            log.warning("replay of the event streams is still running after 60 s; serving partial aggregates")
        self.caught_up.set()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):  # the connection may already be draining
                await sub.unsubscribe()
        for task in list(self._interval_tasks):
            task.cancel()

    async def _load_nodes(self) -> None:
        repo = await KvRepository.open(self.runtime.js, contracts.NODES, node_pb2.Node, "node", history=5)
        async for change in repo.watch():
            if change is None:
                break
            _key, versioned = change
            if versioned is not None:
                node = versioned.value
                at = ts(node.state_change_time, time.time())
                self.agg.apply_node_state(node=node.id, state=node.state, reason=node.state_reason, at=at)

    def _callback(self, stream: str, done: asyncio.Event):
        async def on_message(msg) -> None:
            try:
                await self.apply(stream, msg)
            except Exception:
                log.exception("event on %s could not be applied; skipped", msg.subject)
            finally:
                if not done.is_set() and getattr(msg.metadata, "num_pending", 0) == 0:
                    done.set()

        return on_message

    async def apply(self, stream: str, msg) -> None:
        kind = dict(msg.headers or {}).get("ce-type", "")
        now = time.time()
        async with self.lock:
            if kind == _T + "JobStateChanged":
                e = decode_event(msg, events_pb2.JobStateChanged).data
                devices, gpus = placement_devices(e.placement)
                job = self.agg.apply_job_state(
                    job_id=e.job_id,
                    team=e.team,
                    queue=e.queue,
                    to_state=e.to_state,
                    at=ts(e.transition_time, now),
                    devices=devices,
                    gpus=gpus,
                )
                if e.to_state == RUNNING and not job.checkpoint_interval_s:
                    self._spawn(self._load_interval(e.job_id))
            elif kind == _T + "JobProgress":
                e = decode_event(msg, events_pb2.JobProgress).data
                p = e.progress
                at = ts(p.report_time, now)
                values = {"loss": p.loss, "learning_rate": p.learning_rate}
                for name in ("tokens_per_second", "samples_per_second", "mfu"):
                    if getattr(p, name):
                        values[name] = getattr(p, name)
                values.update(dict(p.metrics))
                self.agg.apply_progress(job_id=e.job_id, team=e.team, at=at, step=p.step, values=values)
                if p.latest_checkpoint_artifact_id:
                    self.agg.apply_checkpoint(
                        job_id=e.job_id, team=e.team, at=at, artifact_id=p.latest_checkpoint_artifact_id
                    )
            elif kind == _T + "ArtifactCommitted":
                a = decode_event(msg, events_pb2.ArtifactCommitted).data.artifact
                if a.kind == artifact_pb2.ARTIFACT_KIND_CHECKPOINT and a.checkpoint.job_id:
                    self.agg.apply_checkpoint(
                        job_id=a.checkpoint.job_id,
                        team=a.meta.team,
                        at=ts(a.meta.create_time, now),
                        artifact_id=a.meta.id,
                    )
            elif kind == _T + "NodeStateChanged":
                e = decode_event(msg, events_pb2.NodeStateChanged).data
                self.agg.apply_node_state(
                    node=e.node_id, state=e.to_state, reason=e.reason, at=ts(e.transition_time, now)
                )
            elif kind in (_T + "AlertFired", _T + "AlertResolved") and self.on_alert_event is not None:
                message = events_pb2.AlertFired if kind.endswith("Fired") else events_pb2.AlertResolved
                self.on_alert_event(decode_event(msg, message).data.alert)
        INGESTED.labels(stream, kind.removeprefix(_T) or "unknown").inc()

    async def _on_heartbeat(self, msg) -> None:
        try:
            hb = decode_event(msg, events_pb2.NodeHeartbeat).data
        except Exception:
            log.warning("undecodable heartbeat on %s", msg.subject)
            return
        at = time.time()  # receive time: agents' clocks may be off, and samples are "now"
        async with self.lock:
            self.agg.apply_heartbeat(node=hb.node_id, at=at, gpus=gpus_of(hb.node_id, hb.utilization, at))
        INGESTED.labels("core", "NodeHeartbeat").inc()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._interval_tasks.add(task)
        task.add_done_callback(self._interval_tasks.discard)

    async def _load_interval(self, job_id: str) -> None:
        """The job's checkpoint interval, for the stale-checkpoint signal; absent = no such signal."""
        try:
            job = (await self._jobs_kv.get(job_id)).value
        except NotFound:
            return
        except Exception as exc:
            log.warning("checkpoint policy of job %s not read: %s", job_id, exc)
            return
        interval = job.spec.checkpoint.every_interval.ToTimedelta().total_seconds()
        async with self.lock:
            record = self.agg.jobs.get(job_id)
            if record is not None and interval > 0:
                record.checkpoint_interval_s = interval
