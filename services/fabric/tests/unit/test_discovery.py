"""Node discovery: the real (CPU-only) host, a fake sysfs/procfs tree, and NVML through a fake pynvml."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.fabric.agent import discovery
from mlmesh.fabric.agent.discovery import DiscoveryConfig, LabelConfig, discover
from mlmesh.fabric.agent.utilization import CpuTimes, Sampler, cpu_percent, memory_used, read_cpu_times

pytestmark = pytest.mark.timeout(30)
GIB = 1 << 30


# ---------------------------------------------------------------------------------------------------
# a fake host tree


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _pci(root: Path, bus: str, numa: int) -> Path:
    d = root / "sys" / "devices" / "pci0000:00" / bus
    _write(d / "numa_node", str(numa))
    link = root / "sys" / "bus" / "pci" / "devices" / bus
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(d)
    return d


def _netdev(root: Path, name: str, *, pci: Path | None, speed: str, operstate: str, mtu: int, type_: int = 1) -> None:
    d = root / "sys" / "class" / "net" / name
    d.mkdir(parents=True)
    if pci is not None:
        (d / "device").symlink_to(pci)
    _write(d / "speed", speed)
    _write(d / "operstate", operstate)
    _write(d / "mtu", str(mtu))
    _write(d / "type", str(type_))
    _write(d / "dev_port", "0")


def _hca(root: Path, dev: str, pci: Path, *, rate: str, state: str, link_layer: str) -> None:
    d = root / "sys" / "class" / "infiniband" / dev
    d.mkdir(parents=True)
    (d / "device").symlink_to(pci)
    (pci / "infiniband" / dev).mkdir(parents=True)
    port = d / "ports" / "1"
    _write(port / "rate", rate)
    _write(port / "state", state)
    _write(port / "link_layer", link_layer)


@pytest.fixture
def host(tmp_path: Path) -> DiscoveryConfig:
    root = tmp_path / "root"
    proc = tmp_path / "proc"
    ib = _pci(root, "0000:3b:00.0", 0)
    roce = _pci(root, "0000:5e:00.0", 1)
    down = _pci(root, "0000:86:00.0", 1)
    eth = _pci(root, "0000:01:00.0", 0)
    _pci(root, "0000:18:00.0", 0)  # GPU 0
    _pci(root, "0000:2a:00.0", 1)  # GPU 1
    _hca(root, "mlx5_0", ib, rate="200 Gb/sec (4X HDR)", state="4: ACTIVE", link_layer="InfiniBand")
    _hca(root, "mlx5_1", roce, rate="100 Gb/sec (2X HDR)", state="4: ACTIVE", link_layer="Ethernet")
    _hca(root, "mlx5_2", down, rate="10 Gb/sec (4X SDR)", state="1: DOWN", link_layer="InfiniBand")
    _netdev(root, "ib0", pci=ib, speed="200000", operstate="up", mtu=4092, type_=32)
    _netdev(root, "ens1f0np0", pci=roce, speed="100000", operstate="up", mtu=9000)
    _netdev(root, "eth0", pci=eth, speed="25000", operstate="up", mtu=9000)
    _netdev(root, "lo", pci=None, speed="", operstate="unknown", mtu=65536, type_=772)
    _netdev(root, "docker0", pci=None, speed="-1", operstate="down", mtu=1500)  # virtual, no speed
    _netdev(root, "veth1", pci=None, speed="10000", operstate="up", mtu=1500)  # virtual with a speed
    for n in (0, 1):
        (root / "sys" / "devices" / "system" / "node" / f"node{n}").mkdir(parents=True)
    _write(root / "etc" / "os-release", 'NAME="Test"\nPRETTY_NAME="Test Linux 1"')
    _write(proc / "cpuinfo", "\n\n".join(f"processor\t: {i}\nmodel name\t: Fake CPU 9000" for i in range(8)))
    _write(proc / "meminfo", "MemTotal:       16777216 kB\nMemFree:  1000 kB\nMemAvailable:    4194304 kB")
    _write(proc / "stat", "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 100 0 100 700 100 0 0 0 0 0")
    _write(proc / "sys" / "kernel" / "osrelease", "6.1.0-test")
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(
        "6,100,5,-;NVRM: Xid (PCI:0000:18:00): 13, pid=42, name=python, Graphics Exception\n"
        "6,101,6,-;usb 1-1: new device\n"
        "3,102,7,-;NVRM: Xid (PCI:0000:2a:00): 79, pid=7, GPU has fallen off the bus.\n"
    )
    return DiscoveryConfig(
        hostname="GPU-Node_01.Example.COM",
        agent_address="10.0.0.5:7070",
        labels=LabelConfig(rack="r1", switch="leaf-3", zone="z1", pool="cloud", spot=True, extra={"sku": "h100"}),
        sysfs_root=root,
        proc_root=proc,
        kmsg_path=kmsg,
        reserve_cpu_millis=1500,
        reserve_memory_bytes=2 * GIB,
    )


# ---------------------------------------------------------------------------------------------------
# a fake pynvml: GPU 0 and GPU 1 joined by 4 NVLinks, GPU 0 in MIG mode with two instances


class FakeNvml:
    NVML_NVLINK_MAX_LINKS = 18
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_VOLATILE_ECC = 0
    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    GPUS = (
        {"uuid": "GPU-aaaa", "bus": "00000000:18:00.0", "name": "NVIDIA H100 80GB HBM3", "mem": 80 * GIB},
        {"uuid": "GPU-bbbb", "bus": "00000000:2A:00.0", "name": "NVIDIA H100 80GB HBM3", "mem": 80 * GIB},
    )
    MIGS = {
        0: [("MIG-1111", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", 40 * GIB, 1, 0), None, ("MIG-2222", "", 10 * GIB, 9, 0)]
    }

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.sessions = 0

    def _err(self) -> Exception:
        return self.NVMLError("Not Supported")

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")
        self.sessions += 1

    def nvmlShutdown(self) -> None:
        self.sessions -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.GPUS)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def _gpu(self, h):
        if isinstance(h, tuple):
            raise self._err()
        return self.GPUS[h]

    def nvmlDeviceGetUUID(self, h) -> str:
        return self.MIGS[h[0]][h[1]][0] if isinstance(h, tuple) else self._gpu(h)["uuid"]

    def nvmlDeviceGetName(self, h) -> bytes:
        name = self.MIGS[h[0]][h[1]][1] if isinstance(h, tuple) else self._gpu(h)["name"]
        return name.encode()  # older pynvml returns bytes

    def nvmlDeviceGetMemoryInfo(self, h):
        total = self.MIGS[h[0]][h[1]][2] if isinstance(h, tuple) else self._gpu(h)["mem"]
        return SimpleNamespace(total=total, used=total // 4, free=total - total // 4)

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=self._gpu(h)["bus"].encode())

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return (9, 0)

    def nvmlDeviceGetMigMode(self, h):
        return [1, 1] if h == 0 else [0, 0]

    def nvmlDeviceGetMaxMigDeviceCount(self, h) -> int:
        return len(self.MIGS.get(h, []))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, i):
        if self.MIGS[h][i] is None:
            raise self.NVMLError("Not Found")
        return (h, i)

    def nvmlDeviceGetGpuInstanceId(self, h) -> int:
        return self.MIGS[h[0]][h[1]][3]

    def nvmlDeviceGetComputeInstanceId(self, h) -> int:
        return self.MIGS[h[0]][h[1]][4]

    def nvmlDeviceGetAttributes(self, h):
        return SimpleNamespace(gpuInstanceSliceCount=1, memorySizeMB=9856)

    def nvmlDeviceGetTotalEccErrors(self, h, error_type, counter):
        if h == 1:
            raise self._err()
        return 3 if error_type == self.NVML_MEMORY_ERROR_TYPE_CORRECTED else 0

    def nvmlDeviceGetNvLinkState(self, h, link):
        if link >= 6:
            raise self.NVMLError("Invalid Argument")
        return 1 if link < 4 else 0

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h, link) -> int:
        return 0  # GPU

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link):
        return SimpleNamespace(busId=self.GPUS[1 - h]["bus"])

    def nvmlDeviceGetFieldValues(self, h, ids):
        return [SimpleNamespace(nvmlReturn=0, value=SimpleNamespace(uiVal=25_000))]

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=40 + h, memory=10)

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 55

    def nvmlDeviceGetPowerUsage(self, h):
        return 312_500


# ---------------------------------------------------------------------------------------------------
# the real machine


def test_discovers_this_cpu_only_host() -> None:
    node = discover(DiscoveryConfig(agent_address="127.0.0.1:7070"))
    assert re.fullmatch(r"[a-z0-9_-]+", node.id)
    assert node.hostname
    assert node.host.cpu_count > 0
    assert node.host.memory_bytes > 0
    assert node.host.cpu_slots == node.host.cpu_count
    assert node.capacity.gpus == 0 and not node.devices
    assert node.capacity.cpu_millis == node.host.cpu_count * 1000
    assert node.capacity.memory_bytes == node.host.memory_bytes
    assert node.labels.pool == common_pb2.NODE_POOL_ONPREM
    assert all(n.name != "lo" for n in node.nics)
    if node.host.numa_nodes == 1:
        assert all(n.numa_node == 0 for n in node.nics)
    assert node.agent_version
    node.SerializeToString()


def test_missing_nvml_means_no_gpus() -> None:
    node = discover(DiscoveryConfig(), nvml=FakeNvml(fail_init=True))
    assert node.capacity.gpus == 0 and not node.devices and not node.host.driver_version


def test_node_id_is_sanitized_hostname() -> None:
    assert discovery.sanitize_node_id("GPU-Node_01.Example.COM") == "gpu-node_01-example-com"
    assert discovery.sanitize_node_id("..") == "node"
    assert discover(DiscoveryConfig(hostname="My Host!", kmsg_path=None), nvml=False).id == "my-host"
    assert discover(DiscoveryConfig(node_id="Rack1/N7", kmsg_path=None), nvml=False).id == "rack1-n7"


def test_unknown_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="pool"):
        discover(DiscoveryConfig(labels=LabelConfig(pool="edge")), nvml=False)


def test_parsers() -> None:
    assert discovery.parse_ib_rate_mbps("200 Gb/sec (4X HDR)") == 200_000
    assert discovery.parse_ib_rate_mbps("2.5 Gb/sec (1X SDR)") == 2_500
    assert discovery.parse_ib_rate_mbps("junk") == 0
    assert discovery.normalize_pci_bus_id("00000000:2A:00.0") == "0000:2a:00.0"
    assert discovery.normalize_pci_bus_id(b"0000:18:00") == "0000:18:00.0"


# ---------------------------------------------------------------------------------------------------
# the fake tree


def test_fake_tree_host_nics_and_labels(host: DiscoveryConfig) -> None:
    node = discover(host, nvml=False)
    assert node.id == "gpu-node_01-example-com"
    assert node.agent_address == "10.0.0.5:7070"
    assert node.labels.rack == "r1" and node.labels.leaf_switch == "leaf-3" and node.labels.zone == "z1"
    assert node.labels.pool == common_pb2.NODE_POOL_CLOUD and node.labels.spot
    assert dict(node.labels.extra) == {"sku": "h100"}
    assert node.host.cpu_count == 8 and node.host.cpu_model == "Fake CPU 9000"
    assert node.host.memory_bytes == 16 * GIB and node.host.numa_nodes == 2
    assert node.host.os == "Test Linux 1; Linux 6.1.0-test"
    assert node.host.cpu_slots == 8
    assert node.capacity.cpu_millis == 8000 - 1500
    assert node.capacity.memory_bytes == 14 * GIB

    nics = {n.name: n for n in node.nics}
    assert set(nics) == {"ib0", "ens1f0np0", "mlx5_2", "eth0", "veth1"}  # not lo, not docker0
    ib = nics["ib0"]
    assert ib.kind == node_pb2.NIC_KIND_INFINIBAND and ib.rdma_device == "mlx5_0" and ib.port == 1
    assert ib.speed_mbps == 200_000 and ib.link_up and ib.mtu_bytes == 4092
    assert ib.numa_node == 0 and ib.pci_bus_id == "0000:3b:00.0"
    roce = nics["ens1f0np0"]
    assert roce.kind == node_pb2.NIC_KIND_ROCE and roce.rdma_device == "mlx5_1"
    assert roce.speed_mbps == 100_000 and roce.link_up and roce.numa_node == 1 and roce.mtu_bytes == 9000
    down = nics["mlx5_2"]
    assert down.kind == node_pb2.NIC_KIND_INFINIBAND and not down.link_up and down.speed_mbps == 10_000
    eth = nics["eth0"]
    assert eth.kind == node_pb2.NIC_KIND_ETHERNET and not eth.rdma_device
    assert eth.speed_mbps == 25_000 and eth.link_up and eth.mtu_bytes == 9000 and eth.pci_bus_id == "0000:01:00.0"
    assert nics["veth1"].speed_mbps == 10_000 and nics["veth1"].numa_node == -1


def test_fake_nvml_gpus_nvlink_mig_health(host: DiscoveryConfig) -> None:
    nvml = FakeNvml()
    node = discover(host, nvml=nvml)
    assert nvml.sessions == 0  # shut down again
    assert node.host.driver_version == "580.159.04"
    assert node.host.cpu_slots == 0
    g0, g1 = node.devices
    assert (g0.id, g0.index, g0.kind) == ("GPU-aaaa", 0, node_pb2.DEVICE_KIND_GPU)
    assert g0.model == "NVIDIA H100 80GB HBM3" and g0.memory_bytes == 80 * GIB
    assert g0.pci_bus_id == "00000000:18:00.0" and g0.numa_node == 0 and g0.compute_capability == "9.0"
    assert g1.pci_bus_id == "00000000:2A:00.0" and g1.numa_node == 1

    # NVLink: 4 active links each way, mapped to the peer's UUID, 25 GB/s per link.
    (p0,) = g0.nvlink_peers
    assert (p0.peer_device_id, p0.peer_pci_bus_id, p0.link_count) == ("GPU-bbbb", "00000000:2A:00.0", 4)
    assert p0.bandwidth_bytes_per_second == 4 * 25_000_000_000
    (p1,) = g1.nvlink_peers
    assert (p1.peer_device_id, p1.link_count) == ("GPU-aaaa", 4)

    # MIG on GPU 0 only; the empty slot is skipped, the profile comes from the name or the attributes.
    assert [(m.uuid, m.profile, m.memory_bytes, m.gpu_instance_id) for m in g0.mig_instances] == [
        ("MIG-1111", "3g.40gb", 40 * GIB, 1),
        ("MIG-2222", "1g.10gb", 10 * GIB, 9),
    ]
    assert not g1.mig_instances

    # Health: GPU 0 has corrected ECC errors and a non-fatal XID; GPU 1 fell off the bus (XID 79).
    assert g0.health.healthy and g0.health.ecc_corrected_errors == 3 and list(g0.health.recent_xid_errors) == [13]
    assert not g1.health.healthy and list(g1.health.recent_xid_errors) == [79]
    assert "ECC counters not supported" in g1.health.message and "79" in g1.health.message
    assert node.capacity.gpus == 1  # whole healthy GPUs; MIG slices are listed on the device


def test_unreadable_kernel_log_leaves_xids_empty(host: DiscoveryConfig, tmp_path: Path) -> None:
    cfg = DiscoveryConfig(sysfs_root=host.sysfs_root, proc_root=host.proc_root, kmsg_path=tmp_path / "missing")
    node = discover(cfg, nvml=FakeNvml())
    assert node.capacity.gpus == 2
    assert all(not d.recent_xid_errors for d in (g.health for g in node.devices))
    assert "XID history unavailable" in node.devices[0].health.message


def test_nvswitch_links_make_every_switch_attached_gpu_a_peer(host: DiscoveryConfig) -> None:
    class SwitchNvml(FakeNvml):
        def nvmlDeviceGetNvLinkState(self, h, link):
            if link >= 18:
                raise self.NVMLError("Invalid Argument")
            return 1

        def nvmlDeviceGetNvLinkRemoteDeviceType(self, h, link) -> int:
            return 2  # NVSwitch

        def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link):
            return SimpleNamespace(busId=f"00000000:{0xC0 + link % 4:02X}:00.0")

        def nvmlDeviceGetFieldValues(self, h, ids):
            raise self.NVMLError("Not Supported")

        def nvmlDeviceGetNvLinkVersion(self, h, link) -> int:
            return 6  # NVLink 4.0

    node = discover(host, nvml=SwitchNvml())
    for dev, peer in zip(node.devices, ("GPU-bbbb", "GPU-aaaa"), strict=True):
        (p,) = dev.nvlink_peers
        assert p.peer_device_id == peer and p.link_count == 18
        assert p.bandwidth_bytes_per_second == 18 * 25_000_000_000


# ---------------------------------------------------------------------------------------------------
# utilization


def test_cpu_percent_from_deltas() -> None:
    a = CpuTimes(busy=200, total=1000)
    assert cpu_percent(None, a) == pytest.approx(20.0)  # since boot
    assert cpu_percent(a, CpuTimes(busy=275, total=1100)) == pytest.approx(75.0)
    assert cpu_percent(a, a) == 0.0  # no time passed
    assert cpu_percent(a, CpuTimes(busy=1200, total=2000)) == 100.0


def test_read_cpu_times_ignores_guest_fields(tmp_path: Path) -> None:
    _write(tmp_path / "stat", "cpu  10 2 3 80 5 0 0 0 7 7\nintr 1 2")
    # busy = user+nice+system+irq+softirq+steal = 15; idle = idle+iowait = 85; guest not added twice
    assert read_cpu_times(tmp_path) == CpuTimes(busy=15, total=100)
    assert read_cpu_times(tmp_path / "nowhere") is None


def test_memory_used() -> None:
    assert memory_used({"MemTotal": 100, "MemAvailable": 30}) == (70, 100)
    assert memory_used({"MemTotal": 100, "MemFree": 10, "Buffers": 5, "Cached": 25}) == (60, 100)


def test_sampler_cpu_deltas_memory_and_gpus(host: DiscoveryConfig) -> None:
    stat = host.proc_root / "stat"
    with Sampler(proc_root=host.proc_root, nvml=FakeNvml(), clock=lambda: 1_800_000_000.5) as sampler:
        first = sampler.sample(running_workers=3)
        assert first.cpu_util_percent == pytest.approx(20.0)  # 200 busy of 1000 since boot
        assert first.running_workers == 3
        assert first.sample_time.seconds == 1_800_000_000 and first.sample_time.nanos == 500_000_000
        assert (first.memory_used_bytes, first.memory_total_bytes) == (12 * GIB, 16 * GIB)
        d0, d1 = first.devices
        assert d0.device_id == "GPU-aaaa" and d0.gpu_util_percent == 40.0 and d1.gpu_util_percent == 41.0
        assert d0.memory_used_bytes == 20 * GIB and d0.memory_total_bytes == 80 * GIB
        assert d0.temperature_celsius == 55.0 and d0.power_watts == pytest.approx(312.5)
        stat.write_text("cpu  400 0 100 780 120 0 0 0 0 0\n")  # +300 busy, +100 idle
        assert sampler.sample().cpu_util_percent == pytest.approx(75.0)


def test_sampler_on_this_host() -> None:
    with Sampler() as sampler:
        s = sampler.sample()
        if os.path.exists("/proc/stat"):
            assert 0.0 <= s.cpu_util_percent <= 100.0
        assert s.memory_total_bytes > 0 and 0 < s.memory_used_bytes <= s.memory_total_bytes
        assert not s.devices
