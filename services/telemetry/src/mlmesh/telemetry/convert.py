"""Event payloads (protobuf) to the aggregates' plain values."""

from __future__ import annotations

from mlmesh.telemetry.domain.aggregates import Gpu


def ts(message, fallback: float) -> float:
    """A protobuf Timestamp as epoch seconds; `fallback` when unset."""
    return message.seconds + message.nanos / 1e9 if message.seconds or message.nanos else fallback


def placement_devices(placement) -> tuple[tuple[tuple[str, str], ...], int]:
    devices, gpus = [], 0
    for node in placement.nodes:
        for worker in node.workers:
            devices.extend((node.node_id, d) for d in worker.device_ids)
            gpus += max(worker.resources.gpus, len(worker.device_ids))
    return tuple(devices), gpus


def gpus_of(node: str, utilization, at: float) -> list[Gpu]:
    return [
        Gpu(
            node=node,
            device_id=g.device_id,
            util=g.gpu_util_percent / 100.0,
            memory_used=g.memory_used_bytes,
            memory_total=g.memory_total_bytes,
            temperature_c=g.temperature_celsius,
            power_w=g.power_watts,
            seen_at=at,
        )
        for g in utilization.devices
    ]
