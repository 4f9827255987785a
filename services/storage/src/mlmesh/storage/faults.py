"""Crash injection for the commit and tier-move protocols.

`crash_point("step")` ends the process with `os._exit(77)` when `MLMESH_STORAGE_CRASH_AT` names that
step (`step`, or `step:N` for its N-th occurrence in this process). Otherwise it is one dict lookup.
Tests run a commit in a subprocess with the variable set and check what survives.
"""

from __future__ import annotations

import os
from collections import Counter

CRASH_ENV = "MLMESH_STORAGE_CRASH_AT"
CRASH_EXIT_CODE = 77

# Every step the protocols announce, in the order a commit (then a tier move) passes them.
COMMIT_STEPS = (
    "validated",  # manifest checked, nothing written
    "hashed",  # a staged file hashed, not yet in the blob store
    "sidecar_written",  # a blob's chunk index is in place, the blob is not
    "blob_renamed",  # a blob renamed to its final name, directory not yet fsynced
    "blob_placed",  # a blob durable in the target tier
    "blobs_placed",  # every blob durable, no catalog record yet
    "recorded",  # the catalog record exists (the commit point), staging not cleaned
    "cleaned",  # staging removed
)
MOVE_STEPS = (
    "blob_temp_written",  # a copied blob complete under its temp name in the target tier
    "move_copied",  # every blob copied to the target tier, record still names the source
    "move_recorded",  # record names the target, source blobs not yet released
)

_seen: Counter[str] = Counter()


def crash_point(step: str) -> None:
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    name, _, nth = target.partition(":")
    if name != step:
        return
    _seen[step] += 1
    if _seen[step] >= int(nth or 1):
        os._exit(CRASH_EXIT_CODE)
