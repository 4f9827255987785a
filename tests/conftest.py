"""Shared fixtures for the repo-level tests: one signing key per session and service settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from mlmesh.common.auth import generate_signing_key, mint_token
from mlmesh.common.settings import ServiceSettings


class CommonTestSettings(ServiceSettings):
    """Settings of the throwaway service the common-library tests run."""

    service_name: ClassVar[str] = "commontest"
    model_config = SettingsConfigDict(env_prefix="MLMESH_COMMONTEST_", extra="ignore", frozen=True)


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes
    public_pem: bytes
    public_key_file: Path

    def token(self, *, subject: str = "alice", team: str = "team-a", roles: Iterable[str] = (), **kw) -> str:
        return mint_token(self.private_pem, subject=subject, team=team, roles=roles, **kw)


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    private_pem, public_pem = generate_signing_key()
    path = tmp_path_factory.mktemp("auth") / "signing.pub.pem"
    path.write_bytes(public_pem)
    return SigningKey(private_pem, public_pem, path)


@pytest.fixture
def make_settings(signing_key: SigningKey) -> Callable[..., CommonTestSettings]:
    """Build settings for the test service; keyword arguments override fields."""

    def make(**overrides) -> CommonTestSettings:
        values = {"auth_public_key_file": signing_key.public_key_file, "grpc_port": 0, "metrics_port": -1}
        return CommonTestSettings(**{**values, **overrides})

    return make


@pytest.fixture
def threaded_grpc_server(make_settings):
    """Serve gRPC servicers on a grpc.aio server with mlmesh's interceptors, on its own event loop
    in a thread (the sync clients under test block the test's thread). Call it with a function
    that registers servicers on the server; it returns the target address. Torn down after the test."""
    import asyncio
    import threading

    from mlmesh.common.grpc_server import build_server, make_verifier

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers = []

    def serve(register: Callable) -> str:
        async def start():
            settings = make_settings()
            srv = build_server(settings, make_verifier(settings))
            register(srv)
            port = srv.add_insecure_port("127.0.0.1:0")
            await srv.start()
            return srv, port

        srv, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        servers.append(srv)
        return f"127.0.0.1:{port}"

    try:
        yield serve
    finally:
        for srv in servers:
            asyncio.run_coroutine_threadsafe(srv.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
