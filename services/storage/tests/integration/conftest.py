"""Storage core against a real nats-server (catalog) and, for the cold tier, real SeaweedFS.

Each test gets its own KV bucket and its own tier directories, so tests share the servers only.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from pathlib import Path

import pytest

from mlmesh.api.storage.v1 import artifact_pb2, storage_service_pb2
from mlmesh.common import events
from mlmesh.common.kv import KvRepository
from mlmesh.storage.adapters.catalog import Catalog
from mlmesh.storage.blobstore import FsTier
from mlmesh.storage.core import StorageCore

HOT = artifact_pb2.STORAGE_TIER_HOT
WARM = artifact_pb2.STORAGE_TIER_WARM
COLD = artifact_pb2.STORAGE_TIER_COLD
HERE = Path(__file__).parent


@pytest.fixture
async def nc(nats_server):
    # Ad-hoc buckets per test: the operator's credentials (the storage identity owns only its own).
    conn = await events.connect(nats_server.url, "storage-test", **nats_server.client_options())
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def bucket() -> str:
    return "artifacts_" + secrets.token_hex(4)


async def open_catalog(js, bucket: str) -> Catalog:
    return Catalog(await KvRepository.open(js, bucket, artifact_pb2.Artifact, "artifact"))


@pytest.fixture
async def catalog(nc, bucket) -> Catalog:
    return await open_catalog(nc.jetstream(), bucket)


@pytest.fixture
def dirs(tmp_path) -> dict[str, Path]:
    return {"hot": tmp_path / "hot", "warm": tmp_path / "warm"}


def make_core(catalog: Catalog, dirs: dict[str, Path], extra_tiers=None, **kwargs) -> StorageCore:
    tiers = {HOT: FsTier(dirs["hot"], HOT), WARM: FsTier(dirs["warm"], WARM), **(extra_tiers or {})}
    kwargs.setdefault("grace_s", 0.0)
    return StorageCore(catalog, tiers, dirs["hot"] / "staging", **kwargs)


@pytest.fixture
def core(catalog, dirs) -> StorageCore:
    return make_core(catalog, dirs)


def stage(core: StorageCore, upload_id: str, files: dict[str, bytes]) -> artifact_pb2.Manifest:
    """Write files into the upload's staging dir as a worker would; return their manifest."""
    root = core.stage_dir(upload_id)
    manifest = artifact_pb2.Manifest()
    for path, data in files.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        manifest.files.add(path=path, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    return manifest


def draft(team="team-a", name="ckpt", job_id="", step=0, metrics=None, tier=0) -> storage_service_pb2.ArtifactDraft:
    d = storage_service_pb2.ArtifactDraft(team=team, name=name, kind=artifact_pb2.ARTIFACT_KIND_GENERIC, tier=tier)
    if job_id:
        d.kind = artifact_pb2.ARTIFACT_KIND_CHECKPOINT
        d.checkpoint.job_id = job_id
        d.checkpoint.step = step
        d.checkpoint.metrics.update(metrics or {})
    return d


async def read_all(core: StorageCore, artifact, path: str, offset: int = 0, length: int = 0) -> bytes:
    return b"".join([piece async for piece in await core.open(artifact, path, offset, length)])


def worker_cmd(*args: str) -> list[str]:
    return [sys.executable, str(HERE / "_worker.py"), *args]


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLMESH_STORAGE_CRASH_AT", None)
    env.update(extra)
    return env
