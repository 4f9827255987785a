"""The worker's side of storage: direct-path checkpoint uploads, checkpoint fetches and the final
model upload. Imported only when a run has storage (benchmarks run without)."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

from google.protobuf import json_format

from mlmesh.api.storage.v1 import artifact_pb2, storage_service_pb2_grpc
from mlmesh.api.storage.v1 import storage_service_pb2 as api
from mlmesh.sdk import transfer
from mlmesh.sdk.client import Client

DIRECT = api.DirectAccessMethod


class StorageLink:
    def __init__(self, address: str, token: str, team: str, job_id: str, run_id: str):
        self.client = Client("storage", storage_service_pb2_grpc.StorageServiceStub, endpoint=address, token=token)
        self.team, self.job_id, self.run_id = team, job_id, run_id

    def open_checkpoint(self, step: int, epoch: float, metrics: dict, retention: dict) -> tuple[str, Path | None]:
        """A direct upload session; its directory when storage shares our filesystem, else None."""
        info = artifact_pb2.CheckpointInfo(job_id=self.job_id, run_id=self.run_id, step=step, epoch=epoch)
        info.metrics.update(metrics)
        if retention:
            json_format.ParseDict(retention, info.retention)
        draft = api.ArtifactDraft(
            team=self.team,
            name=f"{self.job_id}-step-{step}",
            kind=artifact_pb2.ARTIFACT_KIND_CHECKPOINT,
            checkpoint=info,
            labels={"job_id": self.job_id, "run_id": self.run_id},
        )
        request = api.CreateDirectUploadRequest(
            artifact=draft, request_id=f"{self.run_id}-step-{step}-{uuid.uuid4().hex[:8]}"
        )
        request.ttl.FromTimedelta(timedelta(hours=6))
        grant = self.client.call(self.client.stub.CreateDirectUpload, request)
        self._drafts = getattr(self, "_drafts", {})
        self._drafts[grant.upload_id] = draft
        path = Path(grant.filesystem_path) if grant.filesystem_path else None
        if path is not None and not (path.is_dir() and os.access(path, os.W_OK)):
            path = None  # storage is on another host: stage locally and stream instead
        return grant.upload_id, path

    def commit_direct(self, upload_id: str, directory: Path) -> str:
        manifest = transfer.manifest_of(transfer.scan(directory))
        reply = self.client.call(
            self.client.stub.CommitArtifact,
            api.CommitArtifactRequest(upload_id=upload_id, manifest=manifest),
            timeout=600,
        )
        return reply.artifact.meta.id

    def upload_staged(self, upload_id: str, directory: Path) -> str:
        """Storage could not be written directly: drop the direct session, stream the files."""
        draft = self._drafts.pop(upload_id)
        self.client.call(self.client.stub.AbortUpload, api.AbortUploadRequest(upload_id=upload_id))
        return transfer.upload(self.client, directory, draft).meta.id

    def fetch(self, artifact_id: str, dest: Path) -> Path:
        """A local directory holding the artifact: storage's read-only view when we share its
        filesystem (no copy), else a verified download into `dest`."""
        request = api.CreateDirectDownloadRequest(
            artifact_id=artifact_id, method=DIRECT.DIRECT_ACCESS_METHOD_FILESYSTEM
        )
        grant = self.client.call(self.client.stub.CreateDirectDownload, request, timeout=300)
        view = Path(grant.filesystem_path)
        if grant.filesystem_path and view.is_dir() and os.access(view, os.R_OK):
            return view
        transfer.download(self.client, artifact_id, dest)
        return dest

    def upload_model(self, directory: Path, name: str, labels: dict[str, str]) -> str:
        draft = api.ArtifactDraft(team=self.team, name=name, kind=artifact_pb2.ARTIFACT_KIND_MODEL, labels=labels)
        return transfer.upload(self.client, directory, draft, request_id=f"{self.run_id}-model").meta.id

    def close(self) -> None:
        self.client.close()
