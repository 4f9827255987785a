"""Shared helpers for benchmark scripts: timing, medians, a table and a JSON record."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def summarize(samples_s: list[float]) -> dict:
    ordered = sorted(samples_s)
    return {
        "n": len(ordered),
        "median_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
    }


def report(name: str, rows: list[dict], baseline: str) -> None:
    """Print a table with each row's ratio to the baseline row, and write results/<name>.json."""
    base = next(r for r in rows if r["case"] == baseline)["median_us"]
    for r in rows:
        r["ratio_to_baseline"] = r["median_us"] / base
    print(f"\n{name} ({machine()})")
    print(f"{'case':<44}{'n':>7}{'median µs':>12}{'p99 µs':>12}{'x baseline':>12}")
    for r in rows:
        print(f"{r['case']:<44}{r['n']:>7}{r['median_us']:>12.1f}{r['p99_us']:>12.1f}{r['ratio_to_baseline']:>12.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = {"benchmark": name, "machine": machine(), "when": time.strftime("%Y-%m-%d"), "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
