"""Network tuning for collective traffic (pure): bandwidth-delay product and NCCL settings.

`profile_for_pair` picks the best transport two nodes share (InfiniBand > RoCE > TCP), takes the
bottleneck of their aggregate link speed over that transport, and returns a NetworkProfile with the
NCCL environment, the BDP and a socket buffer size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from mlmesh.api.fabric.v1 import node_pb2, topology_pb2

__all__ = [
    "DEFAULT_ROCE_DSCP",
    "DEFAULT_RTT_S",
    "bdp_bytes",
    "profile_for_pair",
    "recommend",
    "socket_buffer_bytes",
    "socket_threads",
    "supported_transports",
]

IB = topology_pb2.TRANSPORT_INFINIBAND
ROCE = topology_pb2.TRANSPORT_ROCE
TCP = topology_pb2.TRANSPORT_TCP
_PREFERENCE = (IB, ROCE, TCP)
PREFERENCE_RANK = {t: i for i, t in enumerate(_PREFERENCE)}  # lower is better
_NIC_KIND = {IB: node_pb2.NIC_KIND_INFINIBAND, ROCE: node_pb2.NIC_KIND_ROCE}

# DSCP 26 (AF31) is the usual lossless class for RoCEv2 (PFC priority 3): traffic class 104.
DEFAULT_ROCE_DSCP = 26
# RoCEv2 over IPv4 is GID index 3 on a default mlx5 GID table (0/1: RoCEv1/v2 link-local IPv6,
# 2/3: RoCEv1/v2 IPv4-mapped).
DEFAULT_ROCE_GID_INDEX = 3
# Assumed round-trip times when none was measured: one switch hop in a data centre.
DEFAULT_RTT_S = {IB: 5e-6, ROCE: 10e-6, TCP: 50e-6}
_GDR_LEVELS = ("LOC", "PIX", "PXB", "PHB", "SYS")
_NCCL_DEFAULT_BUFFSIZE = 4 << 20
_MIN_SOCKET_BUFFER = 4 << 20
_MAX_SOCKETS = 64  # NCCL caps NCCL_SOCKET_NTHREADS x NCCL_NSOCKS_PERTHREAD at 64


def bdp_bytes(link_mbps: float, rtt_s: float) -> int:
    """Bandwidth-delay product in bytes: link_mbps x 10^6 bit/s x rtt_s / 8, rounded up."""
    if link_mbps < 0 or rtt_s < 0:
        raise ValueError("link speed and round-trip time must be non-negative")
    # round away float noise (400 Gb/s x 5 us is 250000.00000000003 bytes) before rounding up
    return math.ceil(round(link_mbps * 1_000_000 * rtt_s / 8, 6))


def socket_buffer_bytes(link_mbps: float, rtt_s: float) -> int:
    """Socket buffer for one TCP stream: twice the BDP (headroom for loss recovery), rounded up to a
    power of two, at least 4 MiB. Set it through net.core.{r,w}mem_max and net.ipv4.tcp_{r,w}mem."""
    want = max(2 * bdp_bytes(link_mbps, rtt_s), _MIN_SOCKET_BUFFER)
    return 1 << (want - 1).bit_length()


def socket_threads(link_mbps: float) -> tuple[int, int]:
    """(NCCL_SOCKET_NTHREADS, NCCL_NSOCKS_PERTHREAD) for a TCP link: more parallel streams on faster
    links, since one TCP stream tops out around 10-20 Gb/s on one core."""
    gbps = link_mbps / 1000
    if gbps <= 10:
        pair = (1, 2)
    elif gbps <= 25:
        pair = (2, 2)
    elif gbps <= 50:
        pair = (4, 2)
    elif gbps <= 100:
        pair = (4, 4)
    elif gbps <= 200:
        pair = (8, 4)
    else:
        pair = (8, 8)
    assert pair[0] * pair[1] <= _MAX_SOCKETS
    return pair


def _rdma_ports(nics: Iterable[node_pb2.Nic], kind: int) -> list[node_pb2.Nic]:
    ports = [n for n in nics if n.kind == kind and n.rdma_device]
    up = [n for n in ports if n.link_up]
    return up or ports


def _socket_nics(nics: Iterable[node_pb2.Nic]) -> list[node_pb2.Nic]:
    """Interfaces for TCP / NCCL bootstrap: plain Ethernet first, else the netdevs of RDMA ports."""
    nics = list(nics)
    for candidates in (
        [n for n in nics if n.kind == node_pb2.NIC_KIND_ETHERNET],
        [n for n in nics if n.kind != node_pb2.NIC_KIND_ETHERNET and n.name != n.rdma_device],
    ):
        up = [n for n in candidates if n.link_up]
        if up:
            return up
    return []


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _tc_dscp(dscp: int | None, traffic_class: int | None) -> tuple[int, int]:
    if dscp is not None and not 0 <= dscp <= 63:
        raise ValueError(f"DSCP must be 0-63, not {dscp}")
    if traffic_class is not None and not 0 <= traffic_class <= 255:
        raise ValueError(f"traffic class must be 0-255, not {traffic_class}")
    if dscp is not None and traffic_class is not None and traffic_class >> 2 != dscp:
        raise ValueError(f"traffic class {traffic_class} does not carry DSCP {dscp} (TC = DSCP << 2)")
    if traffic_class is not None:
        return traffic_class >> 2, traffic_class
    d = DEFAULT_ROCE_DSCP if dscp is None else dscp
    return d, d << 2


def _gdr_level(gdr: bool | str) -> str:
    if isinstance(gdr, bool):
        # PHB: GPUDirect RDMA when GPU and NIC share a PCIe host bridge (the same CPU socket);
        # LOC: never (stage through host memory).
        return "PHB" if gdr else "LOC"
    level = gdr.upper()
    if level not in _GDR_LEVELS:
        raise ValueError(f"NCCL_NET_GDR_LEVEL must be one of {_GDR_LEVELS}, not {gdr!r}")
    return level


def recommend(
    transport: int,
    nics: Sequence[node_pb2.Nic],
    *,
    dscp: int | None = None,
    traffic_class: int | None = None,
    gdr: bool | str = True,
    gid_index: int = DEFAULT_ROCE_GID_INDEX,
    link_mbps: float | None = None,
) -> dict[str, str]:
    """NCCL environment for `transport` over `nics` (those of one node, or of several: names are merged).

    IB / RoCE: NCCL_IB_HCA (exact-match list of HCA:port), NCCL_NET_GDR_LEVEL, NCCL_SOCKET_IFNAME for
    the bootstrap, and for RoCE NCCL_IB_GID_INDEX plus NCCL_IB_TC (= DSCP << 2) and NCCL_IB_SL (the
    DSCP's class, DSCP >> 3). TCP: NCCL_IB_DISABLE=1, NCCL_SOCKET_IFNAME and socket threads scaled by
    `link_mbps` (default: the fastest listed interface).
    """
    env: dict[str, str] = {}
    sockets = _socket_nics(nics)
    ifnames = _unique(n.name for n in sockets)
    if ifnames:
        env["NCCL_SOCKET_IFNAME"] = "=" + ",".join(ifnames)
    if transport in (IB, ROCE):
        ports = _rdma_ports(nics, _NIC_KIND[transport])
        if not ports:
            raise ValueError(f"no {topology_pb2.Transport.Name(transport)} port among the NICs")
        env["NCCL_IB_DISABLE"] = "0"
        env["NCCL_IB_HCA"] = "=" + ",".join(_unique(f"{n.rdma_device}:{n.port or 1}" for n in ports))
        env["NCCL_NET_GDR_LEVEL"] = _gdr_level(gdr)
        if transport == ROCE:
            d, tc = _tc_dscp(dscp, traffic_class)
            env["NCCL_IB_GID_INDEX"] = str(gid_index)
            env["NCCL_IB_TC"] = str(tc)
            env["NCCL_IB_SL"] = str(d >> 3)
        elif traffic_class is not None or dscp is not None:
            # Native IB has no DSCP; a given class maps onto the IB traffic class field.
            env["NCCL_IB_TC"] = str(_tc_dscp(dscp, traffic_class)[1])
        return env
    if transport != TCP:
        raise ValueError(f"unknown transport {transport}")
    env["NCCL_IB_DISABLE"] = "1"
    speed = link_mbps if link_mbps is not None else max((n.speed_mbps for n in sockets), default=0)
    nthreads, nsocks = socket_threads(speed or 10_000)
    env["NCCL_SOCKET_NTHREADS"] = str(nthreads)
    env["NCCL_NSOCKS_PERTHREAD"] = str(nsocks)
    return env


def supported_transports(node: node_pb2.Node) -> list[int]:
    """Transports a node can use, best first. TCP is always possible."""
    out = [t for t in (IB, ROCE) if any(n.link_up and n.rdma_device and n.kind == _NIC_KIND[t] for n in node.nics)]
    return [*out, TCP]


def _aggregate_mbps(node: node_pb2.Node, transport: int) -> int:
    nics = _rdma_ports(node.nics, _NIC_KIND[transport]) if transport in (IB, ROCE) else _socket_nics(node.nics)
    return sum(n.speed_mbps for n in nics)


def profile_for_pair(
    node_a: node_pb2.Node,
    node_b: node_pb2.Node,
    rtt_s: float | None = None,
    *,
    dscp: int | None = None,
    traffic_class: int | None = None,
    gdr: bool | str | None = None,
) -> topology_pb2.NetworkProfile:
    """NetworkProfile for collectives between two nodes: best shared transport, bottleneck bandwidth
    (the smaller of the two nodes' aggregate speed over that transport), BDP and NCCL settings.

    `gdr` defaults to on when both nodes have GPUs. The NCCL env merges both nodes' HCA / interface
    names: NCCL_IB_HCA and NCCL_SOCKET_IFNAME are filters, so a name missing on one node is ignored there.
    """
    transport = next(t for t in _PREFERENCE if t in supported_transports(node_a) and t in supported_transports(node_b))
    notes: list[str] = [
        f"transport {topology_pb2.Transport.Name(transport)}: the best that both "
        f"{node_a.id or 'a'} and {node_b.id or 'b'} have an active link for (IB > RoCE > TCP)"
    ]
    mbps_a, mbps_b = _aggregate_mbps(node_a, transport), _aggregate_mbps(node_b, transport)
    mbps = min(mbps_a, mbps_b)
    notes.append(f"bottleneck bandwidth {mbps} Mb/s (aggregate {mbps_a} Mb/s on a, {mbps_b} Mb/s on b)")
    if not mbps:
        notes.append("link speed unknown (the NICs report none); BDP and buffers use the minimums")
    if rtt_s is None:
        rtt_s = DEFAULT_RTT_S[transport]
        notes.append(f"round-trip time not measured; assumed {rtt_s * 1e6:g} us")
    bdp = bdp_bytes(mbps, rtt_s)
    if gdr is None:
        gdr = bool(node_a.devices) and bool(node_b.devices)
    env = recommend(
        transport,
        [*node_a.nics, *node_b.nics],
        dscp=dscp,
        traffic_class=traffic_class,
        gdr=gdr,
        link_mbps=mbps,
    )
    if bdp > _NCCL_DEFAULT_BUFFSIZE:
        env["NCCL_BUFFSIZE"] = str(1 << (bdp - 1).bit_length())
        notes.append("NCCL_BUFFSIZE raised above the 4 MiB default to cover the BDP")
    d, tc = 0, 0
    if transport == ROCE:
        d, tc = _tc_dscp(dscp, traffic_class)
        notes.append(f"RoCE DSCP {d} -> traffic class {tc} (DSCP << 2), service level {d >> 3}")
    elif transport == IB and "NCCL_IB_TC" in env:
        tc = int(env["NCCL_IB_TC"])
    if transport in (IB, ROCE) and "NCCL_NET_GDR_LEVEL" in env:
        notes.append(f"GPUDirect RDMA level {env['NCCL_NET_GDR_LEVEL']}")
    sock = socket_buffer_bytes(mbps, rtt_s)
    notes.append(
        f"socket buffers {sock} bytes (net.core.rmem_max / wmem_max, net.ipv4.tcp_rmem / tcp_wmem max)"
        + ("; only NCCL's bootstrap uses TCP here" if transport != TCP else "")
    )
    profile = topology_pb2.NetworkProfile(
        transport=transport,
        link_bandwidth_bits_per_second=mbps * 1_000_000,
        bandwidth_delay_product_bytes=bdp,
        nccl_env=env,
        dscp=d,
        traffic_class=tc,
        socket_buffer_bytes=sock,
        notes=notes,
    )
    profile.round_trip_time.FromNanoseconds(round(rtt_s * 1e9))
    return profile
