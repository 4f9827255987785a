"""Moving artifacts between tiers, and one pass of the tier policy (`domain.tiering`).

A move of artifact A from tier S to tier T:
  1. copy every blob of A to T (read verified from S, re-hashed while written to T)   [move_copied]
  2. compare-and-set A's record to tier T (the switch readers see)                   [move_recorded]
     then check every blob is still in T (re-copy if a too-eager GC took one)
  3. release A's blobs from S: only those no record placed in S lists, and only when
     not touched within the grace period (`commit.release_blobs`)
A crash before 2 leaves A in S with extra copies in T (GC frees them); after 2, A is complete in T
and S keeps leftovers until GC. Pinned artifacts never move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.common.clock import now_ts
from mlmesh.common.errors import Conflict, FailedPrecondition
from mlmesh.storage.adapters.catalog import Catalog
from mlmesh.storage.blobstore import Tier
from mlmesh.storage.commit import copy_blob, release_blobs
from mlmesh.storage.domain.manifest import blob_sizes
from mlmesh.storage.domain.tiering import Move, TierItem, TierPolicy, plan_moves
from mlmesh.storage.faults import crash_point

log = logging.getLogger("mlmesh.storage.tiering")


def tier_name(tier: int) -> str:
    return artifact_pb2.StorageTier.Name(tier).removeprefix("STORAGE_TIER_").lower()


async def move_artifact(
    catalog: Catalog, tiers: Mapping[int, Tier], artifact_id: str, target: int, *, grace_s: float, parallel: int = 4
) -> artifact_pb2.Artifact:
    artifact = await catalog.get(artifact_id)
    source = artifact.tier
    if source == target:
        return artifact
    if artifact.pinned:
        raise FailedPrecondition(f"artifact {artifact_id} is pinned; pinned artifacts do not move")
    if target not in tiers:
        raise FailedPrecondition(f"tier {tier_name(target)} is not configured")
    dst = tiers[target]
    limit = asyncio.Semaphore(parallel)

    async def copy(digest: str) -> None:
        async with limit:
            await asyncio.to_thread(copy_blob, tiers, digest, dst, source)

    digests = sorted(blob_sizes(artifact.manifest))
    await asyncio.gather(*(copy(d) for d in digests))
    crash_point("move_copied")

    def switch(a: artifact_pb2.Artifact) -> artifact_pb2.Artifact:
        if a.tier != source or a.digest != artifact.digest:
            raise Conflict(f"artifact {artifact_id} moved concurrently")
        a.tier = target
        a.meta.update_time.CopyFrom(now_ts())
        return a

    moved = await catalog.mutate(artifact_id, switch)
    crash_point("move_recorded")
    # Belt and braces before the source copies go: every blob must still be in the target (a GC
    # run with a grace period shorter than this move could have taken a fresh copy); re-copy any
    # that is not, while the source still has it.
    await asyncio.gather(*(copy(d) for d in digests))
    if source in tiers:
        freed = await release_blobs(catalog, tiers[source], digests, grace_s)
        log.info(
            "moved artifact %s %s -> %s; freed %d of %d blobs in %s",
            artifact_id,
            tier_name(source),
            tier_name(target),
            len(freed),
            len(digests),
            tier_name(source),
        )
    return moved


def tier_item(a: artifact_pb2.Artifact) -> TierItem:
    last = a.last_access_time.ToSeconds() if a.HasField("last_access_time") else a.meta.create_time.ToSeconds()
    return TierItem(a.meta.id, a.tier, float(last), blob_sizes(a.manifest), a.pinned)


async def tier_once(
    catalog: Catalog, tiers: Mapping[int, Tier], policy: TierPolicy, *, grace_s: float, now_s: float | None = None
) -> list[Move]:
    """Plan with the policy over a fresh catalog snapshot and run the moves; returns those done.
    A failed move is logged and skipped (the next pass plans it again)."""
    artifacts = [a for a in await catalog.snapshot() if a.state == artifact_pb2.ARTIFACT_STATE_COMMITTED]
    moves = plan_moves([tier_item(a) for a in artifacts], policy, time.time() if now_s is None else now_s)
    done = []
    for move in moves:
        if move.target not in tiers:
            continue
        try:
            await move_artifact(catalog, tiers, move.id, move.target, grace_s=grace_s)
            done.append(move)
        except Exception:
            log.exception("tier move of %s (%s) failed", move.id, move.reason)
    return done
