"""The node's GPU metrics on the agent's `/metrics`: the same NVML sample its heartbeat carries,
so there is one collector per node (no second exporter such as DCGM to deploy and keep in step)."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mlmesh.api.fabric.v1 import node_pb2


class NodeSampleCollector(Collector):
    def __init__(self, node_id: str):
        self.node_id = node_id
        self.sample: node_pb2.NodeUtilization | None = None

    def update(self, sample: node_pb2.NodeUtilization) -> None:
        self.sample = sample

    def collect(self):
        families = {
            "util": GaugeMetricFamily(
                "mlmesh_gpu_utilization_ratio", "SM utilization (NVML), 0..1", labels=["node", "gpu"]
            ),
            "used": GaugeMetricFamily(
                "mlmesh_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=["node", "gpu"]
            ),
            "total": GaugeMetricFamily("mlmesh_gpu_memory_total_bytes", "GPU memory (NVML)", labels=["node", "gpu"]),
            "temp": GaugeMetricFamily(
                "mlmesh_gpu_temperature_celsius", "GPU temperature (NVML)", labels=["node", "gpu"]
            ),
            "power": GaugeMetricFamily("mlmesh_gpu_power_watts", "GPU power draw (NVML)", labels=["node", "gpu"]),
        }
        cpu = GaugeMetricFamily("mlmesh_node_cpu_utilization_ratio", "Host CPU utilization, 0..1", labels=["node"])
        mem = GaugeMetricFamily("mlmesh_node_memory_used_bytes", "Host memory in use", labels=["node"])
        sample = self.sample
        if sample is not None:
            for g in sample.devices:
                labels = [self.node_id, g.device_id]
                families["util"].add_metric(labels, g.gpu_util_percent / 100.0)
                families["used"].add_metric(labels, g.memory_used_bytes)
                families["total"].add_metric(labels, g.memory_total_bytes)
                families["temp"].add_metric(labels, g.temperature_celsius)
                families["power"].add_metric(labels, g.power_watts)
            cpu.add_metric([self.node_id], sample.cpu_util_percent / 100.0)
            mem.add_metric([self.node_id], sample.memory_used_bytes)
        yield from families.values()
        yield cpu
        yield mem


def install(node_id: str, registry=REGISTRY) -> NodeSampleCollector:
    collector = NodeSampleCollector(node_id)
    registry.register(collector)
    return collector
