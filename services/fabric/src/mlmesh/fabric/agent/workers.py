"""Worker processes on one node: launch, watch, stop, and report their exits.

The node agent starts workers for the trainer (`NodeAgentService.LaunchWorkers`). Each worker:
- runs in its own session, so its process group holds it and everything it spawns; stopping a
  worker signals the whole group, and once the worker itself has exited the group is killed, so a
  worker never leaves orphans behind;
- writes stdout and stderr to a log file that must lie inside the agent's log directory;
- starts from a clean environment (a few pass-through variables), never the agent's own, which may
  hold secrets; the caller's `common_env` and per-worker `env` go on top, then the rank variables.

A watcher task per worker records how it ended (exit code, or signal for a negative return code)
and publishes `WorkerExited` on `mlmesh.fabric.nodes.<node>.workers.<run>.exited`. The event id is
`<run>-<rank>-<attempt>`, so a re-published exit is dropped by JetStream's de-duplication.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import timestamp_pb2

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import node_agent_service_pb2 as api
from mlmesh.common import contracts
from mlmesh.common.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound, QuotaExceeded
from mlmesh.common.events import EventPublisher, subject_token

log = logging.getLogger("mlmesh.fabric.agent.workers")

RUNNING = api.WORKER_STATE_RUNNING
STOPPING = api.WORKER_STATE_STOPPING
EXITED = api.WORKER_STATE_EXITED
FAILED_TO_START = api.WORKER_STATE_FAILED_TO_START

# The only variables of the agent's own environment a worker sees.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_GRACE_S = 10.0
KILL_WAIT_S = 10.0  # after SIGKILL: only a process stuck in the kernel takes longer than this
MAX_EXITED = 1024  # exited workers remembered for GetWorkers(include_exited)
PUBLISH_TRIES = 5


def _timestamp(t: float | None) -> timestamp_pb2.Timestamp | None:
    if t is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


AGENT_PYTHON = "mlmesh-python"  # argv[0] placeholder for the agent's own interpreter


@dataclass(eq=False)
class Worker:
    """One worker process (or the record of one that exited or never started)."""

    node_id: str
    job_id: str
    run_id: str
    attempt: int
    rank: int
    local_rank: int
    log_path: Path
    pid: int = 0
    state: int = RUNNING
    exit_code: int | None = None
    signal: int | None = None
    start_time: float | None = None
    exit_time: float | None = None
    message: str = ""
    stopped_by_agent: bool = False
    _proc: asyncio.subprocess.Process | None = field(default=None, repr=False)
    _exited: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _watcher: asyncio.Task | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.state in (RUNNING, STOPPING)

    @property
    def exited(self) -> bool:
        """Set once the process is gone (or never started)."""
        return self._exited.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker to be gone; False when `timeout` passed first."""
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def to_proto(self) -> api.Worker:
        w = api.Worker(
            node_id=self.node_id,
            job_id=self.job_id,
            run_id=self.run_id,
            attempt=self.attempt,
            rank=self.rank,
            local_rank=self.local_rank,
            pid=self.pid,
            state=self.state,
            log_path=str(self.log_path),
            message=self.message,
            start_time=_timestamp(self.start_time),
            exit_time=_timestamp(self.exit_time),
        )
        if self.exit_code is not None:
            w.exit_code = self.exit_code
        if self.signal is not None:
            w.signal = self.signal
        return w

    def to_event(self) -> events_pb2.WorkerExited:
        e = events_pb2.WorkerExited(
            node_id=self.node_id,
            job_id=self.job_id,
            run_id=self.run_id,
            attempt=self.attempt,
            rank=self.rank,
            pid=self.pid,
            stopped_by_agent=self.stopped_by_agent,
            exit_time=_timestamp(self.exit_time),
        )
        if self.signal is not None:
            e.signal = self.signal
        else:
            e.exit_code = self.exit_code if self.exit_code is not None else -1
        return e


def exited_subject(node_id: str, run_id: str) -> str:
    return contracts.worker_exited_subject(node_id, run_id)


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a worker's process group; False when nothing is left in it."""
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the group id was reused by a process that is not ours
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


def _has_nul(value: str) -> bool:
    return "\x00" in value


class WorkerManager:
    """The workers of one node agent. All methods run on the agent's event loop."""

    def __init__(
        self,
        node_id: str,
        publisher: EventPublisher | None,
        log_dir: Path,
        *,
        max_workers: int = 256,
        default_working_dir: Path | None = None,
        max_exited: int = MAX_EXITED,
    ):
        self.node_id = subject_token(node_id, "node_id")
        self._publisher = publisher
        self.log_dir = Path(log_dir).resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.max_workers = max_workers
        self._default_cwd = default_working_dir
        self._max_exited = max_exited
        # Every remembered worker by (run, rank, attempt); the live ones also by (run, rank).
        self._workers: dict[tuple[str, int, int], Worker] = {}
        self._live: dict[tuple[str, int], Worker] = {}
        self._lock = asyncio.Lock()

    # --- launch -----------------------------------------------------------------------------------

    async def launch(self, request: api.LaunchWorkersRequest) -> list[Worker]:
        """Start the request's workers, all or nothing.

        Idempotent on (run_id, attempt, rank): a worker already started for that key (running or
        exited) is returned as is. Another attempt of the run's rank still running is
        ALREADY_EXISTS. If any worker fails to start, the ones started are killed and every worker
        comes back FAILED_TO_START, the failing one with the reason.
        """
        specs = self._validate(request)
        async with self._lock:
            known: dict[int, Worker] = {}
            for spec, _ in specs:
                live = self._live.get((request.run_id, spec.rank))
                if live is not None and (live.attempt != request.attempt or live.job_id != request.job_id):
                    raise AlreadyExists(
                        f"rank {spec.rank} of run {request.run_id} is already running "
                        f"(job {live.job_id}, attempt {live.attempt}, pid {live.pid})"
                    )
                prior = self._workers.get((request.run_id, spec.rank, request.attempt))
                if prior is not None and prior.state != FAILED_TO_START:
                    known[spec.rank] = prior
            new = [(spec, path) for spec, path in specs if spec.rank not in known]
            busy = {w.log_path for w in self._live.values()}
            new_ranks = {spec.rank for spec, _ in new}
            clash = [
                FieldViolation(f"workers[{i}].log_path", "in use by another running worker")
                for i, (spec, path) in enumerate(specs)
                if spec.rank in new_ranks and path in busy
            ]
            if clash:
                raise InvalidArgument("log file in use by a running worker", clash)
            if len(self._live) + len(new) > self.max_workers:
                raise QuotaExceeded(
                    f"{len(new)} more workers would exceed this node's limit of {self.max_workers} "
                    f"({len(self._live)} running)"
                )
            started = await self._start_all(request, new)
            by_rank = {**known, **{w.rank: w for w in started}}
            return [by_rank[spec.rank] for spec, _ in specs]

    def _validate(self, request: api.LaunchWorkersRequest) -> list[tuple[api.WorkerLaunch, Path]]:
        bad: list[FieldViolation] = []

        def check(ok: bool, name: str, description: str) -> bool:
            if not ok:
                bad.append(FieldViolation(name, description))
            return ok

        for name in ("job_id", "run_id"):
            try:
                subject_token(getattr(request, name), name)
            except InvalidArgument as exc:
                bad.extend(exc.violations)
        check(request.attempt >= 0, "attempt", "must be >= 0")
        check(request.world_size >= 1, "world_size", "must be >= 1")
        check(len(request.workers) > 0, "workers", "at least one worker is required")
        self._check_env(request.common_env, "common_env", check)
        if request.working_dir:
            wd = Path(request.working_dir)
            check(
                not _has_nul(request.working_dir) and wd.is_absolute() and wd.is_dir(),
                "working_dir",
                "must be an existing absolute directory",
            )
        run_ok = not any(v.field == "run_id" for v in bad)
        ranks: set[int] = set()
        paths: set[Path] = set()
        specs: list[tuple[api.WorkerLaunch, Path]] = []
        for i, w in enumerate(request.workers):
            at = f"workers[{i}]"
            repeated = w.rank in ranks
            if check(0 <= w.rank < max(request.world_size, 0), f"{at}.rank", f"must be in [0, {request.world_size})"):
                check(not repeated, f"{at}.rank", f"rank {w.rank} appears more than once")
                ranks.add(w.rank)
            check(w.local_rank >= 0, f"{at}.local_rank", "must be >= 0")
            check(
                len(w.command) > 0 and bool(w.command[0]) and not any(_has_nul(a) for a in w.command),
                f"{at}.command",
                "must be a non-empty argv without NUL characters",
            )
            self._check_env(w.env, f"{at}.env", check)
            check(
                all(d and "," not in d and not _has_nul(d) for d in w.device_ids),
                f"{at}.device_ids",
                "each device id must be non-empty and contain no comma",
            )
            checkable = bool(w.log_path) or run_ok  # the default path is built from run_id
            path = self._log_path(w.log_path, request.run_id, w.rank) if checkable else None
            if checkable and check(path is not None, f"{at}.log_path", f"must be a file inside {self.log_dir}"):
                # A repeated rank's default path repeats too; that is one problem, named once.
                check(
                    path not in paths or (repeated and not w.log_path), f"{at}.log_path", "used by more than one worker"
                )
                paths.add(path)
            specs.append((w, path))
        if bad:
            raise InvalidArgument(f"invalid launch request: {len(bad)} problem(s)", bad)
        return specs

    @staticmethod
    def _check_env(env: Mapping[str, str], at: str, check) -> None:
        for name, value in env.items():
            check(bool(ENV_NAME.fullmatch(name)), f"{at}[{name}]", "not a valid environment variable name")
            check(not _has_nul(value), f"{at}[{name}]", "value contains a NUL character")

    def _log_path(self, requested: str, run_id: str, rank: int) -> Path | None:
        """The log file, resolved (symlinks included); None when it would lie outside `log_dir`."""
        if _has_nul(requested):
            return None
        raw = Path(requested) if requested else Path(run_id) / f"rank-{rank}.log"
        path = (self.log_dir / raw).resolve()  # an absolute `raw` replaces log_dir
        if path == self.log_dir or not path.is_relative_to(self.log_dir) or path.is_dir():
            return None
        return path

    def _base_env(self) -> dict[str, str]:
        return {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}

    def _worker_env(self, request: api.LaunchWorkersRequest, spec: api.WorkerLaunch) -> dict[str, str]:
        env = self._base_env()
        env.update(request.common_env)
        env.update(spec.env)
        rank_vars = {
            "RANK": spec.rank,
            "LOCAL_RANK": spec.local_rank,
            "WORLD_SIZE": request.world_size,
            "MLMESH_RANK": spec.rank,
            "MLMESH_LOCAL_RANK": spec.local_rank,
            "MLMESH_WORLD_SIZE": request.world_size,
            "MLMESH_RUN_ID": request.run_id,
            "MLMESH_JOB_ID": request.job_id,
            "MLMESH_ATTEMPT": request.attempt,
            "MLMESH_NODE_ID": self.node_id,
        }
        env.update({k: str(v) for k, v in rank_vars.items()})
        if spec.device_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.device_ids)
        else:
            # "empty = none": a worker given no devices must not grab the node's GPUs, unless the
            # caller chose CUDA_VISIBLE_DEVICES itself.
            env.setdefault("CUDA_VISIBLE_DEVICES", "")
        return env

    async def _start_all(
        self, request: api.LaunchWorkersRequest, specs: list[tuple[api.WorkerLaunch, Path]]
    ) -> list[Worker]:
        cwd = request.working_dir or (str(self._default_cwd) if self._default_cwd else None)
        workers = [
            Worker(
                node_id=self.node_id,
                job_id=request.job_id,
                run_id=request.run_id,
                attempt=request.attempt,
                rank=spec.rank,
                local_rank=spec.local_rank,
                log_path=path,
            )
            for spec, path in specs
        ]
        started: list[Worker] = []
        failure = ""
        for worker, (spec, _) in zip(workers, specs, strict=True):
            try:
                await self._spawn(worker, list(spec.command), self._worker_env(request, spec), cwd)
            except OSError as exc:
                failure = f"rank {worker.rank}: {exc.strerror or type(exc).__name__}: {spec.command[0]}"
                worker.message = failure
                break
            started.append(worker)
        if failure:
            await self._roll_back(workers, started, failure)
            return workers
        for worker in workers:
            self._workers[(worker.run_id, worker.rank, worker.attempt)] = worker
            self._live[(worker.run_id, worker.rank)] = worker
            worker._watcher = asyncio.create_task(
                self._watch(worker), name=f"worker-{worker.run_id}-{worker.rank}-{worker.attempt}"
            )
        log.info(
            "workers launched",
            extra={"job": request.job_id, "run": request.run_id, "ranks": [w.rank for w in workers]},
        )
        return workers

    async def _spawn(self, worker: Worker, argv: list[str], env: dict[str, str], cwd: str | None) -> None:
        worker.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The path was resolved inside log_dir; O_NOFOLLOW refuses a symlink planted since then.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(worker.log_path, flags, 0o640)
        if argv and argv[0] == AGENT_PYTHON:
            # Callers cannot know where Python (with mlmesh) lives on this node; the agent does.
            argv = [sys.executable, *argv[1:]]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        worker._proc = proc
        worker.pid = proc.pid
        worker.start_time = time.time()

    async def _roll_back(self, workers: list[Worker], started: list[Worker], failure: str) -> None:
        for w in started:
            _signal_group(w.pid, signal.SIGKILL)
        for w in started:
            assert w._proc is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(w._proc.wait(), KILL_WAIT_S)
            _signal_group(w.pid, signal.SIGKILL)  # anything it spawned in the meantime
        now = time.time()
        for w in workers:
            w.state = FAILED_TO_START
            w.exit_time = now if w in started else None
            w.message = w.message or f"not started: {failure}"
            w._exited.set()
            self._remember_exited(w)
        log.warning("launch failed; %d started worker(s) killed: %s", len(started), failure)

    # --- exits ------------------------------------------------------------------------------------

    async def _watch(self, worker: Worker) -> None:
        assert worker._proc is not None
        returncode = await worker._proc.wait()
        worker.exit_time = time.time()
        # The worker is gone; whatever it left in its process group goes with it.
        _signal_group(worker.pid, signal.SIGKILL)
        if returncode < 0:
            worker.signal = -returncode
        else:
            worker.exit_code = returncode
        worker.state = EXITED
        worker._exited.set()
        if self._live.get((worker.run_id, worker.rank)) is worker:
            del self._live[(worker.run_id, worker.rank)]
        self._remember_exited(worker)
        log.info(
            "worker exited",
            extra={
                "run": worker.run_id,
                "rank": worker.rank,
                "pid": worker.pid,
                "exit_code": worker.exit_code,
                "signal": worker.signal,
                "stopped_by_agent": worker.stopped_by_agent,
            },
        )
        await self._publish_exit(worker)

    async def _publish_exit(self, worker: Worker) -> None:
        if self._publisher is None:
            return
        event_id = f"{worker.run_id}-{worker.rank}-{worker.attempt}"
        for n in range(PUBLISH_TRIES):
            try:
                await self._publisher.publish(
                    exited_subject(self.node_id, worker.run_id),
                    worker.to_event(),
                    ce_subject=f"{worker.run_id}/{worker.rank}",
                    event_id=event_id,
                )
                return
            except Exception as exc:  # NATS down or slow: retry; the id makes a retry safe
                log.warning("publishing WorkerExited %s failed (%s); try %d", event_id, exc, n + 1)
                await asyncio.sleep(min(5.0, 0.25 * 2**n))
        log.error("WorkerExited %s not published after %d tries", event_id, PUBLISH_TRIES)

    def _remember_exited(self, worker: Worker) -> None:
        self._workers[(worker.run_id, worker.rank, worker.attempt)] = worker
        done = [w for w in self._workers.values() if not w.alive]
        if len(done) > self._max_exited:
            done.sort(key=lambda w: w.exit_time or 0.0)
            for w in done[: len(done) - self._max_exited]:
                self._workers.pop((w.run_id, w.rank, w.attempt), None)

    # --- stop -------------------------------------------------------------------------------------

    async def stop(self, run_id: str, ranks: Iterable[int] = (), grace_s: float = DEFAULT_GRACE_S) -> list[Worker]:
        """SIGTERM each selected worker's process group, SIGKILL it after `grace_s`; returns the
        workers once they are gone. Workers already exited are returned as they are."""
        subject_token(run_id, "run_id")
        if grace_s < 0:
            raise InvalidArgument.field("grace_period", "must be >= 0")
        latest: dict[int, Worker] = {}
        for w in self._workers.values():
            if w.run_id == run_id:
                cur = latest.get(w.rank)
                if cur is None or (w.alive, w.attempt) > (cur.alive, cur.attempt):
                    latest[w.rank] = w
        if not latest:
            raise NotFound(f"run {run_id} has no workers on node {self.node_id}")
        wanted = sorted(set(ranks)) or sorted(latest)
        missing = [r for r in wanted if r not in latest]
        if missing:
            raise NotFound(f"run {run_id} has no worker of rank {missing[0]} on node {self.node_id}")
        selected = [latest[r] for r in wanted]
        await self._terminate([w for w in selected if w.alive], grace_s)
        return selected

    async def _terminate(self, workers: list[Worker], grace_s: float) -> None:
        if not workers:
            return
        for w in workers:
            if w.state == RUNNING:
                w.state = STOPPING
                w.stopped_by_agent = True
                _signal_group(w.pid, signal.SIGTERM)
        await asyncio.wait([asyncio.ensure_future(w.wait()) for w in workers], timeout=grace_s)
        stubborn = [w for w in workers if not w.exited]
        for w in stubborn:
            log.info("worker ignored SIGTERM for %.1fs; killing it", grace_s, extra={"run": w.run_id, "rank": w.rank})
            _signal_group(w.pid, signal.SIGKILL)
        if stubborn:
            await asyncio.wait([asyncio.ensure_future(w.wait()) for w in stubborn], timeout=KILL_WAIT_S)

    async def stop_all(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Stop every worker (agent shutdown) and let their exit events go out."""
        await self._terminate(list(self._live.values()), grace_s)
        watchers = [w._watcher for w in self._workers.values() if w._watcher is not None and not w._watcher.done()]
        if watchers:
            await asyncio.wait(watchers, timeout=KILL_WAIT_S)

    # --- queries ----------------------------------------------------------------------------------

    def list(self, run_id: str = "", job_id: str = "", include_exited: bool = False) -> list[Worker]:
        found = [
            w
            for w in self._workers.values()
            if (not run_id or w.run_id == run_id) and (not job_id or w.job_id == job_id) and (include_exited or w.alive)
        ]
        return sorted(found, key=lambda w: (w.run_id, w.rank, w.attempt))

    def get(self, run_id: str, rank: int) -> Worker:
        """The run's worker of `rank`: the running one, else its latest attempt."""
        live = self._live.get((run_id, rank))
        if live is not None:
            return live
        attempts = [w for (r, k, _), w in self._workers.items() if r == run_id and k == rank]
        if not attempts:
            raise NotFound(f"run {run_id} has no worker of rank {rank} on node {self.node_id}")
        return max(attempts, key=lambda w: w.attempt)

    def log_path(self, run_id: str, rank: int) -> Path:
        return self.get(run_id, rank).log_path
