"""What the common server chain (tracing, metrics, error mapping, JWT auth) adds to one unary RPC.

Baseline: a bare grpc.aio server with the same handler, measured in the same run. Calls are
sequential over one channel, so the figure is per-call latency, not throughput.

    .venv/bin/python benchmarks/bench_grpc_overhead.py [--calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from _common import report, summarize

from mlmesh.common.auth import TokenVerifier, generate_signing_key, mint_token
from mlmesh.common.grpc_server import build_server
from mlmesh.common.settings import ServiceSettings

METHOD = "/bench.Echo/Call"


def _handler() -> grpc.GenericRpcHandler:
    async def call(request: bytes, context) -> bytes:
        return request

    return grpc.method_handlers_generic_handler("bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)})


async def _measure(server: grpc.aio.Server, calls: int, metadata) -> list[float]:
    server.add_generic_rpc_handlers((_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            rpc = channel.unary_unary(METHOD)
            for _ in range(200):  # warm-up: connection, JIT-ish caches
                await rpc(b"x" * 64, metadata=metadata, timeout=5)
            samples = []
            for _ in range(calls):
                t = time.perf_counter()
                await rpc(b"x" * 64, metadata=metadata, timeout=5)
                samples.append(time.perf_counter() - t)
            return samples
    finally:
        await server.stop(None)


async def main(calls: int) -> None:
    private, public = generate_signing_key()
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "public.pem"
        key.write_bytes(public)
        settings = ServiceSettings(auth_public_key_file=key, metrics_port=-1)
        verifier = TokenVerifier(public_key=public)
        token = mint_token(private, subject="bench", team="bench")
        auth = (("authorization", f"Bearer {token}"),)
        rows = []
        # Alternate the cases twice so drift on a shared machine hits both alike.
        for _ in range(2):
            bare = await _measure(grpc.aio.server(), calls // 2, None)
            full = await _measure(build_server(settings, verifier), calls // 2, auth)
            rows.append(("bare grpc.aio server (baseline)", bare))
            rows.append(("mlmesh chain: tracing+metrics+errors+auth", full))
    merged: dict[str, list[float]] = {}
    for case, samples in rows:
        merged.setdefault(case, []).extend(samples)
    report(
        "grpc_overhead",
        [{"case": case, **summarize(samples)} for case, samples in merged.items()],
        baseline="bare grpc.aio server (baseline)",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    asyncio.run(main(parser.parse_args().calls))
