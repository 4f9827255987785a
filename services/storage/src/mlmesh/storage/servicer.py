"""StorageService: uploads (streamed, resumable, or direct to a path or presigned URLs), atomic
commit, verified downloads with ranges, listing, deletion, tiers, usage and quotas.

Team scoping lives here: every artifact and upload belongs to the caller's team, and another
team's object answers NOT_FOUND. The commit protocol, blobs and tiers live in `StorageCore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

from google.protobuf import struct_pb2

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.storage.v1 import artifact_pb2, storage_service_pb2_grpc
from mlmesh.api.storage.v1 import storage_service_pb2 as api
from mlmesh.common import contracts
from mlmesh.common.auth import ROLE_ADMIN, ROLE_DEVELOPER, Identity, current_identity
from mlmesh.common.clock import duration_s, now_ts, ts_from_seconds
from mlmesh.common.errors import InvalidArgument, NotFound, PermissionDenied, QuotaExceeded, TooLarge
from mlmesh.common.events import EventPublisher, is_token, subject_token
from mlmesh.common.kv import KvRepository
from mlmesh.common.labels import label_match
from mlmesh.storage import datasets
from mlmesh.storage.core import HOT, StorageCore
from mlmesh.storage.uploads import Session, Sessions, progress, safe_relative, upload_id_for

log = logging.getLogger("mlmesh.storage.api")

QUOTAS_BUCKET = contracts.STORAGE_QUOTAS
MAX_FILES = 100_000
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_GRANT_S = 7 * 24 * 3600  # direct upload sessions and download grants
DIRECT = api.DirectAccessMethod


class StorageServicer(storage_service_pb2_grpc.StorageServiceServicer):
    def __init__(
        self,
        core: StorageCore,
        sessions: Sessions,
        quotas: KvRepository[struct_pb2.Struct],
        publisher: EventPublisher,
        *,
        chunk_size: int,
        upload_ttl_s: float,
        default_quota_bytes: int = 0,
        s3=None,
    ):
        self.core = core
        self.sessions = sessions
        self.quotas = quotas
        self.publisher = publisher
        self.chunk_size = chunk_size
        self.upload_ttl_s = upload_ttl_s
        self.default_quota = default_quota_bytes
        self.s3 = s3  # S3Config of the cold tier, for presigned direct uploads

    # --- helpers -------------------------------------------------------------------------------

    async def _visible(self, artifact_id: str, ident: Identity) -> artifact_pb2.Artifact:
        try:
            artifact = await self.core.get(artifact_id or "-")
        except (NotFound, InvalidArgument):
            raise NotFound(f"artifact {artifact_id} not found") from None
        if not ident.can_access(artifact.meta.team):
            raise NotFound(f"artifact {artifact_id} not found")
        return artifact

    async def _session(self, upload_id: str, ident: Identity) -> Session:
        try:
            session = await self.sessions.get(upload_id)
        except (NotFound, InvalidArgument):
            raise NotFound(f"upload {upload_id} not found") from None
        if not ident.can_access(session.team):
            raise NotFound(f"upload {upload_id} not found")
        return session

    async def quota_of(self, team: str) -> int:
        try:
            return int(dict((await self.quotas.get(team)).value).get("quota_bytes", 0))
        except NotFound:
            return self.default_quota

    async def _check_quota(self, team: str, new_bytes: int) -> None:
        quota = await self.quota_of(team)
        if not quota:
            return
        used = (await self.core.usage(team)).logical_bytes
        if used + new_bytes > quota:
            raise QuotaExceeded(f"team {team} would use {used + new_bytes} bytes of its {quota}-byte quota")

    def _draft(self, draft: api.ArtifactDraft, ident: Identity) -> api.ArtifactDraft:
        out = api.ArtifactDraft()
        out.CopyFrom(draft)
        out.team = out.team or ident.team
        if out.team != ident.team and not (ident.is_admin or ident.is_service):
            raise PermissionDenied(f"you may only store artifacts for team {ident.team}")
        bad = {}
        if not is_token(out.team):
            bad["artifact.team"] = "must be 1-128 characters of [a-z0-9_-]"
        if not out.name or len(out.name) > 256:
            bad["artifact.name"] = "1-256 characters"
        if out.kind not in artifact_pb2.ArtifactKind.values() or not out.kind:
            bad["artifact.kind"] = "checkpoint, model, dataset or generic"
        if len(out.labels) > 64 or any(len(k) > 63 or len(v) > 63 for k, v in out.labels.items()):
            bad["artifact.labels"] = "at most 64 labels of 63 characters"
        checkpoint_job = out.checkpoint.job_id if out.kind == artifact_pb2.ARTIFACT_KIND_CHECKPOINT else ""
        if checkpoint_job and not is_token(checkpoint_job):
            bad["artifact.checkpoint.job_id"] = "must be 1-128 characters of [a-z0-9_-]"
        if bad:
            raise InvalidArgument("invalid artifact", bad)
        return out

    def _expected(self, files) -> dict[str, int]:
        if len(files) > MAX_FILES:
            raise TooLarge(f"at most {MAX_FILES} files per artifact")
        out = {}
        for i, f in enumerate(files):
            out[safe_relative(f.path, f"expected_files[{i}].path")] = f.size_bytes
            if f.size_bytes < 0:
                raise InvalidArgument.field(f"expected_files[{i}].size_bytes", "must not be negative")
        return out

    async def _new_session(self, draft, request_id: str, expected, method: str, ttl_s: float, ident) -> Session:
        if request_id:
            subject_token(request_id, "request_id")
        draft = self._draft(draft, ident)
        await self._check_quota(draft.team, sum(expected.values()))
        upload_id = upload_id_for(draft.team, request_id)
        with contextlib.suppress(NotFound):
            return await self._session(upload_id, ident)  # a retried request continues the session
        with contextlib.suppress(NotFound):
            await self._visible(upload_id, ident)
            raise InvalidArgument.field("request_id", "already used for a committed artifact")
        session = Session(
            upload_id=upload_id,
            team=draft.team,
            created_by=ident.subject,
            draft=draft,
            expected=expected,
            expire_time=time.time() + ttl_s,
            method=method,
        )
        try:
            return await self.sessions.create(session)
        except Exception:
            return await self._session(upload_id, ident)  # created concurrently by a retry

    # --- uploads -------------------------------------------------------------------------------

    async def BeginUpload(self, request, context) -> api.BeginUploadResponse:
        ident = current_identity()
        ident.require_role(ROLE_DEVELOPER)
        expected = self._expected(request.expected_files)
        session = await self._new_session(
            request.artifact, request.request_id, expected, "stream", self.upload_ttl_s, ident
        )
        self.core.stage_dir(session.upload_id)
        present = await asyncio.to_thread(self._already_present, request.expected_files)
        return api.BeginUploadResponse(
            upload_id=session.upload_id,
            expire_time=ts_from_seconds(session.expire_time),
            chunk_size_bytes=self.chunk_size,
            already_present_paths=present,
        )

    def _already_present(self, files) -> list[str]:
        out = []
        for f in files:
            if len(f.sha256) == 64 and any(tier.has(f.sha256) for tier in self.core.tiers.values()):
                out.append(f.path)
        return out

    async def UploadChunks(self, request_iterator, context) -> api.UploadChunksResponse:
        ident = current_identity()
        session: Session | None = None
        stage: Path | None = None
        touched: set[str] = set()
        handles: dict[str, int] = {}
        try:
            async for chunk in request_iterator:
                if session is None:
                    session = await self._session(chunk.upload_id, ident)
                    stage = self.core.stage_dir(session.upload_id)
                elif chunk.upload_id and chunk.upload_id != session.upload_id:
                    raise InvalidArgument.field("upload_id", "one stream uploads to one upload")
                path = safe_relative(chunk.path, "path")
                if session.expected and path not in session.expected:
                    raise InvalidArgument.field("path", f"{path!r} was not announced in BeginUpload")
                if len(chunk.data) > self.chunk_size:
                    raise TooLarge(f"chunks are at most {self.chunk_size} bytes")
                target = stage / path
                if path not in handles:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    handles[path] = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
                fd = handles[path]
                size = os.fstat(fd).st_size
                if chunk.offset_bytes > size:
                    raise InvalidArgument.field("offset_bytes", f"{path} has {size} bytes; resume from there")
                if chunk.offset_bytes < size:
                    os.ftruncate(fd, chunk.offset_bytes)  # a client re-sending from an offset wins
                os.pwrite(fd, chunk.data, chunk.offset_bytes)
                want = session.expected.get(path)
                if want is not None and chunk.offset_bytes + len(chunk.data) > want:
                    raise InvalidArgument.field("data", f"{path} is larger than the announced {want} bytes")
                touched.add(path)
        finally:
            for fd in handles.values():
                os.fsync(fd)
                os.close(fd)
        if session is None:
            raise InvalidArgument.field("upload_id", "the stream sent no chunks")
        files = [p for p in progress(stage, session) if p.path in touched]
        return api.UploadChunksResponse(upload_id=session.upload_id, files=files)

    async def GetUpload(self, request, context) -> api.GetUploadResponse:
        session = await self._session(request.upload_id, current_identity())
        stage = self.core.stage_dir(session.upload_id)
        return api.GetUploadResponse(
            upload_id=session.upload_id,
            files=progress(stage, session),
            expire_time=ts_from_seconds(session.expire_time),
        )

    async def AbortUpload(self, request, context) -> api.AbortUploadResponse:
        session = await self._session(request.upload_id, current_identity())
        await self.sessions.delete(session.upload_id)
        await self.core.discard_stage(session.upload_id)
        return api.AbortUploadResponse()

    async def CreateDirectUpload(self, request, context) -> api.CreateDirectUploadResponse:
        ident = current_identity()
        ident.require_role(ROLE_DEVELOPER)
        ttl = duration_s(request.ttl, "ttl") if request.HasField("ttl") else self.upload_ttl_s
        if not 60 <= ttl <= MAX_GRANT_S:
            raise InvalidArgument.field("ttl", "must be 1 minute - 7 days")
        method = request.method or DIRECT.DIRECT_ACCESS_METHOD_FILESYSTEM
        if method == DIRECT.DIRECT_ACCESS_METHOD_S3_PRESIGNED and self.s3 is None:
            raise InvalidArgument.field("method", "presigned URLs need the S3 cold tier configured")
        paths = [safe_relative(p, f"paths[{i}]") for i, p in enumerate(request.paths)]
        if method == DIRECT.DIRECT_ACCESS_METHOD_S3_PRESIGNED and not paths:
            raise InvalidArgument.field("paths", "presigned URLs are issued per file: list the paths")
        kind = "s3" if method == DIRECT.DIRECT_ACCESS_METHOD_S3_PRESIGNED else "filesystem"
        session = await self._new_session(request.artifact, request.request_id, {}, kind, ttl, ident)
        out = api.CreateDirectUploadResponse(
            upload_id=session.upload_id, method=method, expire_time=ts_from_seconds(session.expire_time)
        )
        if kind == "filesystem":
            out.filesystem_path = str(self.core.stage_dir(session.upload_id))
        else:
            for path in paths:
                url = await asyncio.to_thread(self._presign, "put_object", self._staging_key(session, path), ttl)
                out.urls.add(path=path, url=url, http_method="PUT")
        return out

    def _staging_key(self, session: Session, path: str) -> str:
        return f"{self.s3.prefix}staging/{session.upload_id}/{path}"

    def _presign(self, operation: str, key: str, ttl: float) -> str:
        client = self.s3.client()
        return client.generate_presigned_url(
            operation, Params={"Bucket": self.s3.bucket, "Key": key}, ExpiresIn=int(ttl)
        )

    def _fetch_presigned(self, session: Session, manifest: artifact_pb2.Manifest, stage: Path) -> None:
        """Bring objects written through presigned URLs into the staging dir, where commit verifies
        them like any other staged file."""
        client = self.s3.client()
        for f in manifest.files:
            key = self._staging_key(session, f.path)
            target = stage / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                client.download_file(self.s3.bucket, key, str(target))
            except Exception:
                continue  # not uploaded: commit says which file is missing (or dedups it)
            with contextlib.suppress(Exception):
                client.delete_object(Bucket=self.s3.bucket, Key=key)

    async def CommitArtifact(self, request, context) -> api.CommitArtifactResponse:
        ident = current_identity()
        ident.require_role(ROLE_DEVELOPER)
        try:
            session = await self._session(request.upload_id, ident)
        except NotFound:
            # A commit retried after its reply was lost: the artifact (id = upload id) exists.
            return api.CommitArtifactResponse(artifact=await self._visible(request.upload_id, ident))
        manifest = request.manifest
        if len(manifest.files) > MAX_FILES:
            raise TooLarge(f"at most {MAX_FILES} files per artifact")
        total = sum(f.size_bytes for f in manifest.files)
        await self._check_quota(session.team, total)
        stage = self.core.stage_dir(session.upload_id)
        if session.method == "s3":
            await asyncio.to_thread(self._fetch_presigned, session, manifest, stage)
        draft = session.draft
        if draft.kind == artifact_pb2.ARTIFACT_KIND_DATASET and not draft.dataset.columns:
            draft.dataset.CopyFrom(await asyncio.to_thread(self._inspect_dataset, stage, manifest))
        artifact = await self.core.commit(session.upload_id, draft, manifest)
        await self.sessions.delete(session.upload_id)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(shutil.rmtree, stage, True)
        await self._publish_committed(artifact)
        if artifact.kind == artifact_pb2.ARTIFACT_KIND_CHECKPOINT and artifact.checkpoint.job_id:
            for deleted in await self.core.retention_once(artifact.checkpoint.job_id, artifact.meta.team):
                await self._publish_deleted(
                    deleted, artifact.meta.team, artifact.kind, artifact.checkpoint.job_id, "Retention"
                )
        log.info("artifact committed", extra={"artifact": artifact.meta.id, "bytes": total})
        return api.CommitArtifactResponse(artifact=artifact)

    @staticmethod
    def _inspect_dataset(stage: Path, manifest: artifact_pb2.Manifest) -> artifact_pb2.DatasetInfo:
        infos = []
        for f in manifest.files:
            path = stage / f.path
            if path.is_file() and datasets.format_of(path):
                infos.append(datasets.inspect_path(path))
        if not infos:
            raise InvalidArgument.field("manifest.files", "a dataset needs .jsonl or .parquet files (staged here)")
        return datasets.merge(infos) if len(infos) > 1 else infos[0]

    # --- reads ---------------------------------------------------------------------------------

    async def Download(self, request, context):
        artifact = await self._visible(request.artifact_id, current_identity())
        if not request.path:
            raise InvalidArgument.field("path", "name the file to download")
        entry = next((f for f in artifact.manifest.files if f.path == request.path), None)
        if entry is None:
            raise NotFound(f"artifact {artifact.meta.id} has no file {request.path!r}")
        chunks = await self.core.open(artifact, request.path, request.offset_bytes, request.length_bytes)
        offset = request.offset_bytes
        first = True
        async for data in chunks:
            msg = api.DownloadResponse(offset_bytes=offset, data=data)
            if first:
                msg.file.CopyFrom(entry)
                first = False
            offset += len(data)
            yield msg
        if first:  # an empty range still tells the client which file it asked for
            yield api.DownloadResponse(file=entry, offset_bytes=offset)

    async def CreateDirectDownload(self, request, context) -> api.CreateDirectDownloadResponse:
        ident = current_identity()
        artifact = await self._visible(request.artifact_id, ident)
        method = request.method or DIRECT.DIRECT_ACCESS_METHOD_FILESYSTEM
        ttl = duration_s(request.ttl, "ttl") if request.HasField("ttl") else 3600.0
        if not 60 <= ttl <= MAX_GRANT_S:
            raise InvalidArgument.field("ttl", "must be 1 minute - 7 days")
        out = api.CreateDirectDownloadResponse(method=method, expire_time=ts_from_seconds(time.time() + ttl))
        if method == DIRECT.DIRECT_ACCESS_METHOD_FILESYSTEM:
            if artifact.tier != HOT:
                artifact = await self.core.set_tier(artifact.meta.id, HOT)  # readers want fast disk
            out.filesystem_path = str(await asyncio.to_thread(self._materialize, artifact))
        else:
            if self.s3 is None:
                raise InvalidArgument.field("method", "presigned URLs need the S3 cold tier configured")
            raise InvalidArgument.field("method", "presigned downloads are not supported; use FILESYSTEM or Download")
        out.artifact.CopyFrom(artifact)
        return out

    def _materialize(self, artifact: artifact_pb2.Artifact) -> Path:
        """A read-only directory of the artifact's files: hard links to the verified hot blobs
        (same filesystem, no copy). An artifact never changes, so a complete view is reused as it
        is: rebuilding it would pull files from under a reader of an earlier call (two deployments
        of one model read the same view at once). An incomplete one is replaced by a fresh build."""
        hot = self.core.tiers[HOT]
        views = Path(hot.root) / "views"
        final = views / artifact.meta.id
        if _view_complete(final, artifact):
            return final
        tmp = views / f".{artifact.meta.id}.{os.getpid()}.{time.monotonic_ns()}"
        for f in artifact.manifest.files:
            target = tmp / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(hot.path(f.sha256), target)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)  # fails if `final` exists (a directory is not replaced)
        except OSError:
            if _view_complete(final, artifact):  # a concurrent call built it first
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            stale = views / f".stale.{artifact.meta.id}.{time.monotonic_ns()}"
            os.rename(final, stale)
            os.rename(tmp, final)
            shutil.rmtree(stale, ignore_errors=True)
        return final

    async def GetArtifact(self, request, context) -> api.GetArtifactResponse:
        return api.GetArtifactResponse(artifact=await self._visible(request.artifact_id, current_identity()))

    async def ListArtifacts(self, request, context) -> api.ListArtifactsResponse:
        ident = current_identity()
        team = request.team or ident.team
        if not ident.can_access(team):
            raise PermissionDenied(f"you may only list artifacts of team {ident.team}")
        size = request.page_size or DEFAULT_PAGE
        if not 0 < size <= MAX_PAGE:
            raise InvalidArgument.field("page_size", f"must be 1-{MAX_PAGE}")
        rows = [
            a
            for a in await self.core.list_all()
            if a.meta.team == team
            and (not request.kind or a.kind == request.kind)
            and (not request.job_id or a.checkpoint.job_id == request.job_id)
            and (not request.name or a.name == request.name)
            and (not request.tier or a.tier == request.tier)
            and label_match(a.meta.labels, request.label_selector)
            and (not request.page_token or a.meta.id > request.page_token)
        ]
        rows.sort(key=lambda a: a.meta.id)
        page = rows[:size]
        token = page[-1].meta.id if len(rows) > size else ""
        return api.ListArtifactsResponse(artifacts=page, next_page_token=token)

    async def DeleteArtifact(self, request, context) -> api.DeleteArtifactResponse:
        ident = current_identity()
        artifact = await self._visible(request.artifact_id, ident)
        ident.require_role(ROLE_DEVELOPER)
        await self.core.delete(artifact.meta.id, force=request.force)
        await self._publish_deleted(
            artifact.meta.id, artifact.meta.team, artifact.kind, artifact.checkpoint.job_id, "User"
        )
        return api.DeleteArtifactResponse()

    async def SetArtifactTier(self, request, context) -> api.SetArtifactTierResponse:
        ident = current_identity()
        artifact = await self._visible(request.artifact_id, ident)
        ident.require_role(ROLE_DEVELOPER)
        if request.tier not in self.core.tiers:
            raise InvalidArgument.field("tier", "not a configured tier")
        moved = await self.core.set_tier(artifact.meta.id, request.tier)
        if moved.tier != artifact.tier:
            await self.publish_tier_change(moved, artifact.tier, "Admin")
        return api.SetArtifactTierResponse(artifact=moved)

    async def GetUsage(self, request, context) -> api.GetUsageResponse:
        ident = current_identity()
        team = request.team or ident.team
        if not ident.can_access(team):
            raise PermissionDenied(f"you may only see the usage of team {ident.team}")
        usage = await self.core.usage(team)
        usage.quota_bytes = await self.quota_of(team)
        return api.GetUsageResponse(usage=usage)

    async def SetQuota(self, request, context) -> api.SetQuotaResponse:
        current_identity().require_role(ROLE_ADMIN)
        subject_token(request.team, "team")
        if request.quota_bytes < 0:
            raise InvalidArgument.field("quota_bytes", "must not be negative (0 = unlimited)")
        record = struct_pb2.Struct()
        record.update({"quota_bytes": float(request.quota_bytes)})
        try:
            current = await self.quotas.get(request.team)
            await self.quotas.update(request.team, record, current.revision)
        except NotFound:
            await self.quotas.create(request.team, record)
        usage = await self.core.usage(request.team)
        usage.quota_bytes = request.quota_bytes
        return api.SetQuotaResponse(usage=usage)

    # --- events --------------------------------------------------------------------------------

    async def _publish_committed(self, artifact: artifact_pb2.Artifact) -> None:
        await self.publisher.publish(
            contracts.artifact_subject(artifact.meta.team, artifact.meta.id, "committed"),
            events_pb2.ArtifactCommitted(artifact=artifact),
            ce_subject=artifact.meta.id,
            event_id=f"{artifact.meta.id}-committed",
        )

    async def _publish_deleted(self, artifact_id: str, team: str, kind: int, job_id: str, reason: str) -> None:
        await self.publisher.publish(
            contracts.artifact_subject(team, artifact_id, "deleted"),
            events_pb2.ArtifactDeleted(
                artifact_id=artifact_id, team=team, kind=kind, job_id=job_id, reason=reason, delete_time=now_ts()
            ),
            ce_subject=artifact_id,
            event_id=f"{artifact_id}-deleted",
        )

    async def publish_tier_change(self, artifact: artifact_pb2.Artifact, source: int, reason: str) -> None:
        await self.publisher.publish(
            contracts.artifact_subject(artifact.meta.team, artifact.meta.id, "tier_changed"),
            events_pb2.ArtifactTierChanged(
                artifact_id=artifact.meta.id,
                team=artifact.meta.team,
                from_tier=source,
                to_tier=artifact.tier,
                reason=reason,
                moved_bytes=artifact.manifest.total_size_bytes,
                change_time=now_ts(),
            ),
            ce_subject=artifact.meta.id,
        )


def _view_complete(view: Path, artifact: artifact_pb2.Artifact) -> bool:
    try:
        return all((view / f.path).stat().st_size == f.size_bytes for f in artifact.manifest.files)
    except OSError:
        return False
