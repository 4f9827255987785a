"""WorkerManager against real processes: environment, logs, exit codes and signals, stop with a
grace period (SIGTERM trapped or ignored, grandchildren included), validation, limits, all-or-nothing
launch, and the link benchmark as two gloo ranks.

The processes are the OS, not a mock; only the event publisher is a recorder here (the service test
checks the events on a real NATS). Every test stops what it started through the manager (process
groups by id) and kills any grandchild it learnt about by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from mlmesh.api.fabric.v1 import node_agent_service_pb2 as api
from mlmesh.common.errors import AlreadyExists, InvalidArgument, NotFound, QuotaExceeded
from mlmesh.fabric.agent.workers import EXITED, FAILED_TO_START, RUNNING, WorkerManager, exited_subject

pytestmark = pytest.mark.timeout(60)

NODE = "node-unit"


class RecordingPublisher:
    """Stands in for EventPublisher: records what would be published."""

    def __init__(self):
        self.events: list[tuple[str, object, str]] = []

    async def publish(self, nats_subject, data, *, ce_subject="", event_id=None, **kw):
        self.events.append((nats_subject, data, event_id))


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def launch_request(
    workers: list[api.WorkerLaunch],
    *,
    run: str = "run-a",
    job: str = "job-a",
    attempt: int = 0,
    world: int = 2,
    common_env: dict[str, str] | None = None,
) -> api.LaunchWorkersRequest:
    return api.LaunchWorkersRequest(
        job_id=job, run_id=run, attempt=attempt, world_size=world, common_env=common_env or {}, workers=workers
    )


def alive(pid: int) -> bool:
    """A zombie counts as gone: it runs nothing, and only its parent (maybe init) can reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def wait_for_log(path: Path, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = read_text(path)
        if text in content:
            return content
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path} after {timeout}s")


@pytest.fixture
async def publisher():
    return RecordingPublisher()


@pytest.fixture
async def manager(tmp_path, publisher):
    m = WorkerManager(NODE, publisher, tmp_path / "logs")
    try:
        yield m
    finally:
        await m.stop_all(grace_s=0)


SLEEP = "import time; print('ready', flush=True); time.sleep(120)"
TRAP_TERM = (
    "import signal, sys, time\n"
    "def bye(*_):\n"
    "    print('got SIGTERM', flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)
IGNORE_TERM_WITH_CHILD = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
    "print('child', child.pid, flush=True)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


async def test_two_ranks_get_their_environment_a_log_each_and_exit_events(manager, publisher, monkeypatch):
    monkeypatch.setenv("MLMESH_FABRIC_SECRET_TOKEN", "do-not-leak")
    dump = "import json, os; print(json.dumps(dict(os.environ)), flush=True)"
    req = launch_request(
        [
            api.WorkerLaunch(rank=0, local_rank=0, command=py(dump), env={"MINE": "zero"}),
            api.WorkerLaunch(
                rank=1, local_rank=1, command=py(dump), device_ids=["GPU-a", "GPU-b"], log_path="custom/r1.log"
            ),
        ],
        common_env={"MASTER_ADDR": "127.0.0.1", "MINE": "common"},
    )
    workers = await manager.launch(req)
    assert [w.rank for w in workers] == [0, 1]
    assert all(w.pid > 0 and w.start_time for w in workers)
    for w in workers:
        assert await w.wait(20)

    assert workers[0].log_path == manager.log_dir / "run-a" / "rank-0.log"
    assert workers[1].log_path == manager.log_dir / "custom" / "r1.log"
    assert manager.log_path("run-a", 1) == workers[1].log_path
    envs = [json.loads(w.log_path.read_text()) for w in workers]
    for rank, env in enumerate(envs):
        assert env["RANK"] == env["MLMESH_RANK"] == str(rank)
        assert env["LOCAL_RANK"] == env["MLMESH_LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["MLMESH_WORLD_SIZE"] == "2"
        assert env["MLMESH_RUN_ID"] == "run-a" and env["MLMESH_JOB_ID"] == "job-a"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert "MLMESH_FABRIC_SECRET_TOKEN" not in env  # the agent's own environment stays with it
    assert envs[0]["MINE"] == "zero" and envs[1]["MINE"] == "common"  # worker env over common_env
    assert envs[0]["CUDA_VISIBLE_DEVICES"] == "" and envs[1]["CUDA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"

    for w in workers:
        assert (w.state, w.exit_code, w.signal) == (EXITED, 0, None)
        assert w.exit_time >= w.start_time
    await asyncio.wait_for(_until(lambda: len(publisher.events) == 2), 10)
    by_id = {event_id: (subject, data) for subject, data, event_id in publisher.events}
    assert set(by_id) == {"run-a-0-0", "run-a-1-0"}
    for rank, w in enumerate(workers):
        subject, data = by_id[f"run-a-{rank}-0"]
        assert subject == exited_subject(NODE, "run-a") == f"mlmesh.fabric.nodes.{NODE}.workers.run-a.exited"
        assert data.WhichOneof("termination") == "exit_code" and data.exit_code == 0
        assert (data.node_id, data.job_id, data.run_id, data.rank, data.pid) == (NODE, "job-a", "run-a", rank, w.pid)
        assert not data.stopped_by_agent and data.exit_time.seconds > 0

    assert manager.list() == []
    assert [w.rank for w in manager.list(include_exited=True)] == [0, 1]
    assert manager.list(job_id="other", include_exited=True) == []
    proto = workers[0].to_proto()
    assert proto.state == api.WORKER_STATE_EXITED and proto.HasField("exit_code") and not proto.HasField("signal")


async def _until(predicate, interval: float = 0.02) -> None:
    """Poll until `predicate()` holds; callers bound it with asyncio.wait_for."""
    while True:
        if predicate():
            return
        await asyncio.sleep(interval)


async def test_exit_code_is_recorded_and_published(manager, publisher):
    [w] = await manager.launch(launch_request([api.WorkerLaunch(rank=0, command=py("raise SystemExit(3)"))], world=1))
    assert await w.wait(20)
    assert (w.state, w.exit_code, w.signal) == (EXITED, 3, None)
    await asyncio.wait_for(_until(lambda: publisher.events), 10)
    assert publisher.events[0][1].exit_code == 3


async def test_stop_sigterm_trapped_exits_cleanly_within_grace(manager, publisher):
    [w] = await manager.launch(launch_request([api.WorkerLaunch(rank=0, command=py(TRAP_TERM))], world=1))
    await wait_for_log(w.log_path, "ready")
    started = time.monotonic()
    [stopped] = await manager.stop("run-a", grace_s=10)
    elapsed = time.monotonic() - started
    assert stopped is w and elapsed < 5
    assert (w.state, w.exit_code, w.signal, w.stopped_by_agent) == (EXITED, 0, None, True)
    assert "got SIGTERM" in w.log_path.read_text()
    await asyncio.wait_for(_until(lambda: publisher.events), 10)
    event = publisher.events[0][1]
    assert event.stopped_by_agent and event.exit_code == 0


async def test_stop_kills_a_worker_ignoring_sigterm_after_the_grace_period_with_its_child(manager, publisher):
    grace = 1.5
    [w] = await manager.launch(launch_request([api.WorkerLaunch(rank=0, command=py(IGNORE_TERM_WITH_CHILD))], world=1))
    log_text = await wait_for_log(w.log_path, "ready")
    grandchild = int(log_text.split("child", 1)[1].split()[0])
    try:
        assert alive(grandchild)
        started = time.monotonic()
        [stopped] = await manager.stop("run-a", ranks=[0], grace_s=grace)
        elapsed = time.monotonic() - started
        assert grace <= elapsed < grace + 3
        assert (stopped.state, stopped.signal, stopped.exit_code) == (EXITED, signal.SIGKILL, None)
        assert stopped.stopped_by_agent
        await asyncio.wait_for(_until(lambda: not alive(grandchild)), 5)  # the process group went too
        await asyncio.wait_for(_until(lambda: publisher.events), 10)
        event = publisher.events[0][1]
        assert event.WhichOneof("termination") == "signal" and event.signal == 9 and event.stopped_by_agent

        # Idempotent: stopping again returns the final state at once.
        again = await manager.stop("run-a", grace_s=grace)
        assert again == [w] and w.signal == 9
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


async def test_a_worker_exiting_by_itself_takes_its_leftover_children_with_it(manager):
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('child', child.pid, flush=True)\n"
    )
    [w] = await manager.launch(launch_request([api.WorkerLaunch(rank=0, command=py(code))], world=1))
    assert await w.wait(20)
    grandchild = int(w.log_path.read_text().split("child", 1)[1].split()[0])
    try:
        await asyncio.wait_for(_until(lambda: not alive(grandchild)), 5)
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


async def test_stop_of_unknown_run_or_rank_is_not_found(manager):
    with pytest.raises(NotFound):
        await manager.stop("no-such-run")
    [w] = await manager.launch(launch_request([api.WorkerLaunch(rank=0, command=py("pass"))], world=1))
    assert await w.wait(20)
    with pytest.raises(NotFound):
        await manager.stop("run-a", ranks=[5])
    with pytest.raises(NotFound):
        manager.get("run-a", 5)
    with pytest.raises(InvalidArgument):
        await manager.stop("Bad.Run")


def _violations(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r, tmp: setattr(r.workers[0], "log_path", "../escape.log"), "workers[0].log_path"),
        (lambda r, tmp: setattr(r.workers[0], "log_path", "a/../../escape.log"), "workers[0].log_path"),
        (lambda r, tmp: setattr(r.workers[0], "log_path", str(tmp / "outside.log")), "workers[0].log_path"),
        (lambda r, tmp: setattr(r.workers[0], "log_path", str(tmp / "logs")), "workers[0].log_path"),
        (lambda r, tmp: setattr(r.workers[1], "log_path", "run-a/rank-0.log"), "workers[1].log_path"),
        (lambda r, tmp: setattr(r.workers[1], "rank", 0), "workers[1].rank"),
        (lambda r, tmp: setattr(r.workers[0], "rank", 2), "workers[0].rank"),
        (lambda r, tmp: setattr(r.workers[0], "rank", -1), "workers[0].rank"),
        (lambda r, tmp: r.workers[0].ClearField("command"), "workers[0].command"),
        (lambda r, tmp: r.workers[0].env.update({"1BAD": "x"}), "workers[0].env[1BAD]"),
        (lambda r, tmp: r.common_env.update({"A=B": "x"}), "common_env[A=B]"),
        (lambda r, tmp: r.workers[0].device_ids.append("a,b"), "workers[0].device_ids"),
        (lambda r, tmp: setattr(r, "run_id", "Run.A"), "run_id"),
        (lambda r, tmp: setattr(r, "job_id", ""), "job_id"),
        (lambda r, tmp: setattr(r, "world_size", 0), "world_size"),
        (lambda r, tmp: setattr(r, "working_dir", str(tmp / "missing")), "working_dir"),
        (lambda r, tmp: r.ClearField("workers"), "workers"),
    ],
)
async def test_invalid_launch_requests_name_the_field_and_start_nothing(manager, tmp_path, mutate, field):
    req = launch_request([api.WorkerLaunch(rank=0, command=py(SLEEP)), api.WorkerLaunch(rank=1, command=py(SLEEP))])
    mutate(req, tmp_path)
    with pytest.raises(InvalidArgument) as info:
        await manager.launch(req)
    assert field in _violations(info.value)
    assert manager.list(include_exited=True) == []
    assert not (tmp_path / "escape.log").exists() and not (tmp_path / "outside.log").exists()


async def test_a_symlink_inside_log_dir_cannot_lead_outside(manager, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (manager.log_dir / "evil").symlink_to(outside)
    req = launch_request([api.WorkerLaunch(rank=0, command=py("pass"), log_path="evil/x.log")], world=1)
    with pytest.raises(InvalidArgument) as info:
        await manager.launch(req)
    assert _violations(info.value) == {"workers[0].log_path"}
    assert list(outside.iterdir()) == []


async def test_launch_is_idempotent_per_attempt_and_refuses_a_second_attempt_of_a_running_rank(manager):
    req = launch_request([api.WorkerLaunch(rank=0, command=py(SLEEP))], world=1)
    [first] = await manager.launch(req)
    [again] = await manager.launch(req)
    assert again is first and len(manager.list()) == 1
    req.attempt = 1
    with pytest.raises(AlreadyExists):
        await manager.launch(req)
    [stopped] = await manager.stop("run-a", grace_s=5)
    assert stopped.signal == signal.SIGTERM
    [next_attempt] = await manager.launch(req)  # the rank is free again
    assert next_attempt.attempt == 1 and next_attempt.pid != first.pid and next_attempt.state == RUNNING
    assert manager.get("run-a", 0) is next_attempt


async def test_too_many_workers_is_resource_exhausted(tmp_path):
    m = WorkerManager(NODE, None, tmp_path / "logs", max_workers=2)
    try:
        [w] = await m.launch(launch_request([api.WorkerLaunch(rank=0, command=py(SLEEP))], world=3))
        req = launch_request(
            [api.WorkerLaunch(rank=1, command=py(SLEEP)), api.WorkerLaunch(rank=2, command=py(SLEEP))], world=3
        )
        with pytest.raises(QuotaExceeded):
            await m.launch(req)
        assert m.list() == [w]
    finally:
        await m.stop_all(grace_s=0)


async def test_a_worker_failing_to_start_rolls_back_the_others(manager, publisher, tmp_path):
    req = launch_request(
        [
            api.WorkerLaunch(rank=0, command=py(SLEEP)),
            api.WorkerLaunch(rank=1, command=[str(tmp_path / "no-such-binary")]),
        ]
    )
    workers = await manager.launch(req)
    assert [w.state for w in workers] == [FAILED_TO_START, FAILED_TO_START]
    assert "No such file" in workers[1].message and "rank 1" in workers[0].message
    assert workers[0].pid > 0
    await asyncio.wait_for(_until(lambda: not alive(workers[0].pid)), 5)
    assert manager.list() == []
    assert len(manager.list(include_exited=True)) == 2
    assert publisher.events == []  # never running: nothing to announce

    del req.workers[1].command[:]
    req.workers[1].command.extend(py(SLEEP))  # a retry of the same attempt may start them now
    retried = await manager.launch(req)
    assert [w.state for w in retried] == [RUNNING, RUNNING]


async def test_stop_all_leaves_no_process_behind(manager):
    workers = await manager.launch(
        launch_request(
            [api.WorkerLaunch(rank=0, command=py(SLEEP)), api.WorkerLaunch(rank=1, command=py(IGNORE_TERM_WITH_CHILD))]
        )
    )
    log_text = await wait_for_log(workers[1].log_path, "ready")
    grandchild = int(log_text.split("child", 1)[1].split()[0])
    try:
        await manager.stop_all(grace_s=0.5)
        assert all(w.state == EXITED for w in workers)
        assert not any(alive(w.pid) for w in workers)
        await asyncio.wait_for(_until(lambda: not alive(grandchild)), 5)
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
async def test_linkbench_two_gloo_ranks_on_loopback(manager):
    command = [sys.executable, "-m", "mlmesh.fabric.linkbench", "--size-bytes", str(1 << 20), "--iters", "5"]
    req = launch_request(
        [api.WorkerLaunch(rank=r, local_rank=r, command=[*command, "--backend", "gloo"]) for r in range(2)],
        run="bench-a",
        common_env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "GLOO_SOCKET_IFNAME": "lo"},
    )
    workers = await manager.launch(req)
    for w in workers:
        assert await w.wait(100), w.log_path.read_text()
        assert w.exit_code == 0, w.log_path.read_text()
    lines = [line for line in workers[0].log_path.read_text().splitlines() if line.startswith('{"linkbench"')]
    assert len(lines) == 1
    result = json.loads(lines[0])["linkbench"]
    assert result["backend"] == "gloo" and result["size_bytes"] == 1 << 20 and result["iters"] == 5
    assert result["latency_s_median"] > 0 and result["busbw_gbps"] > 0
    assert result["busbw_gbps"] == pytest.approx(result["algbw_gbps"] * 2 * (2 - 1) / 2)
    assert '"linkbench"' not in workers[1].log_path.read_text()  # rank 0 alone reports
