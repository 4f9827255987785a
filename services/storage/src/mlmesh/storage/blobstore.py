"""Content-addressed blob tiers with verified reads.

A blob is stored under its SHA-256 hex digest. Beside it lies its *chunk index* (`<digest>.chunks`):
size, chunk size and the SHA-256 of every 4 MiB chunk, itself checksummed. The index is written
(durably) before the blob gets its final name, and the blob goes in atomically (temp name in the
same directory, fsync, rename, fsync directory), so a blob under its final name is always complete
and always has its index. Every read, range reads included, verifies each chunk it touches and
raises `DataLoss` on a mismatch, a short read or a damaged index.

`Tier` is the interface; `FsTier` is a directory (hot and warm); `adapters.s3_tier.S3Tier` is an
S3 bucket (cold). All methods block; callers run them in threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mlmesh.common.errors import DataLoss, FailedPrecondition, InvalidArgument
from mlmesh.storage.domain.manifest import _SHA256
from mlmesh.storage.faults import crash_point

log = logging.getLogger("mlmesh.storage.blobstore")

CHUNK_SIZE = 4 << 20
INDEX_SUFFIX = ".chunks"
_IO_BLOCK = 1 << 20
_READ_AHEAD = 3  # chunks in flight per read


def check_digest(digest: str) -> str:
    if not _SHA256.fullmatch(digest or ""):
        raise InvalidArgument.field("sha256", "must be 64 lowercase hex characters")
    return digest


def corruption(digest: str, what: str) -> DataLoss:
    """The one way corruption is reported: logged at ERROR with the blob, then raised."""
    log.error("data corruption in blob %s: %s", digest, what)
    return DataLoss(f"stored data failed verification (blob {digest[:16]}…: {what})")


@dataclass(frozen=True)
class ChunkIndex:
    """Size and per-chunk SHA-256 of one blob."""

    digest: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]

    def to_bytes(self) -> bytes:
        body = {"digest": self.digest, "size": self.size, "chunk_size": self.chunk_size, "chunks": list(self.chunks)}
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True)
        return json.dumps({"body": raw, "sha256": hashlib.sha256(raw.encode()).hexdigest()}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, digest: str) -> ChunkIndex:
        """Parse and check an index read back; anything off is DataLoss."""
        try:
            outer = json.loads(raw)
            body_raw = outer["body"]
            if hashlib.sha256(body_raw.encode()).hexdigest() != outer["sha256"]:
                raise ValueError("index checksum mismatch")
            body = json.loads(body_raw)
            index = cls(body["digest"], int(body["size"]), int(body["chunk_size"]), tuple(body["chunks"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise corruption(digest, f"chunk index unreadable ({exc})") from None
        if (
            index.digest != digest
            or index.chunk_size <= 0
            or len(index.chunks) != n_chunks(index.size, index.chunk_size)
        ):
            raise corruption(digest, "chunk index does not match the blob")
        return index


def n_chunks(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))  # an empty blob has one (empty) chunk


class IndexBuilder:
    """Hashes a byte stream once into the blob digest and the per-chunk digests."""

    def __init__(self, chunk_size: int = CHUNK_SIZE):
        self.chunk_size = chunk_size
        self._whole = hashlib.sha256()
        self._chunk = hashlib.sha256()
        self._in_chunk = 0
        self._chunks: list[str] = []
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self._whole.update(view)
        self.size += len(view)
        while view:
            take = min(len(view), self.chunk_size - self._in_chunk)
            self._chunk.update(view[:take])
            self._in_chunk += take
            view = view[take:]
            if self._in_chunk == self.chunk_size:
                self._chunks.append(self._chunk.hexdigest())
                self._chunk = hashlib.sha256()
                self._in_chunk = 0

    def finish(self) -> ChunkIndex:
        if self._in_chunk or not self._chunks:
            self._chunks.append(self._chunk.hexdigest())
        return ChunkIndex(self._whole.hexdigest(), self.size, self.chunk_size, tuple(self._chunks))


def hash_file(path: Path | str, chunk_size: int = CHUNK_SIZE) -> ChunkIndex:
    """One pass over a file: its SHA-256 and its chunk index."""
    builder = IndexBuilder(chunk_size)
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            builder.update(view[:n])
    return builder.finish()


def verified_range(
    index: ChunkIndex, offset: int, length: int, read_chunk, piece_size: int = _IO_BLOCK
) -> Iterator[bytes]:
    """Yield bytes [offset, offset+length) (length 0 = to the end) in pieces of at most
    `piece_size`, each from a chunk whose SHA-256 was checked first. `read_chunk(i, start, n)`
    returns chunk i's bytes (n of them, from byte `start` of the blob); fewer means truncation."""
    if offset < 0 or length < 0:
        raise InvalidArgument.field("offset_bytes", "offset and length must be >= 0")
    if offset > index.size:
        raise InvalidArgument.field("offset_bytes", f"is past the end of the file ({index.size} bytes)")
    end = index.size if length == 0 else min(index.size, offset + length)
    if end <= offset:
        return
    cs = index.chunk_size
    chunks = range(offset // cs, (end - 1) // cs + 1)

    def fetch(i: int) -> bytes:
        return read_chunk(i, i * cs, min(cs, index.size - i * cs))

    # A pipeline: one thread reads chunks strictly in order (a stream may depend on it), two
    # threads verify them (hashlib releases the GIL), a few chunks ahead of the consumer; so disk
    # I/O and hashing overlap. Pieces still come out in order and only from verified chunks.
    def check(i: int, read) -> list[bytes]:
        return list(_check_chunk(index, i, read.result(), offset, end, piece_size))

    with (
        ThreadPoolExecutor(1, thread_name_prefix="blob-read") as reader,
        ThreadPoolExecutor(2, thread_name_prefix="blob-verify") as verifier,
    ):
        window: deque = deque()
        todo = iter(chunks)
        try:
            for i in todo:
                window.append(verifier.submit(check, i, reader.submit(fetch, i)))
                if len(window) >= _READ_AHEAD:
                    break
            while window:
                pieces = window.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    window.append(verifier.submit(check, nxt, reader.submit(fetch, nxt)))
                yield from pieces
        finally:
            for f in window:
                f.cancel()


def _check_chunk(index: ChunkIndex, i: int, data: bytes, offset: int, end: int, piece_size: int) -> Iterator[bytes]:
    start = i * index.chunk_size
    n = min(index.chunk_size, index.size - start)
    if len(data) != n:
        raise corruption(index.digest, f"truncated: chunk {i} has {len(data)} of {n} bytes")
    if hashlib.sha256(data).hexdigest() != index.chunks[i]:
        raise corruption(index.digest, f"checksum mismatch in chunk {i} (bytes {start}-{start + n - 1})")
    view = memoryview(data)[max(offset, start) - start : min(end, start + n) - start]
    for p in range(0, len(view), piece_size):
        yield bytes(view[p : p + piece_size])


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    mtime: float  # newest of blob and index: when it was last written or touched


class Tier(ABC):
    """One place blobs live. Implementations must keep: a blob under its final name is complete
    and has its index; `put_*` of a digest already present is a no-op after a size check."""

    tier: int  # artifact_pb2.StorageTier

    @abstractmethod
    def has(self, digest: str) -> bool: ...

    @abstractmethod
    def size(self, digest: str) -> int | None:
        """Stored size of the blob, None when absent."""

    @abstractmethod
    def read_index(self, digest: str) -> ChunkIndex:
        """The blob's chunk index; DataLoss when the blob is there but the index is not sound,
        NotFound-like FileNotFoundError when the blob is absent."""

    @abstractmethod
    def put_file(self, index: ChunkIndex, src: Path, *, move: bool = False) -> bool:
        """Store the file `src`, whose content `index` describes (already hashed by the caller).
        `move` lets a same-filesystem tier rename it in instead of copying. Returns False when the
        blob was already present."""

    @abstractmethod
    def put_stream(self, index: ChunkIndex, chunks: Iterable[bytes]) -> bool:
        """Store the bytes of `chunks`, re-hashing them on the way and refusing (DataLoss) content
        that does not match `index`. Returns False when the blob was already present."""

    @abstractmethod
    def open_range(self, digest: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        """Verified bytes of [offset, offset+length) (0 = to the end)."""

    @abstractmethod
    def delete(self, digest: str) -> None:
        """Remove blob then index (a crash in between leaves an index alone, which `has` ignores)."""

    @abstractmethod
    def touch(self, digest: str) -> None:
        """Mark the blob recently used, so GC's grace period protects it."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[BlobInfo]: ...

    @abstractmethod
    def mtime(self, digest: str) -> float | None:
        """When the blob was last written or touched (newest of blob and index); None if absent."""

    def delete_if_idle(self, digest: str, cutoff: float) -> bool:
        """Delete the blob only if it was not written or touched since `cutoff` (the GC grace
        period: a commit or a move that just found the blob touched it and keeps it)."""
        mtime = self.mtime(digest)
        if mtime is None or mtime >= cutoff:
            return False
        self.delete(digest)
        return True

    def iter_digests(self) -> Iterator[str]:
        return (b.digest for b in self.iter_blobs())

    def check_present(self, index: ChunkIndex) -> None:
        """For a put of something already there: same size, or the stored copy is damaged."""
        stored = self.size(index.digest)
        if stored is not None and stored != index.size:
            raise corruption(index.digest, f"stored size {stored} differs from {index.size}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(final: Path, data: bytes) -> None:
    tmp = final.with_name(f".tmp-{final.name}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class FsTier(Tier):
    """Blobs in a directory: `<root>/blobs/<aa>/<digest>` and `<digest>.chunks`."""

    def __init__(self, root: Path | str, tier: int):
        self.root = Path(root)
        self.tier = tier
        self.blobs_dir = self.root / "blobs"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.blobs_dir / digest[:2] / digest

    def _index_path(self, digest: str) -> Path:
        return self.path(digest).with_name(digest + INDEX_SUFFIX)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file() and self._index_path(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def read_index(self, digest: str) -> ChunkIndex:
        blob = self.path(digest)
        try:
            raw = self._index_path(digest).read_bytes()
        except FileNotFoundError:
            if blob.exists():
                raise corruption(digest, "chunk index missing") from None
            raise
        return ChunkIndex.from_bytes(raw, digest)

    def _prepare(self, index: ChunkIndex) -> Path | None:
        """Final path for a new blob with its index durably in place; None when already stored."""
        final = self.path(index.digest)
        if self.has(index.digest):
            self.touch(index.digest)  # then look again: GC may have taken it just before the touch
            if self.has(index.digest):
                self.check_present(index)
                return None
        final.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self._index_path(index.digest), index.to_bytes())
        crash_point("sidecar_written")
        return final

    def _install(self, tmp: Path, final: Path) -> None:
        os.replace(tmp, final)
        os.utime(final)  # a renamed staged file keeps its old mtime; GC's grace counts from now
        crash_point("blob_renamed")
        _fsync_dir(final.parent)

    def put_file(self, index: ChunkIndex, src: Path, *, move: bool = False) -> bool:
        final = self._prepare(index)
        if final is None:
            if move:
                os.unlink(src)
            return False
        st = os.lstat(src)
        if not stat.S_ISREG(st.st_mode) or st.st_size != index.size:
            raise FailedPrecondition(f"{src.name}: not a regular file of {index.size} bytes")
        if move and st.st_nlink == 1:  # a hard-linked file could change under its other name: copy
            with open(src, "rb") as f:
                os.fsync(f.fileno())  # the writer may not have; durable before it gets its name
            try:
                self._install(src, final)
                return True
            except OSError as exc:
                if exc.errno != 18:  # EXDEV: another filesystem, copy instead
                    raise
        with open(src, "rb") as f:
            stored = self.put_stream(index, iter(lambda: f.read(_IO_BLOCK), b""), _prepared=final)
        if move:
            os.unlink(src)
        return stored

    def put_stream(self, index: ChunkIndex, chunks: Iterable[bytes], *, _prepared: Path | None = None) -> bool:
        final = _prepared or self._prepare(index)
        if final is None:
            return False
        tmp = final.with_name(f".tmp-{index.digest}-{secrets.token_hex(4)}")
        try:
            builder = IndexBuilder(index.chunk_size)
            with open(tmp, "wb") as f:
                for data in chunks:
                    builder.update(data)
                    f.write(data)
                f.flush()
                os.fsync(f.fileno())
            got = builder.finish()
            if got != index:
                raise corruption(index.digest, "content changed in transit (hash mismatch while storing)")
            crash_point("blob_temp_written")
            self._install(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return True

    def open_range(self, digest: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        index = self.read_index(digest)
        f = open(self.path(digest), "rb", buffering=0)  # noqa: SIM115 (closed by the generator)
        try:
            actual = os.fstat(f.fileno()).st_size
            if actual != index.size:
                raise corruption(digest, f"size on disk {actual} differs from {index.size}")

            def read_chunk(_i: int, start: int, n: int) -> bytes:
                return os.pread(f.fileno(), n, start)

            yield from verified_range(index, offset, length, read_chunk)
        finally:
            f.close()

    def delete(self, digest: str) -> None:
        for p in (self.path(digest), self._index_path(digest)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        with contextlib.suppress(FileNotFoundError):
            _fsync_dir(self.path(digest).parent)

    def mtime(self, digest: str) -> float | None:
        try:
            return max(self.path(digest).stat().st_mtime, self._index_path(digest).stat().st_mtime)
        except FileNotFoundError:
            return None

    def touch(self, digest: str) -> None:
        for p in (self.path(digest), self._index_path(digest)):
            with contextlib.suppress(FileNotFoundError):
                os.utime(p)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        for sub in sorted(self.blobs_dir.iterdir()):
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                if entry.name.startswith(".") or entry.name.endswith(INDEX_SUFFIX):
                    continue
                try:
                    st = entry.stat()
                    mtime = max(st.st_mtime, os.stat(sub / (entry.name + INDEX_SUFFIX)).st_mtime)
                except FileNotFoundError:
                    continue
                yield BlobInfo(entry.name, st.st_size, mtime)

    def iter_debris(self) -> Iterator[tuple[Path, float]]:
        """Temp files and indexes without a blob (what crashes leave), with their mtimes."""
        for sub in sorted(self.blobs_dir.iterdir()):
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                stray_index = (
                    entry.name.endswith(INDEX_SUFFIX) and not (sub / entry.name[: -len(INDEX_SUFFIX)]).exists()
                )
                if entry.name.startswith(".tmp-") or stray_index:
                    with contextlib.suppress(FileNotFoundError):
                        yield Path(entry.path), entry.stat().st_mtime

    def delete_debris(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
