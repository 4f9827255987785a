"""`mlmesh up` / `status` / `down` as a user runs them: real servers, six service processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from mlmesh.common.auth import TokenVerifier
from mlmesh.local.mesh import SERVICES, grpc_healthy, recorded_pids
from mlmesh.local.process import pid_running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MLMESH = [sys.executable, "-m", "mlmesh.cli.main"]


def _run(args: list[str], state_dir: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLMESH_STATE_DIR": str(state_dir)}
    return subprocess.run([*MLMESH, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _reflected_services(target: str) -> set[str]:
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        return {s.name for reply in replies for s in reply.list_services_response.service}


# What each service must export (families as Prometheus' parser names them: counters without _total).
EXPECTED_FAMILIES = {
    "*": {"mlmesh_rpc_requests", "mlmesh_rpc_duration_seconds", "mlmesh_events_published", "mlmesh_events_consumed"},
    "scheduler": {"mlmesh_scheduler_queue_depth", "mlmesh_scheduler_jobs", "mlmesh_scheduler_oldest_pending_seconds"},
    "trainer": {"mlmesh_training_tokens_per_second", "mlmesh_training_loss", "mlmesh_trainer_restarts"},
    "inference-gateway": {
        "mlmesh_http_request_duration_seconds",
        "mlmesh_gateway_cache_requests",
        "mlmesh_gateway_first_token_seconds",
    },
    "telemetry": {"mlmesh_team_gpu_hours", "mlmesh_team_queue_wait_seconds", "mlmesh_alerts_firing"},
    "fabric-agent": {
        "mlmesh_gpu_utilization_ratio",
        "mlmesh_gpu_memory_used_bytes",
        "mlmesh_node_cpu_utilization_ratio",
    },
}


def scrape_families(endpoints: dict) -> dict[str, dict]:
    """Every service's /metrics, parsed by prometheus_client's own parser (which rejects bad text)."""
    out = {}
    for name, ep in endpoints["services"].items():
        with urllib.request.urlopen(ep["metrics_url"], timeout=5) as reply:
            text = reply.read().decode()
        out[name] = {f.name: f for f in text_string_to_metric_families(text)}
    return out


def _observability_refs():
    """tools/observability_refs.py (not a package: loaded from its path)."""
    path = Path(__file__).resolve().parents[2] / "tools" / "observability_refs.py"
    spec = importlib.util.spec_from_file_location("observability_refs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path.parents[1]


def check_metrics(endpoints: dict) -> None:
    families = scrape_families(endpoints)
    for name, fams in families.items():
        missing = (EXPECTED_FAMILIES["*"] | EXPECTED_FAMILIES.get(name, set())) - set(fams)
        assert not missing, f"{name} does not export {sorted(missing)}"
        # The health checks that `up` made are counted, by method and code.
        calls = [s for s in fams["mlmesh_rpc_requests"].samples if s.name.endswith("_total")]
        assert any(s.labels["method"].endswith("Health/Check") and s.labels["code"] == "OK" for s in calls), name
    # The agent's host sample is real (CPU-only here, so no GPU series; the GPU path is measured on a GPU).
    agent = families["fabric-agent"]
    assert agent["mlmesh_node_memory_used_bytes"].samples[0].value > 0
    # Every metric the Grafana dashboards and Prometheus rules read is one a live service exports.
    refs, root = _observability_refs()
    exported = {name for fams in families.values() for name in fams}
    for file, names in refs.referenced_metrics(root).items():
        unknown = sorted(n for n in names if refs.family_name(n, exported) is None)
        assert not unknown, f"{file} reads metrics no service exports: {unknown}"


@pytest.fixture
def mesh_dir(tmp_path: Path):
    state = tmp_path / "state"
    yield state
    # Whatever the test did, leave nothing running.
    _run(["down"], state, timeout=120)


def test_up_status_down_leaves_nothing_behind(mesh_dir: Path):
    up = _run(["up", "--json"], mesh_dir)
    assert up.returncode == 0, up.stderr
    printed = json.loads(up.stdout)
    assert "***" in json.dumps(printed["infra"]["s3"]), "secrets must be masked when printed"

    endpoints = json.loads((mesh_dir / "endpoints.json").read_text())
    assert (mesh_dir / "endpoints.json").stat().st_mode & 0o077 == 0, "endpoints.json names secrets"
    assert set(endpoints["services"]) == {s.name for s in SERVICES}
    assert set(endpoints["infra"]) == {"nats", "valkey", "s3", "triton"}
    for name, ep in endpoints["services"].items():
        assert grpc_healthy(ep["grpc"]), f"{name} is not SERVING"
        assert "grpc.health.v1.Health" in _reflected_services(ep["grpc"])
        assert (mesh_dir / "logs" / f"{name}.log").is_file()

    # The gateway's KServe v2 REST front answers on its own free port, in front of the mesh's Triton.
    http_url = endpoints["services"]["inference-gateway"]["http_url"]
    with urllib.request.urlopen(f"{http_url}/v2/health/live", timeout=5) as reply:
        assert reply.status == 200

    check_metrics(endpoints)

    # The admin token verifies against the public key the services were given.
    verifier = TokenVerifier(public_key=Path(endpoints["auth"]["public_key"]).read_bytes())
    admin = verifier.verify(Path(endpoints["auth"]["admin_token"]).read_text())
    assert admin.is_admin

    status = _run(["status", "--json"], mesh_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    assert len(rows) == 4 + len(SERVICES) and all(r["healthy"] for r in rows)

    again = _run(["up"], mesh_dir)
    assert again.returncode == 1 and "already running" in again.stderr

    pids = recorded_pids(endpoints)
    sockets = [Path(s) for s in endpoints["infra"]["s3"]["sockets"]]
    assert sockets and all(s.exists() for s in sockets)
    down = _run(["down"], mesh_dir)
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if pid_running(p)], "mlmesh down left processes behind"
    assert not [s for s in sockets if s.exists()], "mlmesh down left weed's sockets in /tmp"
    assert not (mesh_dir / "endpoints.json").exists()

    after = _run(["status"], mesh_dir)
    assert after.returncode == 1 and "mlmesh up" in after.stderr


def test_status_fails_when_a_service_dies(mesh_dir: Path):
    assert _run(["up", "--json"], mesh_dir).returncode == 0
    endpoints = json.loads((mesh_dir / "endpoints.json").read_text())
    victim = endpoints["services"]["scheduler"]["pid"]
    os.kill(victim, 9)
    status = _run(["status", "--json"], mesh_dir)
    assert status.returncode == 1
    bad = [r["name"] for r in json.loads(status.stdout) if not r["healthy"]]
    assert bad == ["scheduler"]
    assert "unhealthy: scheduler" in status.stderr
