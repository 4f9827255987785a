"""Pure storage policy: manifest rules, retention, tier planning, blob references, chunk index."""

from __future__ import annotations

import hashlib

import pytest

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.common.errors import DataLoss, InvalidArgument
from mlmesh.storage.blobstore import IndexBuilder, verified_range
from mlmesh.storage.domain.manifest import manifest_digest, validate_manifest
from mlmesh.storage.domain.refs import referenced, releasable
from mlmesh.storage.domain.retention import CheckpointRef, Retention, select_deletions
from mlmesh.storage.domain.tiering import COLD, HOT, WARM, TierItem, TierPolicy, plan_moves, promotion

pytestmark = pytest.mark.timeout(30)
SHA = "a" * 64
MIN, MAX = common_pb2.METRIC_GOAL_MINIMIZE, common_pb2.METRIC_GOAL_MAXIMIZE


def manifest(*entries) -> artifact_pb2.Manifest:
    m = artifact_pb2.Manifest()
    for path, size, sha in entries:
        m.files.add(path=path, size_bytes=size, sha256=sha)
    return m


def test_valid_manifest_is_sorted_and_totalled():
    m = validate_manifest(manifest(("b/x.bin", 3, SHA), ("a.json", 2, "b" * 64)))
    assert [f.path for f in m.files] == ["a.json", "b/x.bin"] and m.total_size_bytes == 5


@pytest.mark.parametrize(
    "path",
    ["", "/abs", "../up", "a/../b", "a//b", "./a", "a/", ".", "a\\b", "a\nb", "x" * 1025],
)
def test_bad_paths_are_rejected(path):
    with pytest.raises(InvalidArgument) as err:
        validate_manifest(manifest((path, 1, SHA)))
    assert err.value.violations[0].field == "manifest.files[0].path"


def test_other_manifest_rules():
    for bad in [
        manifest(("a", 1, SHA), ("a", 1, SHA)),  # duplicate
        manifest(("a", -1, SHA)),  # negative size
        manifest(("a", 1, "A" * 64)),  # not lowercase hex
        manifest(("a", 1, "a" * 63)),
        manifest(("a", 1, SHA), ("a/b", 1, SHA)),  # file and directory
        manifest(),  # empty
    ]:
        with pytest.raises(InvalidArgument):
            validate_manifest(bad)
    wrong_total = manifest(("a", 1, SHA))
    wrong_total.total_size_bytes = 2
    with pytest.raises(InvalidArgument):
        validate_manifest(wrong_total)


def test_manifest_digest_ignores_order_but_not_content():
    a = manifest(("a", 1, SHA), ("b", 2, SHA))
    b = manifest(("b", 2, SHA), ("a", 1, SHA))
    assert manifest_digest(a) == manifest_digest(b)
    assert manifest_digest(a) != manifest_digest(manifest(("a", 1, SHA), ("c", 2, SHA)))


def ck(i, step, loss=None, pinned=False):
    return CheckpointRef(i, step, float(step), {} if loss is None else {"loss": loss}, pinned)


def test_retention_latest_and_best():
    cks = [ck("c1", 1, 0.9), ck("c2", 2, 0.2), ck("c3", 3, 0.5), ck("c4", 4, 0.7), ck("c5", 5, 0.6)]
    assert select_deletions(cks, Retention(2, 1, "loss", MIN)) == ["c1", "c3"]
    assert select_deletions(cks, Retention(2, 1, "loss", MAX)) == ["c2", "c3"]  # c1 (0.9) is best
    assert select_deletions(cks, Retention(1, 0)) == ["c1", "c2", "c3", "c4"]
    assert select_deletions(cks, Retention(0, 1, "loss", MIN)) == []  # keep_latest 0 keeps all
    assert select_deletions(cks, Retention(1, 1, "loss", common_pb2.METRIC_GOAL_UNSPECIFIED)) == []
    assert select_deletions(cks, Retention(1, 1, "", MIN)) == []


def test_retention_pinned_missing_metric_and_nan():
    cks = [ck("c1", 1, pinned=True), ck("c2", 2), ck("c3", 3, float("nan")), ck("c4", 4, 0.5), ck("c5", 5, 0.9)]
    assert select_deletions(cks, Retention(1, 1, "loss", MIN)) == ["c2", "c3"]


def test_tier_plan_idle_capacity_and_pinned():
    policy = TierPolicy(hot_idle_s=100, warm_idle_s=1000, hot_capacity_bytes=25)
    items = [
        TierItem("old", HOT, 0, {"d1": 10}),
        TierItem("a", HOT, 950, {"d2": 10}),
        TierItem("b", HOT, 960, {"d3": 10}),
        TierItem("c", HOT, 990, {"d4": 10}),
        TierItem("p", HOT, 0, {"d5": 1}, pinned=True),
        TierItem("w", WARM, -100, {"d6": 10}),
        TierItem("wp", WARM, -100, {"d7": 10}, pinned=True),
    ]
    moves = [(m.id, m.target, m.reason) for m in plan_moves(items, policy, now_s=1000)]
    # old idle -> warm; then a, b, c, p = 31 bytes > 25: a (LRU, unpinned) goes; w idle in warm -> cold.
    assert moves == [("old", WARM, "idle"), ("a", WARM, "capacity"), ("w", COLD, "idle")]
    no_cold = TierPolicy(hot_idle_s=100, warm_idle_s=1000, cold_enabled=False)
    assert [m.id for m in plan_moves(items, no_cold, now_s=1000)] == ["old"]


def test_capacity_counts_shared_blobs_once():
    policy = TierPolicy(hot_idle_s=1e9, hot_capacity_bytes=15)
    items = [TierItem("a", HOT, 1, {"base": 10, "x": 1}), TierItem("b", HOT, 2, {"base": 10, "y": 1})]
    assert plan_moves(items, policy, now_s=3) == []  # 12 distinct bytes fit
    policy = TierPolicy(hot_idle_s=1e9, hot_capacity_bytes=10)
    assert [m.id for m in plan_moves(items, policy, now_s=3)] == ["a", "b"]  # base frees only when both leave


def test_promotion():
    assert promotion(TierItem("a", COLD, 0)).target == HOT
    assert promotion(TierItem("a", HOT, 0)) is None
    assert promotion(TierItem("a", WARM, 0, pinned=True)) is None


def art(i, tier, *digests):
    a = artifact_pb2.Artifact(tier=tier)
    a.meta.id = i
    for d in digests:
        a.manifest.files.add(path=d, size_bytes=1, sha256=d)
    return a


def test_references_are_per_tier():
    arts = [art("a", HOT, "x", "y"), art("b", HOT, "y"), art("c", WARM, "z", "x")]
    assert referenced(arts, HOT) == {"x": 1, "y": 2}
    assert referenced(arts)["x"] == 2
    assert releasable({"x", "y", "z", "q"}, arts, HOT) == {"z", "q"}


def test_index_builder_and_verified_range():
    data = bytes(range(256)) * 40  # 10240 bytes, chunk 1000 -> 11 chunks
    builder = IndexBuilder(1000)
    for i in range(0, len(data), 333):
        builder.update(data[i : i + 333])
    index = builder.finish()
    assert index.digest == hashlib.sha256(data).hexdigest() and len(index.chunks) == 11

    def reader(_i, start, n):
        return data[start : start + n]

    assert b"".join(verified_range(index, 0, 0, reader, piece_size=7)) == data
    assert b"".join(verified_range(index, 999, 1002, reader)) == data[999:2001]
    bad = bytearray(data)
    bad[5500] ^= 1
    with pytest.raises(DataLoss):
        list(verified_range(index, 5000, 10, lambda _i, s, n: bytes(bad[s : s + n])))
    with pytest.raises(DataLoss):
        list(verified_range(index, 0, 0, lambda _i, s, n: data[s : s + n - 1]))
    empty = IndexBuilder(1000).finish()
    assert list(verified_range(empty, 0, 0, reader)) == [] and len(empty.chunks) == 1
