"""Pytest fixtures with real servers (auto-loaded through the `pytest11` entry point).

Each fixture is session-scoped and lazy: a server starts only when a test asks for it, on free
127.0.0.1 ports under the session's tmp dir, and is stopped explicitly in `finally`. Should the test
process die without teardown, PR_SET_PDEATHSIG kills the servers with it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlmesh.local.servers import NatsServer, S3Server, TritonServer, ValkeyServer

START_TIMEOUT = 90.0  # generous: CI runners are slow and the machine may be shared


def _serve(server_cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    server = server_cls(tmp_path_factory.mktemp(server_cls.name))
    try:
        server.start(timeout=START_TIMEOUT)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """nats-server in operator mode with every platform stream and bucket created (as `mlmesh up`
    does); `nats_server.creds(identity)` / `.client_options()` / `.service_settings(identity)`."""
    for server in _serve(NatsServer, tmp_path_factory):
        server.bootstrap()
        yield server


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    yield from _serve(ValkeyServer, tmp_path_factory)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from _serve(S3Server, tmp_path_factory)


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    yield from _serve(TritonServer, tmp_path_factory)
