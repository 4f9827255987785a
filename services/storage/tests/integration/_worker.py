"""A storage process for crash and multi-process tests (run as a script, not collected).

    _worker.py commit <nats_url> <bucket> <hot> <warm> <upload_id> <files.json>
        files.json: {"path": "<hex bytes>", ...}; stages them (unless "-") and commits.
    _worker.py move <nats_url> <bucket> <hot> <warm> <artifact_id> <tier>
Crash points come from MLMESH_STORAGE_CRASH_AT. Prints the committed artifact id on success.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

from mlmesh.api.storage.v1 import artifact_pb2, storage_service_pb2
from mlmesh.common import events
from mlmesh.common.kv import KvRepository
from mlmesh.storage.adapters.catalog import Catalog
from mlmesh.storage.blobstore import FsTier
from mlmesh.storage.core import StorageCore

HOT, WARM = artifact_pb2.STORAGE_TIER_HOT, artifact_pb2.STORAGE_TIER_WARM


async def main(argv: list[str], spec: dict[str, str] | None) -> None:
    op, url, bucket, hot, warm, target, arg = argv
    nc = await events.connect(
        url, "storage-worker", **events.identity_options("admin", os.environ["MLMESH_TEST_NATS_CREDS"])
    )
    try:
        catalog = Catalog(await KvRepository.open(nc.jetstream(), bucket, artifact_pb2.Artifact, "artifact"))
        tiers = {HOT: FsTier(Path(hot), HOT), WARM: FsTier(Path(warm), WARM)}
        core = StorageCore(catalog, tiers, Path(hot) / "staging", grace_s=0.0)
        if op == "commit":
            files = {p: bytes.fromhex(h) for p, h in (spec or {}).items()}
            root = core.stage_dir(target)
            manifest = artifact_pb2.Manifest()
            for path, data in files.items():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_bytes(data)
                manifest.files.add(path=path, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            d = storage_service_pb2.ArtifactDraft(team="team-a", name=target, kind=artifact_pb2.ARTIFACT_KIND_GENERIC)
            artifact = await core.commit(target, d, manifest)
            print(artifact.meta.id)
        elif op == "move":
            artifact = await core.set_tier(target, int(arg))
            print(artifact.meta.id)
    finally:
        await nc.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args, json.loads(Path(args[-1]).read_text()) if args[0] == "commit" else None))
