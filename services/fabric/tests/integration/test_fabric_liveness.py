"""Fabric service and node agents as real processes on real NATS: registration, heartbeats,
NotReady on silence (SIGSTOP), no resurrection without re-registration (SIGCONT), two agents as
separate hosts on loopback, admin cordon/drain, topology."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import fabric_service_pb2 as api
from mlmesh.api.fabric.v1 import fabric_service_pb2_grpc, node_pb2
from mlmesh.common import events
from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.local.process import ManagedProcess
from mlmesh.local.servers import NatsServer

pytestmark = pytest.mark.timeout(120)
READY, NOT_READY = node_pb2.NODE_STATE_READY, node_pb2.NODE_STATE_NOT_READY


class Cluster:
    def __init__(self, tmp: Path, nats: NatsServer):
        self.tmp, self.nats = tmp, nats
        private, public = generate_signing_key()
        write_secret(tmp / "public.pem", public)
        write_secret(
            tmp / "agent.token", mint_token(private, subject="service:agent", team="platform", roles=["service"])
        )
        self.admin = mint_token(private, subject="admin", team="platform", roles=["admin"])
        self.user = mint_token(private, subject="u", team="team-a", roles=["developer"])
        self.procs: list[ManagedProcess] = []
        self.fabric_port = 0

    def _env(self, prefix: str, **values) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
        env.update(
            {
                f"{prefix}NATS_URL": self.nats.url,
                f"{prefix}NATS_CREDS_FILE": str(self.nats.creds("fabric-agent" if "AGENT" in prefix else "fabric")),
                f"{prefix}AUTH_PUBLIC_KEY_FILE": str(self.tmp / "public.pem"),
                f"{prefix}METRICS_PORT": "-1",
            }
        )
        env.update({f"{prefix}{k.upper()}": str(v) for k, v in values.items()})
        return env

    def _start(self, name: str, argv: list[str], env: dict[str, str], ready: Path) -> ManagedProcess:
        proc = ManagedProcess(name, argv, log_path=self.tmp / f"{name}.log", env=env)
        proc.start()
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.alive(), proc.log_tail()
            assert time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.05)
        return proc

    def start_fabric(self) -> None:
        ready = self.tmp / "fabric.ready"
        env = self._env(
            "MLMESH_FABRIC_",
            ready_file=ready,
            heartbeat_interval_s=1,
            missed_heartbeats=3,
            lease_ttl_s=3,
            service_token_file=self.tmp / "agent.token",  # the fabric calls agents for link benchmarks
        )
        self._start("fabric", [sys.executable, "-m", "mlmesh.fabric"], env, ready)
        self.fabric_port = json.loads(ready.read_text())["grpc_port"]

    def start_agent(self, node_id: str, **labels) -> ManagedProcess:
        ready = self.tmp / f"{node_id}.ready"
        env = self._env(
            "MLMESH_AGENT_",
            ready_file=ready,
            fabric_address=f"127.0.0.1:{self.fabric_port}",
            node_id=node_id,
            service_token_file=self.tmp / "agent.token",
            log_dir=self.tmp / f"{node_id}-workers",
            **labels,
        )
        return self._start(node_id, [sys.executable, "-m", "mlmesh.fabric", "agent"], env, ready)

    def stub(self):
        channel = grpc.insecure_channel(f"127.0.0.1:{self.fabric_port}")
        return channel, fabric_service_pb2_grpc.FabricServiceStub(channel)

    def md(self, token: str):
        return (("authorization", f"Bearer {token}"),)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            proc.stop(grace=10)


@pytest.fixture
def cluster(tmp_path: Path):
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    c = Cluster(tmp_path, nats)
    try:
        c.start_fabric()
        yield c
    finally:
        c.stop()
        nats.stop()


def _wait_node(stub, md, node_id: str, predicate, timeout=15.0) -> node_pb2.Node:
    deadline = time.monotonic() + timeout
    while True:
        try:
            node = stub.GetNode(api.GetNodeRequest(node_id=node_id), metadata=md, timeout=5).node
            if predicate(node):
                return node
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
        assert time.monotonic() < deadline, f"node {node_id} never reached the expected state"
        time.sleep(0.02)


async def test_sigstop_makes_node_not_ready_and_sigcont_needs_reregistration(cluster):
    c = cluster
    agent = c.start_agent("gpu-box-1", zone="z1")
    channel, stub = c.stub()
    md = c.md(c.user)
    first = _wait_node(stub, md, "gpu-box-1", lambda n: n.state == READY)
    assert first.capacity.cpu_millis > 0 and first.host.cpu_count > 0 and first.capacity.gpus == 0
    assert first.agent_address.startswith("127.0.0.1:")
    _wait_node(stub, md, "gpu-box-1", lambda n: n.utilization.memory_total_bytes > 0)  # heartbeats flow

    seen: list[events_pb2.NodeStateChanged] = []
    nc = await events.connect(c.nats.url, "watcher", **c.nats.client_options())

    async def on_state(msg):
        seen.append(events.decode_event(msg, events_pb2.NodeStateChanged).data)

    await nc.subscribe("mlmesh.fabric.nodes.gpu-box-1.state", cb=on_state)
    os.kill(agent.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    dead = await asyncio.to_thread(_wait_node, stub, md, "gpu-box-1", lambda n: n.state == NOT_READY, 10)
    elapsed = time.monotonic() - stopped_at
    assert elapsed <= 3.5, f"NotReady took {elapsed:.2f}s at 1 s heartbeats"
    assert dead.state_reason == "MissedHeartbeats" and dead.incarnation == first.incarnation

    os.kill(agent.pid, signal.SIGCONT)
    back = await asyncio.to_thread(_wait_node, stub, md, "gpu-box-1", lambda n: n.state == READY, 15)
    # It came back only by registering again, with a new incarnation.
    assert back.incarnation == first.incarnation + 1 and back.state_reason == "Registered"
    await asyncio.sleep(0.2)
    await nc.close()
    transitions = [(e.to_state, e.reason, e.incarnation) for e in seen]
    assert transitions[0] == (NOT_READY, "MissedHeartbeats", first.incarnation)
    assert (READY, "Registered", first.incarnation + 1) in transitions
    assert all(not (s == READY and inc == first.incarnation) for s, _, inc in transitions)
    channel.close()


def test_two_agents_cordon_drain_and_topology(cluster):
    c = cluster
    a = c.start_agent("host-a", zone="z1", switch="sw1", nvlink_domain="nvl1")
    c.start_agent("host-b", zone="z1", switch="sw1", nvlink_domain="nvl2")
    channel, stub = c.stub()
    md = c.md(c.user)
    for node_id in ("host-a", "host-b"):
        _wait_node(stub, md, node_id, lambda n: n.state == READY)
    listed = stub.ListNodes(api.ListNodesRequest(), metadata=md).nodes
    assert [n.id for n in listed] == ["host-a", "host-b"]
    topo = stub.GetTopology(api.GetTopologyRequest(include_pair_distances=True), metadata=md).topology
    assert [g.id for g in topo.switches] == ["sw1"] and len(topo.nvlink_domains) == 2
    assert topo.pair_distances[0].level == 3  # SAME_SWITCH: different NVLink domains, one switch

    with pytest.raises(grpc.RpcError) as err:
        stub.Cordon(api.CordonRequest(node_id="host-a"), metadata=md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = c.md(c.admin)
    cordoned = stub.Cordon(api.CordonRequest(node_id="host-a", reason="disk swap"), metadata=admin).node
    assert cordoned.state == node_pb2.NODE_STATE_CORDONED and cordoned.state_message == "disk swap"
    drained = stub.Drain(api.DrainRequest(node_id="host-b"), metadata=admin).node
    assert drained.state == node_pb2.NODE_STATE_DRAINING

    # A cordon survives the node's death and re-registration.
    a.stop(grace=5)
    _wait_node(stub, md, "host-a", lambda n: n.state == NOT_READY)
    c.start_agent("host-a", zone="z1", switch="sw1", nvlink_domain="nvl1")
    again = _wait_node(stub, md, "host-a", lambda n: n.state != NOT_READY)
    assert again.state == node_pb2.NODE_STATE_CORDONED
    up = stub.Uncordon(api.UncordonRequest(node_id="host-a"), metadata=admin).node
    assert up.state == READY
    with pytest.raises(grpc.RpcError) as err:
        stub.GetNode(api.GetNodeRequest(node_id="nope"), metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    channel.close()


def test_agent_without_fabric_address_fails_in_one_line(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    done = subprocess.run(
        [sys.executable, "-m", "mlmesh.fabric", "agent"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "MLMESH_AGENT_FABRIC_ADDRESS" in done.stderr.strip().splitlines()[-1]


@pytest.mark.timeout(180)
def test_benchmark_links_runs_a_real_allreduce_between_two_agents(cluster):
    c = cluster
    for node_id in ("bench-a", "bench-b"):
        c.start_agent(node_id, zone="z1")
    channel, stub = c.stub()
    md, admin = c.md(c.user), c.md(c.admin)
    for node_id in ("bench-a", "bench-b"):
        _wait_node(stub, md, node_id, lambda n: n.state == READY)
    request = api.BenchmarkLinksRequest(
        node_ids=["bench-a", "bench-b"], message_size_bytes=1 << 20, iterations=5, backend="gloo"
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.BenchmarkLinks(request, metadata=md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    results = stub.BenchmarkLinks(request, metadata=admin, timeout=150).results
    assert len(results) == 1 and not results[0].error, results[0].error
    link = results[0]
    assert (link.node_a, link.node_b, link.backend, link.iterations) == ("bench-a", "bench-b", "gloo", 5)
    assert link.bus_bandwidth_bytes_per_second > 0 and link.latency_microseconds > 0
    # The network profile of that pair now uses the measured latency as its round-trip time.
    pair = api.NodePair(node_a="bench-a", node_b="bench-b")
    profile = stub.GetNetworkProfile(api.GetNetworkProfileRequest(node_pair=pair), metadata=md).profile
    rtt_us = profile.round_trip_time.ToTimedelta().total_seconds() * 1e6
    assert abs(rtt_us - link.latency_microseconds) < 1.0
    assert profile.nccl_env["NCCL_IB_DISABLE"] == "1"  # no RDMA NICs here: TCP sockets
    assert profile.bandwidth_delay_product_bytes >= 0 and profile.socket_buffer_bytes > 0
    bad = api.BenchmarkLinksRequest(node_ids=["bench-a", "ghost"], message_size_bytes=10)
    with pytest.raises(grpc.RpcError) as err:
        stub.BenchmarkLinks(bad, metadata=admin)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()


def _cli(c: Cluster, token: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env.update({"MLMESH_FABRIC_ADDR": f"127.0.0.1:{c.fabric_port}", "MLMESH_TOKEN": token})
    return subprocess.run(
        [sys.executable, "-m", "mlmesh.cli.main", "nodes", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.timeout(180)
def test_nodes_cli(cluster):
    c = cluster
    for node_id in ("cli-a", "cli-b"):
        c.start_agent(node_id, zone="z9")
    channel, stub = c.stub()
    for node_id in ("cli-a", "cli-b"):
        _wait_node(stub, c.md(c.user), node_id, lambda n: n.state == READY)
    listed = _cli(c, c.user, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [n["id"] for n in json.loads(listed.stdout)] == ["cli-a", "cli-b"]
    got = _cli(c, c.user, "get", "cli-a", "--json")
    assert json.loads(got.stdout)["labels"]["zone"] == "z9"
    denied = _cli(c, c.user, "cordon", "cli-a")
    assert denied.returncode == 1 and denied.stderr.startswith("error: permission_denied")
    assert "cordoned" in _cli(c, c.admin, "cordon", "cli-a", "--reason", "maintenance").stdout
    assert "ready" in _cli(c, c.admin, "uncordon", "cli-a").stdout
    missing = _cli(c, c.user, "get", "nope")
    assert missing.returncode == 1 and "not_found" in missing.stderr
    bench = _cli(
        c, c.admin, "bench", "cli-a", "cli-b", "--size", "1Mi", "--iterations", "3", "--backend", "gloo", "--json"
    )
    assert bench.returncode == 0, bench.stderr
    (link,) = json.loads(bench.stdout)
    assert link["bus_bandwidth_bytes_per_second"] > 0 and not link.get("error")
    channel.close()
