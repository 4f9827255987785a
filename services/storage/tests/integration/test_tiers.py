"""Tiers across hot (fs), warm (fs) and cold (the real SeaweedFS S3 API): moves, promotion on read,
policy passes, corruption in the cold tier. These fail if SeaweedFS cannot start."""

from __future__ import annotations

import os
import secrets
import time

import pytest

from mlmesh.common.errors import DataLoss, FailedPrecondition
from mlmesh.storage.adapters.s3_tier import S3Config, S3Tier
from mlmesh.storage.domain.tiering import TierPolicy

from .conftest import COLD, HOT, WARM, draft, make_core, read_all, stage

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cold(s3_server) -> S3Tier:
    config = S3Config(
        endpoint_url=s3_server.endpoint_url,
        # Its S3 identity may use only this bucket: a prefix of its own keeps each test apart.
        bucket=s3_server.bucket,
        prefix=f"test-{secrets.token_hex(4)}/",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
    )
    return S3Tier(config)


FILES = {"model.safetensors": os.urandom((9 << 20) + 5), "adapter/config.json": b'{"r": 8}', "empty": b""}


async def verify(core, artifact, files=FILES):
    for path, data in files.items():
        assert await read_all(core, artifact, path) == data
    big = files["model.safetensors"]
    assert (
        await read_all(core, artifact, "model.safetensors", (4 << 20) + 1, 5 << 20)
        == big[(4 << 20) + 1 : (9 << 20) + 1]
    )


def holders(core, digest) -> set[int]:
    return {t for t, tier in core.tiers.items() if tier.has(digest)}


async def test_hot_warm_cold_hot_with_verified_content(catalog, dirs, cold):
    core = make_core(catalog, dirs, {COLD: cold}, promote_on_read=False)
    a = await core.commit("t1", draft(), stage(core, "t1", FILES))
    digest = next(f.sha256 for f in a.manifest.files if f.path == "model.safetensors")
    assert a.tier == HOT and holders(core, digest) == {HOT}
    await verify(core, a)
    for target in (WARM, COLD, HOT):
        a = await core.set_tier("t1", target)
        assert (await catalog.get("t1")).tier == target
        assert holders(core, digest) == {target}  # copied, switched, source released
        await verify(core, a)
    # The S3 objects are real: the blob and its chunk index are in the bucket while cold.
    await core.set_tier("t1", COLD)
    keys = {o["Key"] for o in cold.s3.list_objects_v2(Bucket=cold.bucket, Prefix=cold.config.prefix)["Contents"]}
    assert cold.key(digest) in keys and cold.key(digest) + ".chunks" in keys


async def test_read_promotes_cold_to_hot(catalog, dirs, cold):
    core = make_core(catalog, dirs, {COLD: cold}, access_update_interval_s=0)
    a = await core.commit("p1", draft(), stage(core, "p1", FILES))
    a = await core.set_tier("p1", COLD)
    before = a.last_access_time.ToNanoseconds()
    assert await read_all(core, a, "adapter/config.json") == FILES["adapter/config.json"]  # served from cold
    await core.drain()
    a = await catalog.get("p1")
    assert a.tier == HOT and a.last_access_time.ToNanoseconds() > before
    await verify(core, a)


async def test_policy_demotes_idle_and_over_capacity(catalog, dirs, cold):
    policy = TierPolicy(hot_idle_s=100, warm_idle_s=1000, hot_capacity_bytes=3 << 20, cold_enabled=True)
    core = make_core(catalog, dirs, {COLD: cold}, policy=policy)
    files = {n: {"w.bin": os.urandom(1 << 20)} for n in ("x1", "x2", "x3", "x4")}
    for n, f in files.items():
        await core.commit(n, draft(), stage(core, n, f))
    pinned = await catalog.get("x4")
    pinned.pinned = True
    await catalog.update(pinned)
    now = time.time()
    # x1 read least recently -> evicted for capacity (4 MiB in hot > 3 MiB).
    moves = await core.tier_once(now_s=now)
    assert [(m.id, m.target, m.reason) for m in moves] == [("x1", WARM, "capacity")]
    # Much later: everything idle; x2, x3 -> warm; x1 idle in warm long enough -> cold; x4 pinned stays.
    moves = await core.tier_once(now_s=now + 5000)
    assert sorted((m.id, m.target) for m in moves) == [("x1", COLD), ("x2", WARM), ("x3", WARM)]
    tiers = {a.meta.id: a.tier for a in await catalog.snapshot()}
    assert tiers == {"x1": COLD, "x2": WARM, "x3": WARM, "x4": HOT}
    for n, f in files.items():
        await verify_small(core, await catalog.get(n), f)
    with pytest.raises(FailedPrecondition):
        await core.set_tier("x4", WARM)


async def verify_small(core, a, files):
    for path, data in files.items():
        assert await read_all(core, a, path) == data


async def test_corruption_in_cold_tier_is_detected(catalog, dirs, cold):
    core = make_core(catalog, dirs, {COLD: cold}, promote_on_read=False)
    a = await core.commit("s1", draft(), stage(core, "s1", FILES))
    a = await core.set_tier("s1", COLD)
    digest = next(f.sha256 for f in a.manifest.files if f.path == "model.safetensors")
    raw = bytearray(FILES["model.safetensors"])
    raw[(8 << 20) + 3] ^= 0x80
    cold.s3.put_object(Bucket=cold.bucket, Key=cold.key(digest), Body=bytes(raw))
    with pytest.raises(DataLoss):
        await read_all(core, a, "model.safetensors")
    with pytest.raises(DataLoss):
        await read_all(core, a, "model.safetensors", 8 << 20, 10)
    assert await read_all(core, a, "model.safetensors", 0, 100) == FILES["model.safetensors"][:100]
    cold.s3.put_object(Bucket=cold.bucket, Key=cold.key(digest), Body=FILES["model.safetensors"][:-1])
    with pytest.raises(DataLoss):
        await read_all(core, a, "model.safetensors", 0, 100)
    # A move out of a damaged tier refuses to copy the damage.
    with pytest.raises(DataLoss):
        await core.set_tier("s1", HOT)
    assert (await catalog.get("s1")).tier == COLD
