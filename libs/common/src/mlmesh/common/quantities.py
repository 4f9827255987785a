"""Resource quantities as people read them: `1500m` CPU, `16Gi` memory, `unlimited`.

Queue quotas that leave CPU or memory unspecified do not limit them; they are stored as the
UNLIMITED values, which every message shows as "unlimited" rather than as a huge number.
"""

from __future__ import annotations

UNLIMITED_CPU_MILLIS = 10**12
UNLIMITED_MEMORY_BYTES = 1 << 60


def fmt_cpu(millis: int) -> str:
    if millis >= UNLIMITED_CPU_MILLIS:
        return "unlimited"
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def fmt_bytes(n: int) -> str:
    if n >= UNLIMITED_MEMORY_BYTES:
        return "unlimited"
    for unit, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:g}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return str(n)


def fmt_resources(gpus: int, cpu_millis: int, memory_bytes: int) -> str:
    """`2 GPUs, 1500m CPU, 16Gi memory`."""
    return f"{gpus} GPUs, {fmt_cpu(cpu_millis)} CPU, {fmt_bytes(memory_bytes)} memory"
