"""The node agent's GPU metrics on a real GPU: NVML sample → the agent's `/metrics` text → the
telemetry's `gpu_memory_used_ratio` signal → the default GPU-memory rule.

torch fills part of the GPU's memory and keeps it busy with matmuls; the script then checks that the
sample, the exposition and the signal agree with what torch and NVML report, and that the default
rule fires once memory passes 90 %. It also measures what one sample costs (it runs every heartbeat).
Needs a GPU and `nvidia-ml-py`; run with the sources on PYTHONPATH:

    PYTHONPATH=libs/common/src:services/fabric/src:services/telemetry/src python benchmarks/bench_agent_nvml_gpu.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import mlmesh.telemetry
from mlmesh.fabric.agent.gpu_metrics import install
from mlmesh.fabric.agent.utilization import Sampler
from mlmesh.telemetry.convert import gpus_of
from mlmesh.telemetry.domain.aggregates import Aggregates
from mlmesh.telemetry.domain.alerting import FIRING, evaluate
from mlmesh.telemetry.domain.rules import parse_rules
from mlmesh.telemetry.domain.signals import SIGNALS, compute

# The packaged defaults (not via settings: pydantic is not needed to read one YAML file).
DEFAULT_RULES = Path(mlmesh.telemetry.__file__).parent / "default_rules.yaml"


def busy(stop: threading.Event) -> None:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    while not stop.is_set():
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()


def families(registry) -> dict:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def main() -> None:
    out: dict = {"device": torch.cuda.get_device_name(0)}
    sampler = Sampler()
    registry = CollectorRegistry()
    collector = install("gpu-node", registry)
    idle = sampler.sample()
    assert idle.devices, "NVML reported no GPU"
    stop = threading.Event()
    worker = threading.Thread(target=busy, args=(stop,), daemon=True)
    worker.start()
    try:
        measure(out, sampler, collector, registry)
    finally:
        stop.set()
        worker.join()
        sampler.close()
    print(json.dumps(out, indent=2))
    results = Path(os.environ.get("OUT", Path(__file__).parent / "results"))
    results.mkdir(parents=True, exist_ok=True)
    (results / "agent_nvml_gpu.json").write_text(json.dumps(out, indent=2))


def measure(out: dict, sampler, collector, registry) -> None:
    time.sleep(2.0)  # NVML's utilization is averaged over its last sample period
    free, total = torch.cuda.mem_get_info(0)
    costs = []
    for _ in range(50):
        t0 = time.perf_counter()
        sample = sampler.sample()
        costs.append(time.perf_counter() - t0)
    collector.update(sample)
    fams = families(registry)
    dev = sample.devices[0]
    out["sample"] = {
        "util_percent": dev.gpu_util_percent,
        "memory_used_bytes": dev.memory_used_bytes,
        "memory_total_bytes": dev.memory_total_bytes,
        "temperature_c": dev.temperature_celsius,
        "power_w": dev.power_watts,
        "torch_used_bytes": total - free,
    }
    out["sample_cost_ms_p50"] = statistics.median(costs) * 1e3
    assert dev.gpu_util_percent > 50, f"a matmul loop should keep the SMs busy, NVML says {dev.gpu_util_percent}%"
    # cudaMemGetInfo's total leaves out what the driver reserves; NVML counts the whole board.
    assert abs(dev.memory_total_bytes - total) < 0.02 * total, (dev.memory_total_bytes, total)
    assert abs(dev.memory_used_bytes - (total - free)) < 1 << 30, (dev.memory_used_bytes, total - free)
    exported = {
        name: fams[name].samples[0].value
        for name in ("mlmesh_gpu_utilization_ratio", "mlmesh_gpu_memory_used_bytes", "mlmesh_gpu_power_watts")
    }
    out["exported"] = exported
    assert exported["mlmesh_gpu_utilization_ratio"] == dev.gpu_util_percent / 100

    # Fill memory past 90 % and evaluate the default rule (its `for` is 2 m; evaluated 2 m apart).
    rules = [r for r in parse_rules(DEFAULT_RULES.read_text(), set(SIGNALS)) if r.name == "gpu_memory_high"]
    free, total = torch.cuda.mem_get_info(0)
    hog = torch.empty(int(free - 0.05 * total), dtype=torch.uint8, device="cuda")
    full = sampler.sample()
    agg = Aggregates()
    now = time.time()
    agg.apply_heartbeat(node="gpu-node", at=now, gpus=gpus_of("gpu-node", full, now))
    samples = compute(agg, now, failure_window_s=3600)
    ratio = samples["gpu_memory_used_ratio"][0][1]
    active, fired = evaluate(rules, samples, {}, now)
    active, fired = evaluate(rules, samples, active, now + 120)
    out["memory_full"] = {"used_ratio": ratio, "fired": [(f.rule, f.state, f.summary) for f in fired]}
    assert ratio > 0.9 and [f.state for f in fired] == [FIRING]
    del hog


if __name__ == "__main__":
    sys.exit(main())
