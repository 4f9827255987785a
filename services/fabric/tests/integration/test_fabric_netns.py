"""Two node agents as separate hosts: each in a network namespace this test creates, joined by a
bridge, with NATS and the fabric on the bridge address. Skipped where the machine does not allow
network namespaces (then the loopback tests in test_fabric_liveness.py cover the same paths)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from mlmesh.api.fabric.v1 import fabric_service_pb2 as api
from mlmesh.api.fabric.v1 import fabric_service_pb2_grpc, node_pb2
from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.local.process import ManagedProcess
from mlmesh.local.servers import NatsServer

pytestmark = pytest.mark.timeout(180)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


class Namespaces:
    """A bridge in the root namespace (10.213.K.1/24) and one namespace per host (.2, .3, ...)."""

    def __init__(self, hosts: int):
        tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
        self.subnet = random.randint(1, 250)
        self.bridge = f"mlbr{tag}"
        self.names = [f"mlns{tag}{i}" for i in range(hosts)]
        self.addresses = [f"10.213.{self.subnet}.{i + 2}" for i in range(hosts)]
        self.gateway = f"10.213.{self.subnet}.1"
        self._made: list[str] = []

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append("bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (ns, addr) in enumerate(zip(self.names, self.addresses, strict=True)):
            _ip("netns", "add", ns)
            self._made.append(ns)
            inner, outer = f"mlv{i}{ns[-4:]}", f"mlh{i}{ns[-4:]}"
            _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        for name in reversed(self._made):
            if name == "bridge":
                _ip("link", "del", self.bridge, check=False)
            else:
                _ip("netns", "del", name, check=False)  # takes its veth pair with it


@pytest.fixture
def namespaces():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ns = Namespaces(2)
    try:
        ns.create()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        ns.destroy()
        pytest.skip(f"network namespaces are not allowed here: {getattr(exc, 'stderr', exc)}")
    try:
        yield ns
    finally:
        ns.destroy()


def _env(prefix: str, tmp: Path, nats_url: str, **values) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env.update(
        {
            f"{prefix}NATS_URL": nats_url,
            f"{prefix}AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem"),
            f"{prefix}SERVICE_TOKEN_FILE": str(tmp / "svc.token"),
            f"{prefix}METRICS_PORT": "-1",
        }
    )
    env.update({f"{prefix}{k.upper()}": str(v) for k, v in values.items()})
    return env


def _wait_file(path: Path, proc: ManagedProcess, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.alive(), proc.log_tail()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_agents_in_separate_namespaces_register_benchmark_and_fail_independently(namespaces, tmp_path):
    ns = namespaces
    private, public = generate_signing_key()
    write_secret(tmp_path / "public.pem", public)
    write_secret(tmp_path / "svc.token", mint_token(private, subject="service:x", team="platform", roles=["service"]))
    admin = (("authorization", f"Bearer {mint_token(private, subject='a', team='platform', roles=['admin'])}"),)
    nats = NatsServer(tmp_path / "nats", host=ns.gateway)
    procs: list[ManagedProcess] = []
    nats.start()
    nats.bootstrap()
    try:
        ready = tmp_path / "fabric.ready"
        fabric = ManagedProcess(
            "fabric",
            [sys.executable, "-m", "mlmesh.fabric"],
            log_path=tmp_path / "fabric.log",
            env=_env(
                "MLMESH_FABRIC_",
                tmp_path,
                nats.url,
                nats_creds_file=nats.creds("fabric"),
                host=ns.gateway,
                ready_file=ready,
                heartbeat_interval_s=1,
            ),
        )
        fabric.start()
        procs.append(fabric)
        port = _wait_file(ready, fabric)["grpc_port"]
        for name, addr in zip(ns.names, ns.addresses, strict=True):
            agent_ready = tmp_path / f"{name}.ready"
            env = _env(
                "MLMESH_AGENT_",
                tmp_path,
                nats.url,
                nats_creds_file=nats.creds("fabric-agent"),
                host=addr,
                ready_file=agent_ready,
                fabric_address=f"{ns.gateway}:{port}",
                node_id=name,
                log_dir=tmp_path / f"{name}-workers",
            )
            agent = ManagedProcess(
                name,
                ["ip", "netns", "exec", name, sys.executable, "-m", "mlmesh.fabric", "agent"],
                log_path=tmp_path / f"{name}.log",
                env=env,
            )
            agent.start()
            procs.append(agent)
            _wait_file(agent_ready, agent)
        channel = grpc.insecure_channel(f"{ns.gateway}:{port}")
        stub = fabric_service_pb2_grpc.FabricServiceStub(channel)
        deadline = time.monotonic() + 20
        while True:
            nodes = stub.ListNodes(api.ListNodesRequest(), metadata=admin, timeout=5).nodes
            if len(nodes) == 2 and all(n.state == node_pb2.NODE_STATE_READY for n in nodes):
                break
            assert time.monotonic() < deadline, [(n.id, n.state) for n in nodes]
            time.sleep(0.1)
        assert sorted(n.agent_address.rpartition(":")[0] for n in nodes) == sorted(ns.addresses)

        request = api.BenchmarkLinksRequest(node_ids=ns.names, message_size_bytes=1 << 20, iterations=5, backend="gloo")
        (link,) = stub.BenchmarkLinks(request, metadata=admin, timeout=150).results
        assert not link.error, link.error
        assert link.bus_bandwidth_bytes_per_second > 0

        os.kill(procs[1].pid, signal.SIGKILL)  # the first agent's host dies
        deadline = time.monotonic() + 10
        while True:
            states = {n.id: n.state for n in stub.ListNodes(api.ListNodesRequest(), metadata=admin, timeout=5).nodes}
            if states[ns.names[0]] == node_pb2.NODE_STATE_NOT_READY:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert states[ns.names[1]] == node_pb2.NODE_STATE_READY
        channel.close()
    finally:
        for proc in reversed(procs):
            proc.stop(grace=10)
        nats.stop()
