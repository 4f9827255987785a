"""Discovery of the local node: GPUs (NVML), NICs (sysfs), CPU and memory (procfs), labels (config).

Every reader takes its root (`sysfs_root`, `proc_root`) from `DiscoveryConfig`, so tests build a fake
tree in a temporary directory; NVML is the `pynvml` module (package `nvidia-ml-py`), imported lazily,
and a test may pass a stand-in module object instead. Missing pieces never raise: no NVML, no driver or
no GPU gives zero devices; an unreadable sysfs file gives an empty / -1 field.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.fabric.v1 import node_pb2

__all__ = [
    "DiscoveryConfig",
    "LabelConfig",
    "discover",
    "discover_gpus",
    "discover_host",
    "discover_nics",
    "load_nvml",
    "normalize_pci_bus_id",
    "parse_ib_rate_mbps",
    "read_kernel_xids",
    "read_meminfo",
    "sanitize_node_id",
]

_ID_BAD = re.compile(r"[^a-z0-9_-]+")
_POOLS = {
    "": common_pb2.NODE_POOL_UNSPECIFIED,
    "onprem": common_pb2.NODE_POOL_ONPREM,
    "cloud": common_pb2.NODE_POOL_CLOUD,
}
# XIDs after which the GPU should take no new work until it is reset / drained (NVIDIA's XID catalog:
# 48 double-bit ECC, 62 internal micro-controller halt, 64 row-remap failure, 74 NVLink error,
# 79 fallen off the bus, 95 uncontained ECC, 119/120 GSP timeout / error, 140 unrecovered ECC).
FATAL_XIDS = frozenset({48, 62, 64, 74, 79, 95, 119, 120, 140})
RECENT_XIDS = 16
# Unidirectional bandwidth of one NVLink link in bytes/s by NVML's NVLink version enum, used when the
# per-link speed field (NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON) is not available.
_NVLINK_LINK_BYTES_PER_S = {
    1: 20_000_000_000,  # 1.0 (P100)
    2: 25_000_000_000,  # 2.0 (V100)
    3: 25_000_000_000,  # 2.2
    4: 25_000_000_000,  # 3.0 (A100)
    5: 25_000_000_000,  # 3.1
    6: 25_000_000_000,  # 4.0 (H100 / H200: 18 links, 450 GB/s each way)
    7: 50_000_000_000,  # 5.0 (B200)
    8: 100_000_000_000,  # 6.0
}
_NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON = 90
_NVML_NVLINK_DEVICE_TYPE_GPU = 0
_NVML_NVLINK_DEVICE_TYPE_SWITCH = 2
_ARPHRD_LOOPBACK = 772
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class LabelConfig:
    """Placement labels of the node, from the agent's config."""

    rack: str = ""
    switch: str = ""
    zone: str = ""
    pool: str = "onprem"  # "onprem" | "cloud"
    spot: bool = False
    nvlink_domain: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DiscoveryConfig:
    """What the agent knows about itself before looking at the hardware."""

    node_id: str = ""  # empty: the hostname, lower case, sanitized to [a-z0-9_-]
    hostname: str = ""  # empty: socket.gethostname()
    agent_address: str = ""
    labels: LabelConfig = field(default_factory=LabelConfig)
    sysfs_root: Path = Path("/")  # the root holding sys/class/..., sys/bus/pci/..., etc/os-release
    proc_root: Path = Path("/proc")
    # Kernel log read for past XID errors (needs root or CAP_SYSLOG); None to skip.
    kmsg_path: Path | None = Path("/dev/kmsg")
    reserve_cpu_millis: int = 0
    reserve_memory_bytes: int = 0
    agent_version: str = ""


def sanitize_node_id(name: str) -> str:
    """Lower-case `name` and replace every run of characters outside [a-z0-9_-] with '-'."""
    out = _ID_BAD.sub("-", name.strip().lower()).strip("-")
    return out or "node"


def normalize_pci_bus_id(bus: str | bytes) -> str:
    """PCI bus id in sysfs form: '00000000:18:00.0', '0000:18:00' or '18:00.0' -> '0000:18:00.0'."""
    text = _text(bus).strip().lower()
    m = re.fullmatch(r"(?:([0-9a-f]+):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})(?:\.([0-7]))?", text)
    if m is None:
        return text
    domain, b, d, f = m.groups()
    return f"{int(domain or '0', 16):04x}:{int(b, 16):02x}:{int(d, 16):02x}.{f or '0'}"


def parse_ib_rate_mbps(rate: str) -> int:
    """'200 Gb/sec (4X HDR)' -> 200000; '2.5 Gb/sec (1X SDR)' -> 2500; unparseable -> 0."""
    m = re.match(r"\s*([0-9.]+)\s*([GMT]?)b/s", rate.replace("/sec", "/s"))
    if m is None:
        return 0
    scale = {"": 1e-6, "M": 1, "G": 1_000, "T": 1_000_000}[m.group(2)]
    return round(float(m.group(1)) * scale)


# ---------------------------------------------------------------------------------------------------
# small file readers


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def _read_int(path: Path, default: int) -> int:
    text = _read(path)
    if text is None:
        return default
    try:
        return int(text.split()[0]) if text else default
    except ValueError:
        return default


def _numa(path: Path) -> int:
    value = _read_int(path, -1)
    return value if value >= 0 else -1


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _pci_of(device_link: Path) -> str:
    """The PCI bus id a sysfs `device` link resolves to, or '' when it is not a PCI function."""
    if not os.path.lexists(device_link):
        return ""
    # The link may end below the PCI function (virtio: .../0000:00:03.0/virtio2): take the last
    # path component that is a PCI address.
    for name in reversed(Path(os.path.realpath(device_link)).parts):
        if re.fullmatch(r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]", name):
            return name.lower()
    return ""


def read_meminfo(proc_root: Path) -> dict[str, int]:
    """/proc/meminfo as bytes per key (MemTotal, MemAvailable, ...); empty when unreadable."""
    out: dict[str, int] = {}
    for line in (_read(proc_root / "meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        with contextlib.suppress(ValueError):
            out[key.strip()] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1)
    return out


# ---------------------------------------------------------------------------------------------------
# host: CPU, memory, OS


def _cpu_count(proc_root: Path) -> int:
    if proc_root == Path("/proc") and hasattr(os, "sched_getaffinity"):
        with contextlib.suppress(OSError):
            return len(os.sched_getaffinity(0))
    cpuinfo = _read(proc_root / "cpuinfo") or ""
    count = sum(1 for line in cpuinfo.splitlines() if re.match(r"processor\s*:", line))
    return count or os.cpu_count() or 1


def _os_name(config: DiscoveryConfig) -> str:
    pretty = ""
    for line in (_read(config.sysfs_root / "etc" / "os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            pretty = line.split("=", 1)[1].strip().strip('"')
    kernel = _read(config.proc_root / "sys" / "kernel" / "osrelease") or ""
    parts = [p for p in (pretty, f"Linux {kernel}" if kernel else "") if p]
    return "; ".join(parts)


def discover_host(config: DiscoveryConfig) -> node_pb2.HostInfo:
    """CPU count and model, memory, NUMA nodes and OS of the host (cpu_slots is left to `discover`)."""
    cpu_model = ""
    for line in (_read(config.proc_root / "cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
            cpu_model = value.strip()
            break
    nodes_dir = config.sysfs_root / "sys" / "devices" / "system" / "node"
    numa_nodes = sum(1 for name in _listdir(nodes_dir) if re.fullmatch(r"node\d+", name))
    return node_pb2.HostInfo(
        cpu_count=_cpu_count(config.proc_root),
        memory_bytes=read_meminfo(config.proc_root).get("MemTotal", 0),
        numa_nodes=max(numa_nodes, 1),
        cpu_model=cpu_model,
        os=_os_name(config),
    )


# ---------------------------------------------------------------------------------------------------
# NICs


def _ipv4_address(ifname: str) -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            packed = struct.pack("256s", ifname.encode()[:15])
            raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, packed)
    except OSError:
        return None
    return socket.inet_ntoa(raw[20:24])


def _ipv6_addresses(proc_root: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (_read(proc_root / "net" / "if_inet6") or "").splitlines():
        parts = line.split()
        if len(parts) != 6:
            continue
        with contextlib.suppress(ValueError):
            addr = ipaddress.IPv6Address(int(parts[0], 16))
            if not addr.is_link_local and not addr.is_loopback:
                out.setdefault(parts[5], []).append(str(addr))
    return out


def _addresses_reader(config: DiscoveryConfig) -> Callable[[str], list[str]]:
    # Interface addresses are not in sysfs: IPv4 comes from an ioctl on the live host (so only when
    # sysfs_root is the real root), IPv6 from <proc_root>/net/if_inet6.
    v6 = _ipv6_addresses(config.proc_root)
    live = config.sysfs_root == Path("/")

    def read(ifname: str) -> list[str]:
        v4 = _ipv4_address(ifname) if live else None
        return ([v4] if v4 else []) + v6.get(ifname, [])

    return read


@dataclass
class _NetDev:
    name: str
    has_device: bool
    speed_mbps: int
    up: bool
    mtu: int
    numa: int
    pci: str
    rdma: list[str]
    dev_port: int
    type: int


def _read_netdev(net_dir: Path, name: str) -> _NetDev:
    d = net_dir / name
    device = d / "device"
    speed = _read_int(d / "speed", -1)
    pci = _pci_of(device)
    numa = _numa(device / "numa_node")
    if numa < 0 and pci:
        numa = _numa(net_dir.parents[1] / "bus" / "pci" / "devices" / pci / "numa_node")
    return _NetDev(
        name=name,
        has_device=device.exists(),
        speed_mbps=speed if speed > 0 else 0,
        up=(_read(d / "operstate") or "").lower() == "up",
        mtu=_read_int(d / "mtu", 0),
        numa=numa,
        pci=pci,
        rdma=_listdir(device / "infiniband"),
        dev_port=_read_int(d / "dev_port", 0),
        type=_read_int(d / "type", 1),
    )


def discover_nics(config: DiscoveryConfig) -> list[node_pb2.Nic]:
    """RDMA ports (IB / RoCE) from /sys/class/infiniband, then the remaining physical net devices.

    A net device whose PCI function carries an RDMA device (`/sys/class/net/<if>/device/infiniband`)
    is reported once, as that RDMA port (name = the net device, rdma_device = the HCA). `lo` is skipped,
    and so is a virtual interface (no `device` link) that reports no speed.
    """
    root = config.sysfs_root
    net_dir = root / "sys" / "class" / "net"
    ib_dir = root / "sys" / "class" / "infiniband"
    addresses = _addresses_reader(config)
    netdevs = {name: _read_netdev(net_dir, name) for name in _listdir(net_dir)}

    rdma_netdevs: dict[str, list[_NetDev]] = {}
    for nd in netdevs.values():
        for dev in nd.rdma:
            rdma_netdevs.setdefault(dev, []).append(nd)
    for dev in _listdir(ib_dir):  # the other direction: /sys/class/infiniband/<dev>/device/net/<if>
        for name in _listdir(ib_dir / dev / "device" / "net"):
            if name in netdevs and netdevs[name] not in rdma_netdevs.get(dev, []):
                rdma_netdevs.setdefault(dev, []).append(netdevs[name])

    nics: list[node_pb2.Nic] = []
    used: set[str] = set()
    for dev in _listdir(ib_dir):
        ports = sorted((p for p in _listdir(ib_dir / dev / "ports") if p.isdigit()), key=int)
        candidates = rdma_netdevs.get(dev, [])
        for port_name in ports:
            port = int(port_name)
            pdir = ib_dir / dev / "ports" / port_name
            link_layer = (_read(pdir / "link_layer") or "").lower()
            kind = node_pb2.NIC_KIND_ROCE if link_layer == "ethernet" else node_pb2.NIC_KIND_INFINIBAND
            netdev = next((nd for nd in candidates if nd.dev_port == port - 1), None)
            if netdev is None and len(candidates) == 1:
                netdev = candidates[0]
            if netdev is not None:
                used.add(netdev.name)
            state = (_read(pdir / "state") or "").upper()
            numa = _numa(ib_dir / dev / "device" / "numa_node")
            nics.append(
                node_pb2.Nic(
                    name=netdev.name if netdev else dev,
                    kind=kind,
                    rdma_device=dev,
                    port=port,
                    speed_mbps=parse_ib_rate_mbps(_read(pdir / "rate") or ""),
                    link_up="ACTIVE" in state,
                    mtu_bytes=netdev.mtu if netdev else 0,
                    addresses=addresses(netdev.name) if netdev else [],
                    numa_node=numa if numa >= 0 else (netdev.numa if netdev else -1),
                    pci_bus_id=_pci_of(ib_dir / dev / "device") or (netdev.pci if netdev else ""),
                )
            )

    for name, nd in netdevs.items():
        if name in used or name == "lo" or nd.type == _ARPHRD_LOOPBACK:
            continue
        if not nd.has_device and nd.speed_mbps <= 0:
            continue  # virtual (bridge, veth without speed, ifb, tunnel)
        nics.append(
            node_pb2.Nic(
                name=name,
                kind=node_pb2.NIC_KIND_ETHERNET,
                speed_mbps=nd.speed_mbps,
                link_up=nd.up,
                mtu_bytes=nd.mtu,
                addresses=addresses(name),
                numa_node=nd.numa,
                pci_bus_id=nd.pci,
            )
        )
    return nics


# ---------------------------------------------------------------------------------------------------
# GPUs through NVML


def load_nvml(module: Any = None) -> Any | None:
    """Import (unless given) and initialise pynvml; None when the package, library or driver is missing.

    The caller owns the returned module's session and calls `nvmlShutdown()` when done.
    """
    if module is False:
        return None
    if module is None:
        try:
            import pynvml as module  # optional dependency, imported lazily
        except ImportError:
            return None
    try:
        module.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no GPUs here
        return None
    return module


def _call(fn: Callable[..., Any] | None, *args: Any) -> Any:
    """fn(*args), or None when the function is missing or NVML refuses (not supported, no permission)."""
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception:
        return None


def _nv(nvml: Any, name: str) -> Callable[..., Any] | None:
    return getattr(nvml, name, None)


def read_kernel_xids(path: Path | None, *, max_bytes: int = 16 << 20) -> dict[str, list[int]] | None:
    """XID codes per GPU ('0000:18:00' → codes, oldest first) from the kernel log, or None if unreadable.

    NVML has no query for past XIDs: its event API (nvmlDeviceRegisterEvents with
    nvmlEventTypeXidCriticalError + nvmlEventSetWait) only reports XIDs raised after registration. The
    driver also logs every XID to the kernel ring buffer as 'NVRM: Xid (PCI:0000:18:00): 79, ...', which
    is what this reads (/dev/kmsg, non-blocking; needs root or CAP_SYSLOG, and only covers what the ring
    buffer still holds). `path` may be a plain file of log lines too.
    """
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    chunks: list[bytes] = []
    total = 0
    try:
        while total < max_bytes:
            try:
                data = os.read(fd, 65536)  # /dev/kmsg returns one record per read
            except BlockingIOError:
                break  # end of the ring buffer
            except BrokenPipeError:
                continue  # a record was overwritten while reading; go on with the next one
            except OSError:
                return None if not chunks else _parse_xids(b"\n".join(chunks))
            if not data:
                break
            chunks.append(data)
            total += len(data)
    finally:
        os.close(fd)
    return _parse_xids(b"\n".join(chunks))


_XID_RE = re.compile(r"NVRM: Xid \(PCI:([0-9a-fA-F]+:[0-9a-fA-F]+:[0-9a-fA-F]+)(?:\.[0-7])?\):\s*(\d+)")


def _parse_xids(raw: bytes) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for m in _XID_RE.finditer(raw.decode(errors="replace")):
        out.setdefault(normalize_pci_bus_id(m.group(1))[:-2], []).append(int(m.group(2)))
    return out


_MIG_PROFILE_RE = re.compile(r"((?:\d+c\.)?\d+g\.\d+gb(?:\+\w+)?)", re.IGNORECASE)


def _mig_instances(nvml: Any, handle: Any) -> list[node_pb2.MigInstance]:
    mode = _call(_nv(nvml, "nvmlDeviceGetMigMode"), handle)
    if not mode or mode[0] != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
        return []
    out: list[node_pb2.MigInstance] = []
    for i in range(_call(_nv(nvml, "nvmlDeviceGetMaxMigDeviceCount"), handle) or 0):
        mig = _call(_nv(nvml, "nvmlDeviceGetMigDeviceHandleByIndex"), handle, i)
        if mig is None:
            continue  # empty slot (NVML_ERROR_NOT_FOUND)
        name = _text(_call(_nv(nvml, "nvmlDeviceGetName"), mig) or "")
        mem = _call(_nv(nvml, "nvmlDeviceGetMemoryInfo"), mig)
        m = _MIG_PROFILE_RE.search(name)
        profile = m.group(1).lower() if m else ""
        if not profile:
            attrs = _call(_nv(nvml, "nvmlDeviceGetAttributes"), mig)
            if attrs is not None:
                profile = f"{attrs.gpuInstanceSliceCount}g.{round(attrs.memorySizeMB / 1024)}gb"
        out.append(
            node_pb2.MigInstance(
                uuid=_text(_call(_nv(nvml, "nvmlDeviceGetUUID"), mig) or ""),
                profile=profile,
                memory_bytes=int(mem.total) if mem is not None else 0,
                gpu_instance_id=_call(_nv(nvml, "nvmlDeviceGetGpuInstanceId"), mig) or 0,
                compute_instance_id=_call(_nv(nvml, "nvmlDeviceGetComputeInstanceId"), mig) or 0,
            )
        )
    return out


def _nvlink_link_bytes_per_s(nvml: Any, handle: Any, link: int) -> int:
    values = _call(_nv(nvml, "nvmlDeviceGetFieldValues"), handle, [_NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON])
    if values:
        v = values[0]
        if getattr(v, "nvmlReturn", 1) == 0 and getattr(v.value, "uiVal", 0) > 0:
            return int(v.value.uiVal) * 1_000_000  # NVML reports MB/s per link and direction
    version = _call(_nv(nvml, "nvmlDeviceGetNvLinkVersion"), handle, link)
    return _NVLINK_LINK_BYTES_PER_S.get(version or 0, 0)


@dataclass
class _Links:
    direct: dict[str, int] = field(default_factory=dict)  # remote bus id (sysfs form) -> active links
    remote_names: dict[str, str] = field(default_factory=dict)  # sysfs form -> as NVML printed it
    switch_links: int = 0
    link_bytes_per_s: int = 0


def _nvlinks(nvml: Any, handle: Any, local: set[str]) -> _Links:
    out = _Links()
    max_links = int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))
    state_fn = _nv(nvml, "nvmlDeviceGetNvLinkState")
    for link in range(max_links):
        if not _call(state_fn, handle, link):
            continue  # inactive, or no such link (NVML_ERROR_INVALID_ARGUMENT / NOT_SUPPORTED)
        if not out.link_bytes_per_s:
            out.link_bytes_per_s = _nvlink_link_bytes_per_s(nvml, handle, link)
        remote_type = _call(_nv(nvml, "nvmlDeviceGetNvLinkRemoteDeviceType"), handle, link)
        pci = _call(_nv(nvml, "nvmlDeviceGetNvLinkRemotePciInfo"), handle, link)
        remote_raw = _text(pci.busId) if pci is not None else ""
        remote = normalize_pci_bus_id(remote_raw) if remote_raw else ""
        if remote_type == _NVML_NVLINK_DEVICE_TYPE_SWITCH or (remote_type is None and remote not in local):
            out.switch_links += 1  # NVSwitch: reaches every other switch-attached GPU
            continue
        if remote:
            out.direct[remote] = out.direct.get(remote, 0) + 1
            out.remote_names[remote] = remote_raw
    return out


def _health(nvml: Any, handle: Any, xids: list[int] | None) -> node_pb2.DeviceHealth:
    notes: list[str] = []
    healthy = True
    volatile = getattr(nvml, "NVML_VOLATILE_ECC", 0)
    ecc_fn = _nv(nvml, "nvmlDeviceGetTotalEccErrors")
    corrected = _call(ecc_fn, handle, getattr(nvml, "NVML_MEMORY_ERROR_TYPE_CORRECTED", 0), volatile)
    uncorrected = _call(ecc_fn, handle, getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1), volatile)
    if corrected is None and uncorrected is None:
        notes.append("ECC counters not supported or ECC disabled")
    if uncorrected:
        healthy = False
        notes.append(f"{uncorrected} uncorrectable ECC errors")
    remap = _call(_nv(nvml, "nvmlDeviceGetRemappedRows"), handle)
    if remap is not None and len(remap) >= 4:
        if remap[3]:
            healthy = False
            notes.append("row remapping failed")
        elif remap[2]:
            notes.append("row remapping pending (reset the GPU)")
    if xids is None:
        notes.append("XID history unavailable (kernel log not readable)")
        recent: list[int] = []
    else:
        recent = xids[-RECENT_XIDS:]
        fatal = sorted({x for x in recent if x in FATAL_XIDS})
        if fatal:
            healthy = False
            notes.append("fatal XID " + ",".join(map(str, fatal)))
    return node_pb2.DeviceHealth(
        healthy=healthy,
        ecc_corrected_errors=int(corrected or 0),
        ecc_uncorrected_errors=int(uncorrected or 0),
        recent_xid_errors=recent,
        message="; ".join(notes) if notes else "ok",
    )


def discover_gpus(
    nvml: Any, sysfs_root: Path = Path("/"), kmsg_path: Path | None = None
) -> tuple[list[node_pb2.Device], str]:
    """GPUs of an initialised NVML session and the driver version; ([], '') when there are none."""
    count = _call(_nv(nvml, "nvmlDeviceGetCount")) or 0
    if not count:
        return [], ""
    driver = _text(_call(_nv(nvml, "nvmlSystemGetDriverVersion")) or "")
    handles: list[tuple[int, Any]] = []
    for i in range(count):
        h = _call(_nv(nvml, "nvmlDeviceGetHandleByIndex"), i)
        if h is not None:
            handles.append((i, h))

    bus_raw: dict[int, str] = {}
    for i, h in handles:
        pci = _call(_nv(nvml, "nvmlDeviceGetPciInfo"), h)
        bus_raw[i] = _text(pci.busId) if pci is not None else ""
    by_bus = {normalize_pci_bus_id(b): i for i, b in bus_raw.items() if b}
    uuids = {i: _text(_call(_nv(nvml, "nvmlDeviceGetUUID"), h) or "") for i, h in handles}
    xid_log = read_kernel_xids(kmsg_path)

    devices: dict[int, node_pb2.Device] = {}
    links: dict[int, _Links] = {}
    for i, h in handles:
        bus = normalize_pci_bus_id(bus_raw[i]) if bus_raw[i] else ""
        mem = _call(_nv(nvml, "nvmlDeviceGetMemoryInfo"), h)
        cc = _call(_nv(nvml, "nvmlDeviceGetCudaComputeCapability"), h)
        numa = _numa(sysfs_root / "sys" / "bus" / "pci" / "devices" / bus / "numa_node") if bus else -1
        if numa < 0:
            numa_id = _call(_nv(nvml, "nvmlDeviceGetNumaNodeId"), h)
            numa = numa_id if isinstance(numa_id, int) and numa_id >= 0 else -1
        xids = None if xid_log is None else xid_log.get(bus[:-2], [])
        devices[i] = node_pb2.Device(
            id=uuids[i],
            kind=node_pb2.DEVICE_KIND_GPU,
            index=i,
            model=_text(_call(_nv(nvml, "nvmlDeviceGetName"), h) or ""),
            memory_bytes=int(mem.total) if mem is not None else 0,
            pci_bus_id=bus_raw[i],
            numa_node=numa,
            compute_capability=f"{cc[0]}.{cc[1]}" if cc else "",
            mig_instances=_mig_instances(nvml, h),
            health=_health(nvml, h, xids),
        )
        links[i] = _nvlinks(nvml, h, set(by_bus))

    for i, lk in links.items():
        peers: dict[int | str, list[int]] = {}  # peer index (or remote bus when not a local GPU) -> [links, bw]
        for remote, n in lk.direct.items():
            key: int | str = by_bus.get(remote, remote)
            if key == i:
                continue
            peers.setdefault(key, [0, 0])
            peers[key][0] += n
            peers[key][1] += n * lk.link_bytes_per_s
        if lk.switch_links:
            for j, other in links.items():
                if j != i and other.switch_links:
                    n = min(lk.switch_links, other.switch_links)
                    peers.setdefault(j, [0, 0])
                    peers[j][0] += n
                    peers[j][1] += min(
                        lk.switch_links * lk.link_bytes_per_s, other.switch_links * other.link_bytes_per_s
                    )
        for key in sorted(peers, key=lambda k: (isinstance(k, str), str(k) if isinstance(k, str) else k)):
            n, bw = peers[key]
            devices[i].nvlink_peers.append(
                node_pb2.NvLinkPeer(
                    peer_device_id=uuids.get(key, "") if isinstance(key, int) else "",
                    peer_pci_bus_id=bus_raw[key] if isinstance(key, int) else lk.remote_names.get(key, key),
                    link_count=n,
                    bandwidth_bytes_per_second=bw,
                )
            )
    return [devices[i] for i in sorted(devices)], driver


# ---------------------------------------------------------------------------------------------------
# the node


def _labels(cfg: LabelConfig) -> node_pb2.NodeLabels:
    pool = cfg.pool.strip().lower().replace("-", "").replace("_", "")
    if pool not in _POOLS:
        raise ValueError(f"pool must be 'onprem' or 'cloud', not {cfg.pool!r}")
    return node_pb2.NodeLabels(
        rack=cfg.rack,
        leaf_switch=cfg.switch,
        zone=cfg.zone,
        pool=_POOLS[pool],
        spot=cfg.spot,
        nvlink_domain=cfg.nvlink_domain,
        extra=dict(cfg.extra),
    )


def _agent_version(config: DiscoveryConfig) -> str:
    if config.agent_version:
        return config.agent_version
    from importlib import metadata

    try:
        return metadata.version("mlmesh-fabric")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def discover(config: DiscoveryConfig | None = None, *, nvml: Any = None) -> node_pb2.Node:
    """The Node this host registers as. `nvml`: None imports pynvml, False skips GPUs, else a module."""
    config = config or DiscoveryConfig()
    hostname = config.hostname or socket.gethostname()
    labels = _labels(config.labels)  # validate before touching the hardware
    host = discover_host(config)
    devices: list[node_pb2.Device] = []
    session = load_nvml(nvml)
    if session is not None:
        try:
            devices, host.driver_version = discover_gpus(session, config.sysfs_root, config.kmsg_path)
        finally:
            with contextlib.suppress(Exception):
                session.nvmlShutdown()
    nics = discover_nics(config)
    if host.numa_nodes == 1:
        # One NUMA node: everything is on node 0, whatever sysfs says (VMs often report -1).
        for item in (*devices, *nics):
            if item.numa_node < 0:
                item.numa_node = 0
    host.cpu_slots = 0 if devices else host.cpu_count
    capacity = common_pb2.Resources(
        gpus=sum(1 for d in devices if d.health.healthy),
        cpu_millis=max(0, host.cpu_count * 1000 - config.reserve_cpu_millis),
        memory_bytes=max(0, host.memory_bytes - config.reserve_memory_bytes),
    )
    return node_pb2.Node(
        id=sanitize_node_id(config.node_id or hostname),
        hostname=hostname,
        agent_address=config.agent_address,
        labels=labels,
        devices=devices,
        nics=nics,
        host=host,
        capacity=capacity,
        agent_version=_agent_version(config),
    )
