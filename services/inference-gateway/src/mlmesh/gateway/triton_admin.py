"""Triton's model-control API on every backend: a deployment is loaded into, and unloaded from,
each Triton the gateway balances over."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2

from mlmesh.gateway.backends import BackendPool, TritonBackend

READY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LoadResult:
    backend: str
    error: str = ""  # empty on success


class TritonAdmin:
    def __init__(self, pool: BackendPool, load_timeout_s: float):
        self._pool = pool
        self._load_timeout_s = load_timeout_s

    @property
    def backends(self) -> list[TritonBackend]:
        return self._pool.backends

    async def load(self, triton: str, backends: list[TritonBackend] | None = None) -> list[LoadResult]:
        """(Re)load `triton` from the repository on the given backends (all by default), in
        parallel. Triton keeps serving the loaded versions until a reload succeeds."""
        targets = self.backends if backends is None else backends
        return list(await asyncio.gather(*(self._load_one(b, triton) for b in targets)))

    async def _load_one(self, backend: TritonBackend, triton: str) -> LoadResult:
        try:
            await backend.stub.RepositoryModelLoad(
                service_pb2.RepositoryModelLoadRequest(model_name=triton), timeout=self._load_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            return LoadResult(backend.grpc_url, exc.details() or exc.code().name)
        return LoadResult(backend.grpc_url)

    async def unload(self, triton: str) -> list[LoadResult]:
        async def one(backend: TritonBackend) -> LoadResult:
            try:
                await backend.stub.RepositoryModelUnload(
                    service_pb2.RepositoryModelUnloadRequest(model_name=triton), timeout=self._load_timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                return LoadResult(backend.grpc_url, exc.details() or exc.code().name)
            return LoadResult(backend.grpc_url)

        return list(await asyncio.gather(*(one(b) for b in self.backends)))

    async def ready(self, backend: TritonBackend, triton: str, versions: tuple[int, ...]) -> bool:
        """Whether every one of `versions` is ready on `backend`."""
        try:
            for version in versions:
                reply = await backend.stub.ModelReady(
                    service_pb2.ModelReadyRequest(name=triton, version=str(version)), timeout=READY_TIMEOUT_S
                )
                if not reply.ready:
                    return False
        except grpc.aio.AioRpcError:
            return False
        return True
