"""StorageCore: the storage service's engine under the gRPC servicer.

API (all coroutines unless noted; team checks, quotas and upload sessions are the servicer's job):

    core = await StorageCore.create(js, hot_dir, warm_dir, s3=S3Config(...) | None, policy=TierPolicy(...))
    core.stage_dir(upload_id) -> Path          # sync; staging dir on the hot filesystem, created
    await core.discard_stage(upload_id)         # drop staged files (abort / expiry)
    await core.commit(upload_id, draft, manifest) -> Artifact
        # verifies every staged file (size, sha256) against the manifest, moves it into the
        # content-addressed blob store, then creates the COMMITTED record (the atomic point).
        # Files not staged must already be stored (de-duplication). Artifact id = upload id, so a
        # retried commit returns the same artifact. InvalidArgument / FailedPrecondition.
    await core.open(artifact, path, offset=0, length=0) -> AsyncIterator[bytes]
        # (NotFound / InvalidArgument raised by the await, before any byte) verified bytes of one file
        # (length 0 = to the end), pieces of <= 1 MiB; DataLoss on any
        # corruption; records the access and promotes a warm/cold artifact to hot in the background.
    await core.get(artifact_id) -> Artifact      # NotFound
    await core.list_all() -> list[Artifact]       # fresh snapshot of the catalog
    await core.delete(artifact_id, force=False)  # FailedPrecondition when pinned and not forced;
        # the record goes first, then blobs nothing else references (refcount-safe)
    await core.set_tier(artifact_id, tier) -> Artifact   # explicit move (SetArtifactTier)
    await core.tier_once() -> list[Move]          # one pass of the demotion policy
    await core.retention_once(job_id, team) -> list[str] # ids deleted by the job's retention policy
    await core.gc_once() -> dict                  # orphan blobs and crash debris older than grace
    await core.usage(team) -> Usage               # quota_bytes left 0 for the servicer to fill
    await core.drain()                            # wait for background promotions / access updates

Errors are `mlmesh.common.errors` classes; corruption is `DataLoss` (gRPC DATA_LOSS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

from nats.js import JetStreamContext

from mlmesh.api.storage.v1 import artifact_pb2, storage_service_pb2
from mlmesh.common.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from mlmesh.storage import commit as commit_protocol
from mlmesh.storage.adapters.catalog import Catalog
from mlmesh.storage.adapters.s3_tier import S3Config, S3Tier
from mlmesh.storage.blobstore import FsTier, Tier, corruption
from mlmesh.storage.domain.retention import CheckpointRef, Retention, select_deletions
from mlmesh.storage.domain.tiering import Move, TierPolicy, promotion
from mlmesh.storage.tiering import move_artifact, tier_item, tier_once

log = logging.getLogger("mlmesh.storage.core")

HOT = artifact_pb2.STORAGE_TIER_HOT
WARM = artifact_pb2.STORAGE_TIER_WARM
COLD = artifact_pb2.STORAGE_TIER_COLD
_UPLOAD_ID = re.compile(r"^[a-z0-9_-]{1,63}$")


class StorageCore:
    def __init__(
        self,
        catalog: Catalog,
        tiers: dict[int, Tier],
        staging_root: Path,
        *,
        policy: TierPolicy | None = None,
        grace_s: float = 3600.0,
        access_update_interval_s: float = 60.0,
        promote_on_read: bool = True,
        parallel: int = 4,
    ):
        self.catalog = catalog
        self.tiers = tiers
        self.staging_root = Path(staging_root)
        self.staging_root.mkdir(parents=True, exist_ok=True)
        self.policy = policy or TierPolicy(cold_enabled=COLD in tiers)
        self.grace_s = grace_s
        self.access_update_interval_s = access_update_interval_s
        self.promote_on_read = promote_on_read
        self.parallel = parallel
        self._background: dict[str, asyncio.Task] = {}

    @classmethod
    async def create(
        cls,
        js: JetStreamContext,
        hot_dir: Path | str,
        warm_dir: Path | str,
        s3: S3Config | None = None,
        **kwargs,
    ) -> StorageCore:
        """Tiers: hot = `hot_dir` (staging lives there too, so staged files rename in), warm =
        `warm_dir`, cold = the S3 bucket when configured."""
        tiers: dict[int, Tier] = {HOT: FsTier(Path(hot_dir), HOT), WARM: FsTier(Path(warm_dir), WARM)}
        if s3 is not None:
            tiers[COLD] = await asyncio.to_thread(S3Tier, s3)
        return cls(await Catalog.open(js), tiers, Path(hot_dir) / "staging", **kwargs)

    # --- uploads --------------------------------------------------------------------------------

    def stage_dir(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.fullmatch(upload_id or ""):
            raise InvalidArgument.field("upload_id", "must match [a-z0-9_-]{1,63}")
        path = self.staging_root / upload_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def discard_stage(self, upload_id: str) -> None:
        """Remove an upload's staged files (AbortUpload, expired sessions)."""
        path = self.stage_dir(upload_id)
        await asyncio.to_thread(shutil.rmtree, path, True)

    async def commit(
        self, upload_id: str, draft: storage_service_pb2.ArtifactDraft, manifest: artifact_pb2.Manifest
    ) -> artifact_pb2.Artifact:
        staging = self.stage_dir(upload_id)
        return await commit_protocol.commit(
            self.catalog, self.tiers, staging, upload_id, draft, manifest, grace_s=self.grace_s, parallel=self.parallel
        )

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, artifact_id: str) -> artifact_pb2.Artifact:
        return await self.catalog.get(artifact_id)

    async def list_all(self) -> list[artifact_pb2.Artifact]:
        return await self.catalog.snapshot()

    async def open(
        self, artifact: artifact_pb2.Artifact, path: str, offset: int = 0, length: int = 0
    ) -> AsyncIterator[bytes]:
        entry = next((f for f in artifact.manifest.files if f.path == path), None)
        if entry is None:
            raise NotFound(f"artifact {artifact.meta.id} has no file {path!r}")
        if offset < 0 or length < 0 or offset > entry.size_bytes:
            raise InvalidArgument.field("offset_bytes", f"range outside the file ({entry.size_bytes} bytes)")
        tier = await asyncio.to_thread(self._locate, entry.sha256, artifact.tier)
        self._after_read(artifact)
        return self._stream(tier, entry, offset, length)

    def _locate(self, digest: str, prefer: int) -> Tier:
        for tier in commit_protocol.sources_for(self.tiers, digest, prefer):
            if tier.has(digest):
                return tier
        raise corruption(digest, "blob of a committed artifact is missing from every tier")

    async def _stream(self, tier: Tier, entry: artifact_pb2.FileEntry, offset: int, length: int):
        it = tier.open_range(entry.sha256, offset, length)
        index = await asyncio.to_thread(tier.read_index, entry.sha256)
        if index.size != entry.size_bytes:
            raise corruption(entry.sha256, f"stored size {index.size} differs from the manifest's {entry.size_bytes}")
        try:
            while pieces := await asyncio.to_thread(_take, it, 4):  # a few pieces per thread hop
                for piece in pieces:
                    yield piece
        finally:
            await asyncio.to_thread(it.close)

    def _after_read(self, artifact: artifact_pb2.Artifact) -> None:
        aid = artifact.meta.id
        if aid in self._background:
            return
        stale = time.time() - artifact.last_access_time.ToSeconds() > self.access_update_interval_s
        move = promotion(tier_item(artifact)) if self.promote_on_read and HOT in self.tiers else None
        if not stale and move is None:
            return
        task = asyncio.create_task(self._record_access(aid, move), name=f"storage-access-{aid}")
        self._background[aid] = task
        task.add_done_callback(lambda _t: self._background.pop(aid, None))

    async def _record_access(self, artifact_id: str, move: Move | None) -> None:
        def touch(a: artifact_pb2.Artifact) -> artifact_pb2.Artifact:
            a.last_access_time.GetCurrentTime()
            return a

        try:
            await self.catalog.mutate(artifact_id, touch)
            if move is not None:
                await move_artifact(
                    self.catalog, self.tiers, artifact_id, HOT, grace_s=self.grace_s, parallel=self.parallel
                )
        except (NotFound, Conflict, FailedPrecondition) as exc:
            log.info("access update / promotion of %s skipped: %s", artifact_id, exc)
        except Exception:
            log.exception("promotion of %s failed", artifact_id)

    async def drain(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background.values()), return_exceptions=True)

    # --- lifecycle ------------------------------------------------------------------------------

    async def delete(self, artifact_id: str, *, force: bool = False) -> None:
        artifact = await self.catalog.get(artifact_id)
        if artifact.pinned and not force:
            raise FailedPrecondition(f"artifact {artifact_id} is pinned")
        await self.catalog.delete(artifact)  # CAS on the revision read
        tier = self.tiers.get(artifact.tier)
        if tier is not None:
            digests = {f.sha256 for f in artifact.manifest.files}
            await commit_protocol.release_blobs(self.catalog, tier, digests, self.grace_s)

    async def set_tier(self, artifact_id: str, tier: int) -> artifact_pb2.Artifact:
        return await move_artifact(self.catalog, self.tiers, artifact_id, tier, grace_s=self.grace_s)

    async def tier_once(self, now_s: float | None = None) -> list[Move]:
        return await tier_once(self.catalog, self.tiers, self.policy, grace_s=self.grace_s, now_s=now_s)

    async def retention_once(self, job_id: str, team: str) -> list[str]:
        # Only the team's own checkpoints: a checkpoint's job id is whatever its uploader wrote, so
        # another team could otherwise name this job and have its policy delete these.
        checkpoints = [
            a
            for a in await self.catalog.snapshot()
            if a.kind == artifact_pb2.ARTIFACT_KIND_CHECKPOINT
            and a.meta.team == team
            and a.checkpoint.job_id == job_id
            and a.state == artifact_pb2.ARTIFACT_STATE_COMMITTED
        ]
        if not checkpoints:
            return []
        newest = max(checkpoints, key=lambda a: (a.checkpoint.step, a.meta.create_time.ToNanoseconds()))
        r = newest.checkpoint.retention
        policy = Retention(r.keep_latest, r.keep_best, r.best_metric, r.best_metric_goal)
        refs = [
            CheckpointRef(
                a.meta.id,
                a.checkpoint.step,
                a.meta.create_time.ToNanoseconds() / 1e9,
                dict(a.checkpoint.metrics),
                a.pinned,
            )
            for a in checkpoints
        ]
        deleted = []
        for artifact_id in select_deletions(refs, policy):
            with contextlib.suppress(NotFound):
                await self.delete(artifact_id)
                deleted.append(artifact_id)
        return deleted

    async def gc_once(self, older_than_s: float | None = None) -> dict[str, int]:
        grace = self.grace_s if older_than_s is None else older_than_s
        return await commit_protocol.gc_orphans(self.catalog, self.tiers, grace)

    async def usage(self, team: str) -> artifact_pb2.Usage:
        mine = [a for a in await self.catalog.snapshot() if a.meta.team == team]
        per_tier: dict[int, dict[str, int]] = {}
        distinct: dict[str, int] = {}
        for a in mine:
            for f in a.manifest.files:
                per_tier.setdefault(a.tier, {})[f.sha256] = f.size_bytes
                distinct[f.sha256] = f.size_bytes
        usage = artifact_pb2.Usage(
            team=team,
            logical_bytes=sum(a.manifest.total_size_bytes for a in mine),
            stored_bytes=sum(distinct.values()),
            artifact_count=len(mine),
        )
        for tier in (HOT, WARM, COLD):
            if tier in self.tiers:
                capacity = self.policy.hot_capacity_bytes if tier == HOT else 0
                usage.tiers.add(tier=tier, stored_bytes=sum(per_tier.get(tier, {}).values()), capacity_bytes=capacity)
        return usage


def _take(it, n: int) -> list[bytes]:
    out = []
    for piece in it:
        out.append(piece)
        if len(out) == n:
            break
    return out
