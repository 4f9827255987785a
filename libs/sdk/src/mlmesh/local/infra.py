"""LocalInfra: start the requested servers in order, stop them all in reverse, whatever fails."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from mlmesh.local.errors import InfraError
from mlmesh.local.servers import SERVERS, NatsServer, S3Server, TritonServer, ValkeyServer

COMPONENTS = tuple(SERVERS)


class LocalInfra:
    """The real infrastructure of a local mesh under one state dir; a context manager."""

    nats: NatsServer | None
    valkey: ValkeyServer | None
    s3: S3Server | None
    triton: TritonServer | None

    def __init__(
        self,
        state_dir: Path,
        components: Iterable[str] = COMPONENTS,
        tie_to_parent: bool = True,
        ports: dict[str, int] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        wanted = list(dict.fromkeys(components))
        unknown = [c for c in wanted if c not in SERVERS]
        if unknown:
            raise InfraError(f"unknown component {unknown[0]!r}: choose from {', '.join(COMPONENTS)}")
        ports = ports or {}
        self._servers = {
            name: SERVERS[name](self.state_dir, port=ports.get(name), tie_to_parent=tie_to_parent)
            for name in COMPONENTS  # canonical order: nats, valkey, s3, triton
            if name in wanted
        }
        for name in COMPONENTS:
            setattr(self, name, self._servers.get(name))

    @property
    def servers(self) -> dict:
        return dict(self._servers)

    def start(self, timeout: float = 60, on_progress: Callable[[str], None] | None = None) -> None:
        """Start each server and wait for it; on any failure stop those started and re-raise."""
        started = []
        try:
            for name, server in self._servers.items():
                if on_progress:
                    on_progress(f"starting {name}")
                began = time.monotonic()
                started.append(server)
                server.start(timeout)
                if on_progress:
                    on_progress(f"{name} ready in {time.monotonic() - began:.1f}s")
        except BaseException:
            _stop_all(reversed(started))
            raise

    def stop(self) -> None:
        _stop_all(reversed(self._servers.values()))

    def endpoints(self) -> dict:
        return {name: server.endpoints() for name, server in self._servers.items()}

    def pids(self) -> list[int]:
        return [s.process.pid for s in self._servers.values() if s.process and s.process.pid]

    def __enter__(self) -> LocalInfra:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_all(servers: Iterable) -> None:
    """Stop every server even if one raises; re-raise the first error afterwards."""
    first: BaseException | None = None
    for server in servers:
        try:
            server.stop()
        except BaseException as exc:
            first = first or exc
    if first is not None:
        raise first
