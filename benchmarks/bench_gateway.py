"""Inference latency and throughput through the gateway against Triton directly, same model, same
run: a real tritonserver (python backend, a small FP32 vector doubled), the gateway as its own
`python -m mlmesh.gateway` process, tritonclient.grpc.aio as the client. For each concurrency the
two paths alternate (direct, gateway, direct, gateway) so machine drift hits both alike.

    python benchmarks/bench_gateway.py [--requests 600] [--concurrency 1 16 64]
    python benchmarks/bench_gateway.py --cache        # cache hit against a raw valkey GET
    python benchmarks/bench_gateway.py --telemetry    # the same gateway with telemetry off and on
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcclient

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine

from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.common.valkey_acl import GATEWAY_KEY_PREFIX
from mlmesh.local.ports import free_port
from mlmesh.local.process import ManagedProcess, start_service
from mlmesh.local.servers import NatsServer, TritonServer

MODEL = "double"
TEAM = "bench"

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 0
input [{{ name: "X", data_type: TYPE_FP32, dims: [ -1 ] }}]
output [{{ name: "Y", data_type: TYPE_FP32, dims: [ -1 ] }}]
instance_group [{{ kind: KIND_CPU, count: 2 }}]
"""
MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("Y", (x * 2).astype(np.float32))]))
        return out
"""


def write_model(repo: Path, name: str) -> None:
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(CONFIG.format(name=name)))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(MODEL_PY))


async def one_level(url: str, model: str, headers: dict, concurrency: int, requests: int) -> dict:
    client = grpcclient.InferenceServerClient(url)
    x = np.arange(16, dtype=np.float32)
    latencies: list[float] = []

    async def worker(n: int) -> None:
        inp = grpcclient.InferInput("X", [16], "FP32")
        inp.set_data_from_numpy(x)
        for _ in range(n):
            t0 = time.perf_counter()
            result = await client.infer(model, [inp], headers=headers, client_timeout=10)
            latencies.append(time.perf_counter() - t0)
            assert result.as_numpy("Y")[1] == 2.0

    for _ in range(min(20, requests)):  # warm-up
        await worker(1)
    latencies.clear()
    per = max(1, requests // concurrency)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await client.close()
    ordered = sorted(latencies)
    return {
        "n": len(ordered),
        "p50_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
        "rps": len(ordered) / wall,
    }


def start_gateway(
    tmp: Path, nats: NatsServer, triton: TritonServer, extra_env: dict | None = None
) -> tuple[ManagedProcess, str, str]:
    private, public = generate_signing_key()
    write_secret(tmp / "public.pem", public)
    token = mint_token(private, subject="bench", team=TEAM, roles=["developer"])
    settings = {
        **nats.service_settings("gateway"),
        "AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem"),
        "METRICS_PORT": "-1",
        "HTTP_PORT": "0",
        "LOG_LEVEL": "WARNING",
        "TRITON_GRPC_URLS": triton.grpc_url,
        "TRITON_HTTP_URLS": triton.http_url,
        **(extra_env or {}),
    }
    proc, info = start_service("gateway", settings, tmp, prefix="MLMESH_GATEWAY_", timeout=60)
    return proc, f"127.0.0.1:{info['grpc_port']}", token


async def valkey_gets(url: str, requests: int) -> dict:
    """The baseline: a raw GET round trip to the same valkey, with an async client as the gateway uses."""
    import valkey.asyncio as avalkey

    key = f"{GATEWAY_KEY_PREFIX}bench"  # as the gateway's user: only its keys are allowed
    client = avalkey.from_url(url)
    await client.set(key, b"x" * 256)
    latencies = []
    for _ in range(requests):
        t0 = time.perf_counter()
        await client.get(key)
        latencies.append(time.perf_counter() - t0)
    await client.aclose()
    ordered = sorted(latencies)
    return {
        "n": len(ordered),
        "p50_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99)] * 1e6,
    }


def cache_hits(requests: int) -> None:
    """Concurrency 1: an identical request through the gateway (a cache hit after the first) against
    a raw valkey GET, alternating twice."""
    from mlmesh.local.servers import ValkeyServer

    tmp = Path(tempfile.mkdtemp(prefix="mlmesh-bench-gwc-"))
    nats, triton, vk = NatsServer(tmp / "nats"), TritonServer(tmp / "triton"), ValkeyServer(tmp / "valkey")
    for server in (nats, triton, vk):
        server.start()
    nats.bootstrap()
    gateway = None
    try:
        write_model(triton.model_repository, f"{TEAM}--{MODEL}")
        import tritonclient.grpc as sync_client

        sync_client.InferenceServerClient(triton.grpc_url).load_model(f"{TEAM}--{MODEL}")
        gateway, gw_url, token = start_gateway(tmp, nats, triton, {"VALKEY_URL": vk.url, "CACHE_TTL_S": "600"})
        headers = {"authorization": f"Bearer {token}"}
        runs: dict[str, list[dict]] = {"valkey GET": [], "gateway cache hit": []}
        for _ in range(2):
            runs["valkey GET"].append(asyncio.run(valkey_gets(vk.url, requests)))
            runs["gateway cache hit"].append(asyncio.run(one_level(gw_url, MODEL, headers, 1, requests)))
        rows = [
            {"case": name, **{k: statistics.median(r[k] for r in results) for k in ("p50_us", "p99_us")}}
            for name, results in runs.items()
        ]
        base = rows[0]["p50_us"]
        print(f"\ncache hit vs raw valkey GET, concurrency 1 ({machine()})")
        for r in rows:
            r["p50_ratio"] = r["p50_us"] / base
            print(f"{r['case']:<22}{r['p50_us']:>10.0f} µs p50{r['p99_us']:>10.0f} µs p99{r['p50_ratio']:>7.2f}x")
        RESULTS.mkdir(exist_ok=True)
        out = {"benchmark": "gateway_cache", "machine": machine(), "when": time.strftime("%Y-%m-%d"), "rows": rows}
        (RESULTS / "gateway_cache.json").write_text(json.dumps(out, indent=2))
    finally:
        if gateway is not None:
            gateway.stop(grace=10)
        for server in (vk, triton, nats):
            server.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def telemetry_cost(requests: int, concurrencies: list[int], rounds: int) -> None:
    """Gateway throughput with telemetry off (no metrics, no tracing) against metrics only, on
    (metrics served and scraped, every request traced and exported to a real telemetry service),
    and on with 10 % of traces sampled. All gateways run side by side over one Triton; each of
    `rounds` rounds runs every case once in a rotated order, and the ratio reported is the median
    of the same-round ratios."""
    tmp = Path(tempfile.mkdtemp(prefix="mlmesh-bench-gwt-"))
    nats, triton = NatsServer(tmp / "nats"), TritonServer(tmp / "triton")
    nats.start()
    nats.bootstrap()
    triton.start()
    procs: list[ManagedProcess] = []
    try:
        write_model(triton.model_repository, f"{TEAM}--{MODEL}")
        import tritonclient.grpc as sync_client

        sync_client.InferenceServerClient(triton.grpc_url).load_model(f"{TEAM}--{MODEL}")
        private, public = generate_signing_key()
        write_secret(tmp / "public.pem", public)
        write_secret(tmp / "svc.token", mint_token(private, subject="service:gw", team="platform", roles=["service"]))
        token = mint_token(private, subject="bench", team=TEAM, roles=["developer"])
        common = {
            "AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem"),
            "SERVICE_TOKEN_FILE": str(tmp / "svc.token"),
            "LOG_LEVEL": "WARNING",
        }
        gw_metrics = free_port()
        telemetry, tinfo = start_service(
            "telemetry",
            {
                **common,
                **nats.service_settings("telemetry"),
                "METRICS_PORT": "-1",
                "SCRAPE_TARGETS": f"http://127.0.0.1:{gw_metrics}/metrics",
            },
            tmp,
        )
        procs.append(telemetry)
        otlp = f"http://127.0.0.1:{tinfo['grpc_port']}"
        backend = {"HTTP_PORT": "0", "TRITON_GRPC_URLS": triton.grpc_url, "TRITON_HTTP_URLS": triton.http_url}
        cases = {
            "off": {"METRICS_PORT": "-1"},
            "metrics only": {"METRICS_PORT": "0"},
            "on": {"METRICS_PORT": str(gw_metrics), "OTLP_ENDPOINT": otlp, "TRACE_SAMPLE_RATIO": "1.0"},
            "on, 10% traced": {"METRICS_PORT": "0", "OTLP_ENDPOINT": otlp, "TRACE_SAMPLE_RATIO": "0.1"},
        }
        urls, pids = {}, {}
        for i, (case, env) in enumerate(cases.items()):
            proc, info = start_service(
                f"gateway-{i}",
                {**common, **nats.service_settings("gateway"), **backend, **env},
                tmp,
                module="gateway",
                prefix="MLMESH_GATEWAY_",
            )
            procs.append(proc)
            urls[case] = f"127.0.0.1:{info['grpc_port']}"
            pids[case] = proc.pid
        headers = {"authorization": f"Bearer {token}"}
        rows = []
        names = list(cases)
        for c in concurrencies:
            runs: dict[str, list[dict]] = {case: [] for case in cases}
            ratios: dict[str, list[float]] = {case: [] for case in names[1:]}
            for i in range(rounds):  # each round runs every case once, in a rotated order
                order = names[i % len(names) :] + names[: i % len(names)]
                got = {}
                for case in order:
                    # CPU per request of the gateway and of the trace receiver: unlike throughput,
                    # it moves little with what else the machine is doing.
                    gw0, rx0 = cpu_seconds(pids[case]), cpu_seconds(telemetry.pid)
                    got[case] = asyncio.run(one_level(urls[case], MODEL, headers, c, requests))
                    served = got[case]["n"] + min(20, requests)  # the warm-up requests count too
                    got[case]["cpu_us_per_request"] = (cpu_seconds(pids[case]) - gw0) / served * 1e6
                    got[case]["receiver_cpu_us_per_request"] = (cpu_seconds(telemetry.pid) - rx0) / served * 1e6
                for case in names:
                    runs[case].append(got[case])
                for case in names[1:]:
                    ratios[case].append(got[case]["rps"] / got["off"]["rps"])
            row = {"concurrency": c, "rounds": rounds}
            for case, results in runs.items():
                row[case] = {
                    k: statistics.median(r[k] for r in results)
                    for k in ("p50_us", "p99_us", "rps", "cpu_us_per_request", "receiver_cpu_us_per_request")
                }
            for case, values in ratios.items():
                row[f"rps_ratio[{case}]"] = statistics.median(values)  # median of same-round ratios
            rows.append(row)
        print(f"\ngateway with telemetry off vs on, gRPC; CPU µs per request of gateway / receiver ({machine()})")
        for r in rows:
            line = f"c={r['concurrency']:<3}"
            for case in cases:
                x = r[case]
                cpu, rx = x["cpu_us_per_request"], x["receiver_cpu_us_per_request"]
                line += f"  {case}: {x['rps']:>4.0f} rps gw {cpu:>4.0f} rx {rx:>3.0f}"
            print(line + "  " + "  ".join(f"{k} {v:.3f}" for k, v in r.items() if k.startswith("rps_ratio")))
        RESULTS.mkdir(exist_ok=True)
        out = {"benchmark": "gateway_telemetry", "machine": machine(), "when": time.strftime("%Y-%m-%d"), "rows": rows}
        (RESULTS / "gateway_telemetry.json").write_text(json.dumps(out, indent=2))
    finally:
        for proc in reversed(procs):
            proc.stop(grace=10)
        triton.stop()
        nats.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--cache", action="store_true", help="cache-hit latency against a raw valkey GET")
    ap.add_argument("--telemetry", action="store_true", help="throughput with telemetry off and on")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the --telemetry comparison")
    args = ap.parse_args()
    if args.telemetry:
        telemetry_cost(args.requests, args.concurrency, args.rounds)
        return
    if args.cache:
        cache_hits(args.requests)
        return
    tmp = Path(tempfile.mkdtemp(prefix="mlmesh-bench-gw-"))
    nats, triton = NatsServer(tmp / "nats"), TritonServer(tmp / "triton")
    nats.start()
    nats.bootstrap()
    triton.start()
    gateway = None
    try:
        write_model(triton.model_repository, f"{TEAM}--{MODEL}")
        import tritonclient.grpc as sync_client

        sync_client.InferenceServerClient(triton.grpc_url).load_model(f"{TEAM}--{MODEL}")
        gateway, gw_url, token = start_gateway(tmp, nats, triton)
        paths = {
            "direct": (triton.grpc_url, f"{TEAM}--{MODEL}", {}),
            "gateway": (gw_url, MODEL, {"authorization": f"Bearer {token}"}),
        }
        rows = []
        for c in args.concurrency:
            runs: dict[str, list[dict]] = {"direct": [], "gateway": []}
            for _ in range(2):
                for name, (url, model, headers) in paths.items():
                    runs[name].append(asyncio.run(one_level(url, model, headers, c, args.requests)))
            row = {"concurrency": c}
            for name, results in runs.items():
                row[name] = {k: statistics.median(r[k] for r in results) for k in ("p50_us", "p99_us", "rps")}
            row["p50_ratio"] = row["gateway"]["p50_us"] / row["direct"]["p50_us"]
            row["rps_ratio"] = row["gateway"]["rps"] / row["direct"]["rps"]
            rows.append(row)
        print(f"\ngateway vs direct Triton, gRPC ({machine()})")
        print(
            f"{'conc':>5}{'direct p50':>12}{'gw p50':>10}{'x':>6}{'direct p99':>12}{'gw p99':>10}"
            f"{'direct rps':>12}{'gw rps':>10}{'x':>6}"
        )
        for r in rows:
            d, g = r["direct"], r["gateway"]
            print(
                f"{r['concurrency']:>5}{d['p50_us']:>12.0f}{g['p50_us']:>10.0f}{r['p50_ratio']:>6.2f}"
                f"{d['p99_us']:>12.0f}{g['p99_us']:>10.0f}{d['rps']:>12.0f}{g['rps']:>10.0f}{r['rps_ratio']:>6.2f}"
            )
        RESULTS.mkdir(exist_ok=True)
        out = {"benchmark": "gateway", "machine": machine(), "when": time.strftime("%Y-%m-%d"), "rows": rows}
        (RESULTS / "gateway.json").write_text(json.dumps(out, indent=2))
    finally:
        if gateway is not None:
            gateway.stop(grace=10)
        triton.stop()
        nats.stop()


if __name__ == "__main__":
    main()
