"""Manifest rules (pure): validation, canonical order and the manifest digest."""

from __future__ import annotations

import hashlib
import posixpath
import re

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.common.errors import InvalidArgument

MAX_FILES = 100_000
MAX_PATH_CHARS = 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")  # control characters and backslashes


def path_problem(path: str) -> str | None:
    """Why `path` is not a safe relative POSIX path inside an artifact, or None."""
    if not path:
        return "is empty"
    if len(path) > MAX_PATH_CHARS:
        return f"is longer than {MAX_PATH_CHARS} characters"
    if _FORBIDDEN.search(path):
        return "contains a control character or a backslash"
    if path.startswith("/"):
        return "must be relative"
    if ".." in path.split("/"):
        return "must not contain '..'"
    if posixpath.normpath(path) != path or path == ".":
        return "must be normalized (no '.', empty or trailing components)"
    return None


def validate_manifest(manifest: artifact_pb2.Manifest) -> artifact_pb2.Manifest:
    """Check every rule; return the canonical manifest (files sorted by path, total set).

    Raises InvalidArgument naming each offending field (at most 20 are listed)."""
    problems: dict[str, str] = {}
    files = list(manifest.files)
    if not files:
        problems["manifest.files"] = "must list at least one file"
    if len(files) > MAX_FILES:
        raise InvalidArgument.field("manifest.files", f"at most {MAX_FILES} files")
    seen: set[str] = set()
    total = 0
    for i, f in enumerate(files):
        where = f"manifest.files[{i}]"
        why = path_problem(f.path)
        if why:
            problems[f"{where}.path"] = why
        elif f.path in seen:
            problems[f"{where}.path"] = f"duplicate path {f.path!r}"
        else:
            seen.add(f.path)  # only valid paths: the directory check below relies on it
        if f.size_bytes < 0:
            problems[f"{where}.size_bytes"] = "must be >= 0"
        total += max(f.size_bytes, 0)
        if not _SHA256.fullmatch(f.sha256):
            problems[f"{where}.sha256"] = "must be 64 lowercase hex characters"
        if len(problems) >= 20:
            break
    # A file may not also be a directory of another file ("a" and "a/b"): the artifact could not
    # be laid out on a filesystem.
    for path in seen:
        parent = posixpath.dirname(path)
        while parent:
            if parent in seen:
                problems["manifest.files"] = f"{parent!r} is both a file and a directory"
                break
            parent = posixpath.dirname(parent)
    if manifest.total_size_bytes and manifest.total_size_bytes != total:
        problems["manifest.total_size_bytes"] = f"is {manifest.total_size_bytes}, the files sum to {total}"
    if problems:
        raise InvalidArgument(f"invalid manifest: {len(problems)} problem(s)", problems)
    out = artifact_pb2.Manifest(total_size_bytes=total)
    out.files.extend(sorted(files, key=lambda e: e.path))
    return out


def manifest_digest(manifest: artifact_pb2.Manifest) -> str:
    """SHA-256 of the canonical manifest: one `sha256 size path` line per file, sorted by path.
    Equal digests mean equal content (paths included)."""
    h = hashlib.sha256()
    for f in sorted(manifest.files, key=lambda e: e.path):
        h.update(f"{f.sha256} {f.size_bytes} {f.path}\n".encode())
    return h.hexdigest()


def blob_sizes(manifest: artifact_pb2.Manifest) -> dict[str, int]:
    """Distinct blobs of a manifest: sha256 -> size."""
    return {f.sha256: f.size_bytes for f in manifest.files}
