"""Commit protocol on a real nats-server: verification, de-duplication, idempotency, concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.common.errors import FailedPrecondition, InvalidArgument, NotFound

from .conftest import HOT, draft, make_core, read_all, stage, worker_cmd, worker_env

pytestmark = pytest.mark.timeout(120)


async def test_commit_then_read_back(core, catalog):
    files = {"model/shard-0.bin": os.urandom(300_000), "model/shard-1.bin": os.urandom(5 << 20), "meta.json": b"{}"}
    manifest = stage(core, "up1", files)
    artifact = await core.commit("up1", draft(), manifest)
    assert artifact.state == artifact_pb2.ARTIFACT_STATE_COMMITTED and artifact.tier == HOT
    assert [f.path for f in artifact.manifest.files] == sorted(files)
    assert artifact.manifest.total_size_bytes == sum(map(len, files.values()))
    stored = await catalog.get("up1")
    assert stored.digest == artifact.digest and stored.meta.revision > 0
    for path, data in files.items():
        assert await read_all(core, stored, path) == data
    assert (
        await read_all(core, stored, "model/shard-1.bin", (4 << 20) - 3, 10)
        == files["model/shard-1.bin"][(4 << 20) - 3 : (4 << 20) + 7]
    )
    assert not core.stage_dir("up1").exists() or not any(core.stage_dir("up1").iterdir())
    # A retried commit of the same upload returns the same artifact.
    again = await core.commit("up1", draft(), manifest)
    assert again.meta.revision == stored.meta.revision


async def test_mismatch_publishes_nothing(core, catalog):
    manifest = stage(core, "bad", {"a.bin": b"hello"})
    manifest.files[0].sha256 = "0" * 64
    with pytest.raises(FailedPrecondition):
        await core.commit("bad", draft(), manifest)
    with pytest.raises(NotFound):
        await catalog.get("bad")
    manifest = stage(core, "bad2", {"a.bin": b"hello"})
    manifest.files[0].size_bytes = 4
    with pytest.raises(FailedPrecondition):
        await core.commit("bad2", draft(), manifest)
    missing = artifact_pb2.Manifest()
    missing.files.add(path="never.bin", size_bytes=1, sha256="1" * 64)
    with pytest.raises(FailedPrecondition):
        await core.commit("bad3", draft(), missing)
    with pytest.raises(InvalidArgument):
        await core.commit("bad4", draft(), artifact_pb2.Manifest(files=[artifact_pb2.FileEntry(path="../x")]))
    assert await catalog.snapshot() == []


async def test_dedup_skipped_file_and_shared_blob(core, dirs):
    base = os.urandom(1 << 20)
    a = await core.commit("a1", draft(), stage(core, "a1", {"base.bin": base, "lora-a.bin": b"A" * 10}))
    # The second upload skips base.bin (already stored) and names it in its manifest only.
    manifest = stage(core, "b1", {"lora-b.bin": b"B" * 10})
    manifest.files.add(path="base.bin", size_bytes=len(base), sha256=a.manifest.files[0].sha256)
    b = await core.commit("b1", draft(), manifest)
    assert await read_all(core, b, "base.bin") == base
    assert len(list(core.tiers[HOT].iter_digests())) == 3


async def test_concurrent_commits_of_same_content_in_tasks(core):
    data = os.urandom(6 << 20)
    manifests = [stage(core, f"c{i}", {"w.bin": data}) for i in range(4)]
    arts = await asyncio.gather(*(core.commit(f"c{i}", draft(), m) for i, m in enumerate(manifests)))
    assert len({a.digest for a in arts}) == 1
    assert list(core.tiers[HOT].iter_digests()) == [arts[0].manifest.files[0].sha256]
    for a in arts:
        assert await read_all(core, a, "w.bin") == data


async def test_concurrent_commits_of_same_content_in_two_processes(nats_server, catalog, bucket, dirs, tmp_path):
    spec = tmp_path / "files.json"
    data = os.urandom(9 << 20)
    spec.write_text(json.dumps({"w.bin": data.hex(), "small.txt": b"x".hex()}))
    await asyncio.to_thread(_run_concurrently, nats_server, bucket, dirs, spec)
    core = make_core(catalog, dirs)
    assert len(list(core.tiers[HOT].iter_digests())) == 2
    for i in range(2):
        a = await catalog.get(f"p{i}")
        assert await read_all(core, a, "w.bin") == data


def _run_concurrently(nats, bucket, dirs, spec) -> None:
    procs = [
        subprocess.Popen(
            worker_cmd("commit", nats.url, bucket, str(dirs["hot"]), str(dirs["warm"]), f"p{i}", str(spec)),
            env=worker_env(MLMESH_TEST_NATS_CREDS=str(nats.creds("admin"))),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err.decode()[-2000:]
