"""Kubernetes executor: a run's workers as a JobSet (or an Indexed Job), applied with `kubectl`.

Layout: one worker process per pod, `world_size` pods. Each pod's rank is its Job completion index
(read through the downward API), so there is no in-pod launcher to get wrong; a GPU worker asks for
`gpus_per_worker` GPUs of its own. Rank 0's pod is the rendezvous master: a headless Service (with
`publishNotReadyAddresses`) gives every pod a stable DNS name before any of them is Ready, and
MASTER_ADDR is pod 0's name:

- Indexed Job (`use_jobset=False`): `<job>-0.<service>.<namespace>.svc` (pod `subdomain` = service);
- JobSet: `<jobset>-workers-0-0.<service>.<namespace>.svc` (JobSet's hostnames, `network.subdomain`
  = service; JobSet uses the existing Service instead of creating its own).

The trainer controller owns restarts: `backoffLimit` defaults to 0, pods never restart in place and
the JobSet's `failurePolicy.maxRestarts` is 0. Secret values never go into the rendered manifests:
an env key that looks secret (TOKEN, SECRET, PASSWORD, ...) becomes a `secretKeyRef` into the
Secret `mlmesh-run-<run id>`, which `launch` applies from memory (`secret_manifest`) and never
writes to disk or logs.

Objects of a run carry the label `mlmesh.io/run-id`; `stop` deletes them by it. Besides the objects
the design names (ConfigMap, Service, JobSet/Job, Secret) each run gets a NetworkPolicy that lets its
pods reach each other on any port: the mlmesh namespace denies ingress by default
(deploy/k8s/base/networkpolicy.yaml), and gloo/NCCL connect on ports beyond MASTER_PORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlmesh.common.errors import FailedPrecondition, Unavailable

log = logging.getLogger("mlmesh.trainer.executors.kubernetes")

WORKER_APP = "mlmesh-trainer-worker"
RUN_ID_LABEL = "mlmesh.io/run-id"
JOB_ID_LABEL = "mlmesh.io/job-id"
TEAM_LABEL = "mlmesh.io/team"
JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2"
REPLICATED_JOB = "workers"
CONTAINER = "worker"
CONFIG_DIR = "/etc/mlmesh/run"
CONFIG_KEY = "config.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
# The root filesystem is read-only; the worker runs in an emptyDir so relative output paths work.
WORK_DIR = "/var/lib/mlmesh/work"
RUN_AS_USER = 10001
COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
# Oldest Kubernetes minor the manifests must be valid for (kubernetes-validate's bundled schemas).
KUBERNETES_VERSION = "1.30"
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
FIELD_MANAGER = "mlmesh-trainer"
# Set by the executor; the caller's `env` may not override them.
# (The MLMESH_* ones mirror executors.base.rank_env, as the local and agent executors set them.)
RESERVED_ENV = frozenset(
    {
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MLMESH_RANK",
        "MLMESH_WORLD_SIZE",
        "MLMESH_RUN_ID",
        "MLMESH_JOB_ID",
    }
)
# An env key containing one of these (case-insensitive) is a secret: referenced, never inlined.
# CREDS and NKEY: NATS credentials (MLMESH_WORKER_NATS_CREDS holds a user's nkey seed).
SECRET_ENV_MARKERS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDS", "NKEY", "API_KEY", "PRIVATE_KEY")

# Room for JobSet's pod names, `<base>-workers-0-<index>-<5 random>`, within a 63-character DNS label.
_MAX_BASE_NAME = 40
_HASH_LEN = 8
_CONFIGMAP_MAX_BYTES = 1_000_000  # the API server caps an object at 1 MiB
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_KEY_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def _default_gpu_node_selector() -> dict[str, str]:
    # Set by NVIDIA GPU feature discovery / the GPU operator on nodes with GPUs.
    return {"nvidia.com/gpu.present": "true"}


@dataclass(frozen=True)
class KubernetesTarget:
    """Where and how a run's workers are created. Invalid values raise ValueError naming the field."""

    namespace: str
    image: str
    service_account: str = "mlmesh-trainer-worker"
    image_pull_policy: str = "IfNotPresent"
    node_selector: dict[str, str] = field(default_factory=dict)
    gpu_resource_name: str = "nvidia.com/gpu"
    use_jobset: bool = True
    kubeconfig: str | None = None
    context: str | None = None
    # Added to node_selector, and a toleration for the `gpu_resource_name` taint added, only when
    # a worker asks for GPUs.
    gpu_node_selector: dict[str, str] = field(default_factory=_default_gpu_node_selector)

    def __post_init__(self) -> None:
        if not _is_dns_label(self.namespace):
            raise ValueError(f"namespace: {self.namespace!r} is not a DNS-1123 label (lowercase a-z0-9-, ≤ 63)")
        if not self.image or self.image != self.image.strip() or any(c.isspace() for c in self.image):
            raise ValueError("image: must be a non-empty image reference without whitespace")
        if not (self.service_account and len(self.service_account) <= 253):
            raise ValueError("service_account: must be a non-empty DNS-1123 subdomain")
        if not _DNS1123_SUBDOMAIN.fullmatch(self.service_account):
            raise ValueError(f"service_account: {self.service_account!r} is not a DNS-1123 subdomain")
        if self.image_pull_policy not in _PULL_POLICIES:
            raise ValueError(f"image_pull_policy: must be one of {', '.join(_PULL_POLICIES)}")
        if not _is_label_key(self.gpu_resource_name):
            raise ValueError(f"gpu_resource_name: {self.gpu_resource_name!r} is not a resource name")
        for name, selector in (("node_selector", self.node_selector), ("gpu_node_selector", self.gpu_node_selector)):
            for key, value in selector.items():
                if not (_is_label_key(key) and isinstance(value, str) and _is_label_value(value)):
                    raise ValueError(f"{name}: {key}={value!r} is not a valid label")


@dataclass(frozen=True)
class KubernetesLaunch:
    """What `KubernetesExecutor.launch` created."""

    namespace: str
    workload_kind: str  # "JobSet" or "Job"
    workload_name: str
    service_name: str
    master_addr: str
    manifest_path: Path  # the rendered manifests, Secret values excluded
    objects: tuple[str, ...]  # "Kind/name", in apply order


# --- names and labels --------------------------------------------------------------------------------


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:_HASH_LEN]


def _is_dns_label(value: str) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def _is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.fullmatch(value))


def _is_label_key(key: str) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_KEY_NAME.fullmatch(name))


def resource_name(run_id: str) -> str:
    """The base name of a run's objects: `mlmesh-run-<run id>`, DNS-1123 safe and at most 40 characters.

    An id that is not already safe (uppercase, `_`, `.`) or too long is cut and suffixed with a hash
    of the whole id, so two ids never share a name. Derived names (`-config`, JobSet pod names
    `-workers-0-<index>-xxxxx` up to the largest world size) stay within 63 characters."""
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]+", "-", run_id.lower())).strip("-")
    name = f"mlmesh-run-{slug}" if slug else "mlmesh-run"
    if slug != run_id or len(name) > _MAX_BASE_NAME:
        name = f"{name[: _MAX_BASE_NAME - _HASH_LEN - 1].rstrip('-')}-{_short_hash(run_id)}"
    return name


def secret_name(run_id: str) -> str:
    """The run's Secret (env values that must not be inlined): `mlmesh-run-<run id>`."""
    return resource_name(run_id)


def label_value(value: str) -> str:
    """`value` when it is a valid label value, else a cut and hash-suffixed form of it."""
    if _is_label_value(value):
        return value
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[: 63 - _HASH_LEN - 1].strip("-_.")
    return f"{slug}-{_short_hash(value)}" if slug else _short_hash(value)


def run_selector(run_id: str) -> dict[str, str]:
    """Labels that select every object (and pod) of a run."""
    return {"app.kubernetes.io/name": WORKER_APP, RUN_ID_LABEL: label_value(run_id)}


def run_labels(run_id: str, job_id: str, team: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": WORKER_APP,
        "app.kubernetes.io/part-of": "mlmesh",
        "app.kubernetes.io/component": "training-worker",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        RUN_ID_LABEL: label_value(run_id),
        JOB_ID_LABEL: label_value(job_id),
        TEAM_LABEL: label_value(team),
    }


def is_secret_env(name: str) -> bool:
    """Whether an env key must come from the run's Secret rather than be written into the manifest."""
    upper = name.upper()
    return any(marker in upper for marker in SECRET_ENV_MARKERS)


def split_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret) env: secret keys are those `is_secret_env` flags."""
    plain = {k: v for k, v in env.items() if not is_secret_env(k)}
    secret = {k: v for k, v in env.items() if is_secret_env(k)}
    return plain, secret


def master_addr(run_id: str, namespace: str, *, use_jobset: bool) -> str:
    """DNS name of the rank-0 pod (the rendezvous master)."""
    name = resource_name(run_id)
    host = f"{name}-{REPLICATED_JOB}-0-0" if use_jobset else f"{name}-0"
    return f"{host}.{name}.{namespace}.svc"


# --- rendering ---------------------------------------------------------------------------------------


def _check_id(field_name: str, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 253 or not _ID.fullmatch(value):
        raise ValueError(f"{field_name}: must be 1-253 characters of [A-Za-z0-9_.-], starting alphanumeric")


def _check_int(field_name: str, value: int, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"≥ {low}"
        raise ValueError(f"{field_name}: must be an integer {bound}, got {value!r}")


def _check_env(env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ValueError(f"env: {key!r} is not a valid environment variable name")
        if key in RESERVED_ENV:
            raise ValueError(f"env: {key} is set by the executor and cannot be overridden")
        if not isinstance(value, str):
            raise ValueError(f"env: the value of {key} must be a string")


def _metadata(name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None):
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def secret_manifest(
    run_id: str, namespace: str, data: Mapping[str, str], *, labels: Mapping[str, str] | None = None
) -> dict:
    """The run's Secret, values as `stringData`. Apply it; never write it to disk or log it."""
    if not _is_dns_label(namespace):
        raise ValueError(f"namespace: {namespace!r} is not a DNS-1123 label")
    for key, value in data.items():
        if not isinstance(key, str) or not re.fullmatch(r"[-._a-zA-Z0-9]+", key) or len(key) > 253:
            raise ValueError(f"data: {key!r} is not a valid Secret key")
        if not isinstance(value, str):
            raise ValueError(f"data: the value of {key} must be a string")
    meta_labels = dict(labels) if labels else {**run_selector(run_id), "app.kubernetes.io/part-of": "mlmesh"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(secret_name(run_id), namespace, meta_labels),
        "type": "Opaque",
        "stringData": dict(data),
    }


def render_worker_manifests(
    *,
    run_id: str,
    job_id: str,
    team: str,
    world_size: int,
    gpus_per_worker: int,
    cpu_millis: int,
    memory_bytes: int,
    worker_config_json: str,
    env: Mapping[str, str],
    target: KubernetesTarget,
    master_port: int = 29500,
    backoff_limit: int = 0,
    secret_keys: Collection[str] = (),
) -> list[dict]:
    """A run's objects, in apply order: ConfigMap, headless Service, NetworkPolicy, JobSet or Job.

    One worker per pod, `world_size` pods. Env keys that `is_secret_env` flags, and those listed in
    `secret_keys`, are rendered as references into `secret_manifest(run_id, ...)`; their values are
    not read. Pure: no I/O."""
    _check_id("run_id", run_id)
    _check_id("job_id", job_id)
    _check_id("team", team)
    _check_int("world_size", world_size, 1, 100_000)
    _check_int("gpus_per_worker", gpus_per_worker, 0)
    _check_int("cpu_millis", cpu_millis, 1)
    _check_int("memory_bytes", memory_bytes, 1)
    _check_int("master_port", master_port, 1, 65535)
    _check_int("backoff_limit", backoff_limit, 0)
    if not isinstance(target, KubernetesTarget):
        raise ValueError("target: must be a KubernetesTarget")
    if not isinstance(worker_config_json, str):
        raise ValueError("worker_config_json: must be a JSON string")
    try:
        json.loads(worker_config_json)
    except ValueError as exc:
        raise ValueError(f"worker_config_json: not valid JSON ({exc.msg} at position {exc.pos})") from None
    if len(worker_config_json.encode()) > _CONFIGMAP_MAX_BYTES:
        raise ValueError(f"worker_config_json: larger than {_CONFIGMAP_MAX_BYTES} bytes (a ConfigMap's limit)")
    _check_env(env)
    missing = set(secret_keys) - set(env)
    if missing:
        raise ValueError(f"secret_keys: {sorted(missing)} not in env")

    ns = target.namespace
    name = resource_name(run_id)
    config_name = f"{name}-config"
    labels = run_labels(run_id, job_id, team)
    selector = run_selector(run_id)
    # Full ids, where a label value had to be shortened.
    annotations = {RUN_ID_LABEL: run_id, JOB_ID_LABEL: job_id, TEAM_LABEL: team}

    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(config_name, ns, labels, annotations),
        "data": {CONFIG_KEY: worker_config_json},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, ns, labels, annotations),
        "spec": {
            "clusterIP": "None",
            # Rendezvous starts before any worker is Ready: DNS records must exist for unready pods.
            "publishNotReadyAddresses": True,
            "selector": dict(selector),
            "ports": [{"name": "rendezvous", "port": master_port, "targetPort": master_port, "protocol": "TCP"}],
        },
    }
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(f"{name}-peers", ns, labels, annotations),
        "spec": {
            "podSelector": {"matchLabels": dict(selector)},
            "policyTypes": ["Ingress"],
            # Any port: gloo and NCCL open connections beyond MASTER_PORT.
            "ingress": [{"from": [{"podSelector": {"matchLabels": dict(selector)}}]}],
        },
    }

    rank_ref = {"fieldRef": {"fieldPath": COMPLETION_INDEX_FIELD}}
    env_entries: list[dict] = [
        {"name": "RANK", "valueFrom": rank_ref},
        {"name": "LOCAL_RANK", "value": "0"},
        {"name": "LOCAL_WORLD_SIZE", "value": "1"},
        {"name": "WORLD_SIZE", "value": str(world_size)},
        {"name": "MASTER_ADDR", "value": master_addr(run_id, ns, use_jobset=target.use_jobset)},
        {"name": "MASTER_PORT", "value": str(master_port)},
        {"name": "MLMESH_RANK", "valueFrom": copy.deepcopy(rank_ref)},
        {"name": "MLMESH_WORLD_SIZE", "value": str(world_size)},
        {"name": "MLMESH_RUN_ID", "value": run_id},
        {"name": "MLMESH_JOB_ID", "value": job_id},
    ]
    for key in sorted(env):
        if is_secret_env(key) or key in secret_keys:
            ref = {"name": secret_name(run_id), "key": key, "optional": False}
            env_entries.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
        else:
            env_entries.append({"name": key, "value": env[key]})

    resources: dict[str, str] = {"cpu": f"{cpu_millis}m", "memory": str(memory_bytes)}
    if gpus_per_worker > 0:
        resources[target.gpu_resource_name] = str(gpus_per_worker)
    container = {
        "name": CONTAINER,
        "image": target.image,
        "imagePullPolicy": target.image_pull_policy,
        "command": ["python", "-m", "mlmesh.trainer.worker", "--config", CONFIG_PATH],
        "workingDir": WORK_DIR,
        "env": env_entries,
        "ports": [{"name": "rendezvous", "containerPort": master_port, "protocol": "TCP"}],
        # requests = limits: Guaranteed QoS, no CPU/memory overcommit under a training step.
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "run-config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "work", "mountPath": WORK_DIR},
        ],
    }
    pod_spec: dict[str, Any] = {
        # The trainer controller decides about restarts, not the kubelet.
        "restartPolicy": "Never",
        "serviceAccountName": target.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "run-config",
                "configMap": {"name": config_name, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]},
            },
            {"name": "tmp", "emptyDir": {}},
            # torch (DataLoader workers) and NCCL need a real /dev/shm; counts towards the memory limit.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(max(memory_bytes // 2, 1))}},
            {"name": "work", "emptyDir": {}},
        ],
    }
    node_selector = dict(target.node_selector)
    if gpus_per_worker > 0:
        node_selector.update(target.gpu_node_selector)
        pod_spec["tolerations"] = [{"key": target.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}]
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if not target.use_jobset:
        pod_spec["subdomain"] = name  # hostname <job>-<index>, resolvable through the Service

    pod_template = {
        "metadata": {"labels": dict(labels), "annotations": {"kubectl.kubernetes.io/default-container": CONTAINER}},
        "spec": pod_spec,
    }
    job_spec = {
        "completionMode": "Indexed",
        "completions": world_size,
        "parallelism": world_size,
        "backoffLimit": backoff_limit,
        "template": pod_template,
    }
    if target.use_jobset:
        workload = {
            "apiVersion": JOBSET_API_VERSION,
            "kind": "JobSet",
            "metadata": _metadata(name, ns, labels, annotations),
            "spec": {
                "replicatedJobs": [
                    {
                        "name": REPLICATED_JOB,
                        "replicas": 1,
                        "template": {"metadata": {"labels": dict(labels)}, "spec": job_spec},
                    }
                ],
                # Pod hostnames <jobset>-workers-0-<index> under our Service (applied first).
                "network": {"enableDNSHostnames": True, "subdomain": name},
                "failurePolicy": {"maxRestarts": 0},
            },
        }
    else:
        workload = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _metadata(name, ns, labels, annotations),
            "spec": job_spec,
        }
    return [config_map, service, network_policy, workload]


# --- validation --------------------------------------------------------------------------------------

_JOBSET_SPEC_KEYS = frozenset(
    {
        "replicatedJobs",
        "network",
        "successPolicy",
        "failurePolicy",
        "startupPolicy",
        "suspend",
        "coordinator",
        "managedBy",
        "ttlSecondsAfterFinished",
    }
)
_JOBSET_NETWORK_KEYS = frozenset({"enableDNSHostnames", "subdomain", "publishNotReadyAddresses"})


def _describe(doc: Mapping) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def _check_metadata(doc: Mapping, what: str) -> None:
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        raise ValueError(f"{what}: metadata is missing")
    name = meta.get("name")
    pattern = _DNS1035_LABEL if doc.get("kind") == "Service" else _DNS1123_LABEL
    if not isinstance(name, str) or len(name) > 63 or not pattern.fullmatch(name):
        raise ValueError(f"{what}: metadata.name must be a DNS label of at most 63 characters")
    namespace = meta.get("namespace")
    if namespace is not None and not _is_dns_label(namespace):
        raise ValueError(f"{what}: metadata.namespace {namespace!r} is not a DNS-1123 label")
    for key, value in (meta.get("labels") or {}).items():
        if not _is_label_key(key) or not isinstance(value, str) or not _is_label_value(value):
            raise ValueError(f"{what}: metadata.labels: {key}={value!r} is not a valid label")


def _check_jobset(doc: Mapping, what: str) -> list[tuple[str, dict]]:
    """JobSet fields the controller requires; returns (replicatedJob name, its Job) to schema-check."""
    if doc.get("apiVersion") != JOBSET_API_VERSION:
        raise ValueError(f"{what}: apiVersion must be {JOBSET_API_VERSION}")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{what}: spec is missing")
    unknown = set(spec) - _JOBSET_SPEC_KEYS
    if unknown:
        raise ValueError(f"{what}: spec: unknown field(s) {sorted(unknown)}")
    rjobs = spec.get("replicatedJobs")
    if not isinstance(rjobs, list) or not rjobs:
        raise ValueError(f"{what}: spec.replicatedJobs must be a non-empty list")
    network = spec.get("network", {})
    if not isinstance(network, Mapping) or set(network) - _JOBSET_NETWORK_KEYS:
        raise ValueError(f"{what}: spec.network must hold only {sorted(_JOBSET_NETWORK_KEYS)}")
    for key in ("enableDNSHostnames", "publishNotReadyAddresses"):
        if key in network and not isinstance(network[key], bool):
            raise ValueError(f"{what}: spec.network.{key} must be a boolean")
    subdomain = network.get("subdomain")
    if subdomain is not None and not (_DNS1035_LABEL.fullmatch(str(subdomain)) and len(str(subdomain)) <= 63):
        # It is also the Service's name, so the JobSet webhook holds it to RFC 1035.
        raise ValueError(f"{what}: spec.network.subdomain must be a DNS-1035 label")
    failure = spec.get("failurePolicy", {})
    if not isinstance(failure, Mapping):
        raise ValueError(f"{what}: spec.failurePolicy must be an object")
    restarts = failure.get("maxRestarts", 0)
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise ValueError(f"{what}: spec.failurePolicy.maxRestarts must be an integer ≥ 0")

    jobset_name = doc["metadata"]["name"]
    seen: set[str] = set()
    jobs: list[tuple[str, dict]] = []
    for i, rjob in enumerate(rjobs):
        where = f"{what}: spec.replicatedJobs[{i}]"
        if not isinstance(rjob, Mapping):
            raise ValueError(f"{where} must be an object")
        rname = rjob.get("name")
        if not isinstance(rname, str) or not _is_dns_label(rname) or rname in seen:
            raise ValueError(f"{where}.name must be a unique DNS-1123 label")
        seen.add(rname)
        replicas = rjob.get("replicas", 1)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"{where}.replicas must be an integer ≥ 1")
        template = rjob.get("template")
        if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
            raise ValueError(f"{where}.template.spec is missing")
        if set(template) - {"metadata", "spec"}:
            raise ValueError(f"{where}.template: unknown field(s) {sorted(set(template) - {'metadata', 'spec'})}")
        completions = template["spec"].get("completions", 1)
        job_name = f"{jobset_name}-{rname}-{replicas - 1}"
        last_index = completions - 1 if isinstance(completions, int) and completions > 0 else 0  # else: schema
        # As JobSet's webhook checks it: the longest pod name, with the Job's 5-character suffix.
        pod_name = f"{job_name}-{last_index}-abcde"
        if len(pod_name) > 63 or not _DNS1035_LABEL.fullmatch(pod_name):
            raise ValueError(f"{where}: pod name {pod_name!r} would not be a DNS-1035 label of ≤ 63 characters")
        meta = dict(template.get("metadata") or {})
        meta.update(name=job_name, namespace=doc["metadata"].get("namespace"))
        jobs.append(
            (rname, {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": dict(template["spec"])})
        )
    return jobs


def _schema_validate(doc: dict, what: str, kubernetes_version: str) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(root)"
        raise ValueError(f"{what}: {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ValueError(f"{what}: {exc.message}") from None


def schemas_available() -> bool:
    """Whether the Kubernetes JSON schemas (the `kubernetes-validate` package) are installed."""
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        return False
    return True


def validate_manifests(
    docs: Sequence[Mapping], *, kubernetes_version: str = KUBERNETES_VERSION, require_schemas: bool = True
) -> None:
    """Check every object offline; raise ValueError("<Kind>/<name>: <path>: <message>") on the first fault.

    Core objects are checked against the Kubernetes JSON schemas of `kubernetes_version` (strict: an
    unknown field is an error). A JobSet (a CRD, no bundled schema) has its required fields checked
    here and each `spec.replicatedJobs[].template` checked as a batch/v1 Job. Names and labels are
    checked too (the schemas leave them free). Without the `kubernetes-validate` package the schema
    checks raise RuntimeError, or are skipped when `require_schemas` is False."""
    have_schemas = schemas_available()
    if require_schemas and not have_schemas:
        raise RuntimeError("kubernetes-validate is not installed; it provides the Kubernetes JSON schemas")
    for doc in docs:
        if not isinstance(doc, Mapping) or not doc.get("kind") or not doc.get("apiVersion"):
            raise ValueError(f"{_describe(doc) if isinstance(doc, Mapping) else doc!r}: not a Kubernetes object")
        what = _describe(doc)
        _check_metadata(doc, what)
        if doc["kind"] == "JobSet":
            for rname, job in _check_jobset(doc, what):
                _check_metadata(job, f"{what} replicatedJob {rname}")
                if have_schemas:
                    _schema_validate(job, f"{what} replicatedJob {rname} (as Job)", kubernetes_version)
        elif have_schemas:
            _schema_validate(dict(doc), what, kubernetes_version)


# --- executor ----------------------------------------------------------------------------------------


def _redact(text: str, secrets: Mapping[str, str]) -> str:
    for value in sorted(secrets.values(), key=len, reverse=True):
        if value:
            text = text.replace(value, "<redacted>")
    return text


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class KubernetesExecutor:
    """Launches and stops a run's workers on a Kubernetes cluster through `kubectl`."""

    def __init__(
        self,
        target: KubernetesTarget,
        *,
        kubectl: str = "kubectl",
        timeout_s: float = 60.0,
        in_cluster_token_path: str = IN_CLUSTER_TOKEN,
    ):
        self.target = target
        self._kubectl = kubectl
        self._timeout_s = timeout_s
        self._in_cluster_token_path = in_cluster_token_path
        self._warned_no_schemas = False

    @property
    def configured(self) -> bool:
        """A cluster is reachable in principle: a kubeconfig is named (target or KUBECONFIG) or we run in-cluster."""
        return bool(self.target.kubeconfig or os.environ.get("KUBECONFIG")) or os.path.exists(
            self._in_cluster_token_path
        )

    def _kind_list(self) -> str:
        workload = "jobset" if self.target.use_jobset else "job"
        # Pods explicitly too: deleting the Job only would give them their own termination grace.
        return f"{workload},pod,service,networkpolicy,configmap,secret"

    async def launch(
        self,
        *,
        run_id: str,
        job_id: str,
        team: str,
        world_size: int,
        gpus_per_worker: int,
        cpu_millis: int,
        memory_bytes: int,
        worker_config_json: str,
        env: Mapping[str, str],
        out_dir: str | os.PathLike[str],
        master_port: int = 29500,
        backoff_limit: int = 0,
        secret_env: Mapping[str, str] | None = None,
    ) -> KubernetesLaunch:
        """Render, validate, write `<out_dir>/<name>.yaml` (no Secret values), then `kubectl apply`.

        `env` keys that look secret (`is_secret_env`) and all of `secret_env` go into the run's
        Secret and are referenced from the pods.

        Raises ValueError for bad inputs; FailedPrecondition when no cluster is configured (after
        writing the file), kubectl is missing or rejects the objects; Unavailable when it times out."""
        secret_env = dict(secret_env or {})
        overlap = set(secret_env) & set(env)
        if overlap:
            raise ValueError(f"secret_env: {sorted(overlap)} also in env")
        all_env = {**env, **secret_env}
        docs = render_worker_manifests(
            run_id=run_id,
            job_id=job_id,
            team=team,
            world_size=world_size,
            gpus_per_worker=gpus_per_worker,
            cpu_millis=cpu_millis,
            memory_bytes=memory_bytes,
            worker_config_json=worker_config_json,
            env=all_env,
            target=self.target,
            master_port=master_port,
            backoff_limit=backoff_limit,
            secret_keys=secret_env.keys(),
        )
        secret_env.update(split_env(env)[1])
        labels = run_labels(run_id, job_id, team)
        secret = secret_manifest(run_id, self.target.namespace, secret_env, labels=labels) if secret_env else None
        if not schemas_available() and not self._warned_no_schemas:
            self._warned_no_schemas = True
            log.warning("kubernetes-validate is not installed: manifests are checked without the Kubernetes schemas")
        # The Secret is checked with placeholder values: a schema message may quote the value it rejects.
        checked = list(docs)
        if secret_env:
            ns = self.target.namespace
            checked.insert(0, secret_manifest(run_id, ns, dict.fromkeys(secret_env, "x"), labels=labels))
        validate_manifests(checked, require_schemas=False)

        workload = docs[-1]
        name = workload["metadata"]["name"]
        header = [f"# mlmesh trainer run {run_id}: worker manifests (apply with `kubectl apply -f <this file>`)."]
        if secret_env:
            header.append(
                f"# Not in this file: Secret {secret_name(run_id)} with the key(s) {', '.join(sorted(secret_env))}"
                " (values are never written to disk); the pods wait for it."
            )
        path = Path(out_dir) / f"{name}.yaml"
        text = "\n".join(header) + "\n" + yaml.safe_dump_all(docs, sort_keys=False)
        await asyncio.to_thread(_write_atomic, path, text)

        if not self.configured:
            raise FailedPrecondition(
                "no Kubernetes cluster is configured (set MLMESH_TRAINER_KUBECONFIG or KUBECONFIG); "
                f"rendered manifests are in {path}"
            )
        to_apply = [secret, *docs] if secret else docs
        stdin = yaml.safe_dump_all(to_apply, sort_keys=False).encode()
        await self._kubectl_run(
            ["apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-"],
            stdin=stdin,
            secrets=secret_env,
            what=f"applying run {run_id}",
            timeout_s=self._timeout_s,
        )
        objects = tuple(_describe(d) for d in to_apply)
        log.info(
            "kubernetes workers applied",
            extra={"run": run_id, "job": job_id, "team": team, "namespace": self.target.namespace, "objects": objects},
        )
        return KubernetesLaunch(
            namespace=self.target.namespace,
            workload_kind=workload["kind"],
            workload_name=name,
            service_name=docs[1]["metadata"]["name"],
            master_addr=master_addr(run_id, self.target.namespace, use_jobset=self.target.use_jobset),
            manifest_path=path,
            objects=objects,
        )

    async def stop(self, run_id: str, grace_s: float) -> None:
        """Delete every object of the run (by label), giving its pods `grace_s` to exit. Idempotent."""
        _check_id("run_id", run_id)
        if not self.configured:
            log.debug("no Kubernetes cluster configured; nothing of run %s to stop", run_id)
            return
        # kubectl allows 0 only with --force; 1 is "immediately".
        grace = max(1, math.ceil(grace_s))
        selector = ",".join(f"{k}={v}" for k, v in run_selector(run_id).items())
        await self._kubectl_run(
            [
                "delete",
                self._kind_list(),
                "-l",
                selector,
                f"--grace-period={grace}",
                "--ignore-not-found",
                f"--timeout={grace + int(self._timeout_s)}s",
            ],
            stdin=None,
            secrets={},
            what=f"stopping run {run_id}",
            timeout_s=grace + 2 * self._timeout_s,
        )
        log.info("kubernetes workers deleted", extra={"run": run_id, "namespace": self.target.namespace})

    async def _kubectl_run(
        self, args: list[str], *, stdin: bytes | None, secrets: Mapping[str, str], what: str, timeout_s: float
    ) -> str:
        kubectl = shutil.which(self._kubectl)
        if kubectl is None:
            raise FailedPrecondition(f"kubectl ({self._kubectl!r}) is not installed or not on PATH")
        argv = [kubectl, *args, "--namespace", self.target.namespace]
        if self.target.kubeconfig:
            argv.append(f"--kubeconfig={self.target.kubeconfig}")
        if self.target.context:
            argv.append(f"--context={self.target.context}")
        argv.append(f"--request-timeout={int(self._timeout_s)}s")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise FailedPrecondition(f"kubectl ({kubectl}) could not be started: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=timeout_s)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise Unavailable(f"kubectl timed out after {timeout_s:.0f} s {what}") from None
        if proc.returncode != 0:
            detail = _redact(err.decode(errors="replace").strip(), secrets)[-500:]
            log.warning("kubectl failed %s (exit %d): %s", what, proc.returncode, detail)
            raise FailedPrecondition(f"kubectl failed {what} (exit {proc.returncode}): {detail}")
        return _redact(out.decode(errors="replace"), secrets)
