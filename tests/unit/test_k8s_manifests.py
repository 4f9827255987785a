"""The Kubernetes manifests (deploy/k8s) and service Dockerfiles agree with each other and with the code.

The checks run on the files as written, not on a cluster: every service has a Deployment with gRPC
probes on its port, a non-root hardened container, resource limits and `MLMESH_<MODULE>_*` settings
that its settings class accepts; Services and PodDisruptionBudgets select their pods; the grace
period outlasts the graceful stop; each image starts the right module as a non-root user.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlmesh.common.settings import ServiceSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
# Service directory -> module (`python -m mlmesh.<module>`, env prefix MLMESH_<MODULE>_).
SERVICES = {
    "scheduler": "scheduler",
    "fabric": "fabric",
    "storage": "storage",
    "trainer": "trainer",
    "inference-gateway": "gateway",
    "telemetry": "telemetry",
}
AUTOSCALED = {"scheduler", "fabric", "storage", "inference-gateway"}
GRPC_PORT = 50051
METRICS_PORT = 9090


# --- helpers -----------------------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def _load_yaml_docs(text: str) -> list:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def _objects(path: Path) -> list[dict]:
    return _load_yaml_docs(path.read_text())


def _base_objects() -> list[dict]:
    kustomization = _objects(BASE / "kustomization.yaml")[0]
    return [obj for res in kustomization["resources"] for obj in _objects(BASE / res)]


def _find(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _container(deployment: dict, name: str) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    matching = [c for c in containers if c["name"] == name]
    assert len(matching) == 1, f"Deployment {name} has no container named {name}"
    return matching[0]


def _env(container: dict) -> dict[str, str]:
    """Literal env values; entries from a Secret (valueFrom) are only known at run time."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _config_data() -> dict[str, str]:
    return _find(_base_objects(), "ConfigMap", "mlmesh-config")["data"]


def _settings_class(module: str) -> type[ServiceSettings]:
    mod = importlib.import_module(f"mlmesh.{module}.settings")
    # A module may define more than one (the fabric's agent has its own); the service's is the
    # one read from MLMESH_<MODULE>_*.
    classes = [
        v
        for v in vars(mod).values()
        if isinstance(v, type)
        and issubclass(v, ServiceSettings)
        and v is not ServiceSettings
        and v.model_config.get("env_prefix") == f"MLMESH_{module.upper()}_"
    ]
    assert len(classes) == 1, f"mlmesh.{module}.settings should define one settings class for MLMESH_{module.upper()}_"
    return classes[0]


def _dockerfile(service_dir: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions, pending = [], ""
    for raw in (REPO / "services" / service_dir / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, args = line.partition(" ")
        instructions.append((word.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


# --- kustomize structure -----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_every_manifest_is_a_named_object():
    files = _yaml_files()
    assert files, "no manifests under deploy/k8s"
    for path in files:
        docs = _objects(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), f"{path}: object without apiVersion/kind"
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], f"{path}: {doc['kind']} without a name"


@pytest.mark.timeout(30)
def test_kustomization_resources_exist():
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert {p.parent for p in kustomizations} >= {BASE, K8S / "overlays" / "dev", K8S / "overlays" / "prod"}
    for path in kustomizations:
        kustomization = _objects(path)[0]
        assert kustomization["kind"] == "Kustomization"
        assert kustomization["resources"], f"{path} lists no resources"
        for res in kustomization["resources"]:
            target = (path.parent / res).resolve()
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{path}: {res} does not exist"
        for patch in kustomization.get("patches", []):
            assert "patch" in patch or (path.parent / patch["path"]).is_file(), f"{path}: patch {patch} missing"
    # Nothing in the base is left out of it.
    listed = set(_objects(BASE / "kustomization.yaml")[0]["resources"])
    assert {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"} == listed


@pytest.mark.timeout(30)
@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/prod"])
def test_kustomize_renders(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=25, check=False
    )
    assert result.returncode == 0, result.stderr
    objects = _load_yaml_docs(result.stdout)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert set(deployments) == set(SERVICES)
    assert all(o["metadata"].get("namespace") == "mlmesh" for o in objects if o["kind"] != "Namespace")
    if overlay == "overlays/dev":
        assert {d["spec"]["replicas"] for d in deployments.values()} == {1}
    if overlay == "overlays/prod":
        for name, dep in deployments.items():
            image = _container(dep, name)["image"]
            assert not image.endswith(":latest") and ":" in image.rsplit("/", 1)[-1], image


# --- per-service manifests ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("service_dir", "module"), SERVICES.items())
def test_service_deployment(service_dir, module):
    objects = _objects(BASE / f"{service_dir}.yaml")
    deployment = _find(objects, "Deployment", service_dir)
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment, service_dir)
    assert deployment["spec"]["replicas"] == (1 if service_dir in ("trainer", "telemetry") else 2)

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == GRPC_PORT and ports["metrics"] == METRICS_PORT
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == GRPC_PORT, f"{service_dir}: {probe} is not a gRPC probe"

    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{service_dir}: no {kind}"

    prefix = f"MLMESH_{module.upper()}_"
    env = _env(container)
    assert all(name.startswith(prefix) for name in env), f"{service_dir}: env outside {prefix}*: {sorted(env)}"
    assert [src["prefix"] for src in container["envFrom"]] == [prefix]
    assert [src["configMapRef"]["name"] for src in container["envFrom"]] == ["mlmesh-config"]
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert int(env[f"{prefix}GRPC_PORT"]) == GRPC_PORT
    assert int(env[f"{prefix}METRICS_PORT"]) == METRICS_PORT

    # The pod outlives the whole graceful stop: preStop sleep, then SHUTDOWN_GRACE_S for in-flight RPCs.
    grace_s = float(env[f"{prefix}SHUTDOWN_GRACE_S"])
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_s = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert pod["terminationGracePeriodSeconds"] > grace_s + pre_stop_s

    # The service token is a file from a Secret volume.
    token_file = Path(env[f"{prefix}SERVICE_TOKEN_FILE"])
    secrets = {v["name"] for v in pod["volumes"] if "secret" in v}
    mounts = [m for m in container["volumeMounts"] if m["name"] in secrets]
    assert any(token_file.parent == Path(m["mountPath"]) for m in mounts), f"{token_file} is not on a Secret"

    service = _find(objects, "Service", service_dir)
    svc_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert svc_ports["grpc"]["port"] == GRPC_PORT and svc_ports["metrics"]["port"] == METRICS_PORT
    for p in svc_ports.values():
        target = p.get("targetPort", p["port"])
        assert target in ports or target in ports.values(), f"Service {service_dir}: targetPort {target} unknown"

    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    if service_dir in AUTOSCALED:
        assert len(hpas) == 1 and hpas[0]["apiVersion"] == "autoscaling/v2"
        assert hpas[0]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service_dir}
        assert [m["resource"]["name"] for m in hpas[0]["spec"]["metrics"]] == ["cpu"]
        assert hpas[0]["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpas[0]["spec"]["maxReplicas"]
    else:
        assert not hpas


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("service_dir", "module"), SERVICES.items())
def test_service_env_is_accepted_by_its_settings(service_dir, module, monkeypatch):
    """The manifest's env, config map included, builds the service's real settings class."""
    settings_cls = _settings_class(module)
    prefix = f"MLMESH_{module.upper()}_"
    assert settings_cls.model_config["env_prefix"] == prefix
    container = _container(_find(_objects(BASE / f"{service_dir}.yaml"), "Deployment", service_dir), service_dir)
    env = {f"{prefix}{key}": value for key, value in _config_data().items()} | _env(container)
    for name in env:
        field = name.removeprefix(prefix).lower()
        assert field in settings_cls.model_fields, f"{name} is not a {settings_cls.__name__} setting"
    for name in [n for n in os.environ if n.startswith("MLMESH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(settings_cls)
    assert (settings.host, settings.grpc_port, settings.metrics_port) == ("0.0.0.0", GRPC_PORT, METRICS_PORT)
    assert settings.nats_url == "nats://nats.mlmesh.svc:4222"
    assert settings.auth_jwks_url and settings.auth_public_key_file is None


@pytest.mark.timeout(30)
def test_every_deployment_is_selected_by_its_service_and_pdb():
    objects = _base_objects()
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == set(SERVICES)
    for dep in deployments:
        name = dep["metadata"]["name"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert _selects(dep["spec"]["selector"]["matchLabels"], labels), f"Deployment {name} misses its own pods"
        services = [o for o in objects if o["kind"] == "Service" and _selects(o["spec"]["selector"], labels)]
        assert [s["metadata"]["name"] for s in services] == [name]
        pdbs = [
            o
            for o in objects
            if o["kind"] == "PodDisruptionBudget" and _selects(o["spec"]["selector"]["matchLabels"], labels)
        ]
        assert [p["metadata"]["name"] for p in pdbs] == [name]


@pytest.mark.timeout(30)
def test_service_monitor_scrapes_every_service_metrics_port():
    objects = _base_objects()
    monitor = _find(objects, "ServiceMonitor", "mlmesh")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    for name in SERVICES:
        service = _find(objects, "Service", name)
        assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]), name
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["metrics"] == METRICS_PORT


@pytest.mark.timeout(30)
def test_network_policies():
    policies = {o["metadata"]["name"]: o["spec"] for o in _base_objects() if o["kind"] == "NetworkPolicy"}
    deny = [p for p in policies.values() if p["podSelector"] == {} and not p.get("ingress")]
    assert deny and deny[0]["policyTypes"] == ["Ingress"], "no default-deny ingress policy"

    def allowed(port: int) -> list[dict]:
        return [
            rule
            for p in policies.values()
            for rule in p.get("ingress", [])
            if any(rp["port"] == port for rp in rule.get("ports", []))
        ]

    mesh = {"app.kubernetes.io/part-of": "mlmesh"}
    assert any(peer.get("podSelector", {}).get("matchLabels") == mesh for r in allowed(GRPC_PORT) for peer in r["from"])
    assert any(
        peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": "monitoring"}
        for r in allowed(METRICS_PORT)
        for peer in r["from"]
    )
    assert any("from" not in r for r in allowed(8000)), "gateway HTTP is not open to all sources"


# --- Dockerfiles -------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("service_dir", "module"), SERVICES.items())
def test_dockerfile(service_dir, module):
    instructions = _dockerfile(service_dir)
    entrypoints = [json.loads(args) for word, args in instructions if word == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    python, flag, target = entrypoints[0]
    assert (python, flag) == ("python", "-m")
    assert target == f"mlmesh.{module}"
    assert (REPO / "services" / service_dir / "src" / "mlmesh" / module / "__main__.py").is_file()

    # The final stage runs as a numeric non-root user (Kubernetes' runAsNonRoot checks the number).
    final_stage = instructions[max(i for i, (word, _) in enumerate(instructions) if word == "FROM") :]
    users = [args for word, args in final_stage if word == "USER"]
    assert users, f"{service_dir}: the image runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == 10001

    env = " ".join(args for word, args in final_stage if word == "ENV")
    prefix = f"MLMESH_{module.upper()}_"
    for setting in (f"{prefix}HOST=0.0.0.0", f"{prefix}GRPC_PORT={GRPC_PORT}", f"{prefix}METRICS_PORT={METRICS_PORT}"):
        assert setting in env.split(), f"{service_dir}: ENV lacks {setting}"
    exposed = {p for word, args in final_stage if word == "EXPOSE" for p in args.split()}
    assert {str(GRPC_PORT), str(METRICS_PORT)} <= exposed

    # Built from the repository root: what it copies exists and is not excluded from the context.
    ignored = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]
    copies = [args.split()[0] for word, args in instructions if word == "COPY" and not args.startswith("--")]
    # The trainer's workers stream checkpoints with the SDK's transfer code, so it ships the SDK too.
    libs = ["libs/common", "libs/sdk"] if service_dir == "trainer" else ["libs/common"]
    assert copies == [*libs, f"services/{service_dir}"]
    for src in copies:
        assert (REPO / src).is_dir()
        assert not any(fnmatch.fnmatch(src, pat) or fnmatch.fnmatch(src + "/src", pat) for pat in ignored), src


@pytest.mark.timeout(30)
def test_dockerignore_keeps_local_state_out():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".tools", ".mlmesh"} <= ignored


@pytest.mark.timeout(30)
def test_fabric_agent_daemonset_env_is_accepted_by_agent_settings(monkeypatch):
    from mlmesh.fabric.settings import AgentSettings

    prefix = "MLMESH_AGENT_"
    daemonset = _find(_objects(BASE / "fabric-agent.yaml"), "DaemonSet", "fabric-agent")
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["agent"]
    env = {f"{prefix}{key}": value for key, value in _config_data().items()} | _env(container)
    for name in [n for n in os.environ if n.startswith("MLMESH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(prefix):
            assert name.removeprefix(prefix).lower() in AgentSettings.model_fields, name
            monkeypatch.setenv(name, value)
    settings = load_settings(AgentSettings)
    assert settings.fabric_address == "fabric.mlmesh.svc:50051" and settings.grpc_port == GRPC_PORT
    # Node id and advertised address come from the downward API.
    refs = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert refs == {f"{prefix}NODE_ID": "spec.nodeName", f"{prefix}ADVERTISE_HOST": "status.podIP"}
