"""Crash injection (`os._exit(77)` in a subprocess) at every step of a commit and of a tier move.

After each crash the catalog holds the previous state or the new complete artifact, never a torn
one; every committed artifact reads back verified; a retry finishes the job; GC frees what the
crash left and nothing that is referenced.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from mlmesh.common.errors import NotFound
from mlmesh.storage.faults import COMMIT_STEPS, CRASH_EXIT_CODE, MOVE_STEPS

from .conftest import HOT, WARM, draft, make_core, read_all, stage, worker_cmd, worker_env

pytestmark = pytest.mark.timeout(120)

OLD = {"model.bin": os.urandom(3 << 20), "config.json": b'{"v": 1}'}
NEW = {"model.bin": os.urandom((4 << 20) + 17), "config.json": b'{"v": 2}', "shared.bin": OLD["model.bin"]}
# Steps a filesystem commit passes (`blob_temp_written` belongs to the copy path, i.e. moves).
COMMIT_CRASHES = [s for s in COMMIT_STEPS] + ["blob_placed:2", "hashed:3"]
MOVE_CRASHES = ["validated_never", *MOVE_STEPS, "sidecar_written", "blob_renamed"]


def run_worker(nats, bucket, dirs, crash, *args) -> subprocess.CompletedProcess:
    env = worker_env(MLMESH_STORAGE_CRASH_AT=crash, MLMESH_TEST_NATS_CREDS=str(nats.creds("admin")))
    cmd = worker_cmd(args[0], nats.url, bucket, str(dirs["hot"]), str(dirs["warm"]), *args[1:])
    return subprocess.run(cmd, env=env, capture_output=True, timeout=90)


async def assert_all_committed_read_back(core, catalog, expected: dict[str, dict[str, bytes]]):
    for artifact in await catalog.snapshot():
        files = expected[artifact.meta.id]
        assert sorted(f.path for f in artifact.manifest.files) == sorted(files)
        for path, data in files.items():
            assert await read_all(core, artifact, path) == data
    await core.drain()  # reads may promote warm artifacts in the background; let that finish first


@pytest.mark.parametrize("crash", COMMIT_CRASHES)
async def test_crash_during_commit(crash, nats_server, catalog, bucket, dirs, tmp_path):
    core = make_core(catalog, dirs)
    await core.commit("old", draft(), stage(core, "old", OLD))
    spec = tmp_path / "new.json"
    spec.write_text(json.dumps({p: d.hex() for p, d in NEW.items()}))

    proc = run_worker(nats_server, bucket, dirs, crash, "commit", "new", str(spec))
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr.decode()[-2000:]

    ids = {a.meta.id for a in await catalog.snapshot()}
    committed = crash in ("recorded", "cleaned")
    assert ids == ({"old", "new"} if committed else {"old"})
    await assert_all_committed_read_back(core, catalog, {"old": OLD, "new": NEW})

    # The writer retries (re-staging what it wrote) and gets the complete artifact.
    retry = await core.commit("new", draft(), stage(core, "new", NEW))
    assert retry.meta.id == "new"
    await assert_all_committed_read_back(core, catalog, {"old": OLD, "new": NEW})

    # GC (no grace) frees crash debris only; both artifacts stay readable.
    await core.gc_once(older_than_s=0)
    await assert_all_committed_read_back(core, catalog, {"old": OLD, "new": NEW})
    referenced = {f.sha256 for a in await catalog.snapshot() for f in a.manifest.files}
    assert set(core.tiers[HOT].iter_digests()) == referenced


@pytest.mark.parametrize("crash", MOVE_CRASHES)
async def test_crash_during_tier_move(crash, nats_server, catalog, bucket, dirs):
    # No promotion on read here: with the tests' grace of 0 s a promotion triggered by reading one
    # file of a warm artifact releases its warm blobs while the next file is still to be read.
    core = make_core(catalog, dirs, promote_on_read=False)
    await core.commit("a", draft(), stage(core, "a", OLD))
    await core.commit("b", draft(), stage(core, "b", {"shared.bin": OLD["model.bin"]}))

    proc = run_worker(nats_server, bucket, dirs, crash, "move", "a", str(WARM))
    if crash == "validated_never":
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    else:
        assert proc.returncode == CRASH_EXIT_CODE, proc.stderr.decode()[-2000:]
    a = await catalog.get("a")
    assert a.tier == (WARM if crash in ("move_recorded", "validated_never") else HOT)
    await assert_all_committed_read_back(core, catalog, {"a": OLD, "b": {"shared.bin": OLD["model.bin"]}})
    await core.gc_once(older_than_s=0)
    await assert_all_committed_read_back(core, catalog, {"a": OLD, "b": {"shared.bin": OLD["model.bin"]}})
    # b (hot) still holds the shared blob in hot whatever happened to a.
    assert core.tiers[HOT].has(a.manifest.files[1].sha256)
    with pytest.raises(NotFound):
        await catalog.get("c")
