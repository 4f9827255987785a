"""NodeAgentService through a real in-process gRPC server (the platform's interceptors: auth and
error mapping) with real worker processes, publishing WorkerExited into a real nats-server."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import node_agent_service_pb2 as api
from mlmesh.api.fabric.v1 import node_agent_service_pb2_grpc
from mlmesh.common import events
from mlmesh.common.auth import generate_signing_key, mint_service_token, mint_token, write_secret
from mlmesh.common.grpc_server import build_server, make_verifier
from mlmesh.fabric.agent.servicer import LOG_CHUNK_BYTES, NodeAgentServicer
from mlmesh.fabric.agent.workers import WorkerManager, exited_subject
from mlmesh.fabric.settings import FabricSettings

pytestmark = pytest.mark.timeout(60)


@dataclass
class Agent:
    node_id: str
    stub: node_agent_service_pb2_grpc.NodeAgentServiceStub
    manager: WorkerManager
    js: object
    service: tuple
    developer: tuple
    admin: tuple

    async def exits(self, run_id: str, count: int, timeout: float = 20.0) -> list[events.Event]:
        """The run's WorkerExited events, read back from the JetStream stream."""
        sub = await self.js.subscribe(exited_subject(self.node_id, run_id), ordered_consumer=True)
        try:
            got = []
            deadline = time.monotonic() + timeout
            while len(got) < count:
                msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
                got.append(events.decode_event(msg, events_pb2.WorkerExited))
            return sorted(got, key=lambda e: e.data.rank)
        finally:
            await sub.unsubscribe()


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def agent(nats_server, tmp_path: Path):
    private, public = generate_signing_key()
    write_secret(tmp_path / "public.pem", public)
    settings = FabricSettings(
        nats_url=nats_server.url,
        nats_creds_file=nats_server.creds("fabric-agent"),
        auth_public_key_file=tmp_path / "public.pem",
        grpc_port=0,
        metrics_port=-1,
    )
    nc = await events.connect(nats_server.url, name="test-agent-service", **nats_server.client_options())
    js = nc.jetstream()
    await events.ensure_streams(js)
    node_id = f"node-{uuid.uuid4().hex[:8]}"
    manager = WorkerManager(node_id, events.EventPublisher(js, source=f"//mlmesh/fabric/agent/{node_id}"), tmp_path)
    server = build_server(settings, make_verifier(settings))
    node_agent_service_pb2_grpc.add_NodeAgentServiceServicer_to_server(NodeAgentServicer(manager), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Agent(
            node_id=node_id,
            stub=node_agent_service_pb2_grpc.NodeAgentServiceStub(channel),
            manager=manager,
            js=js,
            service=bearer(mint_service_token(private, "trainer")),
            developer=bearer(mint_token(private, subject="alice", team="team-a", roles=["developer"])),
            admin=bearer(mint_token(private, subject="root", team="platform", roles=["admin"])),
        )
    finally:
        await manager.stop_all(grace_s=0)
        await channel.close()
        await server.stop(0)
        await nc.close()


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


PRINT_RANK = "import os; print('RANK=%s WORLD_SIZE=%s' % (os.environ['RANK'], os.environ['WORLD_SIZE']), flush=True)"


def launch(run_id: str, workers: list[api.WorkerLaunch], world: int | None = None) -> api.LaunchWorkersRequest:
    return api.LaunchWorkersRequest(
        job_id="job-svc", run_id=run_id, attempt=0, world_size=world or len(workers), workers=workers
    )


async def read_log(agent: Agent, run_id: str, rank: int, *, offset: int = 0, follow: bool = False) -> bytes:
    chunks = [
        c
        async for c in agent.stub.StreamWorkerLogs(
            api.StreamWorkerLogsRequest(run_id=run_id, rank=rank, offset_bytes=offset, follow=follow),
            metadata=agent.service,
            timeout=30,
        )
    ]
    pos = chunks[0].offset_bytes if chunks else 0
    for c in chunks:  # contiguous, and never more than 64 KiB each
        assert c.offset_bytes == pos and 0 < len(c.data) <= LOG_CHUNK_BYTES
        pos += len(c.data)
    return b"".join(c.data for c in chunks)


def read_bytes(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def bad_fields(err: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(err)
    fields = set()
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields |= {v.field for v in bad.field_violations}
    return fields


async def test_launch_two_ranks_logs_exit_codes_and_events_on_nats(agent: Agent):
    req = launch(
        "run-ok",
        [
            api.WorkerLaunch(rank=0, command=py(PRINT_RANK)),
            api.WorkerLaunch(rank=1, local_rank=1, command=py(PRINT_RANK + "; raise SystemExit(3)")),
        ],
    )
    resp = await agent.stub.LaunchWorkers(req, metadata=agent.service, timeout=20)
    assert [w.rank for w in resp.workers] == [0, 1]
    assert all(w.pid > 0 and w.node_id == agent.node_id and w.job_id == "job-svc" for w in resp.workers)
    assert all(w.state in (api.WORKER_STATE_RUNNING, api.WORKER_STATE_EXITED) for w in resp.workers)

    exits = await agent.exits("run-ok", 2)
    assert [e.id for e in exits] == ["run-ok-0-0", "run-ok-1-0"]
    assert [e.data.exit_code for e in exits] == [0, 3]
    for e, w in zip(exits, resp.workers, strict=True):
        assert e.type == "mlmesh.events.v1.WorkerExited" and e.source == f"//mlmesh/fabric/agent/{agent.node_id}"
        assert e.data.WhichOneof("termination") == "exit_code"
        assert (e.data.node_id, e.data.job_id, e.data.run_id, e.data.pid) == (agent.node_id, "job-svc", "run-ok", w.pid)
        assert not e.data.stopped_by_agent and e.data.exit_time.seconds > 0

    got = await agent.stub.GetWorkers(
        api.GetWorkersRequest(run_id="run-ok", include_exited=True), metadata=agent.service, timeout=10
    )
    assert [(w.rank, w.state, w.exit_code) for w in got.workers] == [
        (0, api.WORKER_STATE_EXITED, 0),
        (1, api.WORKER_STATE_EXITED, 3),
    ]
    assert not any(w.HasField("signal") for w in got.workers)
    running = await agent.stub.GetWorkers(api.GetWorkersRequest(run_id="run-ok"), metadata=agent.service, timeout=10)
    assert list(running.workers) == []

    assert await read_log(agent, "run-ok", 0) == b"RANK=0 WORLD_SIZE=2\n"
    assert await read_log(agent, "run-ok", 1) == b"RANK=1 WORLD_SIZE=2\n"
    assert await read_log(agent, "run-ok", 1, offset=-13) == b"WORLD_SIZE=2\n"


async def test_stop_a_worker_ignoring_sigterm_is_killed_after_the_grace_period(agent: Agent):
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)"
    )
    resp = await agent.stub.LaunchWorkers(
        launch("run-stuck", [api.WorkerLaunch(rank=0, command=py(code))]), metadata=agent.service, timeout=20
    )
    log_path = Path(resp.workers[0].log_path)
    deadline = time.monotonic() + 20
    while b"ready" not in read_bytes(log_path):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    started = time.monotonic()
    stopped = await agent.stub.StopWorkers(
        api.StopWorkersRequest(run_id="run-stuck", grace_period=duration_pb2.Duration(seconds=1)),
        metadata=agent.service,
        timeout=20,
    )
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 4
    [w] = stopped.workers
    assert w.state == api.WORKER_STATE_EXITED and w.signal == 9 and not w.HasField("exit_code")
    [event] = await agent.exits("run-stuck", 1)
    assert event.data.WhichOneof("termination") == "signal" and event.data.signal == 9
    assert event.data.stopped_by_agent

    # Idempotent, and an admin may stop too.
    again = await agent.stub.StopWorkers(api.StopWorkersRequest(run_id="run-stuck"), metadata=agent.admin, timeout=20)
    assert [x.signal for x in again.workers] == [9]


async def test_bad_requests_are_invalid_argument_naming_the_field(agent: Agent):
    escaping = launch("run-bad", [api.WorkerLaunch(rank=0, command=py("pass"), log_path="/etc/mlmesh-pwned.log")])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.stub.LaunchWorkers(escaping, metadata=agent.service, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(info.value) == {"workers[0].log_path"}
    assert read_bytes(Path("/etc/mlmesh-pwned.log")) == b""

    duplicate = launch(
        "run-bad", [api.WorkerLaunch(rank=0, command=py("pass")), api.WorkerLaunch(rank=0, command=py("pass"))]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.stub.LaunchWorkers(duplicate, metadata=agent.service, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(info.value) == {"workers[1].rank"}

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.stub.StopWorkers(api.StopWorkersRequest(run_id="no-such-run"), metadata=agent.service, timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    negative = api.StopWorkersRequest(run_id="no-such-run", grace_period=duration_pb2.Duration(seconds=-1))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.stub.StopWorkers(negative, metadata=agent.service, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(info.value) == {"grace_period"}

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_log(agent, "no-such-run", 0)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert agent.manager.list(include_exited=True) == []


async def test_launch_and_stop_need_the_service_role(agent: Agent):
    req = launch("run-auth", [api.WorkerLaunch(rank=0, command=py("pass"))])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.stub.LaunchWorkers(req, metadata=agent.developer, timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.stub.StopWorkers(api.StopWorkersRequest(run_id="run-auth"), metadata=agent.developer, timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.stub.GetWorkers(api.GetWorkersRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert agent.manager.list(include_exited=True) == []  # nothing ran

    resp = await agent.stub.LaunchWorkers(req, metadata=agent.admin, timeout=10)
    assert resp.workers[0].pid > 0
    listed = await agent.stub.GetWorkers(api.GetWorkersRequest(include_exited=True), metadata=agent.admin, timeout=10)
    assert [w.run_id for w in listed.workers] == ["run-auth"]


async def test_workers_and_logs_are_not_shown_to_team_members(agent: Agent):
    """A node runs every team's workers and a worker carries no team: only services and admins
    may list them or read their logs."""
    await agent.stub.LaunchWorkers(
        launch("run-private", [api.WorkerLaunch(rank=0, command=py("print('secret')"))]),
        metadata=agent.service,
        timeout=10,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.stub.GetWorkers(api.GetWorkersRequest(include_exited=True), metadata=agent.developer, timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    logs = agent.stub.StreamWorkerLogs(api.StreamWorkerLogsRequest(run_id="run-private"), metadata=agent.developer)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in logs:
            pass
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_stream_logs_follow_returns_the_whole_output_of_a_running_worker(agent: Agent):
    # ~300 KB over about a second, so the stream starts while the worker runs and needs many chunks.
    code = (
        "import sys, time\n"
        "for i in range(30):\n"
        "    sys.stdout.write(('line %03d ' % i) + 'x' * 10000 + '\\n')\n"
        "    sys.stdout.flush()\n"
        "    time.sleep(0.03)\n"
        "print('done', flush=True)\n"
    )
    expected = b"".join(b"line %03d " % i + b"x" * 10000 + b"\n" for i in range(30)) + b"done\n"
    resp = await agent.stub.LaunchWorkers(
        launch("run-follow", [api.WorkerLaunch(rank=0, command=py(code))]), metadata=agent.service, timeout=20
    )
    assert resp.workers[0].state == api.WORKER_STATE_RUNNING
    followed = await read_log(agent, "run-follow", 0, follow=True)
    assert followed == expected
    assert agent.manager.get("run-follow", 0).exit_code == 0
    assert await read_log(agent, "run-follow", 0, offset=len(expected) - 5) == b"done\n"
