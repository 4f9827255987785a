"""The service bootstrap (`serve`) end to end against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mlmesh.common.auth import current_identity
from mlmesh.common.grpc_server import Runtime, StartupError, serve

pytestmark = pytest.mark.timeout(60)

SERVICE = "mlmesh.commontest.v1.Probe"


async def _echo(request: bytes, context) -> bytes:
    return f"{current_identity().team}:".encode() + request


HANDLER = grpc.method_handlers_generic_handler(SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.status, reply.read().decode()


async def _wait_ready(path, task: asyncio.Task, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if task.done():
            task.result()  # raises what `serve` raised
            raise AssertionError("serve returned before it was ready")
        if time.monotonic() > deadline:
            raise AssertionError("no ready file")
        await asyncio.sleep(0.05)
    return json.loads(path.read_text())


async def _list_services(channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    async for reply in call:
        return {s.name for s in reply.list_services_response.service}
    raise AssertionError("no reflection reply")


async def test_serve_starts_serves_and_stops_cleanly(nats_server, make_settings, signing_key, tmp_path):
    ready = tmp_path / "run" / "ready.json"
    settings = make_settings(
        nats_url=nats_server.url,
        nats_creds_file=nats_server.creds("admin"),
        grpc_port=0,
        metrics_port=0,
        ready_file=ready,
        shutdown_grace_s=1.0,
    )
    wired: dict = {}
    shutdown_hooks: list[str] = []

    async def on_shutdown() -> None:
        shutdown_hooks.append("ran")

    async def register(runtime: Runtime):
        runtime.server.add_generic_rpc_handlers((HANDLER,))
        runtime.on_shutdown.append(on_shutdown)
        wired["runtime"] = runtime
        return [SERVICE]

    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, register, stop))
    try:
        info = await _wait_ready(ready, task)
        assert info["service"] == "commontest" and info["grpc_port"] > 0 and info["metrics_port"] > 0
        runtime: Runtime = wired["runtime"]
        assert runtime.nc.is_connected

        async with grpc.aio.insecure_channel(f"127.0.0.1:{info['grpc_port']}") as channel:
            health_stub = health_pb2_grpc.HealthStub(channel)
            # No token needed for health or reflection.
            for name in ("", SERVICE):
                reply = await health_stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert await _list_services(channel) >= {
                SERVICE,
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }

            echo = channel.unary_unary(f"/{SERVICE}/Echo")
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await echo(b"hi", timeout=10)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            token = signing_key.token(team="team-a")
            assert await echo(b"hi", metadata=(("authorization", f"Bearer {token}"),), timeout=10) == b"team-a:hi"

            status, text = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{info['metrics_port']}/metrics")
            assert status == 200
            ok_lines = [
                line
                for line in text.splitlines()
                if line.startswith("mlmesh_rpc_requests_total{")
                and f'method="/{SERVICE}/Echo"' in line
                and 'service="commontest"' in line
            ]
            codes = {line.split('code="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in ok_lines}
            assert codes.get("OK", 0) >= 1 and codes.get("UNAUTHENTICATED", 0) >= 1

            # Shutdown: a health watcher sees NOT_SERVING before the server goes away.
            watch = health_stub.Watch(health_pb2.HealthCheckRequest(service=""))
            first = await asyncio.wait_for(watch.read(), 10)
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            stop.set()
            second = await asyncio.wait_for(watch.read(), 10)
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()

            await asyncio.wait_for(task, 20)  # serve returns on its own
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            assert gone.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

        assert shutdown_hooks == ["ran"]
        assert runtime.nc.is_closed
        # The metrics socket is closed too, not merely left unserved.
        with pytest.raises(urllib.error.URLError) as refused:
            await asyncio.to_thread(_http_get, f"http://127.0.0.1:{info['metrics_port']}/metrics")
        assert isinstance(refused.value.reason, ConnectionRefusedError)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_serve_fails_fast_naming_nats_when_it_is_down(make_settings, tmp_path):
    ready = tmp_path / "ready.json"
    settings = make_settings(
        nats_url=f"nats://127.0.0.1:{_closed_port()}", nats_connect_timeout_s=1.0, ready_file=ready
    )
    registered = []

    async def register(runtime: Runtime):
        registered.append(runtime)
        return []

    started = time.monotonic()
    with pytest.raises(StartupError) as info:
        await asyncio.wait_for(serve(settings, register, asyncio.Event()), 15)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "NATS" in message and settings.nats_url in message
    assert "\n" not in message
    assert registered == [] and not ready.exists()
