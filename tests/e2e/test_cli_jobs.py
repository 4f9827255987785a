"""`mlmesh submit | jobs | queues` as a user runs them, against a real scheduler process on real NATS.

There is no trainer here, so an admitted job stays ADMITTED until it is cancelled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import json_format

from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.local.servers import NatsServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
MLMESH = [sys.executable, "-m", "mlmesh.cli.main"]


class Cli:
    def __init__(self, address: str, state_dir: Path):
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
        # An empty state dir: nothing may fall back to a developer's local mesh.
        self.env = {**base, "MLMESH_SCHEDULER_ADDR": address, "MLMESH_STATE_DIR": str(state_dir), "COLUMNS": "200"}

    def env_for(self, token: str) -> dict:
        return {**self.env, "MLMESH_TOKEN": token}

    def run(self, token: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*MLMESH, *args], env=self.env_for(token), capture_output=True, text=True, timeout=timeout, cwd=REPO
        )

    def ok(self, token: str, *args: str) -> subprocess.CompletedProcess:
        done = self.run(token, *args)
        assert done.returncode == 0, f"mlmesh {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, token: str, *args: str):
        return json.loads(self.ok(token, *args, "--json").stdout)

    def popen(self, token: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*MLMESH, *args],
            env={**self.env_for(token), "PYTHONFAULTHANDLER": "1"},
            # As from a terminal: a runner that starts the suite in the background ignores SIGINT,
            # children inherit that, and Python then installs no KeyboardInterrupt handler.
            preexec_fn=_default_sigint,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _error_line(done: subprocess.CompletedProcess) -> str:
    """The one `error:` line a failing command prints (a `hint:` line may follow)."""
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[0] == errors[0], done.stderr
    assert all(line.startswith("hint:") for line in lines[1:]), done.stderr
    return errors[0]


def _cpu_node() -> dict:
    node = node_pb2.Node(id="cpu-0", hostname="cpu-0", agent_address="127.0.0.1:7000", state=node_pb2.NODE_STATE_READY)
    node.capacity.cpu_millis = 16_000
    node.capacity.memory_bytes = 64 << 30
    return json_format.MessageToDict(node)


def _stop(proc: subprocess.Popen, grace: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def scheduler(tmp_path: Path):
    """(address, tokens) of a scheduler subprocess with one CPU node, on its own nats-server."""
    nats = NatsServer(tmp_path / "nats")
    proc = None
    log = None
    try:
        nats.start()
        private, public = generate_signing_key()
        write_secret(tmp_path / "public.pem", public)
        (tmp_path / "nodes.json").write_text(json.dumps([_cpu_node()]))
        ready = tmp_path / "scheduler.ready.json"
        p = "MLMESH_SCHEDULER_"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
        env.update(
            {
                f"{p}HOST": "127.0.0.1",
                f"{p}GRPC_PORT": "0",
                f"{p}METRICS_PORT": "-1",
                f"{p}NATS_URL": nats.url,
                f"{p}NATS_CREDS_FILE": str(nats.creds("scheduler")),
                f"{p}AUTH_PUBLIC_KEY_FILE": str(tmp_path / "public.pem"),
                f"{p}INVENTORY_FILE": str(tmp_path / "nodes.json"),
                f"{p}READY_FILE": str(ready),
                f"{p}CYCLE_INTERVAL_S": "0.2",
                f"{p}SHUTDOWN_GRACE_S": "1",
            }
        )
        log = (tmp_path / "scheduler.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "mlmesh.scheduler"], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 45
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"scheduler exited {proc.returncode}:\n{(tmp_path / 'scheduler.log').read_text()[-3000:]}")
            assert time.monotonic() < deadline, "scheduler did not start"
            time.sleep(0.1)
        port = json.loads(ready.read_text())["grpc_port"]
        tokens = {
            "admin": mint_token(private, subject="admin", team="platform", roles=["admin"]),
            "alice": mint_token(private, subject="alice", team="team-a", roles=["developer"]),
            "bob": mint_token(private, subject="bob", team="team-b", roles=["developer"]),
        }
        yield Cli(f"127.0.0.1:{port}", tmp_path / "no-state"), tokens
    finally:
        if proc is not None:
            _stop(proc)
        if log is not None:
            log.close()
        nats.stop()


def _wait_state(cli: Cli, token: str, job_id: str, state: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = cli.json(token, "jobs", "get", job_id)
        if job.get("status", {}).get("state") == state:
            return job
        assert time.monotonic() < deadline, f"{job_id} never reached {state}: {job.get('status')}"
        time.sleep(0.3)


def test_jobs_and_queues_through_the_cli(scheduler, tmp_path):
    cli, t = scheduler

    # Queues are admin-only: a developer gets one clear line.
    denied = cli.run(t["alice"], "queues", "create", "qa", "--team", "team-a", "--gpus", "0")
    assert _error_line(denied).startswith("error: permission_denied: ")
    queue = cli.json(
        t["admin"], "queues", "create", "qa", "--team", "team-a", "--gpus", "0", "--cpu", "8", "--memory", "32Gi"
    )
    assert queue["meta"]["id"] == "qa" and queue["spec"]["nominal_quota"]["cpu_millis"] == "8000"
    updated = cli.json(t["admin"], "queues", "update", "qa", "--weight", "2")
    assert updated["spec"]["weight"] == 2 and updated["spec"]["nominal_quota"]["cpu_millis"] == "8000"
    cli.ok(t["admin"], "queues", "create", "qa-default", "--team", "team-a", "--gpus", "0", "--default")
    assert {q["meta"]["id"] for q in cli.json(t["alice"], "queues", "list")["queues"]} == {"qa", "qa-default"}
    assert "qa-default" in cli.ok(t["alice"], "queues", "list").stdout

    # Submit the example; it lands in the team's default queue and is admitted onto the CPU node.
    job = cli.json(t["alice"], "submit", "examples/command.yaml")
    job_id = job["meta"]["id"]
    assert job["status"]["state"] == "JOB_STATE_PENDING" and job["spec"]["queue"] == "qa-default"
    admitted = _wait_state(cli, t["alice"], job_id, "JOB_STATE_ADMITTED")
    placement = admitted["status"]["placement"]
    assert placement["world_size"] == 2 and [n["node_id"] for n in placement["nodes"]] == ["cpu-0"]

    listed = cli.json(t["alice"], "jobs", "list", "--state", "admitted", "--label", "example=hello")
    assert [j["meta"]["id"] for j in listed["jobs"]] == [job_id]
    assert cli.json(t["alice"], "jobs", "list", "--state", "pending", "--state", "running").get("jobs", []) == []
    assert cli.json(t["alice"], "jobs", "list", "--label", "example=other").get("jobs", []) == []
    table = cli.ok(t["alice"], "jobs", "list").stdout
    assert job_id in table and "ADMITTED" in table and "command" in table

    explained = cli.json(t["alice"], "jobs", "explain", job_id)
    assert explained["job"]["meta"]["id"] == job_id and job_id in explained["summary"]
    assert job_id in cli.ok(t["alice"], "jobs", "explain", job_id).stdout

    # Another team cannot see it: NOT_FOUND, never "forbidden".
    hidden = cli.run(t["bob"], "jobs", "get", job_id)
    line = _error_line(hidden)
    assert line.startswith("error: not_found: ") and "other teams" in hidden.stderr

    # Cancel: one line, and the job is CANCELLED for good.
    assert "CANCELLED" in cli.ok(t["alice"], "jobs", "cancel", job_id, "--reason", "done testing").stdout
    cancelled = cli.json(t["alice"], "jobs", "get", job_id)
    assert cancelled["status"]["state"] == "JOB_STATE_CANCELLED" and cancelled["status"]["message"] == "done testing"

    # A malformed file never reaches the server: exit 2 and one error line naming the field.
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nkind: command\nworkers: {count: 1, memory: 16GG}\ncommand: [python]\n")
    line = _error_line(cli.run(t["alice"], "submit", str(bad)))
    assert line.startswith("error: workers.memory: ") and "16GG" in line

    # The server's validation comes back as one line with each field violation.
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("name: Not Valid\nkind: command\nworkers: {count: 1, cpu: 1}\n")
    line = _error_line(cli.run(t["alice"], "submit", str(invalid)))
    assert line.startswith("error: invalid_argument: ")
    assert "; spec.name: " in line and "; spec.command.command: " in line


def test_submit_watch_follows_the_job_and_exits_nonzero_when_it_is_cancelled(scheduler):
    cli, t = scheduler
    cli.ok(t["admin"], "queues", "create", "qa", "--team", "team-a", "--gpus", "0", "--default")
    watcher = cli.popen(t["alice"], "submit", "examples/command.yaml", "--watch")
    jobs_watch = None
    try:
        first = watcher.stdout.readline()  # "submitted <id> (hello)"
        assert first.startswith("submitted "), first + watcher.stderr.read()
        job_id = first.split()[1]
        _wait_state(cli, t["alice"], job_id, "JOB_STATE_ADMITTED")
        jobs_watch = cli.popen(t["alice"], "jobs", "watch", job_id)
        time.sleep(1.5)  # let it print the snapshot before the change
        cli.ok(t["alice"], "jobs", "cancel", job_id)
        out, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 1, out + err
        assert "ADMITTED" in out and "CANCELLED" in out
        assert _error_line(subprocess.CompletedProcess([], 1, out, err)).startswith(f"error: job {job_id} cancelled")
        # `jobs watch ID` ends once the named job has finished.
        w_out, w_err = jobs_watch.communicate(timeout=30)
        assert jobs_watch.returncode == 0, w_err
        assert job_id in w_out and "CANCELLED" in w_out
    finally:
        for p in (watcher, jobs_watch):
            if p is not None:
                _stop(p, grace=5)


def test_ctrl_c_stops_watching_not_the_job(scheduler):
    cli, t = scheduler
    cli.ok(t["admin"], "queues", "create", "qa", "--team", "team-a", "--gpus", "0", "--default")
    watcher = cli.popen(t["alice"], "submit", "examples/command.yaml", "--watch")
    try:
        first = watcher.stdout.readline()
        assert first.startswith("submitted "), first + watcher.stderr.read()
        job_id = first.split()[1]
        _wait_state(cli, t["alice"], job_id, "JOB_STATE_ADMITTED")
        watcher.send_signal(signal.SIGINT)
        try:
            out, err = watcher.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Where it hangs: PYTHONFAULTHANDLER makes SIGABRT print every thread's stack.
            watcher.send_signal(signal.SIGABRT)
            out, err = watcher.communicate(timeout=10)
            raise AssertionError(f"the watch did not stop on Ctrl-C:\n{out}\n{err}") from None
        assert watcher.returncode == 130, out + err
        assert f"stopped watching; job {job_id} keeps going" in err
        assert cli.json(t["alice"], "jobs", "get", job_id)["status"]["state"] == "JOB_STATE_ADMITTED"
    finally:
        _stop(watcher, grace=5)
