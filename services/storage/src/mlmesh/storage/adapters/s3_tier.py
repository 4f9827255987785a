"""The cold tier: blobs in an S3 bucket (SeaweedFS locally), through boto3.

Keys: `<prefix>blobs/<aa>/<digest>` and `<digest>.chunks` (the chunk index, too big for object
metadata). The index object is PUT before the blob; an S3 PUT (or a completed multipart upload)
is atomic, so a blob under its key is complete. A blob is present only when both objects are.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from botocore.exceptions import ClientError

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.storage.blobstore import (
    INDEX_SUFFIX,
    BlobInfo,
    ChunkIndex,
    IndexBuilder,
    Tier,
    check_digest,
    corruption,
    verified_range,
)
from mlmesh.storage.faults import crash_point

_MISSING = {"404", "NoSuchKey", "NotFound"}


@dataclass(frozen=True)
class S3Config:
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    prefix: str = ""

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            # SigV4 explicitly: presigned URLs signed otherwise are refused by SeaweedFS (and AWS).
            config=Config(
                signature_version="s3v4",
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of bytes, hashing what passes (for upload_fileobj)."""

    def __init__(self, chunks: Iterable[bytes], builder: IndexBuilder):
        self._it = iter(chunks)
        self._buf = b""
        self._builder = builder

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
            self._builder.update(self._buf)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class S3Tier(Tier):
    tier = artifact_pb2.STORAGE_TIER_COLD

    def __init__(self, config: S3Config, client=None):
        self.config = config
        self.s3 = client or config.client()
        self.bucket = config.bucket
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not _missing(exc):
                raise
            self.s3.create_bucket(Bucket=self.bucket)

    def key(self, digest: str) -> str:
        check_digest(digest)
        return f"{self.config.prefix}blobs/{digest[:2]}/{digest}"

    def _head(self, key: str) -> dict | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def has(self, digest: str) -> bool:
        return self._head(self.key(digest)) is not None and self._head(self.key(digest) + INDEX_SUFFIX) is not None

    def size(self, digest: str) -> int | None:
        head = self._head(self.key(digest))
        return None if head is None else int(head["ContentLength"])

    def read_index(self, digest: str) -> ChunkIndex:
        try:
            raw = self.s3.get_object(Bucket=self.bucket, Key=self.key(digest) + INDEX_SUFFIX)["Body"].read()
        except ClientError as exc:
            if not _missing(exc):
                raise
            if self._head(self.key(digest)) is not None:
                raise corruption(digest, "chunk index missing") from None
            raise FileNotFoundError(self.key(digest)) from None
        return ChunkIndex.from_bytes(raw, digest)

    def _prepare(self, index: ChunkIndex) -> bool:
        if self.has(index.digest):
            self.touch(index.digest)  # then look again: GC may have taken it just before the touch
            if self.has(index.digest):
                self.check_present(index)
                return False
        self.s3.put_object(Bucket=self.bucket, Key=self.key(index.digest) + INDEX_SUFFIX, Body=index.to_bytes())
        crash_point("sidecar_written")
        return True

    def put_file(self, index: ChunkIndex, src: Path, *, move: bool = False) -> bool:
        with open(src, "rb") as f:
            stored = self.put_stream(index, iter(lambda: f.read(8 << 20), b""))
        if move:
            Path(src).unlink()
        return stored

    def put_stream(self, index: ChunkIndex, chunks: Iterable[bytes]) -> bool:
        if not self._prepare(index):
            return False
        key = self.key(index.digest)
        builder = IndexBuilder(index.chunk_size)
        # A multipart upload becomes visible only when completed, so the key never shows a part.
        self.s3.upload_fileobj(io.BufferedReader(_ChunkReader(chunks, builder), 8 << 20), self.bucket, key)
        if builder.finish() != index:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
            raise corruption(index.digest, "content changed in transit (hash mismatch while storing)")
        crash_point("blob_renamed")
        return True

    def open_range(self, digest: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        index = self.read_index(digest)
        head = self._head(self.key(digest))
        if head is None:
            raise FileNotFoundError(self.key(digest))
        if int(head["ContentLength"]) != index.size:
            raise corruption(digest, f"stored size {head['ContentLength']} differs from {index.size}")
        body = None
        pos = 0

        def read_chunk(_i: int, start: int, n: int) -> bytes:
            # One ranged GET from the first chunk touched to the end of the range, read chunk by chunk.
            nonlocal body, pos
            if body is None or pos != start:
                if body is not None:
                    body.close()
                end = index.size if length == 0 else min(index.size, offset + length)
                last = min(index.size, -(-end // index.chunk_size) * index.chunk_size) - 1
                body = self.s3.get_object(Bucket=self.bucket, Key=self.key(digest), Range=f"bytes={start}-{last}")[
                    "Body"
                ]
                pos = start
            data = body.read(n)
            pos += len(data)
            return data

        try:
            if index.size == 0:
                yield from verified_range(index, offset, length, lambda _i, _s, _n: b"")
            else:
                yield from verified_range(index, offset, length, read_chunk)
        finally:
            if body is not None:
                body.close()

    def delete(self, digest: str) -> None:
        for key in (self.key(digest), self.key(digest) + INDEX_SUFFIX):
            self.s3.delete_object(Bucket=self.bucket, Key=key)

    def mtime(self, digest: str) -> float | None:
        blob, idx = self._head(self.key(digest)), self._head(self.key(digest) + INDEX_SUFFIX)
        if blob is None or idx is None:
            return None
        return max(_ts(blob["LastModified"]), _ts(idx["LastModified"]))

    def touch(self, digest: str) -> None:
        # Rewrite the small index object: its LastModified is the blob's "touched" time.
        key = self.key(digest) + INDEX_SUFFIX
        try:
            raw = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                return
            raise
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=raw)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        objects: dict[str, dict] = {}
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.config.prefix}blobs/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                objects[obj["Key"].rsplit("/", 1)[-1]] = obj
        for name, obj in sorted(objects.items()):
            if name.endswith(INDEX_SUFFIX):
                continue
            idx = objects.get(name + INDEX_SUFFIX)
            if idx is None:
                continue
            mtime = max(_ts(obj["LastModified"]), _ts(idx["LastModified"]))
            yield BlobInfo(name, int(obj["Size"]), mtime)

    def iter_debris(self) -> Iterator[tuple[str, float]]:
        """Index objects without a blob (a crash between the two PUTs), with their times."""
        names: dict[str, float] = {}
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.config.prefix}blobs/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                names[obj["Key"]] = _ts(obj["LastModified"])
        for key, mtime in names.items():
            if key.endswith(INDEX_SUFFIX) and key[: -len(INDEX_SUFFIX)] not in names:
                yield key, mtime

    def delete_debris(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)


def _ts(value) -> float:
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or timezone.utc).timestamp()
    return float(value)
