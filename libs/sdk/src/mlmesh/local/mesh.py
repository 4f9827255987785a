"""The local mesh behind `mlmesh up|down|status`: real infrastructure plus the six services.

Everything runs as separate, detached processes, so the mesh outlives the `mlmesh up` command.
`<state dir>/endpoints.json` records every endpoint and pid; `down` and `status` work from it alone.
Each service binds port 0 and reports what it bound through a ready file, so no port can be taken
between choosing it and binding it. A service that needs another's address therefore starts once
that one is healthy: storage and the fabric first, then the trainer and the node agent, then the
scheduler (which dispatches to the trainer).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mlmesh.common.auth import PLATFORM_TEAM, ROLE_ADMIN, generate_signing_key, mint_service_token, mint_token
from mlmesh.common.auth import write_secret as write_private
from mlmesh.local.errors import InfraError
from mlmesh.local.infra import COMPONENTS, LocalInfra
from mlmesh.local.ports import free_port
from mlmesh.local.process import ManagedProcess, pid_running, stop_pid, wait_until
from mlmesh.local.servers import SERVERS

DEFAULT_STATE_DIR = ".mlmesh"
ENDPOINTS_FILE = "endpoints.json"
ADMIN_TOKEN_TTL_S = 30 * 24 * 3600.0
# The admin queue's GPUs: no limit in practice; capacity still bounds what is admitted.
ADMIN_QUEUE_GPUS = 1 << 20


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # as in services/<name>
    module: str  # python -m mlmesh.<module>
    args: tuple[str, ...] = ()
    prefix: str = ""  # env prefix; default MLMESH_<MODULE>_
    after_fabric: bool = False  # cannot run at all without a fabric (the node agent)
    # Services whose gRPC address it is given, as <prefix><NAME>_ADDRESS; it starts after them.
    needs: tuple[str, ...] = ()
    nats_identity: str = ""  # its NATS credentials (nats_permissions); default: the module

    @property
    def env_prefix(self) -> str:
        return self.prefix or f"MLMESH_{self.module.upper()}_"

    @property
    def identity(self) -> str:
        return self.nats_identity or self.module


SERVICES = (
    # Without TRAINER_ADDRESS the scheduler admits jobs but never starts them.
    # and storage and the gateway for the register_model / deploy_model pipeline steps.
    ServiceSpec("scheduler", "scheduler", needs=("trainer", "storage", "inference-gateway")),
    ServiceSpec("fabric", "fabric"),
    ServiceSpec("storage", "storage"),
    # Storage for datasets, checkpoints and the registry; the fabric for the placed nodes' devices.
    # Telemetry is the job path's trace receiver: the trainer and the scheduler export to it.
    ServiceSpec("trainer", "trainer", needs=("storage", "fabric", "telemetry")),
    # Storage's registry is what deployments are made from; telemetry receives its traces.
    ServiceSpec("inference-gateway", "gateway", needs=("storage", "telemetry")),
    # First: every later service exports its traces to it. It scrapes the gateway's /metrics (for
    # the inference-latency alert) on a port picked before either starts.
    ServiceSpec("telemetry", "telemetry"),
    # This host's node agent: it discovers the hardware and registers it with the fabric, which
    # is where the scheduler finds the nodes it places jobs on.
    ServiceSpec(
        "fabric-agent",
        "fabric",
        args=("agent",),
        prefix="MLMESH_AGENT_",
        after_fabric=True,
        needs=("fabric",),
        nats_identity="fabric-agent",
    ),
)

# Infrastructure processes rename themselves (valkey) or run under wrappers; this is what their
# /proc cmdline still contains, so `down` never signals a pid that was reused by something else.
_EXPECT_CMD = {"nats": "nats-server", "valkey": "valkey-server", "s3": "weed", "triton": "tritonserver"}

Progress = Callable[[str], None]


def state_dir(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("MLMESH_STATE_DIR") or DEFAULT_STATE_DIR).resolve()


def read_endpoints(root: Path) -> dict | None:
    path = root / ENDPOINTS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InfraError(f"{path} is unreadable ({exc}); remove it after stopping the listed pids") from None


def recorded_pids(endpoints: dict) -> list[int]:
    pids = [ep.get("pid") for ep in endpoints.get("infra", {}).values()]
    pids += [ep.get("pid") for ep in endpoints.get("services", {}).values()]
    return [p for p in pids if isinstance(p, int)]


def _auth_material(root: Path) -> dict[str, Path]:
    """A fresh dev signing key, an admin token and one service token per service."""
    auth = root / "auth"
    private_pem, public_pem = generate_signing_key()
    paths = {"signing_key": auth / "signing_key.pem", "public_key": auth / "public_key.pem"}
    write_private(paths["signing_key"], private_pem)
    write_private(paths["public_key"], public_pem)
    paths["admin_token"] = auth / "admin.token"
    admin = mint_token(private_pem, subject="admin", team=PLATFORM_TEAM, roles=[ROLE_ADMIN], ttl_s=ADMIN_TOKEN_TTL_S)
    write_private(paths["admin_token"], admin)
    for svc in SERVICES:
        paths[f"token:{svc.name}"] = auth / f"{svc.name}.token"
        write_private(paths[f"token:{svc.name}"], mint_service_token(private_pem, svc.name))
    return paths


def start_waves(services: tuple[ServiceSpec, ...] = SERVICES) -> list[list[ServiceSpec]]:
    """The services in start order: each wave needs only services of earlier waves."""
    waves: list[list[ServiceSpec]] = []
    done: set[str] = set()
    left = list(services)
    while left:
        wave = [s for s in left if set(s.needs) <= done]
        if not wave:
            raise InfraError(f"services with unmet or circular needs: {[s.name for s in left]}")
        waves.append(wave)
        done |= {s.name for s in wave}
        left = [s for s in left if s.name not in done]
    return waves


def _service_env(
    svc: ServiceSpec,
    infra: LocalInfra,
    auth: dict[str, Path],
    ready_file: Path,
    root: Path,
    services: dict,
    gateway_metrics_port: int = 0,
) -> dict:
    p = svc.env_prefix
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env.update(
        {
            f"{p}HOST": "127.0.0.1",
            f"{p}GRPC_PORT": "0",
            f"{p}METRICS_PORT": "0",
            f"{p}NATS_URL": infra.nats.url,
            f"{p}NATS_CREDS_FILE": str(infra.nats.creds(svc.identity)),
            f"{p}AUTH_PUBLIC_KEY_FILE": str(auth["public_key"]),
            f"{p}SERVICE_TOKEN_FILE": str(auth[f"token:{svc.name}"]),
            f"{p}READY_FILE": str(ready_file),
            f"{p}LOG_LEVEL": os.environ.get("MLMESH_LOG_LEVEL", "INFO"),
        }
    )
    if svc.module == "storage":
        s3 = infra.s3.endpoints()
        env.update(
            {
                f"{p}HOT_DIR": str(root / "storage" / "hot"),
                f"{p}WARM_DIR": str(root / "storage" / "warm"),
                f"{p}S3_ENDPOINT_URL": s3["endpoint_url"],
                f"{p}S3_BUCKET": s3["bucket"],  # the one bucket its S3 identity may use
                f"{p}S3_ACCESS_KEY": s3["access_key"],
                f"{p}S3_SECRET_KEY": s3["secret_key"],
            }
        )
    if svc.module == "gateway":
        env[f"{p}METRICS_PORT"] = str(gateway_metrics_port)
        # The mesh's own Triton, and a free port for the KServe v2 REST front (in the ready file).
        env.update(
            {
                f"{p}HTTP_PORT": "0",
                f"{p}TRITON_GRPC_URLS": infra.triton.grpc_url,
                f"{p}TRITON_HTTP_URLS": infra.triton.http_url,
                # The gateway's valkey user and password: env only, never argv.
                f"{p}VALKEY_URL": infra.valkey.url,
                # Deployments are written where the mesh's Triton reads its models.
                f"{p}MODEL_REPOSITORY": str(infra.triton.model_repository),
            }
        )
    for name in svc.needs:
        env[f"{p}{name.upper().replace('-', '_')}_ADDRESS"] = services[name]["grpc"]
    if "telemetry" in services:  # started after the receiver: its spans go there
        env[f"{p}OTLP_ENDPOINT"] = services["telemetry"]["grpc"]
    if svc.module == "telemetry":
        env[f"{p}SCRAPE_TARGETS"] = f"http://127.0.0.1:{gateway_metrics_port}/metrics"
    if svc.module == "scheduler":  # it issues teams' event credentials
        env[f"{p}NATS_ACCOUNT_SIGNING_KEY_FILE"] = str(infra.nats.trust_dir / "account_signing.nk")
        env[f"{p}NATS_ACCOUNT"] = infra.nats.trust.public_key("account")
    if svc.module == "trainer":
        env[f"{p}WORK_DIR"] = str(root / "trainer")
        env[f"{p}WORKER_NATS_CREDS_FILE"] = str(infra.nats.creds("worker"))
    if svc.after_fabric:
        env[f"{p}LOG_DIR"] = str(root / "workers")
        env[f"{p}ZONE"] = "local"
    return env


def grpc_healthy(target: str, timeout: float = 2.0) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _write_json(path: Path, data: dict) -> None:
    # It names secrets (valkey password, S3 keys), so it is private to this user.
    write_private(path, json.dumps(data, indent=2) + "\n")


def _wait_healthy(svc: ServiceSpec, proc: ManagedProcess, ready: Path, timeout: float) -> dict:
    wait_until(ready.is_file, timeout=timeout, what=f"{svc.name} to start", proc=proc)
    info = json.loads(ready.read_text())
    target = f"127.0.0.1:{info['grpc_port']}"
    wait_until(lambda: grpc_healthy(target), timeout=timeout, what=f"{svc.name} health", proc=proc)
    endpoint = {
        "grpc": target,
        "metrics_url": f"http://127.0.0.1:{info['metrics_port']}/metrics",
        "pid": proc.pid,
        "log": str(proc.log_path),
    }
    if "http_port" in info:  # the gateway's KServe v2 REST front
        endpoint["http_url"] = f"http://127.0.0.1:{info['http_port']}"
    return endpoint


def up(root: Path, *, timeout: float = 90.0, on_progress: Progress = lambda _: None) -> dict:
    """Start infra and services, wait until all are healthy, record endpoints. On any failure,
    stop what was started and raise InfraError."""
    existing = read_endpoints(root)
    if existing and any(pid_running(p) for p in recorded_pids(existing)):
        raise InfraError(f"a mesh is already running from {root}; run `mlmesh down` first")
    root.mkdir(parents=True, exist_ok=True)
    auth = _auth_material(root)
    infra = LocalInfra(root, COMPONENTS, tie_to_parent=False)
    procs: list[tuple[ServiceSpec, ManagedProcess, Path]] = []
    try:
        infra.start(timeout=timeout, on_progress=on_progress)
        infra.nats.bootstrap()  # every stream and bucket, as the operator: services create only their own
        auth["nats_admin_creds"] = infra.nats.creds("admin")
        gateway_metrics = free_port()
        services: dict[str, dict] = {}
        for wave in start_waves():  # each wave once the services whose addresses it needs are healthy
            started = []
            for svc in wave:
                ready = root / "run" / f"{svc.name}.ready.json"
                ready.unlink(missing_ok=True)
                proc = ManagedProcess(
                    svc.name,
                    [sys.executable, "-m", f"mlmesh.{svc.module}", *svc.args],
                    log_path=root / "logs" / f"{svc.name}.log",
                    env=_service_env(svc, infra, auth, ready, root, services, gateway_metrics),
                    cwd=root,
                    tie_to_parent=False,
                )
                proc.start()
                procs.append((svc, proc, ready))
                started.append((svc, proc, ready))
                on_progress(f"started {svc.name} (pid {proc.pid})")
            for svc, proc, ready in started:  # they start concurrently; wait for each in turn
                services[svc.name] = _wait_healthy(svc, proc, ready, timeout)
                on_progress(f"{svc.name} healthy on {services[svc.name]['grpc']}")
    except BaseException:
        for _svc, proc, _ready in reversed(procs):
            proc.stop(grace=10)
        infra.stop()
        raise
    _create_admin_queue(services["scheduler"]["grpc"], auth["admin_token"].read_text().strip())
    endpoints = {
        "state_dir": str(root),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "infra": infra.endpoints(),
        "services": services,
        "auth": {k: str(v) for k, v in auth.items() if not k.startswith("token:")},
    }
    _write_json(root / ENDPOINTS_FILE, endpoints)
    return endpoints


def _create_admin_queue(scheduler: str, admin_token: str) -> None:
    """The admin's team gets a default queue, so a first `mlmesh submit` runs (kept across `up`s)."""
    from mlmesh.api.scheduler.v1 import queue_pb2, scheduler_service_pb2_grpc
    from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as api
    from mlmesh.common.quantities import UNLIMITED_CPU_MILLIS, UNLIMITED_MEMORY_BYTES

    # Its unlimited quota is kept, not lent: lent, it would let every team borrow without bound.
    spec = queue_pb2.QueueSpec(team=PLATFORM_TEAM, team_default=True, keep_idle_quota=True)
    spec.nominal_quota.gpus = ADMIN_QUEUE_GPUS
    spec.nominal_quota.cpu_millis = UNLIMITED_CPU_MILLIS
    spec.nominal_quota.memory_bytes = UNLIMITED_MEMORY_BYTES
    with grpc.insecure_channel(scheduler) as channel:
        stub = scheduler_service_pb2_grpc.SchedulerServiceStub(channel)
        try:
            stub.CreateQueue(
                api.CreateQueueRequest(name=PLATFORM_TEAM, spec=spec),
                metadata=(("authorization", f"Bearer {admin_token}"),),
                timeout=30,
            )
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise InfraError(f"cannot create the admin's queue: {err.code().name}: {err.details()}") from None


def down(root: Path, *, on_progress: Progress = lambda _: None) -> bool:
    """Stop services first (they drain into NATS), then infrastructure in reverse start order.
    Returns whether anything was recorded as running."""
    endpoints = read_endpoints(root)
    if endpoints is None:
        return False
    for name, ep in reversed(list(endpoints.get("services", {}).items())):
        if isinstance(ep.get("pid"), int) and stop_pid(ep["pid"], grace=15, expect_cmd="mlmesh"):
            on_progress(f"stopped {name}")
    for name, ep in reversed(list(endpoints.get("infra", {}).items())):
        grace = getattr(SERVERS.get(name), "stop_grace", 10.0)
        if isinstance(ep.get("pid"), int) and stop_pid(ep["pid"], grace=grace, expect_cmd=_EXPECT_CMD.get(name)):
            on_progress(f"stopped {name}")
        if not pid_running(ep.get("pid") or -1):
            for sock in ep.get("sockets", []):  # weed's fixed-path unix sockets outlive a SIGKILL
                Path(sock).unlink(missing_ok=True)
    left = [p for p in recorded_pids(endpoints) if pid_running(p)]
    if left:
        raise InfraError(f"processes still running after down: {left}")
    (root / ENDPOINTS_FILE).unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class ComponentStatus:
    kind: str  # infra | service
    name: str
    endpoint: str
    pid: int | None
    healthy: bool
    detail: str


def status(root: Path) -> list[ComponentStatus]:
    endpoints = read_endpoints(root)
    if endpoints is None:
        raise InfraError(f"no mesh recorded in {root}: run `mlmesh up` first")
    rows = []
    for name, ep in endpoints.get("infra", {}).items():
        running = pid_running(ep.get("pid") or -1)
        ok = running and _probe(name, ep)
        shown = ep.get("url") or ep.get("endpoint_url") or ep.get("http_url") or ""
        if name == "valkey":
            shown = f"redis://127.0.0.1:{ep.get('port')}"  # the url embeds the password
        rows.append(ComponentStatus("infra", name, shown, ep.get("pid"), ok, _detail(running, ok)))
    for name, ep in endpoints.get("services", {}).items():
        running = pid_running(ep.get("pid") or -1)
        ok = running and grpc_healthy(ep["grpc"])
        rows.append(ComponentStatus("service", name, ep["grpc"], ep.get("pid"), ok, _detail(running, ok)))
    return rows


def _probe(name: str, ep: dict) -> bool:
    try:
        return bool(SERVERS[name].probe(ep))
    except (OSError, KeyError, InfraError):
        return False


def _detail(running: bool, ok: bool) -> str:
    if not running:
        return "process not running"
    return "serving" if ok else "not answering its health check"
