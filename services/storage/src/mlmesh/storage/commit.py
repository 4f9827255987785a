"""The commit protocol, refcount-safe blob release and orphan GC.

Commit of upload `u` into tier T (crash points in brackets):
  1. validate the manifest                                                  [validated]
  2. per file: hash the staged file (one pass: sha256 + chunk index)        [hashed]
     compare with the manifest (FailedPrecondition on any difference), then
     put it into T: chunk index durable first                               [sidecar_written]
     blob renamed in (same filesystem: no copy), then directory fsync       [blob_renamed]
                                                                            [blob_placed]
     A file not staged must already be in T (de-duplication) or in another tier (copied, verified).
  3. every blob durable in T                                                [blobs_placed]
  4. THE COMMIT POINT: create the `Artifact` record (COMMITTED) in KV       [recorded]
  5. remove the staging directory                                           [cleaned]
A crash before 4 leaves the catalog as it was plus unreferenced blobs, which `gc_orphans` frees.
A crash after 4 leaves a complete artifact. Retrying a commit with the same upload id is safe: it
returns the artifact already committed (same manifest digest) or finishes the job.

Deletion of blobs always goes through `release_blobs`: a blob leaves a tier only when no record
placed in that tier lists it (read fresh from KV) AND it was not written or touched within the grace
period. Commits and moves touch every blob they rely on, so a GC racing a commit keeps its blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlmesh.api.storage.v1 import artifact_pb2, storage_service_pb2
from mlmesh.common.clock import now_ts
from mlmesh.common.errors import AlreadyExists, FailedPrecondition, NotFound
from mlmesh.storage.adapters.catalog import Catalog
from mlmesh.storage.blobstore import FsTier, Tier, corruption, hash_file
from mlmesh.storage.domain.manifest import manifest_digest, validate_manifest
from mlmesh.storage.domain.refs import referenced
from mlmesh.storage.faults import crash_point

log = logging.getLogger("mlmesh.storage.commit")

HOT = artifact_pb2.STORAGE_TIER_HOT
TIER_ORDER = (artifact_pb2.STORAGE_TIER_HOT, artifact_pb2.STORAGE_TIER_WARM, artifact_pb2.STORAGE_TIER_COLD)


def sources_for(tiers: Mapping[int, Tier], digest: str, prefer: int) -> list[Tier]:
    """Tiers to read a blob from: the preferred one first, then hot, warm, cold."""
    order = [prefer, *(t for t in TIER_ORDER if t != prefer)]
    return [tiers[t] for t in order if t in tiers]


def copy_blob(tiers: Mapping[int, Tier], digest: str, target: Tier, prefer: int) -> None:
    """Make `digest` present in `target`, copying it (verified on read and re-hashed on write)
    from whichever other tier holds it. No-op (plus a touch) when `target` has it."""
    if target.has(digest):
        target.touch(digest)
        if target.has(digest):
            return
    for source in sources_for(tiers, digest, prefer):
        if source is target or not source.has(digest):
            continue
        target.put_stream(source.read_index(digest), source.open_range(digest))
        return
    raise corruption(digest, "blob missing from every tier")


def _place_file(tiers: Mapping[int, Tier], target: Tier, staging: Path, entry: artifact_pb2.FileEntry) -> None:
    src = staging / entry.path
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise FailedPrecondition(f"staged {entry.path!r} is not a regular file")
        # Flush the writer's bytes to disk while hashing them (the blob store fsyncs before the
        # rename anyway; this overlaps the disk write-back with the CPU work).
        with ThreadPoolExecutor(1, thread_name_prefix="stage-fsync") as pool:
            flushed = pool.submit(_fsync_path, src)
            index = hash_file(src)
            flushed.result()
        crash_point("hashed")
        if index.digest != entry.sha256 or index.size != entry.size_bytes:
            raise FailedPrecondition(
                f"staged {entry.path!r} has {index.size} bytes, sha256 {index.digest}; "
                f"the manifest says {entry.size_bytes} bytes, sha256 {entry.sha256}"
            )
        target.put_file(index, src, move=isinstance(target, FsTier))
    else:
        # Not staged: the client skipped a file whose content the store already holds.
        if not any(t.has(entry.sha256) for t in tiers.values()):
            raise FailedPrecondition(f"file {entry.path!r} was not uploaded")
        copy_blob(tiers, entry.sha256, target, target.tier)
        stored = target.size(entry.sha256)
        if stored != entry.size_bytes:
            raise FailedPrecondition(f"file {entry.path!r}: stored content has {stored} bytes, not {entry.size_bytes}")
    crash_point("blob_placed")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_artifact(
    artifact_id: str, draft: storage_service_pb2.ArtifactDraft, manifest: artifact_pb2.Manifest, tier: int
) -> artifact_pb2.Artifact:
    now = now_ts()
    a = artifact_pb2.Artifact(
        name=draft.name,
        kind=draft.kind,
        state=artifact_pb2.ARTIFACT_STATE_COMMITTED,
        manifest=manifest,
        tier=tier,
        digest=manifest_digest(manifest),
        last_access_time=now,
    )
    a.meta.id = artifact_id
    a.meta.team = draft.team
    a.meta.labels.update(draft.labels)
    a.meta.create_time.CopyFrom(now)
    a.meta.update_time.CopyFrom(now)
    if draft.HasField("checkpoint"):
        a.checkpoint.CopyFrom(draft.checkpoint)
    if draft.HasField("dataset"):
        a.dataset.CopyFrom(draft.dataset)
    return a


async def commit(
    catalog: Catalog,
    tiers: Mapping[int, Tier],
    staging: Path,
    artifact_id: str,
    draft: storage_service_pb2.ArtifactDraft,
    manifest: artifact_pb2.Manifest,
    *,
    grace_s: float,
    parallel: int = 4,
) -> artifact_pb2.Artifact:
    """Run the commit protocol (module docstring). Returns the committed record."""
    manifest = validate_manifest(manifest)
    crash_point("validated")
    tier_id = draft.tier or HOT
    if tier_id not in tiers:
        raise FailedPrecondition(f"tier {artifact_pb2.StorageTier.Name(tier_id)} is not configured")
    target = tiers[tier_id]
    digest = manifest_digest(manifest)
    with contextlib.suppress(NotFound):
        existing = await catalog.get(artifact_id)
        return _same_commit(existing, draft, digest)

    started = time.time()
    limit = asyncio.Semaphore(parallel)

    async def place(entry: artifact_pb2.FileEntry) -> None:
        async with limit:
            await asyncio.to_thread(_place_file, tiers, target, staging, entry)

    # Largest first, so the long hashes start early.
    await asyncio.gather(*(place(f) for f in sorted(manifest.files, key=lambda f: -f.size_bytes)))
    crash_point("blobs_placed")
    if time.time() - started > grace_s / 4:
        # Slow commit: a GC may have aged our early blobs; touch and re-check them all.
        await asyncio.to_thread(_touch_all, target, {f.sha256 for f in manifest.files})

    artifact = build_artifact(artifact_id, draft, manifest, tier_id)
    try:
        artifact = await catalog.create(artifact)  # the commit point
    except AlreadyExists:
        return _same_commit(await catalog.get(artifact_id), draft, digest)
    crash_point("recorded")
    await asyncio.to_thread(shutil.rmtree, staging, True)
    crash_point("cleaned")
    return artifact


def _same_commit(existing: artifact_pb2.Artifact, draft, digest: str) -> artifact_pb2.Artifact:
    if existing.digest == digest and existing.meta.team == draft.team:
        return existing  # a retried commit of the same upload
    raise AlreadyExists(f"artifact {existing.meta.id} already exists with other content")


def _touch_all(target: Tier, digests: Iterable[str]) -> None:
    for d in digests:
        target.touch(d)
        if not target.has(d):
            raise FailedPrecondition("a blob was collected while the commit ran; upload the files again")


async def release_blobs(catalog: Catalog, tier: Tier, digests: Iterable[str], grace_s: float) -> list[str]:
    """Delete from `tier` those of `digests` that no record placed in `tier` lists and that were not
    written or touched within `grace_s`. Returns the digests deleted."""
    digests = set(digests)
    if not digests:
        return []
    refs = referenced(await catalog.snapshot(), tier.tier)
    cutoff = time.time() - grace_s
    freed = []
    for d in sorted(digests):
        if refs[d] == 0 and await asyncio.to_thread(tier.delete_if_idle, d, cutoff):
            freed.append(d)
    return freed


async def gc_orphans(catalog: Catalog, tiers: Mapping[int, Tier], older_than_s: float) -> dict[str, int]:
    """Delete blobs that no record placed in their tier references and that are older than
    `older_than_s`, plus crash debris (temp files, indexes without a blob) as old. Returns counts."""
    counts = {"blobs": 0, "bytes": 0, "debris": 0}
    for tier in tiers.values():
        cutoff = time.time() - older_than_s
        # List first, read the catalog after: a blob committed in between is in the catalog.
        old = await asyncio.to_thread(lambda t=tier, c=cutoff: [b for b in t.iter_blobs() if b.mtime < c])
        if old:
            refs = referenced(await catalog.snapshot(), tier.tier)
            for blob in old:
                if refs[blob.digest] == 0 and await asyncio.to_thread(tier.delete_if_idle, blob.digest, cutoff):
                    counts["blobs"] += 1
                    counts["bytes"] += blob.size
                    log.info("gc: freed blob %s (%d bytes) from tier %s", blob.digest, blob.size, tier.tier)
        debris = getattr(tier, "iter_debris", None)
        if debris is not None:
            for item, mtime in await asyncio.to_thread(lambda d=debris: list(d())):
                if mtime < cutoff:
                    await asyncio.to_thread(tier.delete_debris, item)
                    counts["debris"] += 1
    return counts
