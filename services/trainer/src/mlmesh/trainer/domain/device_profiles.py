"""Device profiles the planner plans for: GPU capabilities by model name, and the local host."""

from __future__ import annotations

import os
from pathlib import Path

from mlmesh.api.trainer.v1 import trainer_service_pb2 as api

# Peak dense bf16 tensor FLOP/s (no sparsity), by a substring of the GPU model name. Order matters:
# the first match wins, so longer names come before their prefixes ("H100 PCIe" before "H100",
# "L40S" before "L4", "A100" before "A10").
_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIE", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    ("H200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
)
# Pre-Ampere GPUs lack bf16 tensor cores; anything else (and anything unknown) is assumed to have them.
_NO_BF16 = ("V100", "T4", "P100", "P40", "K80", "M60", "RTX 20", "TITAN RTX", "QUADRO RTX")

_CPU_MEMORY_FALLBACK = 8 << 30


def peak_flops(gpu_model: str) -> float:
    """Peak dense bf16 FLOP/s of a GPU model name; 0.0 when unknown."""
    name = gpu_model.upper()
    return next((flops for key, flops in _PEAK_FLOPS if key in name), 0.0) if name else 0.0


def supports_bf16(gpu_model: str) -> bool:
    name = gpu_model.upper()
    return not any(key in name for key in _NO_BF16)


def cpu_profile(host_memory_bytes: int) -> api.DeviceProfile:
    return api.DeviceProfile(host_memory_bytes=host_memory_bytes, supports_bf16=False)


def gpu_profile(gpu_model: str, gpu_memory_bytes: int, host_memory_bytes: int) -> api.DeviceProfile:
    return api.DeviceProfile(
        gpu_model=gpu_model,
        gpu_memory_bytes=gpu_memory_bytes,
        host_memory_bytes=host_memory_bytes,
        supports_bf16=supports_bf16(gpu_model),
        peak_flops_per_second=peak_flops(gpu_model),
    )


def complete_profile(device: api.DeviceProfile) -> api.DeviceProfile:
    """Fill what a caller may leave out (e.g. the CLI sends only model and memory): bf16 support and
    peak FLOP/s from the GPU model name. A caller's True / non-zero values are kept."""
    out = api.DeviceProfile()
    out.CopyFrom(device)
    if out.gpu_memory_bytes > 0:
        out.supports_bf16 = out.supports_bf16 or supports_bf16(out.gpu_model)
        out.peak_flops_per_second = out.peak_flops_per_second or peak_flops(out.gpu_model)
    return out


def host_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemTotal of the host; sysconf (or 8 GiB) where /proc is unavailable."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the value is in KiB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return _CPU_MEMORY_FALLBACK


def local_host_profile() -> api.DeviceProfile:
    """The local host as a CPU device (GPU detection is the trainer's: it passes GPU info itself)."""
    return cpu_profile(host_memory_bytes())
