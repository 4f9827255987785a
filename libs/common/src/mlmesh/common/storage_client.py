"""An async client of storage and its model registry for services (the trainer, the gateway):
resolve model and dataset references, fetch an artifact's files, register a model version."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from datetime import timedelta
from pathlib import Path

import grpc

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.storage.v1 import (
    model_registry_pb2,
    model_registry_service_pb2,
    model_registry_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
)
from mlmesh.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from mlmesh.common.tracing import traced_aio_channel

RPC_TIMEOUT_S = 60.0
DIRECT = storage_service_pb2.DirectAccessMethod


def _map(err: grpc.aio.AioRpcError, what: str, field: str) -> Exception:
    if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
        return NotFound(f"{what} not found")
    if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument.field(field, err.details() or "invalid reference")
    return Unavailable(f"storage: {err.details()}")


class StorageClient:
    def __init__(self, address: str, token: str):
        self._channel = traced_aio_channel(address)  # calls on a job's path join its trace
        self.storage = storage_service_pb2_grpc.StorageServiceStub(self._channel)
        self.registry = model_registry_service_pb2_grpc.ModelRegistryServiceStub(self._channel)
        self._meta = (("authorization", f"Bearer {token}"),)

    async def artifact_dir(self, artifact_id: str, team: str, field: str) -> Path:
        """Storage's read-only view of an artifact (hard links on its hot tier, no copy)."""
        request = storage_service_pb2.CreateDirectDownloadRequest(
            artifact_id=artifact_id, method=DIRECT.DIRECT_ACCESS_METHOD_FILESYSTEM
        )
        request.ttl.FromTimedelta(timedelta(hours=24))
        try:
            grant = await self.storage.CreateDirectDownload(request, metadata=self._meta, timeout=RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise _map(err, f"artifact {artifact_id}", field) from None
        if grant.artifact.meta.team != team:
            raise NotFound(f"artifact {artifact_id} not found")  # the run's team must own it
        path = Path(grant.filesystem_path)
        if not await asyncio.to_thread(path.is_dir):
            raise FailedPrecondition(
                f"storage's directory for artifact {artifact_id} is not on this host ({path}); "
                "the trainer needs a filesystem shared with storage"
            )
        return path

    async def download_artifact(self, artifact_id: str, team: str, dest: Path, field: str) -> int:
        """Write an artifact's files under `dest` (which must not exist yet), each checked against
        the manifest's size and SHA-256; returns the bytes written. Storage's own directory is
        copied (hard links where the filesystem allows) when it is visible here, else every file
        streams through `Download`. On any failure `dest` is removed: nothing half-written stays."""
        try:
            reply = await self.storage.GetArtifact(
                storage_service_pb2.GetArtifactRequest(artifact_id=artifact_id),
                metadata=self._meta,
                timeout=RPC_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            raise _map(err, f"artifact {artifact_id}", field) from None
        artifact = reply.artifact
        if artifact.meta.team != team:
            raise NotFound(f"artifact {artifact_id} not found")
        local = await self._local_dir(artifact_id)
        await asyncio.to_thread(dest.mkdir, parents=True)  # raises if it exists: never removed below
        try:
            total = 0
            for entry in artifact.manifest.files:
                target = _inside(dest, entry.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                if local is not None and (local / entry.path).is_file():
                    await asyncio.to_thread(_link_or_copy, local / entry.path, target)
                else:
                    await self._stream_file(artifact_id, entry.path, target, field)
                await asyncio.to_thread(_verify, target, entry.size_bytes, entry.sha256)
                total += entry.size_bytes
            return total
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, dest, True)
            raise

    async def _local_dir(self, artifact_id: str) -> Path | None:
        request = storage_service_pb2.CreateDirectDownloadRequest(
            artifact_id=artifact_id, method=DIRECT.DIRECT_ACCESS_METHOD_FILESYSTEM
        )
        request.ttl.FromTimedelta(timedelta(hours=1))
        try:
            grant = await self.storage.CreateDirectDownload(request, metadata=self._meta, timeout=RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return None  # no filesystem grant (remote storage, other tier): stream instead
        path = Path(grant.filesystem_path) if grant.filesystem_path else None
        return path if path is not None and await asyncio.to_thread(path.is_dir) else None

    async def _stream_file(self, artifact_id: str, path: str, target: Path, field: str) -> None:
        request = storage_service_pb2.DownloadRequest(artifact_id=artifact_id, path=path)
        try:
            with target.open("wb") as out:
                async for chunk in self.storage.Download(request, metadata=self._meta, timeout=RPC_TIMEOUT_S * 10):
                    out.write(chunk.data)
        except grpc.aio.AioRpcError as err:
            raise _map(err, f"artifact {artifact_id} file {path}", field) from None

    async def model_version(self, name: str, version: int = 0, alias: str = "") -> model_registry_pb2.ModelVersion:
        """A registry version by number (0 = the latest) or by alias; NotFound for another team's
        model is the caller's check (the version carries its team)."""
        ref = f"model://{name}@{alias or version or ''}".rstrip("@")
        try:
            if alias:
                reply = await self.registry.ResolveAlias(
                    model_registry_service_pb2.ResolveAliasRequest(name=name, alias=alias),
                    metadata=self._meta,
                    timeout=RPC_TIMEOUT_S,
                )
            else:
                reply = await self.registry.GetModelVersion(
                    model_registry_service_pb2.GetModelVersionRequest(name=name, version=version),
                    metadata=self._meta,
                    timeout=RPC_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as err:
            raise _map(err, f"model {ref}", "model") from None
        return reply.model_version

    async def resolve_model(
        self, ref: str, team: str, field: str
    ) -> tuple[str, model_registry_pb2.ModelVersion | None]:
        """model://name@version|alias -> the version and its artifact id."""
        body = ref.removeprefix("model://")
        name, _, selector = body.partition("@")
        try:
            if selector.isdigit() or not selector:
                reply = await self.registry.GetModelVersion(
                    model_registry_service_pb2.GetModelVersionRequest(name=name, version=int(selector or 0)),
                    metadata=self._meta,
                    timeout=RPC_TIMEOUT_S,
                )
            else:
                reply = await self.registry.ResolveAlias(
                    model_registry_service_pb2.ResolveAliasRequest(name=name, alias=selector),
                    metadata=self._meta,
                    timeout=RPC_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as err:
            raise _map(err, f"model {ref}", field) from None
        version = reply.model_version
        if version.team != team:
            raise NotFound(f"model {ref} not found")
        return version.artifact_id, version

    async def register(
        self,
        *,
        name: str,
        team: str,
        artifact_id: str,
        adapter: bool,
        base_model: str,
        task: int,
        metrics: dict[str, float],
        lineage: model_registry_pb2.Lineage,
        aliases: list[str],
        properties: dict[str, str],
        request_id: str,
    ) -> model_registry_pb2.ModelVersion:
        mv = model_registry_pb2.ModelVersion(
            name=name,
            team=team,
            artifact_id=artifact_id,
            weights_kind=model_registry_pb2.WEIGHTS_KIND_ADAPTER if adapter else model_registry_pb2.WEIGHTS_KIND_FULL,
            base_model=base_model if adapter else "",
            adapter_type="lora" if adapter else "",
            framework="peft" if adapter else "transformers",
            task=task or common_pb2.MODEL_TASK_UNSPECIFIED,
            lineage=lineage,
        )
        mv.metrics.update(metrics)
        mv.properties.update(properties)
        try:
            reply = await self.registry.RegisterModelVersion(
                model_registry_service_pb2.RegisterModelVersionRequest(
                    model_version=mv, aliases=aliases, request_id=request_id
                ),
                metadata=self._meta,
                timeout=RPC_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                reason = f"registration refused: {err.details()}"
                raise InvalidArgument.field("spec.trainer.output_model_name", reason) from None
            raise Unavailable(f"model registry: {err.details()}") from None
        return reply.model_version

    async def close(self) -> None:
        await self._channel.close()


def _inside(root: Path, rel: str) -> Path:
    target = (root / rel).resolve()
    if not rel or rel.startswith("/") or root.resolve() not in target.parents:
        raise FailedPrecondition(f"artifact file path {rel!r} leaves the artifact")
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _verify(path: Path, size: int, sha256: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    if path.stat().st_size != size or digest.hexdigest() != sha256:
        raise FailedPrecondition(f"artifact file {path.name} does not match its manifest (size or sha256)")
