"""The artifact catalog: `Artifact` records in the JetStream KV bucket `artifacts`, keyed by id.

Creating a record is the commit point of an artifact; every later change is compare-and-set on
the revision read (`meta.revision`), so a tier move and a delete racing on one record cannot both
win.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.common import contracts
from mlmesh.common.kv import KvRepository

ARTIFACTS_BUCKET = contracts.ARTIFACTS


class Catalog:
    def __init__(self, repo: KvRepository[artifact_pb2.Artifact]):
        self.repo = repo

    @classmethod
    async def open(cls, js: JetStreamContext) -> Catalog:
        return cls(await KvRepository.open(js, ARTIFACTS_BUCKET, artifact_pb2.Artifact, "artifact"))

    async def get(self, artifact_id: str) -> artifact_pb2.Artifact:
        v = await self.repo.get(artifact_id)
        v.value.meta.revision = v.revision
        return v.value

    async def create(self, artifact: artifact_pb2.Artifact) -> artifact_pb2.Artifact:
        artifact.meta.revision = await self.repo.create(artifact.meta.id, artifact)
        return artifact

    async def update(self, artifact: artifact_pb2.Artifact) -> artifact_pb2.Artifact:
        """CAS on `artifact.meta.revision`; Conflict when the record changed since it was read."""
        artifact.meta.revision = await self.repo.update(artifact.meta.id, artifact, artifact.meta.revision)
        return artifact

    async def mutate(
        self, artifact_id: str, change: Callable[[artifact_pb2.Artifact], artifact_pb2.Artifact | None]
    ) -> artifact_pb2.Artifact:
        v = await self.repo.mutate(artifact_id, change)
        v.value.meta.revision = v.revision
        return v.value

    async def delete(self, artifact: artifact_pb2.Artifact) -> None:
        await self.repo.delete(artifact.meta.id, artifact.meta.revision)

    async def snapshot(self) -> list[artifact_pb2.Artifact]:
        """Every record, read fresh from KV (never a cached view: blob deletion decides on it)."""
        out: dict[str, artifact_pb2.Artifact] = {}
        async for change in self.repo.watch():
            if change is None:
                break
            key, v = change
            if v is None:
                out.pop(key, None)
            else:
                v.value.meta.revision = v.revision
                out[key] = v.value
        return list(out.values())
