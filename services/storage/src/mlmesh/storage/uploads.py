"""Upload sessions: what a client announced, where its bytes are staged, when it expires.

A session is a small record in the KV bucket `uploads`. The staged bytes themselves are files in
the session's staging directory on the hot filesystem, so "how much has arrived" is simply each
staged file's size, and a client resumes from there after a broken stream.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from google.protobuf import struct_pb2

from mlmesh.api.storage.v1 import storage_service_pb2 as api
from mlmesh.common import contracts
from mlmesh.common.errors import InvalidArgument, NotFound
from mlmesh.common.kv import KvRepository

UPLOADS_BUCKET = contracts.UPLOADS


def upload_id_for(team: str, request_id: str) -> str:
    """Random, or derived from the idempotency key so a retried BeginUpload names the same upload."""
    if request_id:
        return "a" + hashlib.sha256(f"{team}/{request_id}".encode()).hexdigest()[:15]
    return "a" + uuid.uuid4().hex[:15]


def safe_relative(path: str, field: str) -> str:
    """A manifest path: relative, normalized, no `..`, no empty parts."""
    p = PurePosixPath(path)
    if (
        not path
        or len(path) > 1024
        or p.is_absolute()
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise InvalidArgument.field(field, "must be a relative path without '.', '..' or empty parts")
    return path


@dataclass
class Session:
    upload_id: str
    team: str
    created_by: str
    draft: api.ArtifactDraft
    expected: dict[str, int]  # path -> size; empty = any paths
    expire_time: float
    method: str = "stream"  # stream | filesystem
    revision: int = 0

    def to_struct(self) -> struct_pb2.Struct:
        s = struct_pb2.Struct()
        s.update(
            {
                "upload_id": self.upload_id,
                "team": self.team,
                "created_by": self.created_by,
                "draft": base64.b64encode(self.draft.SerializeToString()).decode(),
                "expected": {k: float(v) for k, v in self.expected.items()},
                "expire_time": self.expire_time,
                "method": self.method,
            }
        )
        return s

    @classmethod
    def from_struct(cls, s: struct_pb2.Struct, revision: int) -> Session:
        d = dict(s)
        draft = api.ArtifactDraft()
        draft.ParseFromString(base64.b64decode(d["draft"]))
        return cls(
            upload_id=d["upload_id"],
            team=d["team"],
            created_by=d.get("created_by", ""),
            draft=draft,
            expected={k: int(v) for k, v in dict(d.get("expected") or {}).items()},
            expire_time=float(d["expire_time"]),
            method=d.get("method", "stream"),
            revision=revision,
        )

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.expire_time


class Sessions:
    def __init__(self, repo: KvRepository[struct_pb2.Struct]):
        self.repo = repo

    @classmethod
    async def open(cls, js) -> Sessions:
        return cls(await KvRepository.open(js, UPLOADS_BUCKET, struct_pb2.Struct, "upload", history=1))

    async def get(self, upload_id: str) -> Session:
        versioned = await self.repo.get(upload_id or "-")
        session = Session.from_struct(versioned.value, versioned.revision)
        if session.expired():
            raise NotFound(f"upload {upload_id} expired")
        return session

    async def create(self, session: Session) -> Session:
        session.revision = await self.repo.create(session.upload_id, session.to_struct())
        return session

    async def expired(self, now: float | None = None) -> list[Session]:
        out = []
        for key in await self.repo.keys():
            try:
                versioned = await self.repo.get(key)
            except NotFound:
                continue
            session = Session.from_struct(versioned.value, versioned.revision)
            if session.expired(now):
                out.append(session)
        return out

    async def delete(self, upload_id: str) -> None:
        await self.repo.delete(upload_id)


def progress(stage: Path, session: Session) -> list[api.FileProgress]:
    """Bytes received per file: the staged file sizes (what is on disk, from offset 0)."""
    paths = set(session.expected)
    if stage.exists():
        paths |= {p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()}
    out = []
    for path in sorted(paths):
        f = stage / path
        size = f.stat().st_size if f.is_file() else 0
        want = session.expected.get(path)
        out.append(api.FileProgress(path=path, received_bytes=size, complete=want is not None and size == want))
    return out
