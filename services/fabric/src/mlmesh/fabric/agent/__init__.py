"""The node agent's view of its own host.

`discovery` builds the `Node` a node agent registers with: GPUs through NVML (`nvidia-ml-py`, imported
lazily; no NVML or no driver means zero GPUs), IB / RoCE / Ethernet NICs from sysfs, CPU and memory
from procfs, and labels from config. `utilization` samples GPU, CPU and memory use for heartbeats.
Both read the host through thin readers that take a root path, so tests can point them at a fake tree.
"""
