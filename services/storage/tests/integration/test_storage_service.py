"""The storage service as users run it: a `python -m mlmesh.storage` process on real NATS and real
SeaweedFS, driven through gRPC and the `mlmesh artifacts` / `mlmesh models` CLI."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from mlmesh.api.storage.v1 import artifact_pb2, storage_service_pb2_grpc
from mlmesh.api.storage.v1 import storage_service_pb2 as api
from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.local.process import ManagedProcess
from mlmesh.local.servers import NatsServer

pytestmark = pytest.mark.timeout(180)


class Service:
    def __init__(self, tmp: Path, nats: NatsServer, s3):
        self.tmp = tmp
        private, public = generate_signing_key()
        write_secret(tmp / "public.pem", public)
        self.alice = mint_token(private, subject="alice", team="team-a", roles=["developer"])
        self.bob = mint_token(private, subject="bob", team="team-b", roles=["developer"])
        self.admin = mint_token(private, subject="admin", team="platform", roles=["admin"])
        ready = tmp / "storage.ready"
        p = "MLMESH_STORAGE_"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
        env.update(
            {
                **{p + k: v for k, v in nats.service_settings("storage").items()},
                p + "AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem"),
                p + "READY_FILE": str(ready),
                p + "METRICS_PORT": "-1",
                p + "HOT_DIR": str(tmp / "hot"),
                p + "WARM_DIR": str(tmp / "warm"),
                p + "S3_ENDPOINT_URL": s3.endpoint_url,
                p + "S3_BUCKET": s3.bucket,  # the only bucket its S3 identity may use
                p + "S3_ACCESS_KEY": s3.access_key,
                p + "S3_SECRET_KEY": s3.secret_key,
            }
        )
        self.proc = ManagedProcess(
            "storage", [sys.executable, "-m", "mlmesh.storage"], log_path=tmp / "storage.log", env=env
        )
        self.proc.start()
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert self.proc.alive(), self.proc.log_tail()
            assert time.monotonic() < deadline, "storage did not start"
            time.sleep(0.05)
        self.address = f"127.0.0.1:{json.loads(ready.read_text())['grpc_port']}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = storage_service_pb2_grpc.StorageServiceStub(self.channel)

    def md(self, token: str):
        return (("authorization", f"Bearer {token}"),)

    def cli(self, token: str, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
        env.update({"MLMESH_STORAGE_ADDR": self.address, "MLMESH_TOKEN": token})
        return subprocess.run(
            [sys.executable, "-m", "mlmesh.cli.main", *args], env=env, capture_output=True, text=True, timeout=120
        )

    def close(self):
        self.channel.close()
        self.proc.stop(grace=10)


@pytest.fixture
def service(tmp_path: Path, s3_server):
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    svc = None
    try:
        svc = Service(tmp_path, nats, s3_server)
        yield svc
    finally:
        if svc is not None:
            svc.close()
        nats.stop()


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_cli_put_get_ls_rm_and_models(service, tmp_path):
    files = {"config.json": b'{"a": 1}', "shards/model-0.bin": os.urandom(3 << 20), "shards/model-1.bin": b"x" * 10}
    src = _tree(tmp_path / "src", files)
    put = service.cli(service.alice, "artifacts", "put", str(src), "--name", "demo-model", "--kind", "model")
    assert put.returncode == 0, put.stderr
    artifact_id = put.stdout.strip().splitlines()[-1]
    listed = service.cli(service.alice, "artifacts", "ls", "--json")
    assert artifact_id in listed.stdout
    got = service.cli(service.alice, "artifacts", "get", artifact_id, str(tmp_path / "dst"))
    assert got.returncode == 0, got.stderr
    for name, data in files.items():
        assert (tmp_path / "dst" / name).read_bytes() == data
    # Another team sees nothing of it.
    other = service.cli(service.bob, "artifacts", "get", artifact_id, str(tmp_path / "bob"))
    assert other.returncode == 1 and "not_found" in other.stderr
    # Register it as a model version and move an alias.
    reg = service.cli(service.alice, "models", "register", "demo", "--artifact", artifact_id, "--task", "embedding")
    assert reg.returncode == 0, reg.stderr
    assert reg.stdout.strip().endswith("demo:1")
    assert service.cli(service.alice, "models", "alias", "demo", "prod", "1").returncode == 0
    resolved = service.cli(service.alice, "models", "get", "demo@prod", "--json")
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(resolved.stdout)["artifact_id"] == artifact_id
    # A registered model's artifact is pinned: deleting it needs --force.
    refused = service.cli(service.alice, "artifacts", "rm", artifact_id)
    assert refused.returncode == 1 and "failed_precondition" in refused.stderr


def test_grpc_direct_paths_ranges_quota_datasets(service, tmp_path):
    md = service.md(service.alice)
    stub = service.stub
    # Direct filesystem path: a worker writes its shards itself; commit verifies the manifest.
    draft = api.ArtifactDraft(name="ckpt", kind=artifact_pb2.ARTIFACT_KIND_CHECKPOINT)
    draft.checkpoint.job_id = "job-1"
    direct = stub.CreateDirectUpload(api.CreateDirectUploadRequest(artifact=draft), metadata=md)
    shard = os.urandom(1 << 20)
    Path(direct.filesystem_path, "rank-0.pt").write_bytes(shard)
    manifest = artifact_pb2.Manifest()
    manifest.files.add(path="rank-0.pt", size_bytes=len(shard), sha256=hashlib.sha256(shard).hexdigest())
    bad = artifact_pb2.Manifest()
    bad.CopyFrom(manifest)
    bad.files[0].sha256 = "0" * 64
    with pytest.raises(grpc.RpcError) as err:
        stub.CommitArtifact(api.CommitArtifactRequest(upload_id=direct.upload_id, manifest=bad), metadata=md)
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    artifact = stub.CommitArtifact(
        api.CommitArtifactRequest(upload_id=direct.upload_id, manifest=manifest), metadata=md
    ).artifact
    assert artifact.state == artifact_pb2.ARTIFACT_STATE_COMMITTED and artifact.tier == artifact_pb2.STORAGE_TIER_HOT
    # Range read: exactly the bytes asked for, verified.
    chunks = list(
        stub.Download(
            api.DownloadRequest(artifact_id=artifact.meta.id, path="rank-0.pt", offset_bytes=1000, length_bytes=5000),
            metadata=md,
        )
    )
    assert chunks[0].file.sha256 == manifest.files[0].sha256
    assert b"".join(c.data for c in chunks) == shard[1000:6000]
    # Direct download: a view of hard links. A second call (another reader) reuses the complete view,
    # so a file the first reader holds open or is about to open is never pulled from under it.
    view = stub.CreateDirectDownload(api.CreateDirectDownloadRequest(artifact_id=artifact.meta.id), metadata=md)
    directory = Path(view.filesystem_path).stat().st_ino  # a rebuilt view is a new directory
    again = stub.CreateDirectDownload(api.CreateDirectDownloadRequest(artifact_id=artifact.meta.id), metadata=md)
    assert again.filesystem_path == view.filesystem_path and Path(again.filesystem_path).stat().st_ino == directory
    assert Path(view.filesystem_path, "rank-0.pt").read_bytes() == shard
    # A ttl protobuf cannot convert (it overflowed: INTERNAL), or out of bounds, names the field.
    for seconds in (2**63 - 1, -(2**63), 30):
        ask = api.CreateDirectDownloadRequest(artifact_id=artifact.meta.id)
        ask.ttl.seconds = seconds
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateDirectDownload(ask, metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ttl" in err.value.details()
        begin = api.CreateDirectUploadRequest(artifact=draft)
        begin.ttl.seconds = seconds
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateDirectUpload(begin, metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ttl" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.Download(
                api.DownloadRequest(artifact_id=artifact.meta.id, path="rank-0.pt"), metadata=service.md(service.bob)
            )
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # Presigned S3 URLs: the bytes go straight to the object store, commit verifies them.
    presigned = stub.CreateDirectUpload(
        api.CreateDirectUploadRequest(
            artifact=api.ArtifactDraft(name="via-s3", kind=artifact_pb2.ARTIFACT_KIND_GENERIC),
            method=api.DIRECT_ACCESS_METHOD_S3_PRESIGNED,
            paths=["blob.bin"],
        ),
        metadata=md,
    )
    payload = os.urandom(64 << 10)
    request = urllib.request.Request(presigned.urls[0].url, data=payload, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 200
    s3_manifest = artifact_pb2.Manifest()
    s3_manifest.files.add(path="blob.bin", size_bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    via_s3 = stub.CommitArtifact(
        api.CommitArtifactRequest(upload_id=presigned.upload_id, manifest=s3_manifest), metadata=md
    ).artifact
    data = b"".join(
        c.data for c in stub.Download(api.DownloadRequest(artifact_id=via_s3.meta.id, path="blob.bin"), metadata=md)
    )
    assert data == payload

    # A jsonl dataset gets its schema and row count at commit.
    rows = b"".join(json.dumps({"text": f"t{i}", "label": i % 2}).encode() + b"\n" for i in range(25))
    ds = service.cli(
        service.alice,
        "artifacts",
        "put",
        str(_tree(tmp_path / "ds", {"train.jsonl": rows})),
        "--name",
        "ds",
        "--kind",
        "dataset",
        "--json",
    )
    assert ds.returncode == 0, ds.stderr
    info = json.loads(ds.stdout)["dataset"]
    assert int(info["row_count"]) == 25 and {c["name"] for c in info["columns"]} == {"text", "label"}

    # Quota: over it is RESOURCE_EXHAUSTED, and nothing is stored.
    admin = service.md(service.admin)
    stub.SetQuota(api.SetQuotaRequest(team="team-a", quota_bytes=2 << 20), metadata=admin)
    big = service.cli(
        service.alice, "artifacts", "put", str(_tree(tmp_path / "big", {"x.bin": os.urandom(3 << 20)})), "--name", "big"
    )
    assert big.returncode == 1 and "resource_exhausted" in big.stderr
    usage = stub.GetUsage(api.GetUsageRequest(), metadata=md).usage
    assert usage.quota_bytes == 2 << 20 and usage.artifact_count == 3


async def test_expired_upload_sessions_are_listed_and_refused(nats_server):
    from mlmesh.common import events
    from mlmesh.common.errors import NotFound
    from mlmesh.storage.uploads import Session, Sessions

    nc = await events.connect(nats_server.url, "sessions-test", **nats_server.client_options())
    try:
        sessions = await Sessions.open(nc.jetstream())
        old = Session(
            "aexpired" + secrets.token_hex(3), "team-a", "u", api.ArtifactDraft(name="x"), {}, time.time() - 1
        )
        fresh = Session(
            "afresh" + secrets.token_hex(3), "team-a", "u", api.ArtifactDraft(name="y"), {"f": 3}, time.time() + 60
        )
        await sessions.create(old)
        await sessions.create(fresh)
        expired = {s.upload_id for s in await sessions.expired()}
        assert old.upload_id in expired and fresh.upload_id not in expired
        with pytest.raises(NotFound):
            await sessions.get(old.upload_id)
        assert (await sessions.get(fresh.upload_id)).expected == {"f": 3}
        await sessions.delete(old.upload_id)
        assert old.upload_id not in {s.upload_id for s in await sessions.expired()}
    finally:
        await nc.close()
