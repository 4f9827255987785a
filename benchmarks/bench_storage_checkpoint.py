"""Checkpoint write and read throughput through the storage core vs raw file I/O, same run.

A 1 GiB checkpoint as 8 shards of 128 MiB random bytes:
- checkpoint write: a worker writes the shards into the upload's staging dir (the direct path),
  then `StorageCore.commit` hashes them (sha256 + 4 MiB chunk index), fsyncs, renames them into the
  content-addressed hot tier and creates the catalog record in JetStream KV (real nats-server);
- raw write (baseline): the same bytes written sequentially to 8 files, each fsynced;
- checkpoint read: every shard read back through `StorageCore.open` (every chunk verified);
- raw read (baseline): the same files read sequentially.
The page cache is dropped before each read phase (needs root; the output says if it could not).
Medians over --runs runs, alternating the order of the two cases.

    .venv/bin/python benchmarks/bench_storage_checkpoint.py [--runs 3] [--shards 8] [--shard-mib 128] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, report

from mlmesh.api.storage.v1 import artifact_pb2, storage_service_pb2
from mlmesh.common import events
from mlmesh.local.servers import NatsServer
from mlmesh.storage.core import StorageCore

BLOCK = 8 << 20


def drop_caches() -> str | None:
    """Drop the page cache; returns why not when it cannot."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return None
    except OSError as exc:
        return f"page cache NOT dropped ({exc.strerror}): read figures include cached data"


def shard_bytes(base: bytes, run: int, shard: int) -> bytes:
    # Distinct content per shard and run, so content addressing cannot de-duplicate them.
    return hashlib.sha256(f"{run}/{shard}".encode()).digest() + base[32:]


def write_file(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb", buffering=0) as f:
        view = memoryview(data)
        for i in range(0, len(view), BLOCK):
            f.write(view[i : i + BLOCK])
        if fsync:
            os.fsync(f.fileno())


def read_file(path: Path) -> int:
    n = 0
    buf = bytearray(BLOCK)
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            n += k
    return n


def run_raw(root: Path, shards: list[bytes]) -> tuple[float, float, str | None]:
    root.mkdir(parents=True)
    t = time.perf_counter()
    for i, data in enumerate(shards):
        write_file(root / f"shard-{i}.bin", data, fsync=True)
    write_s = time.perf_counter() - t
    note = drop_caches()
    t = time.perf_counter()
    total = sum(read_file(root / f"shard-{i}.bin") for i in range(len(shards)))
    read_s = time.perf_counter() - t
    assert total == sum(map(len, shards))
    shutil.rmtree(root)
    return write_s, read_s, note


async def run_checkpoint(core: StorageCore, upload_id: str, shards: list[bytes]) -> tuple[float, float, str | None]:
    # The worker's manifest (its own hashing is the worker's cost, not storage's): computed up front.
    manifest = artifact_pb2.Manifest()
    for i, data in enumerate(shards):
        manifest.files.add(path=f"shard-{i}.bin", size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    draft = storage_service_pb2.ArtifactDraft(team="bench", name=upload_id, kind=artifact_pb2.ARTIFACT_KIND_CHECKPOINT)
    t = time.perf_counter()
    staging = core.stage_dir(upload_id)
    for i, data in enumerate(shards):
        write_file(staging / f"shard-{i}.bin", data, fsync=False)  # the worker; the commit makes it durable
    artifact = await core.commit(upload_id, draft, manifest)
    write_s = time.perf_counter() - t
    note = drop_caches()
    t = time.perf_counter()
    total = 0
    for f in artifact.manifest.files:
        async for piece in await core.open(artifact, f.path):
            total += len(piece)
    read_s = time.perf_counter() - t
    assert total == artifact.manifest.total_size_bytes
    await core.delete(artifact.meta.id)
    await core.gc_once(older_than_s=0)
    return write_s, read_s, note


async def main_async(args) -> None:
    base_dir = Path(tempfile.mkdtemp(prefix="mlmesh-bench-storage-", dir=args.dir))
    nats = NatsServer(base_dir / "nats")
    nats.start(timeout=60)
    nats.bootstrap()
    nc = await events.connect(nats.url, "bench-storage", **nats.client_options("storage"))
    try:
        core = await StorageCore.create(
            nc.jetstream(), base_dir / "hot", base_dir / "warm", grace_s=0.0, promote_on_read=False
        )
        base = os.urandom(args.shard_mib << 20)
        size_gib = args.shards * len(base) / (1 << 30)
        samples: dict[str, list[float]] = {k: [] for k in ("raw_w", "raw_r", "ck_w", "ck_r")}
        notes: set[str] = set()
        for run in range(args.runs):
            shards = [shard_bytes(base, run, i) for i in range(args.shards)]
            order = ("raw", "ck") if run % 2 == 0 else ("ck", "raw")  # alternate against drift
            for case in order:
                if case == "raw":
                    w, r, note = run_raw(base_dir / f"raw-{run}", shards)
                else:
                    w, r, note = await run_checkpoint(core, f"bench-{run}", shards)
                samples[f"{case}_w"].append(w)
                samples[f"{case}_r"].append(r)
                if note:
                    notes.add(note)
            print(
                f"run {run}: raw write {samples['raw_w'][-1]:.2f}s read {samples['raw_r'][-1]:.2f}s | "
                f"checkpoint write {samples['ck_w'][-1]:.2f}s read {samples['ck_r'][-1]:.2f}s"
            )
            del shards
    finally:
        await nc.close()
        nats.stop()
        shutil.rmtree(base_dir, ignore_errors=True)

    def row(case: str, key: str) -> dict:
        s = sorted(samples[key])
        return {"case": case, "n": len(s), "median_us": statistics.median(s) * 1e6, "p99_us": s[-1] * 1e6}

    report(
        "storage_checkpoint_write",
        [row("raw write + fsync (baseline)", "raw_w"), row("checkpoint stage + commit", "ck_w")],
        "raw write + fsync (baseline)",
    )
    report(
        "storage_checkpoint_read",
        [row("raw sequential read (baseline)", "raw_r"), row("checkpoint verified read", "ck_r")],
        "raw sequential read (baseline)",
    )
    shape = f"{size_gib:.2f} GiB in {args.shards} x {args.shard_mib} MiB files"
    print(f"\nthroughput, {shape}, medians of {args.runs} runs")
    print(f"{'phase':<10}{'raw GiB/s':>12}{'checkpoint GiB/s':>18}{'ratio':>8}   (target >= 0.80)")
    for phase, raw_key, ck_key in (("write", "raw_w", "ck_w"), ("read", "raw_r", "ck_r")):
        raw = size_gib / statistics.median(samples[raw_key])
        ck = size_gib / statistics.median(samples[ck_key])
        print(f"{phase:<10}{raw:>12.3f}{ck:>18.3f}{ck / raw:>8.2f}")
    for note in sorted(notes) or ["page cache dropped before each read phase"]:
        print(f"note: {note}")
    print(f"machine: {machine()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--shard-mib", type=int, default=128)
    parser.add_argument("--dir", default="/tmp", help="where the bytes go (one filesystem)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
