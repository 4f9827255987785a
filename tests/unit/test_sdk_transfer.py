"""Artifact upload/download client logic (`mlmesh.sdk.transfer`) and the `mlmesh artifacts` CLI,
against a real in-process gRPC server: an in-memory StorageService written for this test only,
behind mlmesh's own interceptors, that can break a stream once or corrupt a downloaded byte."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from mlmesh.api.storage.v1 import artifact_pb2, model_registry_service_pb2_grpc, storage_service_pb2_grpc
from mlmesh.api.storage.v1 import model_registry_pb2 as mr
from mlmesh.api.storage.v1 import model_registry_service_pb2 as reg_api
from mlmesh.api.storage.v1 import storage_service_pb2 as api
from mlmesh.common import errors
from mlmesh.sdk import transfer
from mlmesh.sdk.client import Client, RpcFailure
from mlmesh.sdk.transfer import IntegrityError, TransferError

pytestmark = pytest.mark.timeout(60)

CHUNK = 4096


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Session:
    draft: api.ArtifactDraft
    expected: dict[str, artifact_pb2.FileEntry]
    data: dict[str, bytearray] = field(default_factory=dict)
    complete: set[str] = field(default_factory=set)
    committed: str = ""


class FakeStorage(storage_service_pb2_grpc.StorageServiceServicer):
    """Sessions and artifacts in memory. Knobs: `break_upload_at` / `break_download_at` abort the
    next stream with UNAVAILABLE once it has moved that many bytes; `fail_streams` refuses that
    many upload streams outright (a break sets it to `fail_after_break`);
    `corrupt_download` flips one byte of the next download; `commit_error` fails CommitArtifact."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.sessions: dict[str, Session] = {}
        self.by_request: dict[str, str] = {}
        self.artifacts: dict[str, artifact_pb2.Artifact] = {}
        self.chunks: list[tuple[int, str, int, int]] = []  # (stream, path, offset, length) accepted
        self.downloads: list[tuple[str, int]] = []  # (path, offset) of each Download request
        self.upload_streams = 0
        self.aborted: list[str] = []
        self.break_upload_at: int | None = None
        self.fail_streams = 0
        self.fail_after_break = 0
        self.break_download_at: int | None = None
        self.corrupt_download = False
        self.commit_error: errors.MlmeshError | None = None

    async def BeginUpload(self, request, context):
        if request.request_id in self.by_request:
            upload_id = self.by_request[request.request_id]
        else:
            upload_id = f"up-{len(self.sessions) + 1}"
            self.by_request[request.request_id] = upload_id
            expected = {f.path: f for f in request.expected_files}
            self.sessions[upload_id] = Session(draft=request.artifact, expected=expected)
        present = [f.path for f in request.expected_files if f.sha256 in self.blobs]
        return api.BeginUploadResponse(upload_id=upload_id, chunk_size_bytes=CHUNK, already_present_paths=present)

    def _session(self, upload_id: str) -> Session:
        if upload_id not in self.sessions:
            raise errors.NotFound(f"upload {upload_id} not found")
        return self.sessions[upload_id]

    def _progress(self, s: Session) -> list[api.FileProgress]:
        return [
            api.FileProgress(path=p, received_bytes=len(d), complete=p in s.complete) for p, d in sorted(s.data.items())
        ]

    async def UploadChunks(self, request_iterator, context):
        self.upload_streams += 1
        if self.fail_streams > 0:
            self.fail_streams -= 1
            raise errors.Unavailable("injected: storage is restarting")
        moved = 0
        upload_id = ""
        async for req in request_iterator:
            upload_id = req.upload_id
            s = self._session(upload_id)
            buf = s.data.setdefault(req.path, bytearray())
            if len(req.data) > CHUNK:
                raise errors.InvalidArgument.field("data", "larger than the chunk size")
            if req.offset_bytes != len(buf):  # this double never accepts repeats: the client must not send them
                raise errors.FailedPrecondition(f"{req.path}: offset {req.offset_bytes}, have {len(buf)}")
            buf += req.data
            self.chunks.append((self.upload_streams, req.path, req.offset_bytes, len(req.data)))
            if req.last_chunk:
                want = s.expected.get(req.path)
                if want and (len(buf), sha(bytes(buf))) != (want.size_bytes, want.sha256):
                    raise errors.InvalidArgument.field("data", f"{req.path} does not match its announced sha256")
                s.complete.add(req.path)
            moved += len(req.data)
            if self.break_upload_at is not None and moved >= self.break_upload_at:
                self.break_upload_at = None
                self.fail_streams = self.fail_after_break
                raise errors.Unavailable("injected: stream broken")
        s = self._session(upload_id) if upload_id else None
        return api.UploadChunksResponse(upload_id=upload_id, files=self._progress(s) if s else [])

    async def GetUpload(self, request, context):
        s = self._session(request.upload_id)
        return api.GetUploadResponse(upload_id=request.upload_id, files=self._progress(s))

    async def AbortUpload(self, request, context):
        self.aborted.append(request.upload_id)
        self.sessions.pop(request.upload_id, None)
        return api.AbortUploadResponse()

    async def CommitArtifact(self, request, context):
        if self.commit_error:
            raise self.commit_error
        s = self._session(request.upload_id)
        if s.committed:
            return api.CommitArtifactResponse(artifact=self.artifacts[s.committed])
        for f in request.manifest.files:
            if f.path in s.complete:
                got = bytes(s.data[f.path])
                if (len(got), sha(got)) != (f.size_bytes, f.sha256):
                    raise errors.FailedPrecondition(f"{f.path}: staged bytes do not match the manifest")
                self.blobs[f.sha256] = got
            elif f.sha256 not in self.blobs:
                raise errors.FailedPrecondition(f"{f.path} was never uploaded")
        artifact_id = f"art-{len(self.artifacts) + 1}"
        artifact = artifact_pb2.Artifact(
            name=s.draft.name,
            kind=s.draft.kind,
            state=artifact_pb2.ARTIFACT_STATE_COMMITTED,
            manifest=request.manifest,
            tier=artifact_pb2.STORAGE_TIER_HOT,
        )
        artifact.meta.id = artifact_id
        artifact.meta.labels.update(s.draft.labels)
        artifact.meta.create_time.GetCurrentTime()
        self.artifacts[artifact_id] = artifact
        s.committed = artifact_id
        return api.CommitArtifactResponse(artifact=artifact)

    def _artifact(self, artifact_id: str) -> artifact_pb2.Artifact:
        if artifact_id not in self.artifacts:
            raise errors.NotFound(f"artifact {artifact_id} not found")
        return self.artifacts[artifact_id]

    async def GetArtifact(self, request, context):
        return api.GetArtifactResponse(artifact=self._artifact(request.artifact_id))

    async def ListArtifacts(self, request, context):
        found = [
            a
            for a in reversed(self.artifacts.values())
            if (not request.kind or a.kind == request.kind) and (not request.name or a.name == request.name)
        ]
        return api.ListArtifactsResponse(artifacts=found)

    async def DeleteArtifact(self, request, context):
        self._artifact(request.artifact_id)
        del self.artifacts[request.artifact_id]
        return api.DeleteArtifactResponse()

    async def Download(self, request, context):
        entry = next((f for f in self._artifact(request.artifact_id).manifest.files if f.path == request.path), None)
        if entry is None:
            raise errors.NotFound(f"{request.path} not found")
        self.downloads.append((request.path, request.offset_bytes))
        data = self.blobs[entry.sha256]
        yield api.DownloadResponse(file=entry, offset_bytes=request.offset_bytes)
        moved = 0
        for offset in range(request.offset_bytes, len(data), CHUNK):
            piece = bytearray(data[offset : offset + CHUNK])
            if self.corrupt_download:
                self.corrupt_download = False
                piece[0] ^= 0x01
            yield api.DownloadResponse(offset_bytes=offset, data=bytes(piece))
            moved += len(piece)
            if self.break_download_at is not None and moved >= self.break_download_at:
                self.break_download_at = None
                raise errors.Unavailable("injected: stream broken")


class FakeRegistry(model_registry_service_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self):
        self.versions: dict[str, list[mr.ModelVersion]] = {}
        self.aliases: dict[str, dict[str, int]] = {}

    def _versions(self, name: str) -> list[mr.ModelVersion]:
        if name not in self.versions:
            raise errors.NotFound(f"model {name} not found")
        return self.versions[name]

    def _version(self, name: str, number: int) -> mr.ModelVersion:
        versions = self._versions(name)
        got = versions[-1] if number == 0 else next((v for v in versions if v.version == number), None)
        if got is None:
            raise errors.NotFound(f"model {name} version {number} not found")
        got = _copy(got)
        got.aliases[:] = sorted(a for a, n in self.aliases[name].items() if n == got.version)
        return got

    def _model(self, name: str) -> mr.Model:
        versions = self._versions(name)
        return mr.Model(
            name=name,
            task=versions[0].task,
            latest_version=versions[-1].version,
            version_count=len(versions),
            aliases=self.aliases[name],
        )

    async def RegisterModelVersion(self, request, context):
        v = mr.ModelVersion()
        v.CopyFrom(request.model_version)
        if not v.task or not v.weights_kind:
            raise errors.InvalidArgument("bad version", {"model_version.task": "is required"})
        versions = self.versions.setdefault(v.name, [])
        v.version = len(versions) + 1
        versions.append(v)
        for alias in request.aliases:
            self.aliases.setdefault(v.name, {})[alias] = v.version
        self.aliases.setdefault(v.name, {})
        return reg_api.RegisterModelVersionResponse(model_version=self._version(v.name, v.version))

    async def GetModelVersion(self, request, context):
        return reg_api.GetModelVersionResponse(model_version=self._version(request.name, request.version))

    async def GetModel(self, request, context):
        return reg_api.GetModelResponse(model=self._model(request.name))

    async def ListModels(self, request, context):
        return reg_api.ListModelsResponse(models=[self._model(n) for n in sorted(self.versions)])

    async def ListModelVersions(self, request, context):
        versions = [self._version(request.name, v.version) for v in reversed(self._versions(request.name))]
        return reg_api.ListModelVersionsResponse(model_versions=versions)

    async def SetAlias(self, request, context):
        target = self._version(request.name, request.version)
        previous = self.aliases[request.name].get(request.alias, 0)
        if request.expected_current_version and previous != request.expected_current_version:
            raise errors.FailedPrecondition(f"{request.alias} points at {previous}")
        self.aliases[request.name][request.alias] = target.version
        return reg_api.SetAliasResponse(
            model_version=self._version(request.name, target.version), previous_version=previous
        )

    async def ResolveAlias(self, request, context):
        number = self.aliases.get(request.name, {}).get(request.alias)
        if number is None:
            raise errors.NotFound(f"alias {request.alias} of {request.name} not found")
        return reg_api.ResolveAliasResponse(model_version=self._version(request.name, number))


def _copy(v: mr.ModelVersion) -> mr.ModelVersion:
    out = mr.ModelVersion()
    out.CopyFrom(v)
    return out


@pytest.fixture
def storage(threaded_grpc_server) -> FakeStorage:
    """The storage double (and a registry double, `storage.registry`) on a grpc.aio server with
    mlmesh's interceptors, on its own loop in a thread: the client under test is synchronous."""
    fake = FakeStorage()
    fake.registry = FakeRegistry()
    fake.target = threaded_grpc_server(
        lambda srv: (
            storage_service_pb2_grpc.add_StorageServiceServicer_to_server(fake, srv),
            model_registry_service_pb2_grpc.add_ModelRegistryServiceServicer_to_server(fake.registry, srv),
        )
    )
    return fake


@pytest.fixture
def token(signing_key) -> str:
    return signing_key.token(subject="alice", team="team-a", roles=["developer"])


@pytest.fixture
def client(storage, token):
    c = Client("storage", storage_service_pb2_grpc.StorageServiceStub, endpoint=storage.target, token=token)
    yield c
    c.close()


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def blob(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


FILES = {
    "model.safetensors": blob(5 * CHUNK + 123, 1),
    "config.json": b'{"a": 1}\n',
    "tokenizer/vocab.txt": blob(CHUNK, 2),
    "empty.txt": b"",
}


def draft(name: str = "ckpt") -> api.ArtifactDraft:
    return api.ArtifactDraft(name=name, kind=artifact_pb2.ARTIFACT_KIND_GENERIC)


def uploaded_bytes(fake: FakeStorage, path: str | None = None) -> int:
    return sum(n for _, p, _, n in fake.chunks if path is None or p == path)


# --- local files ---------------------------------------------------------------------------------


def test_collect_files_sorted_posix_paths_and_inside_symlinks(tmp_path):
    root = make_tree(tmp_path / "d", {"b/x.bin": b"x", "a.txt": b"a", "b.txt": b"b"})
    os.symlink("a.txt", root / "link.txt")
    os.symlink("b", root / "c")
    got = [rel for rel, _ in transfer.collect_files(root)]
    assert got == ["a.txt", "b.txt", "b/x.bin", "c/x.bin", "link.txt"]
    assert [rel for rel, _ in transfer.collect_files(root / "a.txt")] == ["a.txt"]


def test_collect_files_refuses_symlinks_leaving_the_directory_and_loops(tmp_path):
    outside = tmp_path / "secret"
    outside.write_text("s")
    root = make_tree(tmp_path / "d", {"a.txt": b"a"})
    os.symlink(outside, root / "escape")
    with pytest.raises(TransferError, match="points outside"):
        transfer.collect_files(root)
    (root / "escape").unlink()
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "up")
    with pytest.raises(TransferError, match="loops"):
        transfer.collect_files(root)
    (root / "sub" / "up").unlink()
    os.symlink("missing", root / "dangling")
    with pytest.raises(TransferError, match="missing or special"):
        transfer.collect_files(root)


def test_scan_hashes_every_file(tmp_path):
    root = make_tree(tmp_path / "d", FILES)
    files = transfer.scan(root)
    assert {f.path: (f.size, f.sha256) for f in files} == {p: (len(d), sha(d)) for p, d in FILES.items()}


# --- upload --------------------------------------------------------------------------------------


def test_upload_round_trips_a_directory_and_skips_present_blobs(client, storage, tmp_path):
    root = make_tree(tmp_path / "src", FILES)
    seen = []
    artifact = transfer.upload(client, root, draft(), request_id="r1", on_progress=lambda d, t: seen.append((d, t)))
    total = sum(len(d) for d in FILES.values())
    assert artifact.meta.id == "art-1"
    assert [f.path for f in artifact.manifest.files] == sorted(FILES)
    assert artifact.manifest.total_size_bytes == total
    assert uploaded_bytes(storage) == total  # every byte exactly once
    assert all(n <= CHUNK for *_, n in storage.chunks)
    assert seen[-1] == (total, total)

    out = transfer.download(client, artifact.meta.id, tmp_path / "out")
    assert out.meta.id == artifact.meta.id
    for rel, data in FILES.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
    assert not list((tmp_path / "out").rglob("*.partial"))

    # A second artifact sharing the big file: the server has its blob, so it is not sent again.
    storage.chunks.clear()
    root2 = make_tree(tmp_path / "src2", {"model.safetensors": FILES["model.safetensors"], "new.txt": b"new"})
    second = transfer.upload(client, root2, draft("other"), request_id="r2")
    assert uploaded_bytes(storage, "model.safetensors") == 0
    assert uploaded_bytes(storage, "new.txt") == 3
    assert [f.path for f in second.manifest.files] == ["model.safetensors", "new.txt"]


def test_a_single_file_uploads_under_its_name_with_a_smaller_chunk(client, storage, tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(blob(3 * CHUNK, 7))
    artifact = transfer.upload(client, path, draft(), chunk_size=1000)
    assert [f.path for f in artifact.manifest.files] == ["weights.bin"]
    assert max(n for *_, n in storage.chunks) == 1000


def test_broken_upload_resumes_at_the_servers_offsets_without_resending(client, storage, tmp_path):
    root = make_tree(tmp_path / "src", FILES)
    storage.break_upload_at = 2 * CHUNK + 1  # inside model.safetensors (sorted after config.json and empty.txt)
    artifact = transfer.upload(client, root, draft(), request_id="r1")
    assert storage.upload_streams == 2
    assert uploaded_bytes(storage) == sum(len(d) for d in FILES.values())  # nothing re-sent
    first, second = ([c[1:3] for c in storage.chunks if c[0] == n] for n in (1, 2))
    assert first[-1] == ("model.safetensors", CHUNK)  # the stream broke after two chunks of it
    assert second[0] == ("model.safetensors", 2 * CHUNK)  # and the next one went on from there
    assert ("config.json", 0) not in second
    transfer.download(client, artifact.meta.id, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == FILES["model.safetensors"]


def test_the_same_request_id_continues_an_interrupted_session(client, storage, tmp_path):
    root = make_tree(tmp_path / "src", {"big.bin": blob(6 * CHUNK, 3)})
    storage.break_upload_at = 2 * CHUNK
    storage.fail_after_break = 100  # then storage stays down
    with pytest.raises(RpcFailure) as info:
        transfer.upload(client, root, draft(), request_id="same", max_retries=0)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert storage.aborted == []  # a transient failure keeps the session for a later resume
    storage.fail_streams = 0
    transfer.upload(client, root, draft(), request_id="same")
    assert uploaded_bytes(storage) == 6 * CHUNK
    assert next(c[2] for c in storage.chunks if c[0] > 1) == 2 * CHUNK  # the second run went on from there


def test_upload_retries_without_progress_are_bounded(client, storage, tmp_path):
    root = make_tree(tmp_path / "src", {"big.bin": blob(2 * CHUNK, 3)})
    storage.fail_streams = 100
    with pytest.raises(RpcFailure) as info:
        transfer.upload(client, root, draft(), max_retries=2)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and "mlmesh status" in info.value.hint
    assert storage.upload_streams == 3  # the first try and two retries
    storage.upload_streams, storage.fail_streams = 0, 2
    transfer.upload(client, root, draft(), max_retries=2)
    assert storage.upload_streams == 3


def test_a_failed_commit_aborts_the_session(client, storage, tmp_path):
    root = make_tree(tmp_path / "src", {"a.txt": b"a"})
    storage.commit_error = errors.FailedPrecondition("a.txt: staged bytes do not match the manifest")
    with pytest.raises(RpcFailure) as info:
        transfer.upload(client, root, draft())
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert storage.aborted == ["up-1"]


def test_a_file_that_shrinks_while_uploading_fails_locally(client, storage, tmp_path, monkeypatch):
    root = make_tree(tmp_path / "src", {"a.bin": blob(3 * CHUNK, 1)})
    real_scan = transfer.scan

    def scan_then_truncate(path, on_progress=None):
        files = real_scan(path, on_progress)
        (root / "a.bin").write_bytes(blob(CHUNK, 1))
        return files

    monkeypatch.setattr(transfer, "scan", scan_then_truncate)
    with pytest.raises(TransferError, match="shrank while uploading"):
        transfer.upload(client, root, draft())
    assert storage.aborted == ["up-1"] and not storage.artifacts


# --- download ------------------------------------------------------------------------------------


@pytest.fixture
def stored(client, storage, tmp_path) -> str:
    root = make_tree(tmp_path / "src", FILES)
    artifact_id = transfer.upload(client, root, draft()).meta.id
    storage.chunks.clear()
    return artifact_id


def test_download_resumes_a_broken_stream_at_the_bytes_written(client, storage, stored, tmp_path):
    storage.break_download_at = 2 * CHUNK
    seen = []
    transfer.download(client, stored, tmp_path / "out", on_progress=lambda d, t: seen.append((d, t)))
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    requests = [r for r in storage.downloads if r[0] == "model.safetensors"]
    assert requests == [("model.safetensors", 0), ("model.safetensors", 2 * CHUNK)]
    total = sum(len(d) for d in FILES.values())
    assert seen[-1] == (total, total)


def test_corruption_raises_and_leaves_no_final_file(client, storage, stored, tmp_path):
    storage.corrupt_download = True
    dest = tmp_path / "out"
    with pytest.raises(IntegrityError, match=r"SHA-256 \w+ does not match"):
        transfer.download(client, stored, dest, path_filter="model.*")
    assert not (dest / "model.safetensors").exists()
    assert not (dest / "model.safetensors.partial").exists()
    # Nothing else was fetched (the filter), and a retry now succeeds.
    transfer.download(client, stored, dest, path_filter="model.*")
    assert (dest / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert sorted(p.name for p in dest.iterdir()) == ["model.safetensors"]


def test_a_partial_file_from_an_earlier_run_is_continued_and_good_files_kept(client, storage, stored, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    data = FILES["model.safetensors"]
    (dest / "model.safetensors.partial").write_bytes(data[: 3 * CHUNK])
    (dest / "config.json").write_bytes(FILES["config.json"])
    transfer.download(client, stored, dest)
    assert (dest / "model.safetensors").read_bytes() == data
    assert ("model.safetensors", 3 * CHUNK) in storage.downloads
    assert all(p != "config.json" for p, _ in storage.downloads)  # already correct: not fetched


def test_manifest_paths_escaping_dest_are_refused_before_writing(client, storage, stored, tmp_path):
    bad = storage.artifacts[stored]
    for path in ("../evil", "/etc/evil", "a/../../evil", "./x", "a//b"):
        del bad.manifest.files[:]
        bad.manifest.files.add(path=path, size_bytes=1, sha256=sha(b"x"))
        dest = tmp_path / "out"
        with pytest.raises(TransferError, match="refusing manifest path"):
            transfer.download(client, stored, dest)
        assert not (tmp_path / "evil").exists()
    # A symlink already inside dest that points out is not followed either.
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    del bad.manifest.files[:]
    bad.manifest.files.add(path="link/evil", size_bytes=1, sha256=sha(b"x"))
    with pytest.raises(TransferError, match="resolves outside"):
        transfer.download(client, stored, tmp_path / "out")
    assert storage.downloads == []


def test_unknown_artifact_is_a_translated_not_found(client):
    with pytest.raises(RpcFailure) as info:
        transfer.download(client, "nope", Path("/nonexistent-never-written"))
    assert info.value.code == grpc.StatusCode.NOT_FOUND and info.value.message.startswith("not_found: ")


# --- CLI -----------------------------------------------------------------------------------------


@pytest.fixture
def cli(storage, token, monkeypatch, tmp_path):
    from mlmesh.cli.main import app

    monkeypatch.setenv("MLMESH_STORAGE_ADDR", storage.target)
    monkeypatch.setenv("MLMESH_TOKEN", token)
    monkeypatch.setenv("MLMESH_STATE_DIR", str(tmp_path / "state"))
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=True)

    return run


def test_cli_put_ls_get_rm(cli, storage, tmp_path):
    root = make_tree(tmp_path / "src", FILES)
    put = cli("artifacts", "put", str(root), "--name", "minilm", "--kind", "model", "--label", "run=1")
    assert put.exit_code == 0, put.output
    artifact_id = put.stdout.strip().splitlines()[-1]
    assert artifact_id == "art-1"
    assert storage.artifacts[artifact_id].kind == artifact_pb2.ARTIFACT_KIND_MODEL

    ls = cli("artifacts", "ls", "--kind", "model")
    assert ls.exit_code == 0 and "minilm" in ls.stdout and "art-1" in ls.stdout and "hot" in ls.stdout
    ls_json = cli("artifacts", "ls", "--json")
    assert '"id": "art-1"' in ls_json.stdout

    got = cli("artifacts", "get", artifact_id, str(tmp_path / "out"))
    assert got.exit_code == 0, got.output
    assert (tmp_path / "out" / "tokenizer" / "vocab.txt").read_bytes() == FILES["tokenizer/vocab.txt"]

    assert cli("artifacts", "rm", artifact_id).exit_code == 0
    assert artifact_id not in storage.artifacts


def test_cli_bad_flags_exit_2(cli, tmp_path):
    (tmp_path / "f").write_text("x")
    bad_kind = cli("artifacts", "put", str(tmp_path / "f"), "--name", "n", "--kind", "weights")
    assert bad_kind.exit_code != 0 and "one of" in bad_kind.exception.hint


def test_cli_large_put_draws_progress_on_stderr_and_prints_only_the_id(cli, storage, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 << 20))
    put = cli("artifacts", "put", str(big), "--name", "big")
    assert put.exit_code == 0, put.output
    assert put.stdout == "art-1\n"
    assert "uploading" in put.stderr and "MiB" in put.stderr
    got = cli("artifacts", "get", "art-1", str(tmp_path / "out"), "--no-progress")
    assert got.exit_code == 0 and got.stderr == ""
    assert (tmp_path / "out" / "big.bin").read_bytes() == big.read_bytes()


# --- models CLI (a minimal registry double on the same server) -----------------------------------


def test_cli_models_register_ls_get_alias(cli, storage):
    reg = cli(
        "models", "register", "minilm", "--artifact", "art-1", "--task", "text-classification",
        "--framework", "transformers", "--metric", "eval_accuracy=0.91", "--alias", "canary",
        "--property", "num_labels=2",
    )  # fmt: skip
    assert reg.exit_code == 0, reg.output
    assert reg.stdout == "minilm:1\n"
    lora = cli("models", "register", "minilm", "--artifact", "art-2", "--task", "text-classification",
               "--base-model", "model://base@1", "--json")  # fmt: skip
    assert lora.exit_code == 0, lora.output
    body = json.loads(lora.stdout)
    assert body["version"] == "2" and body["weights_kind"] == "WEIGHTS_KIND_ADAPTER"
    assert body["adapter_type"] == "lora" and body["base_model"] == "model://base@1"

    moved = cli("models", "alias", "minilm", "prod", "2")
    assert moved.exit_code == 0 and "minilm@prod → 2 (new)" in moved.stdout
    stale = cli("models", "alias", "minilm", "prod", "1", "--expect", "1")
    assert stale.exit_code != 0 and stale.exception.code == grpc.StatusCode.FAILED_PRECONDITION

    at_alias = json.loads(cli("models", "get", "minilm@canary", "--json").stdout)
    assert at_alias["version"] == "1" and at_alias["metrics"] == {"eval_accuracy": 0.91}
    assert at_alias["properties"] == {"num_labels": "2"} and at_alias["task"] == "MODEL_TASK_TEXT_CLASSIFICATION"
    latest = json.loads(cli("models", "get", "minilm:latest", "--json").stdout)
    assert latest["version"] == "2" and latest["aliases"] == ["prod"]
    human = cli("models", "get", "minilm:1")
    assert human.exit_code == 0 and "eval_accuracy=0.91" in human.stdout and "canary" in human.stdout
    model = cli("models", "get", "minilm")
    assert model.exit_code == 0 and "canary→1" in model.stdout and "prod→2" in model.stdout
    listed = cli("models", "ls")
    assert listed.exit_code == 0 and "minilm" in listed.stdout and "prod→2" in listed.stdout

    missing_task = cli("models", "register", "other", "--artifact", "art-1")
    assert missing_task.exception.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "model_version.task: is required" in missing_task.exception.message
    bad = cli("models", "get", "minilm:x")
    assert bad.exit_code != 0 and bad.exception.exit_code == 2
