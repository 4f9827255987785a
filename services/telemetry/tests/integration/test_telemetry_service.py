"""The telemetry service as a real process on a real nats-server.

- A node alert through the real chain: node agent silenced (SIGSTOP) → the fabric declares it
  NotReady → telemetry fires `mlmesh.alerts.critical.node_not_ready` → the agent resumes and
  re-registers → resolved. Exactly one event each, even across a restart of telemetry mid-alert.
- Aggregates from the job streams: GPU-hours, queue waits, outcomes, loss curves; team isolation;
  the same figures after a restart (the service rebuilds from the streams); `/metrics` parses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import nats
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import fabric_service_pb2 as fabric_api
from mlmesh.api.fabric.v1 import fabric_service_pb2_grpc
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.api.telemetry.v1 import alert_pb2, telemetry_service_pb2_grpc
from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api
from mlmesh.common import events
from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.local.process import ManagedProcess
from mlmesh.local.servers import NatsServer

pytestmark = pytest.mark.timeout(180)

NODE_RULES = """
rules:
  - name: node_not_ready
    severity: critical
    metric: node_not_ready
    op: ">="
    threshold: 1
    summary: "node {node} is NotReady"
"""


_IDENTITIES = {"MLMESH_TELEMETRY_": "telemetry", "MLMESH_FABRIC_": "fabric", "MLMESH_AGENT_": "fabric-agent"}


class Mesh:
    def __init__(self, tmp: Path, nats: NatsServer):
        self.tmp, self.nats, self.nats_url = tmp, nats, nats.url
        private, public = generate_signing_key()
        write_secret(tmp / "public.pem", public)
        write_secret(tmp / "svc.token", mint_token(private, subject="service:x", team="platform", roles=["service"]))
        self.admin = mint_token(private, subject="admin", team="platform", roles=["admin"])
        self.alice = mint_token(private, subject="alice", team="team-a", roles=["developer"])
        self.bob = mint_token(private, subject="bob", team="team-b", roles=["developer"])
        self.procs: dict[str, ManagedProcess] = {}
        self.ports: dict[str, dict] = {}

    def start(self, name: str, prefix: str, argv: list[str], **values) -> dict:
        ready = self.tmp / f"{name}.ready"
        ready.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
        env.update(
            {
                f"{prefix}NATS_URL": self.nats_url,
                f"{prefix}NATS_CREDS_FILE": str(self.nats.creds(_IDENTITIES[prefix])),
                f"{prefix}AUTH_PUBLIC_KEY_FILE": str(self.tmp / "public.pem"),
                f"{prefix}SERVICE_TOKEN_FILE": str(self.tmp / "svc.token"),
                f"{prefix}READY_FILE": str(ready),
                f"{prefix}METRICS_PORT": "0",
            }
        )
        env.update({f"{prefix}{k.upper()}": str(v) for k, v in values.items()})
        proc = ManagedProcess(name, [sys.executable, *argv], log_path=self.tmp / f"{name}.log", env=env)
        proc.start()
        self.procs[name] = proc
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.alive(), proc.log_tail()
            assert time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.05)
        self.ports[name] = json.loads(ready.read_text())
        return self.ports[name]

    def start_telemetry(self, rules: str | None = None) -> None:
        values = {"eval_interval_s": 0.3}
        if rules is not None:
            (self.tmp / "rules.yaml").write_text(rules)
            values["alert_rules_file"] = self.tmp / "rules.yaml"
        self.start("telemetry", "MLMESH_TELEMETRY_", ["-m", "mlmesh.telemetry"], **values)

    def stub(self) -> telemetry_service_pb2_grpc.TelemetryServiceStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.ports['telemetry']['grpc_port']}")
        return telemetry_service_pb2_grpc.TelemetryServiceStub(channel)

    def metrics(self, name: str) -> dict:
        url = f"http://127.0.0.1:{self.ports[name]['metrics_port']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        proc.stop(grace=10)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


def md(token: str):
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def mesh(tmp_path: Path):
    server = NatsServer(tmp_path / "nats")
    server.start()
    server.bootstrap()
    m = Mesh(tmp_path, server)
    try:
        yield m
    finally:
        m.stop_all()
        server.stop()


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class AlertListener:
    """A plain NATS subscriber on mlmesh.alerts.> (what a pager integration would be)."""

    def __init__(self, nats: NatsServer):
        self.url, self.creds = nats.url, str(nats.creds("admin"))
        self.received: list[tuple[str, str, events_pb2.AlertFired]] = []
        self.loop = asyncio.new_event_loop()

    def __enter__(self):
        self.loop.run_until_complete(self._start())
        return self

    async def _start(self):
        self.nc = await nats.connect(self.url, user_credentials=self.creds)

        async def on_msg(msg):
            kind = msg.headers.get("ce-type", "")
            message = events_pb2.AlertFired if kind.endswith("AlertFired") else events_pb2.AlertResolved
            self.received.append((msg.subject, kind, events.decode_event(msg, message).data))

        await self.nc.subscribe("mlmesh.alerts.>", cb=on_msg)

    def pump(self, seconds: float = 0.2) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"got {len(self.received)} alert events, expected {count}"
            self.pump()

    def __exit__(self, *exc):
        self.loop.run_until_complete(self.nc.close())
        self.loop.close()


def test_node_alert_fires_and_resolves_exactly_once_across_a_telemetry_restart(mesh: Mesh):
    fabric = mesh.start(
        "fabric",
        "MLMESH_FABRIC_",
        ["-m", "mlmesh.fabric"],
        heartbeat_interval_s=1,
        missed_heartbeats=5,  # a loaded CI machine may delay a heartbeat or two
        lease_ttl_s=3,
    )
    mesh.start(
        "agent",
        "MLMESH_AGENT_",
        ["-m", "mlmesh.fabric", "agent"],
        fabric_address=f"127.0.0.1:{fabric['grpc_port']}",
        node_id="node-1",
        log_dir=mesh.tmp / "workers",
    )
    mesh.start_telemetry(NODE_RULES)
    stub = mesh.stub()
    fabric_stub = fabric_service_pb2_grpc.FabricServiceStub(grpc.insecure_channel(f"127.0.0.1:{fabric['grpc_port']}"))

    def node_gauges(want: tuple[float, float]) -> None:
        """Wait until telemetry's /metrics says (mlmesh_node_ready, mlmesh_node_not_ready) == want."""
        deadline, got = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            families = mesh.metrics("telemetry")
            got = tuple(
                next((s.value for s in families[name].samples if s.labels == {"node": "node-1"}), None)
                if name in families
                else None
                for name in ("mlmesh_node_ready", "mlmesh_node_not_ready")
            )
            if got == want:
                return
            time.sleep(0.2)
        raise AssertionError(f"node-1 (ready, not_ready) = {got}, wanted {want}")

    with AlertListener(mesh.nats) as listener:
        listener.pump(1.0)
        node_gauges((1.0, 0.0))
        assert listener.received == [], "a Ready node must not alert"
        # Cordoned is not Ready, but it is not lost either: nobody is paged (nor by Prometheus's rule,
        # which reads mlmesh_node_not_ready).
        fabric_stub.Cordon(fabric_api.CordonRequest(node_id="node-1", reason="kernel upgrade"), metadata=md(mesh.admin))
        node_gauges((0.0, 0.0))
        listener.pump(2.0)
        assert listener.received == [], "a cordoned node must not alert"
        fabric_stub.Uncordon(fabric_api.UncordonRequest(node_id="node-1"), metadata=md(mesh.admin))
        node_gauges((1.0, 0.0))

        os.kill(mesh.procs["agent"].pid, signal.SIGSTOP)  # silence: no heartbeats
        listener.wait_for(1, timeout=30)
        subject, kind, fired = listener.received[0]
        assert subject == "mlmesh.alerts.critical.node_not_ready" and kind.endswith("AlertFired")
        assert fired.alert.state == alert_pb2.ALERT_STATE_FIRING and fired.alert.labels["node"] == "node-1"
        assert fired.alert.summary == "node node-1 is NotReady"
        node_gauges((0.0, 1.0))

        # A restart while the alert fires restores it from the stream: no second AlertFired.
        mesh.stop("telemetry")
        mesh.start_telemetry(NODE_RULES)
        stub = mesh.stub()
        listing = stub.ListAlerts(api.ListAlertsRequest(), metadata=md(mesh.admin), timeout=5)
        assert [(a.id, a.state) for a in listing.alerts] == [(fired.alert.id, alert_pb2.ALERT_STATE_FIRING)]
        listener.pump(2.0)
        assert len(listener.received) == 1

        os.kill(mesh.procs["agent"].pid, signal.SIGCONT)  # it re-registers and is Ready again
        listener.wait_for(2, timeout=30)
        listener.pump(2.0)  # several more evaluations: nothing else may arrive
        node_gauges((1.0, 0.0))
    kinds = [(s, k.rsplit(".", 1)[-1], e.alert.id) for s, k, e in listener.received]
    assert kinds == [
        ("mlmesh.alerts.critical.node_not_ready", "AlertFired", fired.alert.id),
        ("mlmesh.alerts.critical.node_not_ready", "AlertResolved", fired.alert.id),
    ]
    resolved = listener.received[1][2].alert
    assert resolved.state == alert_pb2.ALERT_STATE_RESOLVED and resolved.HasField("resolve_time")

    # The API agrees; a team's user does not see a cluster alert (no team label).
    got = stub.GetAlert(api.GetAlertRequest(alert_id=fired.alert.id), metadata=md(mesh.admin), timeout=5).alert
    assert got.state == alert_pb2.ALERT_STATE_RESOLVED
    with pytest.raises(grpc.RpcError) as err:
        stub.GetAlert(api.GetAlertRequest(alert_id=fired.alert.id), metadata=md(mesh.alice), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    firing = stub.ListAlerts(
        api.ListAlertsRequest(states=[alert_pb2.ALERT_STATE_FIRING]), metadata=md(mesh.admin), timeout=5
    )
    assert list(firing.alerts) == []
    rules = stub.ListAlertRules(api.ListAlertRulesRequest(), metadata=md(mesh.admin), timeout=5).rules
    assert [r.name for r in rules] == ["node_not_ready"]

    # The agent's /metrics carries its NVML sample (no GPU here: host CPU and memory only).
    agent_metrics = mesh.metrics("agent")
    assert agent_metrics["mlmesh_node_memory_used_bytes"].samples[0].value > 0
    assert "mlmesh_gpu_memory_used_bytes" in agent_metrics


def _stamp(seconds: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


async def _publish_job_history(server: NatsServer, t0: float) -> None:
    """The events a scheduler and a trainer publish for two teams' jobs (JobStateChanged, JobProgress)."""
    nc = await events.connect(server.url, "test-producer", **server.client_options())
    try:
        js = nc.jetstream()
        await events.ensure_streams(js)
        pub = events.EventPublisher(js, "test")
        S = job_pb2.JobState

        async def state(job: str, team: str, to: int, at: float, gpus: int = 0) -> None:
            e = events_pb2.JobStateChanged(job_id=job, team=team, queue="default", to_state=to)
            e.transition_time.CopyFrom(_stamp(at))
            if gpus:
                node = e.placement.nodes.add(node_id="node-1")
                node.workers.add(rank=0, device_ids=[f"gpu-{i}" for i in range(gpus)]).resources.gpus = gpus
            await pub.publish(f"mlmesh.jobs.{team}.{job}.state", e, ce_subject=job)

        await state("job-a", "team-a", S.JOB_STATE_PENDING, t0)
        await state("job-a", "team-a", S.JOB_STATE_ADMITTED, t0 + 30)
        await state("job-a", "team-a", S.JOB_STATE_RUNNING, t0 + 30, gpus=4)
        for step in range(1, 11):
            p = events_pb2.JobProgress(job_id="job-a", team="team-a", run_id="run-a", attempt=1)
            p.progress.step, p.progress.loss, p.progress.tokens_per_second = step, 2.0 / step, 1000.0
            p.progress.report_time.CopyFrom(_stamp(t0 + 30 + step * 60))
            await pub.publish("mlmesh.jobs.team-a.job-a.progress", p, ce_subject="job-a")
        await state("job-a", "team-a", S.JOB_STATE_SUCCEEDED, t0 + 30 + 1800)
        await state("job-b", "team-b", S.JOB_STATE_PENDING, t0)
        await state("job-b", "team-b", S.JOB_STATE_ADMITTED, t0 + 600)
        await state("job-b", "team-b", S.JOB_STATE_RUNNING, t0 + 600, gpus=2)
        await state("job-b", "team-b", S.JOB_STATE_FAILED, t0 + 600 + 3600)
    finally:
        await nc.close()


def _usage(stub, token: str, team: str = "") -> api.GetUsageResponse:
    return stub.GetUsage(api.GetUsageRequest(team=team), metadata=md(token), timeout=5)


def test_usage_series_and_metrics_are_built_from_the_streams_and_rebuilt_after_restart(mesh: Mesh):
    t0 = time.time() - 3 * 3600
    mesh.start_telemetry()
    asyncio.run(_publish_job_history(mesh.nats, t0))
    stub = mesh.stub()

    def team_a():
        usage = _usage(stub, mesh.alice).teams[0]
        return usage if usage.outcomes.succeeded == 1 else None

    a = _wait(team_a, 15, "team-a's job to be counted")
    assert a.team == "team-a" and a.gpu_hours == pytest.approx(4 * 0.5)
    assert a.queue_wait_p50.ToTimedelta().total_seconds() == pytest.approx(30, abs=0.01)
    assert a.gpus_in_use == 0

    everyone = _usage(stub, mesh.admin, "*")
    by_team = {t.team: t for t in everyone.teams}
    assert by_team["team-b"].gpu_hours == pytest.approx(2.0) and by_team["team-b"].outcomes.failed == 1
    assert everyone.cluster.gpu_hours == pytest.approx(4.0) and everyone.cluster.outcomes.succeeded == 1

    # Isolation: another team's usage and job metrics are NOT_FOUND; bad input names the field.
    for call in (
        lambda: _usage(stub, mesh.alice, "team-b"),
        lambda: _usage(stub, mesh.alice, "*"),
        lambda: stub.QueryJobMetrics(api.QueryJobMetricsRequest(job_id="job-a"), metadata=md(mesh.bob), timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.QueryJobMetrics(api.QueryJobMetricsRequest(), metadata=md(mesh.alice), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "job_id" in err.value.details()
    # Times outside protobuf's ranges (its conversions raise on them) are bad input, not INTERNAL.
    for call in (
        lambda: stub.QueryJobMetrics(
            api.QueryJobMetricsRequest(job_id="job-a", start_time=Timestamp(seconds=-(2**63))),
            metadata=md(mesh.alice),
            timeout=5,
        ),
        lambda: stub.QueryJobMetrics(
            api.QueryJobMetricsRequest(job_id="job-a", end_time=Timestamp(nanos=-1)), metadata=md(mesh.alice), timeout=5
        ),
        lambda: stub.GetUsage(
            api.GetUsageRequest(window=Duration(seconds=1, nanos=-1)), metadata=md(mesh.alice), timeout=5
        ),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.GetUsage(api.GetUsageRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    series = stub.QueryJobMetrics(
        api.QueryJobMetricsRequest(job_id="job-a", metrics=["loss"], max_points=5), metadata=md(mesh.alice), timeout=5
    ).series
    assert [s.name for s in series] == ["loss"]
    steps = [p.step for p in series[0].points]
    assert len(steps) == 5 and steps[0] == 1 and steps[-1] == 10
    assert series[0].points[-1].value == pytest.approx(0.2)

    families = mesh.metrics("telemetry")
    hours = {s.labels["team"]: s.value for s in families["mlmesh_team_gpu_hours"].samples if s.name.endswith("_total")}
    assert hours == {"team-a": pytest.approx(2.0), "team-b": pytest.approx(2.0)}
    outcomes = {
        (s.labels["team"], s.labels["outcome"]): s.value
        for s in families["mlmesh_team_jobs"].samples
        if s.name.endswith("_total")
    }
    assert outcomes == {("team-a", "succeeded"): 1, ("team-b", "failed"): 1}
    ingested = families["mlmesh_telemetry_events_ingested"].samples
    assert sum(s.value for s in ingested if s.labels.get("type") == "JobProgress") == 10

    # No state of its own: a new process replays the streams to the same figures.
    mesh.stop("telemetry")
    mesh.start_telemetry()
    again = _usage(mesh.stub(), mesh.admin, "*")
    assert again.cluster.gpu_hours == pytest.approx(4.0) and again.cluster.outcomes.failed == 1
    assert {t.team for t in again.teams} == {"team-a", "team-b"}


def test_bad_rules_file_stops_startup_with_the_field_named(mesh: Mesh, tmp_path: Path):
    (tmp_path / "bad.yaml").write_text("rules:\n  - name: x\n    metric: gpu_temp\n    threshold: 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env.update(
        {
            "MLMESH_TELEMETRY_NATS_URL": mesh.nats_url,
            "MLMESH_TELEMETRY_NATS_CREDS_FILE": str(mesh.nats.creds("telemetry")),
            "MLMESH_TELEMETRY_AUTH_PUBLIC_KEY_FILE": str(mesh.tmp / "public.pem"),
            "MLMESH_TELEMETRY_ALERT_RULES_FILE": str(tmp_path / "bad.yaml"),
            "MLMESH_TELEMETRY_METRICS_PORT": "-1",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "mlmesh.telemetry"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "rules[0].metric" in done.stderr and "gpu_temp" in done.stderr
