"""Artifact upload and download over StorageService, resumable and verified, usable without the CLI.

`upload(client, path, draft)`: hashes every file (size + SHA-256), opens a session with BeginUpload
(the server names the files whose blobs it already holds: they are not sent), streams the rest with
UploadChunks and, when a stream breaks (UNAVAILABLE, or a stream deadline after progress), asks
GetUpload how far each file got and continues from exactly there. CommitArtifact then publishes the
full manifest atomically.

`download(client, artifact_id, dest)`: reads the manifest with GetArtifact and streams each file
with Download into `<dest>/<path>.partial`, resuming at the bytes already written after a broken
stream (or a previous run); the file is renamed into place only after its size and SHA-256 match
the manifest, so a corrupt or short file never appears under its final name.

`client` is an `mlmesh.sdk.client.Client` with a StorageService stub (`storage_client()`).
Progress callbacks `on_progress(bytes_done, bytes_total)` may be called from a gRPC thread.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import grpc

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.api.storage.v1 import storage_service_pb2 as api
from mlmesh.cli.output import CliError
from mlmesh.sdk.client import Client, RpcFailure, backoff_delays, translate

READ_BYTES = 1 << 20  # hashing and streaming read size
DEFAULT_CHUNK_BYTES = 1 << 20  # when the server recommends none
STREAM_TIMEOUT_S = 600.0  # deadline of one UploadChunks / Download stream; a longer transfer re-opens
MAX_RETRIES = 5  # consecutive broken streams without progress before giving up
PARTIAL_SUFFIX = ".partial"

Progress = Callable[[int, int], None]
PathFilter = Callable[[str], bool] | str | None
# A broken stream is resumed on these; a deadline only counts as broken after some progress (a
# stream that makes none within its deadline is a real failure).
_RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class TransferError(CliError):
    """A local problem with an upload or download: a bad path, a changed file, a checksum mismatch."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message, hint=hint, exit_code=1)


class IntegrityError(TransferError):
    """Downloaded bytes do not match the manifest (size or SHA-256)."""


@dataclass(frozen=True)
class LocalFile:
    """One file to upload: its artifact path, where it is read from, and its size and digest."""

    path: str
    source: Path
    size: int
    sha256: str

    def entry(self) -> artifact_pb2.FileEntry:
        return artifact_pb2.FileEntry(path=self.path, size_bytes=self.size, sha256=self.sha256)


# --- local files ---------------------------------------------------------------------------------


def _check_name(rel: str) -> str:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise TransferError(f"{rel!r}: file names must be valid UTF-8") from None
    return rel


def collect_files(local_path: Path) -> list[tuple[str, Path]]:
    """`(artifact path, file to read)` for a file or every file under a directory, sorted by path.

    Symlinks are followed only when they stay inside the directory (a symlinked directory that
    loops back is refused); sockets, FIFOs, devices and links leaving the directory are errors.
    Empty directories hold no file and so are not part of the artifact."""
    local_path = Path(local_path)
    if not local_path.exists():
        raise TransferError(f"{local_path}: no such file or directory")
    if local_path.is_file():
        return [(_check_name(local_path.name), local_path)]
    if not local_path.is_dir():
        raise TransferError(f"{local_path}: not a regular file or directory")
    root = Path(os.path.realpath(local_path))
    found: list[tuple[str, Path]] = []

    def walk(directory: Path, prefix: str, ancestors: frozenset[Path]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise TransferError(f"{directory}: cannot list: {exc.strerror or exc}") from None
        for e in entries:
            rel = prefix + e.name
            shown = local_path / rel
            if e.is_symlink():
                target = Path(os.path.realpath(e.path))
                if not target.is_relative_to(root):
                    raise TransferError(
                        f"{shown}: symlink points outside {local_path} (to {target})",
                        hint="copy the files in (cp -L) or upload the directory they live in",
                    )
                if target.is_dir():
                    if target in ancestors:
                        raise TransferError(f"{shown}: symlink loops back to {target}")
                    walk(target, rel + "/", ancestors | {target})
                elif target.is_file():
                    found.append((_check_name(rel), target))
                else:
                    raise TransferError(f"{shown}: symlink to a missing or special file ({target})")
            elif e.is_dir(follow_symlinks=False):
                real = Path(os.path.realpath(e.path))
                walk(real, rel + "/", ancestors | {real})
            elif e.is_file(follow_symlinks=False):
                found.append((_check_name(rel), Path(e.path)))
            else:
                raise TransferError(f"{shown}: not a regular file (socket, FIFO or device)")

    walk(root, "", frozenset({root}))
    if not found:
        raise TransferError(f"{local_path}: the directory holds no files")
    return sorted(found, key=lambda item: item[0])


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Size and lowercase hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(READ_BYTES):
                digest.update(block)
                size += len(block)
                if on_bytes:
                    on_bytes(len(block))
    except OSError as exc:
        raise TransferError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return size, digest.hexdigest()


def scan(local_path: Path, on_progress: Progress | None = None) -> list[LocalFile]:
    """Every file under `local_path` with its size and SHA-256; `on_progress` over the bytes hashed."""
    pairs = collect_files(local_path)
    try:
        total = sum(src.stat().st_size for _, src in pairs)
    except OSError as exc:
        raise TransferError(f"cannot stat {exc.filename}: {exc.strerror or exc}") from None
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress(done, max(total, done))

    files = []
    for rel, src in pairs:
        size, sha = hash_file(src, tick)
        files.append(LocalFile(rel, src, size, sha))
    return files


def manifest_of(files: list[LocalFile]) -> artifact_pb2.Manifest:
    return artifact_pb2.Manifest(files=[f.entry() for f in files], total_size_bytes=sum(f.size for f in files))


# --- upload --------------------------------------------------------------------------------------


class _Uploader:
    """One upload session: the files still to send and how far the server has each of them."""

    def __init__(self, client: Client, files: list[LocalFile], chunk: int, on_progress: Progress | None):
        self.client = client
        self.files = files
        self.chunk = chunk
        self.on_progress = on_progress
        self.total = sum(f.size for f in files)
        self.present: set[str] = set()
        self.done = 0
        self.local_error: BaseException | None = None

    def report(self) -> None:
        if self.on_progress:
            self.on_progress(self.done, self.total)

    def remaining(self, progress: list[api.FileProgress]) -> list[tuple[LocalFile, int]]:
        """Files not complete on the server with the offset to continue from; updates `done`."""
        by_path = {p.path: p for p in progress}
        todo = []
        done = 0
        for f in self.files:
            if f.path in self.present:
                done += f.size
                continue
            p = by_path.get(f.path)
            received = p.received_bytes if p else 0
            if received < 0 or received > f.size:
                raise TransferError(
                    f"the server reports {received} bytes of {f.path}, which has {f.size}",
                    hint="abort the upload and start again",
                )
            done += received
            if not (p and p.complete):
                todo.append((f, received))
        self.done = done
        self.report()
        return todo

    def requests(self, todo: list[tuple[LocalFile, int]], upload_id: str, call_box: list) -> Iterator[Any]:
        """The messages of one UploadChunks stream. A local failure is kept in `local_error` and
        cancels the call (an exception here would only be logged by gRPC)."""
        try:
            for f, start in todo:
                yield from self._file_requests(f, start, upload_id)
        except Exception as exc:  # a local read problem; surfaced by the caller
            self.local_error = exc
            if call_box:
                call_box[0].cancel()

    def _file_requests(self, f: LocalFile, start: int, upload_id: str) -> Iterator[Any]:
        try:
            with open(f.source, "rb") as handle:
                yield from self._chunks(handle, f, start, upload_id)
        except OSError as exc:
            raise TransferError(f"{f.source}: cannot read: {exc.strerror or exc}") from None

    def _chunks(self, handle, f: LocalFile, start: int, upload_id: str) -> Iterator[Any]:
        handle.seek(start)
        offset = start
        if offset == f.size:  # everything arrived but the final marker (or an empty file): send it alone
            yield api.UploadChunksRequest(upload_id=upload_id, path=f.path, offset_bytes=offset, last_chunk=True)
            return
        while offset < f.size:
            data = handle.read(min(self.chunk, f.size - offset))
            if not data:
                raise TransferError(
                    f"{f.source} shrank while uploading ({offset} of {f.size} bytes)", hint="upload it again"
                )
            last = offset + len(data) == f.size
            yield api.UploadChunksRequest(
                upload_id=upload_id, path=f.path, offset_bytes=offset, data=data, last_chunk=last
            )
            offset += len(data)
            self.done += len(data)
            self.report()


def _abort_quietly(client: Client, upload_id: str) -> None:
    with contextlib.suppress(CliError):
        client.call(client.stub.AbortUpload, api.AbortUploadRequest(upload_id=upload_id), timeout=5.0)


def _commit_timeout(client: Client, total: int) -> float:
    # Commit verifies every staged byte; give it time in proportion (100 MiB/s floor).
    return max(client.default_timeout, 30.0 + total / (100 << 20))


def upload(
    client: Client,
    local_path: Path,
    draft: api.ArtifactDraft,
    *,
    request_id: str | None = None,
    chunk_size: int | None = None,
    on_progress: Progress | None = None,
    on_hash_progress: Progress | None = None,
    max_retries: int = MAX_RETRIES,
    stream_timeout: float = STREAM_TIMEOUT_S,
) -> artifact_pb2.Artifact:
    """Upload a file or a directory as one artifact and return it once committed.

    `request_id` makes BeginUpload idempotent: the same id re-opens the same session, whose bytes
    already received are then not sent again (a new id is generated when omitted). `chunk_size`
    caps the server's recommended chunk size. A stream that breaks is resumed from what GetUpload
    reports, up to `max_retries` consecutive times without progress."""
    files = scan(Path(local_path), on_hash_progress)
    manifest = manifest_of(files)
    begin = client.call(
        client.stub.BeginUpload,
        api.BeginUploadRequest(
            artifact=draft, request_id=request_id or uuid.uuid4().hex, expected_files=[f.entry() for f in files]
        ),
    )
    upload_id = begin.upload_id
    chunk = begin.chunk_size_bytes if begin.chunk_size_bytes > 0 else DEFAULT_CHUNK_BYTES
    if chunk_size:
        chunk = min(chunk, chunk_size)
    up = _Uploader(client, files, chunk, on_progress)
    up.present = set(begin.already_present_paths) & {f.path for f in files}
    try:
        _send_all(client, up, upload_id, max_retries, stream_timeout)
        response = client.call(
            client.stub.CommitArtifact,
            api.CommitArtifactRequest(upload_id=upload_id, manifest=manifest),
            timeout=_commit_timeout(client, manifest.total_size_bytes),
        )
    except RpcFailure as exc:
        if exc.code not in _RESUMABLE:  # the session is useless; a transient failure may be resumed
            _abort_quietly(client, upload_id)
        raise
    except TransferError:
        _abort_quietly(client, upload_id)
        raise
    up.done = up.total
    up.report()
    return response.artifact


def _send_all(client: Client, up: _Uploader, upload_id: str, max_retries: int, stream_timeout: float) -> None:
    """Stream until the server holds every file; a broken stream is resumed from GetUpload, giving
    up after `max_retries` consecutive attempts that the server confirmed no new bytes for."""
    # A re-used request_id can re-open a session that already holds bytes: start from its state.
    progress = client.call(client.stub.GetUpload, api.GetUploadRequest(upload_id=upload_id)).files
    delays = backoff_delays(initial=0.2, maximum=5.0)
    failures = 0
    confirmed = -1
    last_error: CliError | None = None
    while True:
        todo = up.remaining(list(progress))
        if not todo:
            return
        if up.done <= confirmed:
            failures += 1
            if failures > max_retries:
                raise last_error or TransferError(
                    f"upload {upload_id}: the server does not accept the remaining files", hint="check its log"
                )
            time.sleep(next(delays))
        else:
            failures = 0
        confirmed = up.done
        up.local_error = None
        call_box: list = []
        requests = up.requests(todo, upload_id, call_box)
        future = client.stub.UploadChunks.future(requests, metadata=client.metadata, timeout=stream_timeout)
        call_box.append(future)
        try:
            response = future.result()
        except grpc.FutureCancelledError:
            response = None
        except grpc.RpcError as err:
            if up.local_error is not None:
                raise up.local_error from None
            last_error = translate(err, client.service, client.target)
            if last_error.code not in _RESUMABLE:
                raise last_error from None
            progress = client.call(client.stub.GetUpload, api.GetUploadRequest(upload_id=upload_id)).files
            continue
        finally:
            future.cancel()  # a no-op once done; stops the stream on KeyboardInterrupt
        if up.local_error is not None:
            raise up.local_error
        if response is None:
            raise TransferError(f"upload {upload_id}: the stream was cancelled")
        progress = response.files


# --- download ------------------------------------------------------------------------------------


def safe_target(dest: Path, rel: str) -> Path:
    """`dest/rel` for a manifest path, refusing absolute paths, `..`, empty parts and anything that
    resolves (through symlinks already in `dest`) outside `dest`."""
    if not rel or "\x00" in rel or rel.startswith("/") or "\\" in rel:
        raise TransferError(f"refusing manifest path {rel!r}: not a relative POSIX path")
    parts = PurePosixPath(rel).parts
    if any(p in ("", ".", "..") for p in rel.split("/")) or not parts:
        raise TransferError(f"refusing manifest path {rel!r}: it escapes the destination")
    target = dest.joinpath(*parts)
    root = Path(os.path.realpath(dest))
    if not Path(os.path.realpath(target)).is_relative_to(root) or Path(os.path.realpath(target)) == root:
        raise TransferError(f"refusing manifest path {rel!r}: it resolves outside {dest}")
    return target


def _matcher(path_filter: PathFilter) -> Callable[[str], bool]:
    if path_filter is None:
        return lambda _: True
    if isinstance(path_filter, str):
        pattern = path_filter
        return lambda p: fnmatch.fnmatchcase(p, pattern)
    return path_filter


def _matches(path: Path, entry: artifact_pb2.FileEntry) -> bool:
    try:
        if path.stat().st_size != entry.size_bytes:
            return False
    except OSError:
        return False
    return hash_file(path)[1] == entry.sha256


def download(
    client: Client,
    artifact_id: str,
    dest: Path,
    *,
    path_filter: PathFilter = None,
    on_progress: Progress | None = None,
    max_retries: int = MAX_RETRIES,
    stream_timeout: float = STREAM_TIMEOUT_S,
) -> artifact_pb2.Artifact:
    """Download an artifact's files (those `path_filter` selects: a glob or a predicate on the
    artifact path) under `dest`, each verified against the manifest before it gets its final name.

    A file already in place with the right size and SHA-256 is kept; a `.partial` left by an
    interrupted run is continued. A mismatch raises `IntegrityError` and removes the partial file."""
    artifact = client.call(client.stub.GetArtifact, api.GetArtifactRequest(artifact_id=artifact_id)).artifact
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = _matcher(path_filter)
    entries = [e for e in artifact.manifest.files if wanted(e.path)]
    targets = [(e, safe_target(dest, e.path)) for e in entries]  # all checked before anything is written
    total = sum(e.size_bytes for e in entries)
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress(done, total)

    if on_progress:
        on_progress(0, total)
    for entry, target in targets:
        if target.is_file() and _matches(target, entry):
            report(entry.size_bytes)
            continue
        _download_file(client, artifact.meta.id or artifact_id, entry, target, report, max_retries, stream_timeout)
    return artifact


def _download_file(
    client: Client,
    artifact_id: str,
    entry: artifact_pb2.FileEntry,
    target: Path,
    report: Callable[[int], None],
    max_retries: int,
    stream_timeout: float,
) -> None:
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        written = 0
        if partial.is_file() and partial.stat().st_size <= entry.size_bytes:  # continue an interrupted run
            written = _rehash(partial, digest)
            report(written)
        with open(partial, "ab" if written else "wb") as out:
            written = _receive(
                client, artifact_id, entry, partial, out, digest, written, report, max_retries, stream_timeout
            )
            out.flush()
            os.fsync(out.fileno())
        if written != entry.size_bytes:
            _fail(partial, f"{entry.path}: got {written} bytes, the manifest says {entry.size_bytes}")
        if digest.hexdigest() != entry.sha256:
            _fail(partial, f"{entry.path}: SHA-256 {digest.hexdigest()} does not match the manifest's {entry.sha256}")
        os.replace(partial, target)
    except OSError as exc:
        raise TransferError(f"{exc.filename or target}: {exc.strerror or exc}") from None


def _receive(
    client: Client,
    artifact_id: str,
    entry: artifact_pb2.FileEntry,
    partial: Path,
    out,
    digest,
    written: int,
    report: Callable[[int], None],
    max_retries: int,
    stream_timeout: float,
) -> int:
    """Stream one file from `written` on into `out`, resuming after broken streams; returns the
    number of bytes the partial file now holds."""
    delays = backoff_delays(initial=0.2, maximum=5.0)
    failures = 0
    while not (written and written == entry.size_bytes):
        request = api.DownloadRequest(artifact_id=artifact_id, path=entry.path, offset_bytes=written)
        progressed = False
        try:
            for msg in client.stream(client.stub.Download, request, timeout=stream_timeout):
                if msg.HasField("file"):
                    _check_entry(msg.file, entry, partial)
                if not msg.data:
                    continue
                if msg.offset_bytes != written:
                    _fail(partial, f"{entry.path}: the server sent offset {msg.offset_bytes}, expected {written}")
                if written + len(msg.data) > entry.size_bytes:
                    _fail(partial, f"{entry.path}: the server sent more than the manifest's {entry.size_bytes} bytes")
                out.write(msg.data)
                digest.update(msg.data)
                written += len(msg.data)
                progressed = True
                report(len(msg.data))
        except RpcFailure as exc:
            if exc.code not in _RESUMABLE:
                raise
            failures = 0 if progressed else failures + 1
            if failures > max_retries:
                raise
            if not progressed:
                time.sleep(next(delays))
            continue
        return written  # the stream ended normally
    return written


def _rehash(path: Path, digest) -> int:
    """Feed a file into `digest`; returns its size."""
    size = 0
    with open(path, "rb") as f:
        while block := f.read(READ_BYTES):
            digest.update(block)
            size += len(block)
    return size


def _check_entry(got: artifact_pb2.FileEntry, want: artifact_pb2.FileEntry, partial: Path) -> None:
    if got.path and (got.size_bytes, got.sha256) != (want.size_bytes, want.sha256):
        _fail(
            partial, f"{want.path}: the server's entry ({got.size_bytes} bytes, {got.sha256}) differs from the manifest"
        )


def _fail(partial: Path, message: str) -> None:
    partial.unlink(missing_ok=True)
    raise IntegrityError(message, hint="the stored copy may be corrupt; storage's log has details")
