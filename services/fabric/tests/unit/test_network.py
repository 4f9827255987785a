"""Network tuning: BDP, NCCL settings per transport, and the profile of a node pair."""

from __future__ import annotations

import pytest

from mlmesh.api.fabric.v1 import node_pb2, topology_pb2
from mlmesh.fabric.domain import network
from mlmesh.fabric.domain.network import bdp_bytes, profile_for_pair, recommend, socket_buffer_bytes

pytestmark = pytest.mark.timeout(30)
IB, ROCE, TCP = topology_pb2.TRANSPORT_INFINIBAND, topology_pb2.TRANSPORT_ROCE, topology_pb2.TRANSPORT_TCP


def _ib(dev: str, name: str = "", *, mbps: int = 200_000, up: bool = True, port: int = 1) -> node_pb2.Nic:
    return node_pb2.Nic(
        name=name or dev, kind=node_pb2.NIC_KIND_INFINIBAND, rdma_device=dev, port=port, speed_mbps=mbps, link_up=up
    )


def _roce(dev: str, name: str, *, mbps: int = 100_000, up: bool = True) -> node_pb2.Nic:
    return node_pb2.Nic(name=name, kind=node_pb2.NIC_KIND_ROCE, rdma_device=dev, port=1, speed_mbps=mbps, link_up=up)


def _eth(name: str, *, mbps: int = 25_000, up: bool = True) -> node_pb2.Nic:
    return node_pb2.Nic(name=name, kind=node_pb2.NIC_KIND_ETHERNET, speed_mbps=mbps, link_up=up)


def _node(node_id: str, *nics: node_pb2.Nic, gpus: int = 0) -> node_pb2.Node:
    return node_pb2.Node(id=node_id, nics=nics, devices=[node_pb2.Device(id=f"GPU-{node_id}-{i}") for i in range(gpus)])


def test_bdp() -> None:
    assert bdp_bytes(100_000, 0.001) == 12_500_000  # 100 Gb/s x 1 ms
    assert bdp_bytes(10_000, 50e-6) == 62_500  # 10 Gb/s x 50 us
    assert bdp_bytes(400_000, 5e-6) == 250_000
    assert bdp_bytes(1, 1e-9) == 1  # rounded up
    assert bdp_bytes(0, 1.0) == 0
    with pytest.raises(ValueError):
        bdp_bytes(-1, 1.0)


def test_socket_buffer_covers_the_bdp() -> None:
    assert socket_buffer_bytes(10_000, 50e-6) == 4 << 20  # the 4 MiB floor
    for mbps, rtt in ((100_000, 0.001), (400_000, 0.01), (25_000, 0.08)):
        size = socket_buffer_bytes(mbps, rtt)
        assert size >= bdp_bytes(mbps, rtt) and size & (size - 1) == 0
    assert socket_buffer_bytes(100_000, 0.001) == 32 << 20  # 2 x 12.5 MB -> next power of two


def test_ib_recommendation() -> None:
    nics = [_ib("mlx5_0", "ib0"), _ib("mlx5_1", "ib1"), _ib("mlx5_2", up=False), _eth("eth0"), _eth("eth1", up=False)]
    env = recommend(IB, nics)
    assert env["NCCL_IB_HCA"] == "=mlx5_0:1,mlx5_1:1"  # active ports only, exact names
    assert env["NCCL_IB_DISABLE"] == "0"
    assert env["NCCL_NET_GDR_LEVEL"] == "PHB"
    assert env["NCCL_SOCKET_IFNAME"] == "=eth0"  # bootstrap over the up Ethernet interface
    assert "NCCL_IB_GID_INDEX" not in env and "NCCL_IB_TC" not in env
    assert recommend(IB, nics, gdr=False)["NCCL_NET_GDR_LEVEL"] == "LOC"
    assert recommend(IB, nics, gdr="sys")["NCCL_NET_GDR_LEVEL"] == "SYS"
    with pytest.raises(ValueError):
        recommend(IB, nics, gdr="nope")
    # IB-only node: the bootstrap uses the IPoIB interfaces
    assert recommend(IB, [_ib("mlx5_0", "ib0")])["NCCL_SOCKET_IFNAME"] == "=ib0"
    with pytest.raises(ValueError, match="no TRANSPORT_INFINIBAND port"):
        recommend(IB, [_eth("eth0")])


def test_roce_recommendation_traffic_class() -> None:
    nics = [_roce("mlx5_0", "ens1f0"), _roce("mlx5_1", "ens1f1"), _eth("eno1", mbps=1_000)]
    env = recommend(ROCE, nics, dscp=26)
    assert env["NCCL_IB_HCA"] == "=mlx5_0:1,mlx5_1:1"
    assert env["NCCL_IB_GID_INDEX"] == "3"
    assert env["NCCL_IB_TC"] == "104"  # 26 << 2
    assert env["NCCL_IB_SL"] == "3"
    assert env["NCCL_SOCKET_IFNAME"] == "=eno1"
    assert recommend(ROCE, nics, traffic_class=106)["NCCL_IB_TC"] == "106"  # 26 << 2 with ECN bits
    assert recommend(ROCE, nics, dscp=46, gid_index=1)["NCCL_IB_TC"] == "184"
    assert recommend(ROCE, nics)["NCCL_IB_TC"] == str(network.DEFAULT_ROCE_DSCP << 2)
    with pytest.raises(ValueError, match="DSCP"):
        recommend(ROCE, nics, dscp=64)
    with pytest.raises(ValueError, match="does not carry"):
        recommend(ROCE, nics, dscp=10, traffic_class=104)


def test_tcp_recommendation_scales_with_speed() -> None:
    env = recommend(TCP, [_eth("eth0", mbps=10_000), _eth("eth1", mbps=10_000)])
    assert env["NCCL_IB_DISABLE"] == "1"
    assert env["NCCL_SOCKET_IFNAME"] == "=eth0,eth1"
    assert (env["NCCL_SOCKET_NTHREADS"], env["NCCL_NSOCKS_PERTHREAD"]) == ("1", "2")
    fast = recommend(TCP, [_eth("eth0", mbps=100_000)])
    assert (fast["NCCL_SOCKET_NTHREADS"], fast["NCCL_NSOCKS_PERTHREAD"]) == ("4", "4")
    sockets = [a * b for a, b in (network.socket_threads(m) for m in (1_000, 25_000, 50_000, 200_000, 800_000))]
    assert sockets == sorted(sockets) and max(sockets) <= 64
    assert "NCCL_IB_HCA" not in env


def test_pair_picks_the_best_common_transport() -> None:
    full = _node("a", _ib("mlx5_0", "ib0"), _roce("mlx5_1", "ens1", mbps=100_000), _eth("eth0"), gpus=8)
    roce_only = _node("b", _roce("mlx5_0", "ens2", mbps=50_000), _eth("eth0"), gpus=8)
    tcp_only = _node("c", _eth("eth0", mbps=10_000))
    ib_down = _node("d", _ib("mlx5_0", "ib0", up=False), _eth("eth0", mbps=10_000))

    p = profile_for_pair(full, roce_only, rtt_s=20e-6, dscp=26)
    assert p.transport == ROCE
    assert p.link_bandwidth_bits_per_second == 50_000 * 1_000_000  # the bottleneck
    assert p.round_trip_time.ToNanoseconds() == 20_000
    assert p.bandwidth_delay_product_bytes == bdp_bytes(50_000, 20e-6) == 125_000
    assert p.dscp == 26 and p.traffic_class == 104
    assert p.nccl_env["NCCL_IB_HCA"] == "=mlx5_1:1,mlx5_0:1"  # the RoCE ports of both nodes
    assert p.nccl_env["NCCL_IB_TC"] == "104" and p.nccl_env["NCCL_IB_GID_INDEX"] == "3"
    assert p.nccl_env["NCCL_NET_GDR_LEVEL"] == "PHB"  # both have GPUs
    assert p.socket_buffer_bytes >= p.bandwidth_delay_product_bytes
    assert p.notes and any("RoCE DSCP 26" in n for n in p.notes)

    p = profile_for_pair(full, full)
    assert p.transport == IB and p.dscp == 0 and p.traffic_class == 0
    assert p.link_bandwidth_bits_per_second == 200_000_000_000
    assert p.round_trip_time.ToNanoseconds() == 5_000  # assumed, and said so
    assert any("not measured" in n for n in p.notes)

    for other in (tcp_only, ib_down):
        p = profile_for_pair(full, other, rtt_s=100e-6)
        assert p.transport == TCP
        assert p.link_bandwidth_bits_per_second == 10_000_000_000
        assert p.nccl_env["NCCL_IB_DISABLE"] == "1" and p.nccl_env["NCCL_SOCKET_IFNAME"] == "=eth0"
        assert p.bandwidth_delay_product_bytes == 125_000
        assert p.socket_buffer_bytes == 4 << 20


def test_pair_raises_nccl_buffsize_for_long_fat_links() -> None:
    a = _node("a", _eth("eth0", mbps=100_000))
    p = profile_for_pair(a, a, rtt_s=0.01)  # 100 Gb/s x 10 ms = 125 MB in flight
    assert p.bandwidth_delay_product_bytes == 125_000_000
    assert int(p.nccl_env["NCCL_BUFFSIZE"]) >= 125_000_000
    assert p.socket_buffer_bytes >= 125_000_000


def test_pair_of_discovered_cpu_nodes() -> None:
    from mlmesh.fabric.agent.discovery import DiscoveryConfig, discover

    node = discover(DiscoveryConfig(kmsg_path=None), nvml=False)
    p = profile_for_pair(node, node)
    assert p.transport in (IB, ROCE, TCP)
    assert p.nccl_env and p.socket_buffer_bytes > 0
