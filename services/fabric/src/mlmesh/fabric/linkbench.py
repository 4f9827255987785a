"""Link benchmark worker: `python -m mlmesh.fabric.linkbench --size-bytes N --iters K [--backend B]`.

One rank of a torch.distributed group; the launcher sets RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT (and LOCAL_RANK / CUDA_VISIBLE_DEVICES for NCCL, plus any NCCL_* or GLOO_* tuning: this
program sets none itself). It warms up, then times K all-reduces of a float32 tensor of N bytes;
each iteration's time is the slowest rank's, so every rank agrees on the result. Rank 0 prints one
JSON line:

    {"linkbench": {"backend", "size_bytes", "iters", "world_size", "latency_s_median",
                   "algbw_gbps", "busbw_gbps"}}

Bandwidths are in GB/s (1e9 bytes per second), as nccl-tests reports them: algbw = size / time,
busbw = algbw * 2(n-1)/n, the per-link traffic of a ring all-reduce over n ranks.

torch is imported inside `main`, so the fabric package imports without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta


def bus_factor(world_size: int) -> float:
    return 2.0 * (world_size - 1) / world_size if world_size > 0 else 0.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlmesh.fabric.linkbench", description=__doc__.splitlines()[0])
    parser.add_argument("--size-bytes", type=int, required=True, help="tensor size in bytes (float32)")
    parser.add_argument("--iters", type=int, required=True, help="timed all-reduces")
    parser.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    parser.add_argument("--warmup", type=int, default=3, help="untimed all-reduces first")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="rendezvous and collective timeout")
    args = parser.parse_args(argv)
    if args.size_bytes < 4:
        parser.error("--size-bytes must be at least 4")
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    return args


def route_interface(address: str) -> str:
    """The network interface the kernel routes `address` through ('' if unknown)."""
    if not address:
        return ""
    try:
        out = subprocess.run(["ip", "-o", "route", "get", address], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    words = out.split()
    return words[words.index("dev") + 1] if "dev" in words[:-1] else ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import torch.distributed as dist

    if args.backend == "nccl":
        if not torch.cuda.is_available():
            print("linkbench: --backend nccl needs a CUDA device", file=sys.stderr)
            return 2
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if args.backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ:
        iface = route_interface(os.environ.get("MASTER_ADDR", ""))
        if iface:
            # Gloo otherwise binds the address the hostname resolves to, which on a multi-NIC host
            # (or in a network namespace) may not reach the peer at all.
            os.environ["GLOO_SOCKET_IFNAME"] = iface
    dist.init_process_group(args.backend, init_method="env://", timeout=timedelta(seconds=args.timeout_s))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        numel = args.size_bytes // 4
        tensor = torch.ones(numel, dtype=torch.float32, device=device)
        for _ in range(args.warmup):
            dist.all_reduce(tensor)
        sync()
        times = []
        for _ in range(args.iters):
            dist.barrier()
            sync()
            started = time.perf_counter()
            dist.all_reduce(tensor)
            sync()
            times.append(time.perf_counter() - started)
        # Per iteration, the slowest rank's time: that is when the collective was done everywhere.
        slowest = torch.tensor(times, dtype=torch.float64, device=device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        latency = statistics.median(slowest.cpu().tolist())
        size = numel * 4
        algbw = size / latency / 1e9 if latency > 0 else 0.0
        if rank == 0:
            result = {
                "backend": args.backend,
                "size_bytes": size,
                "iters": args.iters,
                "world_size": world,
                "latency_s_median": latency,
                "algbw_gbps": algbw,
                "busbw_gbps": algbw * bus_factor(world),
            }
            print(json.dumps({"linkbench": result}), flush=True)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
