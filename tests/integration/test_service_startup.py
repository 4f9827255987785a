"""Each service process: starts against real NATS, serves health, stops on SIGTERM; and bad input
at start (malformed setting, NATS down, port in use) gives one clear line and a non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlmesh.common.auth import generate_signing_key, write_secret
from mlmesh.local.mesh import SERVICES, grpc_healthy

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def public_key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "public.pem"
    write_secret(path, generate_signing_key()[1])
    return path


def _env(prefix: str, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env.update({f"{prefix}{k.upper()}": str(v) for k, v in values.items()})
    return env


def _wait_file(path: Path, proc: subprocess.Popen, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return json.loads(path.read_text())
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


# The node agent needs a fabric to register with: services/fabric/tests cover it.
STANDALONE = [s for s in SERVICES if not s.after_fabric]


@pytest.mark.parametrize("svc", STANDALONE, ids=[s.name for s in STANDALONE])
def test_service_serves_health_and_stops_on_sigterm(svc, nats_server, public_key, tmp_path):
    ready = tmp_path / "ready.json"
    env = _env(
        svc.env_prefix,
        nats_url=nats_server.url,
        nats_creds_file=nats_server.creds(svc.identity),
        **({"worker_nats_creds_file": nats_server.creds("worker")} if svc.module == "trainer" else {}),
        auth_public_key_file=public_key,
        ready_file=ready,
        metrics_port=-1,
    )
    proc = subprocess.Popen([sys.executable, "-m", f"mlmesh.{svc.module}"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        info = _wait_file(ready, proc)
        assert info["pid"] == proc.pid
        assert grpc_healthy(f"127.0.0.1:{info['grpc_port']}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
        assert [r["msg"] for r in logs if r["logger"] == "mlmesh.server"] == ["serving", "shutting down", "stopped"]
        assert all(r["service"] == svc.module for r in logs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_failure(env: dict[str, str], module: str = "scheduler") -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", f"mlmesh.{module}"], env=env, capture_output=True, text=True, timeout=60
    )
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    return done.returncode, last


def test_malformed_setting_is_one_line_naming_the_variable(public_key):
    code, line = _start_failure(_env("MLMESH_SCHEDULER_", grpc_port="abc", auth_public_key_file=public_key))
    assert code == 2
    assert line.startswith("mlmesh-scheduler: invalid settings") and "MLMESH_SCHEDULER_GRPC_PORT" in line


def test_missing_key_source_is_rejected():
    code, line = _start_failure(_env("MLMESH_SCHEDULER_"))
    assert code == 2 and "AUTH_PUBLIC_KEY_FILE" in line


def test_nats_down_is_one_line(public_key):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound but not listening: connections are refused
        code, line = _start_failure(
            _env(
                "MLMESH_SCHEDULER_",
                nats_url=f"nats://127.0.0.1:{closed}",
                nats_connect_timeout_s=1,
                auth_public_key_file=public_key,
            )
        )
    assert code == 1 and "cannot connect to NATS" in line


def test_port_in_use_is_one_line(nats_server, public_key):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        code, line = _start_failure(
            _env(
                "MLMESH_SCHEDULER_",
                nats_url=nats_server.url,
                nats_creds_file=nats_server.creds("scheduler"),
                grpc_port=busy,
                auth_public_key_file=public_key,
            )
        )
    assert code == 1 and f"cannot bind gRPC to 127.0.0.1:{busy}" in line
