"""The controller's async view of storage and the registry: resolve model and dataset references
to local directories, and register a run's output model."""

from __future__ import annotations

import asyncio
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
        self._channel = grpc.aio.insecure_channel(address)
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
