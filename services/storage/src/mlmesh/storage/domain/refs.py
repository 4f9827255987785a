"""Blob reference counting (pure), derived from the catalog alone.

A blob may leave a tier only when no catalog record placed in that tier lists it. Records in any
state count (a DELETING record still holds its blobs until it is gone).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from mlmesh.api.storage.v1 import artifact_pb2


def referenced(artifacts: Iterable[artifact_pb2.Artifact], tier: int | None = None) -> Counter[str]:
    """sha256 -> number of artifacts (placed in `tier`, or in any tier) that list it."""
    out: Counter[str] = Counter()
    for a in artifacts:
        if tier is None or a.tier == tier:
            out.update({f.sha256 for f in a.manifest.files})
    return out


def releasable(candidates: Iterable[str], artifacts: Iterable[artifact_pb2.Artifact], tier: int) -> set[str]:
    """Of `candidates`, the blobs no artifact placed in `tier` references."""
    refs = referenced(artifacts, tier)
    return {d for d in candidates if refs[d] == 0}
