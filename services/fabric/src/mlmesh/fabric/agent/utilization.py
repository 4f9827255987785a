"""Utilization samples for heartbeats: per-GPU (NVML) and host CPU / memory (procfs).

CPU utilization is the busy share of the jiffies that passed between two samples of the aggregate
`cpu` line of /proc/stat; the first sample measures since boot.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.fabric.agent.discovery import _call, _nv, _text, load_nvml, read_meminfo

__all__ = ["CpuTimes", "Sampler", "cpu_percent", "memory_used", "read_cpu_times"]


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate CPU time in jiffies: busy and total (idle + iowait count as idle)."""

    busy: int
    total: int


def read_cpu_times(proc_root: Path = Path("/proc")) -> CpuTimes | None:
    """The aggregate `cpu` line of <proc_root>/stat, or None when unreadable."""
    try:
        text = (proc_root / "stat").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
            # counted in user / nice, so only the first eight fields add up to the total.
            values = [int(v) for v in parts[1:9]]
            values += [0] * (8 - len(values))
            idle = values[3] + values[4]
            total = sum(values)
            return CpuTimes(busy=total - idle, total=total)
    return None


def cpu_percent(prev: CpuTimes | None, cur: CpuTimes) -> float:
    """Busy percentage (0-100) between two samples; since boot when there is no previous sample."""
    base = prev or CpuTimes(0, 0)
    d_total = cur.total - base.total
    d_busy = cur.busy - base.busy
    if d_total <= 0:
        return 0.0
    return min(100.0, max(0.0, 100.0 * d_busy / d_total))


def memory_used(meminfo: dict[str, int]) -> tuple[int, int]:
    """(used, total) bytes: total - MemAvailable, or - (MemFree + Buffers + Cached) on old kernels."""
    total = meminfo.get("MemTotal", 0)
    if "MemAvailable" in meminfo:
        available = meminfo["MemAvailable"]
    else:
        available = meminfo.get("MemFree", 0) + meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)
    return max(0, total - available), total


class Sampler:
    """Takes NodeUtilization samples. Holds an NVML session (when NVML is there) until `close()`.

    `nvml`: None imports pynvml, False skips GPUs, else a pynvml-like module (tests).
    """

    def __init__(
        self,
        *,
        proc_root: Path = Path("/proc"),
        nvml: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._proc_root = proc_root
        self._clock = clock
        self._prev: CpuTimes | None = None
        self._nvml = load_nvml(nvml)
        self._gpus: list[tuple[str, Any]] = []
        if self._nvml is not None:
            for i in range(_call(_nv(self._nvml, "nvmlDeviceGetCount")) or 0):
                h = _call(_nv(self._nvml, "nvmlDeviceGetHandleByIndex"), i)
                if h is not None:
                    self._gpus.append((_text(_call(_nv(self._nvml, "nvmlDeviceGetUUID"), h) or ""), h))

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None
            self._gpus = []

    def _device(self, device_id: str, handle: Any) -> node_pb2.DeviceUtilization:
        nvml = self._nvml
        out = node_pb2.DeviceUtilization(device_id=device_id)
        rates = _call(_nv(nvml, "nvmlDeviceGetUtilizationRates"), handle)
        if rates is not None:
            out.gpu_util_percent = float(rates.gpu)
        mem = _call(_nv(nvml, "nvmlDeviceGetMemoryInfo"), handle)
        if mem is not None:
            out.memory_used_bytes = int(mem.used)
            out.memory_total_bytes = int(mem.total)
        temp = _call(_nv(nvml, "nvmlDeviceGetTemperature"), handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        if temp is not None:
            out.temperature_celsius = float(temp)
        milliwatts = _call(_nv(nvml, "nvmlDeviceGetPowerUsage"), handle)
        if milliwatts is not None:
            out.power_watts = milliwatts / 1000.0
        return out

    def sample(self, running_workers: int = 0) -> node_pb2.NodeUtilization:
        """One sample. CPU is measured since the previous call (since boot on the first)."""
        out = node_pb2.NodeUtilization(running_workers=running_workers)
        out.sample_time.FromNanoseconds(int(self._clock() * 1e9))
        cur = read_cpu_times(self._proc_root)
        if cur is not None:
            out.cpu_util_percent = cpu_percent(self._prev, cur)
            self._prev = cur
        out.memory_used_bytes, out.memory_total_bytes = memory_used(read_meminfo(self._proc_root))
        out.devices.extend(self._device(uuid, h) for uuid, h in self._gpus)
        return out
