"""Wiring of the storage service: the core (blobs, tiers, catalog), upload sessions, quotas, the
StorageService and ModelRegistryService APIs, and the background tiering / GC loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from google.protobuf import struct_pb2

from mlmesh.api.storage.v1 import (
    artifact_pb2,
    model_registry_service_pb2,
    model_registry_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
)
from mlmesh.common.grpc_server import Runtime
from mlmesh.common.kv import KvRepository
from mlmesh.storage.adapters.s3_tier import S3Config
from mlmesh.storage.core import StorageCore
from mlmesh.storage.domain.tiering import TierPolicy
from mlmesh.storage.registry import KvArtifactCatalog, RegistryStore
from mlmesh.storage.registry_servicer import ModelRegistryServicer
from mlmesh.storage.servicer import QUOTAS_BUCKET, StorageServicer
from mlmesh.storage.settings import StorageSettings
from mlmesh.storage.uploads import Sessions

log = logging.getLogger("mlmesh.storage")
SERVICE_NAMES = [
    storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name,
    model_registry_service_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name,
]


def s3_config(settings: StorageSettings) -> S3Config | None:
    if not settings.s3_endpoint_url:
        return None
    return S3Config(
        endpoint_url=settings.s3_endpoint_url,
        bucket=settings.s3_bucket,
        access_key=settings.s3_access_key or "",
        secret_key=settings.s3_secret_key or "",
        region=settings.s3_region,
    )


async def _maintain(core: StorageCore, servicer: StorageServicer, sessions: Sessions, interval_s: float) -> None:
    """Demote idle artifacts (reads promote), drop expired uploads with their staged bytes, and
    collect orphaned blobs."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            for move in await core.tier_once():
                with contextlib.suppress(Exception):
                    await servicer.publish_tier_change(await core.get(move.id), move.source, move.reason)
            for session in await sessions.expired():
                await sessions.delete(session.upload_id)
                await core.discard_stage(session.upload_id)
            await core.gc_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("tiering pass failed")


async def register(runtime: Runtime) -> Iterable[str]:
    settings: StorageSettings = runtime.settings  # type: ignore[assignment]
    s3 = s3_config(settings)
    policy = TierPolicy(
        hot_idle_s=settings.hot_idle_s,
        warm_idle_s=settings.warm_idle_s,
        hot_capacity_bytes=settings.hot_capacity_bytes,
        cold_enabled=s3 is not None,
    )
    core = await StorageCore.create(runtime.js, settings.hot_dir, settings.warm_dir, s3, policy=policy)
    sessions = await Sessions.open(runtime.js)
    quotas = await KvRepository.open(runtime.js, QUOTAS_BUCKET, struct_pb2.Struct, "quota")
    servicer = StorageServicer(
        core,
        sessions,
        quotas,
        runtime.publisher,
        chunk_size=settings.chunk_size_bytes,
        upload_ttl_s=settings.upload_ttl_s,
        default_quota_bytes=settings.default_quota_bytes,
        s3=s3,
    )
    storage_service_pb2_grpc.add_StorageServiceServicer_to_server(servicer, runtime.server)

    store = await RegistryStore.open(runtime.js)
    runtime.on_shutdown.append(store.stop)
    artifacts = KvArtifactCatalog(await KvRepository.open(runtime.js, "artifacts", artifact_pb2.Artifact, "artifact"))
    registry = ModelRegistryServicer(store, runtime.publisher, artifacts)
    model_registry_service_pb2_grpc.add_ModelRegistryServiceServicer_to_server(registry, runtime.server)

    task = asyncio.create_task(_maintain(core, servicer, sessions, settings.tier_interval_s), name="storage-tiering")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await core.drain()

    runtime.on_shutdown.append(stop)
    return SERVICE_NAMES
