"""Refcount-safe deletion, orphan GC with its grace period, and retention through the core."""

from __future__ import annotations

import os

import pytest

from mlmesh.api.common.v1 import common_pb2
from mlmesh.common.errors import FailedPrecondition, NotFound

from .conftest import HOT, draft, make_core, read_all, stage

pytestmark = pytest.mark.timeout(120)


async def test_delete_never_removes_a_referenced_blob(core, catalog):
    shared = os.urandom(2 << 20)
    a = await core.commit("a", draft(), stage(core, "a", {"base.bin": shared, "a.bin": b"a"}))
    b = await core.commit("b", draft(), stage(core, "b", {"base.bin": shared, "b.bin": b"b"}))
    base = a.manifest.files[1].sha256 if a.manifest.files[1].path == "base.bin" else a.manifest.files[0].sha256
    await core.delete("a")
    with pytest.raises(NotFound):
        await catalog.get("a")
    assert core.tiers[HOT].has(base)
    assert await read_all(core, b, "base.bin") == shared
    await core.gc_once(older_than_s=0)
    assert await read_all(core, b, "base.bin") == shared
    await core.delete("b")
    assert list(core.tiers[HOT].iter_digests()) == []


async def test_gc_keeps_fresh_orphans_and_pinned_needs_force(catalog, dirs):
    core = make_core(catalog, dirs, grace_s=3600)
    a = await core.commit("a", draft(), stage(core, "a", {"x.bin": b"x" * 100}))
    await core.delete("a")  # inside the grace period: the blob stays for now
    assert len(list(core.tiers[HOT].iter_digests())) == 1
    assert (await core.gc_once())["blobs"] == 0
    assert (await core.gc_once(older_than_s=0))["blobs"] == 1
    p = await core.commit("p", draft(), stage(core, "p", {"y.bin": b"y"}))
    p.pinned = True
    await catalog.update(p)
    with pytest.raises(FailedPrecondition):
        await core.delete("p")
    await core.delete("p", force=True)
    assert a.digest


async def test_retention_keeps_latest_and_best(core, catalog):
    policy = {
        "keep_latest": 2,
        "keep_best": 1,
        "best_metric": "loss",
        "best_metric_goal": common_pb2.METRIC_GOAL_MINIMIZE,
    }
    losses = {1: 0.9, 2: 0.3, 3: 0.5, 4: 0.6, 5: 0.7}
    for step, loss in losses.items():
        d = draft(job_id="job-1", step=step, metrics={"loss": loss})
        d.checkpoint.retention.keep_latest = policy["keep_latest"]
        d.checkpoint.retention.keep_best = policy["keep_best"]
        d.checkpoint.retention.best_metric = policy["best_metric"]
        d.checkpoint.retention.best_metric_goal = policy["best_metric_goal"]
        # Every checkpoint shares one base blob; deleting some must not hurt the rest.
        await core.commit(f"ck{step}", d, stage(core, f"ck{step}", {"base.bin": b"B" * 1000, "s.bin": bytes([step])}))
    other = draft(job_id="job-2", step=1)
    await core.commit("other", other, stage(core, "other", {"o.bin": b"o"}))
    assert await core.retention_once("job-1", "team-a") == ["ck1", "ck3"]
    left = {a.meta.id for a in await catalog.snapshot()}
    assert left == {"ck2", "ck4", "ck5", "other"}
    for aid in ("ck2", "ck4", "ck5"):
        assert await read_all(core, await catalog.get(aid), "base.bin") == b"B" * 1000
    assert await core.retention_once("job-1", "team-a") == []


async def test_retention_never_deletes_another_teams_checkpoints(core, catalog):
    """A checkpoint names its job freely: another team naming this job, with a keep-1 policy and a
    newer step, must not have this team's checkpoints deleted."""
    for step in (1, 2):
        await core.commit(f"mine{step}", draft(job_id="job-1", step=step), stage(core, f"mine{step}", {"m": b"m"}))
    theirs = draft(team="team-b", job_id="job-1", step=99)
    theirs.checkpoint.retention.keep_latest = 1
    await core.commit("theirs", theirs, stage(core, "theirs", {"t": b"t"}))
    assert await core.retention_once("job-1", "team-b") == []
    assert {a.meta.id for a in await catalog.snapshot()} == {"mine1", "mine2", "theirs"}


async def test_usage_counts_logical_and_distinct_bytes(core):
    await core.commit("u1", draft(), stage(core, "u1", {"a": b"1" * 100, "b": b"2" * 50}))
    await core.commit("u2", draft(), stage(core, "u2", {"a": b"1" * 100}))
    await core.commit("u3", draft(team="team-b"), stage(core, "u3", {"a": b"3"}))
    usage = await core.usage("team-a")
    assert (usage.logical_bytes, usage.stored_bytes, usage.artifact_count) == (250, 150, 2)
    assert {t.tier: t.stored_bytes for t in usage.tiers}[HOT] == 150
