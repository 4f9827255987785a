"""The Kubernetes executor: rendered worker manifests and the kubectl apply/delete path.

Manifests are checked against the real Kubernetes JSON schemas, offline (kubernetes-validate). No
cluster exists here, so the apply path runs a fake `kubectl` (a shell script recording its argv and
stdin) as a unit-test double.
"""

from __future__ import annotations

import copy
import json
import re
import stat
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mlmesh.common.errors import FailedPrecondition
from mlmesh.trainer.executors.base import LaunchSpec, RankLaunch
from mlmesh.trainer.executors.kubernetes import (
    COMPLETION_INDEX_FIELD,
    CONFIG_PATH,
    JOBSET_API_VERSION,
    KUBERNETES_VERSION,
    KubernetesExecutor,
    KubernetesTarget,
    is_secret_env,
    render_worker_manifests,
    resource_name,
    secret_manifest,
    validate_manifests,
)
from mlmesh.trainer.executors.kubernetes_group import KubernetesRunExecutor
from mlmesh.trainer.settings import TrainerSettings
from mlmesh.trainer.worker.config import NATS_CREDS_ENV, TOKEN_ENV

pytestmark = pytest.mark.timeout(60)

NS = "mlmesh"
TOKEN = "tok-3f9a1c0e-very-secret-value"
PASSWORD = "hunter2-not-in-any-manifest"
# A .creds file's shape (nats_auth.creds_text); the seed is what must never be in a manifest.
NATS_SEED = "SUAEXAMPLESEEDNOTINANYMANIFEST"
NATS_CREDS = (
    "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.sig\n------END NATS USER JWT------\n\n"
    f"-----BEGIN USER NKEY SEED-----\n{NATS_SEED}\n------END USER NKEY SEED------\n"
)
CONFIG = json.dumps({"run_id": "run-1", "model": "builtin:tiny", "plan": {"zeroStage": 2}})
LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/part-of",
    "mlmesh.io/run-id",
    "mlmesh.io/job-id",
    "mlmesh.io/team",
)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _target(**kw) -> KubernetesTarget:
    return KubernetesTarget(**{"namespace": NS, "image": "registry.example.com/mlmesh/trainer:1.0", **kw})


def _render(*, world_size=4, gpus=0, use_jobset=True, run_id="run-1", env=None, target=None, **kw) -> list[dict]:
    args = {
        "run_id": run_id,
        "job_id": "job-1",
        "team": "team-a",
        "world_size": world_size,
        "gpus_per_worker": gpus,
        "cpu_millis": 4000,
        "memory_bytes": 16 * 2**30,
        "worker_config_json": CONFIG,
        "env": {"MLMESH_WORKER_TOKEN": TOKEN, "DB_PASSWORD": PASSWORD, "HF_HOME": "/tmp/hf"} if env is None else env,
        "target": target or _target(use_jobset=use_jobset),
        **kw,
    }
    return render_worker_manifests(**args)


def _by_kind(docs: list[dict]) -> dict[str, dict]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


def _job_spec(docs: list[dict]) -> dict:
    kinds = _by_kind(docs)
    if "JobSet" in kinds:
        (rjob,) = kinds["JobSet"]["spec"]["replicatedJobs"]
        assert rjob["replicas"] == 1
        return rjob["template"]["spec"]
    return kinds["Job"]["spec"]


def _pod_spec(docs: list[dict]) -> dict:
    return _job_spec(docs)["template"]["spec"]


def _container(docs: list[dict]) -> dict:
    (container,) = _pod_spec(docs)["containers"]
    return container


def _env(docs: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in _container(docs)["env"]}


def _schema_objects(docs: list[dict]) -> list[dict]:
    """Every object the real schemas can check: core objects, and a JobSet's template as a Job."""
    out = []
    for doc in docs:
        if doc["kind"] == "JobSet":
            for rjob in doc["spec"]["replicatedJobs"]:
                meta = {"name": f"{doc['metadata']['name']}-{rjob['name']}-0", "namespace": NS}
                out.append(
                    {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": rjob["template"]["spec"]}
                )
        else:
            out.append(doc)
    return out


# --- rendering ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_jobset", [True, False], ids=["jobset", "job"])
@pytest.mark.parametrize("gpus", [0, 2], ids=["cpu", "gpu"])
@pytest.mark.parametrize("world_size", [1, 4])
def test_manifests_validate_against_kubernetes_schemas(world_size, gpus, use_jobset):
    docs = _render(world_size=world_size, gpus=gpus, use_jobset=use_jobset)
    kinds = _by_kind(docs)
    workload = "JobSet" if use_jobset else "Job"
    assert set(kinds) == {"ConfigMap", "Service", "NetworkPolicy", workload}
    assert docs[-1]["kind"] == workload, "the workload is applied after what its pods need"

    validate_manifests(docs)
    validate_manifests([secret_manifest("run-1", NS, {"MLMESH_WORKER_TOKEN": TOKEN})])
    # Independently of validate_manifests: the real schemas, strict (unknown fields are errors).
    for obj in _schema_objects(docs):
        assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)

    if use_jobset:
        jobset = kinds["JobSet"]
        assert jobset["apiVersion"] == JOBSET_API_VERSION
        assert jobset["spec"]["network"]["enableDNSHostnames"] is True
        assert jobset["spec"]["failurePolicy"] == {"maxRestarts": 0}
        assert [r["name"] for r in jobset["spec"]["replicatedJobs"]] == ["workers"]

    job = _job_spec(docs)
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == world_size
    assert job["backoffLimit"] == 0
    assert _pod_spec(docs)["restartPolicy"] == "Never"

    for doc in docs:
        assert doc["metadata"]["namespace"] == NS
        labels = doc["metadata"]["labels"]
        assert {k: labels[k] for k in LABELS} == {
            "app.kubernetes.io/name": "mlmesh-trainer-worker",
            "app.kubernetes.io/part-of": "mlmesh",
            "mlmesh.io/run-id": "run-1",
            "mlmesh.io/job-id": "job-1",
            "mlmesh.io/team": "team-a",
        }
    assert set(LABELS) <= set(job["template"]["metadata"]["labels"])


@pytest.mark.parametrize("use_jobset", [True, False], ids=["jobset", "job"])
@pytest.mark.parametrize("world_size", [1, 4])
def test_rank_env_and_rendezvous_address(world_size, use_jobset):
    docs = _render(world_size=world_size, use_jobset=use_jobset, master_port=29555)
    kinds = _by_kind(docs)
    env = _env(docs)
    assert env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == COMPLETION_INDEX_FIELD
    assert COMPLETION_INDEX_FIELD == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert env["LOCAL_RANK"]["value"] == "0"
    assert env["WORLD_SIZE"]["value"] == str(world_size)
    assert env["MASTER_PORT"]["value"] == "29555"
    assert env["HF_HOME"]["value"] == "/tmp/hf"
    # The platform's names, as the local and agent executors set them (executors.base.rank_env).
    assert env["MLMESH_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == COMPLETION_INDEX_FIELD
    assert env["MLMESH_WORLD_SIZE"]["value"] == str(world_size)
    assert (env["MLMESH_RUN_ID"]["value"], env["MLMESH_JOB_ID"]["value"]) == ("run-1", "job-1")

    # MASTER_ADDR is the DNS name of the pod with completion index 0, under the headless Service.
    service = kinds["Service"]
    svc = service["metadata"]["name"]
    workload = docs[-1]["metadata"]["name"]
    if use_jobset:
        assert kinds["JobSet"]["spec"]["network"]["subdomain"] == svc
        # JobSet names pods' hostnames <jobset>-<replicatedJob>-<job index>-<pod index>.
        expected = f"{workload}-workers-0-0.{svc}.{NS}.svc"
        assert "subdomain" not in _pod_spec(docs)
    else:
        assert _pod_spec(docs)["subdomain"] == svc
        # An Indexed Job's pod hostname is <job>-<completion index>.
        expected = f"{workload}-0.{svc}.{NS}.svc"
    assert env["MASTER_ADDR"]["value"] == expected

    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod_labels = _job_spec(docs)["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["selector"]["mlmesh.io/run-id"] == "run-1"
    assert [p["port"] for p in service["spec"]["ports"]] == [29555]
    # The namespace denies ingress by default: the run's pods may reach each other on any port.
    policy = kinds["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == service["spec"]["selector"]
    assert policy["ingress"] == [{"from": [{"podSelector": {"matchLabels": service["spec"]["selector"]}}]}]


def test_worker_command_config_and_security():
    docs = _render()
    container, pod = _container(docs), _pod_spec(docs)
    assert container["command"] == ["python", "-m", "mlmesh.trainer.worker", "--config", CONFIG_PATH]
    assert CONFIG_PATH == "/etc/mlmesh/run/config.json"

    config_map = _by_kind(docs)["ConfigMap"]
    assert json.loads(config_map["data"]["config.json"]) == json.loads(CONFIG)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_mount = mounts["/etc/mlmesh/run"]
    assert config_mount["readOnly"] is True
    assert volumes[config_mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"] is not None
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    # The working directory is writable (the root filesystem is not).
    assert "emptyDir" in volumes[mounts[container["workingDir"]]["name"]]

    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["serviceAccountName"] == "mlmesh-trainer-worker"
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("gpus", [0, 2])
def test_resources_and_gpu_placement(gpus):
    target = _target(node_selector={"pool": "training"}, gpu_resource_name="nvidia.com/gpu")
    docs = _render(gpus=gpus, target=target)
    resources, pod = _container(docs)["resources"], _pod_spec(docs)
    assert resources["requests"] == resources["limits"]
    assert resources["limits"]["cpu"] == "4000m"
    assert resources["limits"]["memory"] == str(16 * 2**30)
    if gpus:
        assert resources["limits"]["nvidia.com/gpu"] == "2"
        assert pod["nodeSelector"] == {"pool": "training", "nvidia.com/gpu.present": "true"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
        assert pod["nodeSelector"] == {"pool": "training"}
        assert "tolerations" not in pod


@pytest.mark.parametrize("use_jobset", [True, False], ids=["jobset", "job"])
def test_secret_env_is_referenced_never_inlined(use_jobset):
    docs = _render(use_jobset=use_jobset, run_id="run-7")
    env = _env(docs)
    for key in ("MLMESH_WORKER_TOKEN", "DB_PASSWORD"):
        assert "value" not in env[key]
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "mlmesh-run-run-7", "key": key, "optional": False}
    dump = yaml.safe_dump_all(docs)
    assert TOKEN not in dump and PASSWORD not in dump
    assert "/tmp/hf" in dump

    secret = secret_manifest("run-7", NS, {"MLMESH_WORKER_TOKEN": TOKEN, "DB_PASSWORD": PASSWORD})
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "mlmesh-run-run-7"
    assert secret["metadata"]["labels"]["mlmesh.io/run-id"] == "run-7"
    assert secret["stringData"] == {"MLMESH_WORKER_TOKEN": TOKEN, "DB_PASSWORD": PASSWORD}
    assert "data" not in secret
    assert kubernetes_validate.validate(secret, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("use_jobset", [True, False], ids=["jobset", "job"])
def test_worker_nats_credentials_are_a_secret_by_name(use_jobset):
    """Even passed as plain env, the workers' NATS credentials (a user JWT and its nkey seed) become a
    reference into the run's Secret: the key names credentials."""
    assert is_secret_env(NATS_CREDS_ENV)
    docs = _render(use_jobset=use_jobset, run_id="run-7", env={NATS_CREDS_ENV: NATS_CREDS, "HF_HOME": "/tmp/hf"})
    ref = _env(docs)[NATS_CREDS_ENV]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "mlmesh-run-run-7", "key": NATS_CREDS_ENV, "optional": False}
    assert NATS_SEED not in yaml.safe_dump_all(docs)
    # The multi-line credentials survive as one Secret value.
    secret = secret_manifest("run-7", NS, {NATS_CREDS_ENV: NATS_CREDS})
    assert yaml.safe_load(yaml.safe_dump(secret))["stringData"][NATS_CREDS_ENV] == NATS_CREDS
    assert kubernetes_validate.validate(secret, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("use_jobset", [True, False], ids=["jobset", "job"])
def test_long_and_unsafe_run_ids_give_short_dns_names(use_jobset):
    long_id = "Run_" + "a" * 120 + ".x"
    docs = _render(run_id=long_id, world_size=1000, use_jobset=use_jobset)
    validate_manifests(docs)
    names = [d["metadata"]["name"] for d in docs]
    for name in names:
        assert len(name) <= 63 and DNS_LABEL.fullmatch(name), name
    for doc in docs:
        value = doc["metadata"]["labels"]["mlmesh.io/run-id"]
        assert len(value) <= 63 and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", value)
        assert doc["metadata"]["annotations"]["mlmesh.io/run-id"] == long_id
    # Every pod hostname (up to index 999) fits a DNS label, and so does MASTER_ADDR's first label.
    workload = docs[-1]["metadata"]["name"]
    last_host = f"{workload}-workers-0-999" if use_jobset else f"{workload}-999"
    assert len(last_host) <= 63
    # JobSet's webhook also wants the longest pod name (5-character suffix) to be a DNS label.
    assert len(f"{resource_name(long_id)}-workers-0-99999-abcde") <= 63
    assert _env(docs)["MASTER_ADDR"]["value"].split(".")[0] in (f"{workload}-workers-0-0", f"{workload}-0")
    # Ids that differ only past the cut, or only by characters the name cannot hold, get distinct names.
    assert resource_name(long_id) != resource_name(long_id[:-1] + "y")
    assert resource_name("run_1") != resource_name("run-1")
    assert resource_name("run-1") == "mlmesh-run-run-1"


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("world_size", {"world_size": 0}),
        ("world_size", {"world_size": -3}),
        ("gpus_per_worker", {"gpus": -1}),
        ("cpu_millis", {"cpu_millis": 0}),
        ("memory_bytes", {"memory_bytes": 0}),
        ("master_port", {"master_port": 70000}),
        ("backoff_limit", {"backoff_limit": -1}),
        ("run_id", {"run_id": ""}),
        ("run_id", {"run_id": "bad id/with slash"}),
        ("job_id", {"job_id": ""}),
        ("team", {"team": "a b"}),
        ("worker_config_json", {"worker_config_json": "{not json"}),
        ("env", {"env": {"RANK": "3"}}),
        ("env", {"env": {"1BAD": "x"}}),
        ("env", {"env": {"MLMESH_RANK": "1"}}),
        ("secret_keys", {"env": {"A": "x"}, "secret_keys": ["B"]}),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_field(field, kwargs):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        _render(**kwargs)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("namespace", {"namespace": "Bad_NS"}),
        ("namespace", {"namespace": "x" * 64}),
        ("image", {"image": ""}),
        ("image", {"image": "trainer latest"}),
        ("image_pull_policy", {"image_pull_policy": "Sometimes"}),
        ("service_account", {"service_account": "Not_Valid"}),
        ("node_selector", {"node_selector": {"pool": "bad value!"}}),
    ],
)
def test_bad_target_raises_value_error_naming_the_field(field, kwargs):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        _target(**kwargs)
    with pytest.raises(ValueError, match=r"^namespace\b"):
        secret_manifest("run-1", "Bad_NS", {})


def test_validate_manifests_rejects_what_the_schemas_reject():
    for use_jobset, kind in ((False, "Job"), (True, "JobSet")):
        docs = _render(use_jobset=use_jobset)
        broken = copy.deepcopy(docs)
        container = _container(broken)
        container["resourcez"] = container.pop("resources")  # a typo: strict schemas reject unknown fields
        with pytest.raises(ValueError, match=rf"^{kind}/mlmesh-run-run-1.*resourcez"):
            validate_manifests(broken)
        broken = copy.deepcopy(docs)
        _job_spec(broken)["completions"] = "four"
        with pytest.raises(ValueError, match=rf"^{kind}/mlmesh-run-run-1.*completions"):
            validate_manifests(broken)

    docs = _render()
    broken = copy.deepcopy(docs)
    _by_kind(broken)["Service"]["spec"]["clusterIP"] = 0
    with pytest.raises(ValueError, match=r"^Service/mlmesh-run-run-1: spec\.clusterIP"):
        validate_manifests(broken)
    broken = copy.deepcopy(docs)
    del _by_kind(broken)["JobSet"]["spec"]["replicatedJobs"]
    with pytest.raises(ValueError, match=r"^JobSet/mlmesh-run-run-1: spec\.replicatedJobs"):
        validate_manifests(broken)
    broken = copy.deepcopy(docs)
    _by_kind(broken)["JobSet"]["spec"]["failurePolicy"]["maxRestarts"] = -1
    with pytest.raises(ValueError, match=r"maxRestarts"):
        validate_manifests(broken)
    broken = copy.deepcopy(docs)
    _by_kind(broken)["JobSet"]["metadata"]["name"] = "j" * 50  # pods j...j-workers-0-3-xxxxx: too long
    with pytest.raises(ValueError, match=r"pod name"):
        validate_manifests(broken)
    broken = copy.deepcopy(docs)
    _by_kind(broken)["ConfigMap"]["metadata"]["name"] = "Not_A_Name"
    with pytest.raises(ValueError, match=r"^ConfigMap/Not_A_Name: metadata\.name"):
        validate_manifests(broken)


# --- executor ----------------------------------------------------------------------------------------


def _launch_args(out_dir: Path, **kw) -> dict:
    return {
        "run_id": "run-9",
        "job_id": "job-9",
        "team": "team-a",
        "world_size": 2,
        "gpus_per_worker": 0,
        "cpu_millis": 1000,
        "memory_bytes": 2**30,
        "worker_config_json": CONFIG,
        "env": {"MLMESH_WORKER_TOKEN": TOKEN, "HF_HOME": "/tmp/hf"},
        "out_dir": out_dir,
        **kw,
    }


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    """No KUBECONFIG and no in-cluster service-account token."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return str(tmp_path / "no-such-token")


@pytest.fixture
def fake_kubectl(monkeypatch, tmp_path) -> Path:
    """A `kubectl` first on PATH that records argv and stdin per subcommand, exit code from a file."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    script = bin_dir / "kubectl"
    script.write_text(
        "#!/bin/sh\n"
        f'calls="{calls}"\n'
        'printf \'%s\\n\' "$@" > "$calls/$1.argv"\n'
        'cat > "$calls/$1.stdin"\n'
        'if [ -f "$calls/fail" ]; then cat "$calls/fail" >&2; exit 1; fi\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return calls


async def test_configured_sources(no_cluster, monkeypatch, tmp_path):
    assert not KubernetesExecutor(_target(), in_cluster_token_path=no_cluster).configured
    assert KubernetesExecutor(_target(kubeconfig="/etc/kube/config"), in_cluster_token_path=no_cluster).configured
    token = tmp_path / "token"
    token.write_text("x")
    assert KubernetesExecutor(_target(), in_cluster_token_path=str(token)).configured
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    assert KubernetesExecutor(_target(), in_cluster_token_path=no_cluster).configured


async def test_launch_without_cluster_writes_manifests_and_fails_precondition(no_cluster, tmp_path):
    executor = KubernetesExecutor(_target(), in_cluster_token_path=no_cluster)
    out_dir = tmp_path / "manifests"
    with pytest.raises(FailedPrecondition, match="no Kubernetes cluster is configured") as info:
        await executor.launch(**_launch_args(out_dir))
    path = out_dir / "mlmesh-run-run-9.yaml"
    assert str(path) in info.value.message
    assert "MLMESH_TRAINER_KUBECONFIG" in info.value.message and "KUBECONFIG" in info.value.message
    text = path.read_text()
    assert TOKEN not in text
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs] == ["ConfigMap", "Service", "NetworkPolicy", "JobSet"]
    assert "Secret mlmesh-run-run-9" in text  # the header says what must exist besides the file
    validate_manifests(docs)


async def test_launch_applies_all_documents_and_stop_deletes_by_label(no_cluster, fake_kubectl, tmp_path):
    target = _target(kubeconfig="/etc/kube/config", context="prod", use_jobset=True)
    executor = KubernetesExecutor(target, in_cluster_token_path=no_cluster)
    # secret_env: secret whatever the key's name says.
    launched = await executor.launch(**_launch_args(tmp_path / "out", secret_env={"HF_AUTH": PASSWORD}))

    argv = (fake_kubectl / "apply.argv").read_text().splitlines()
    assert argv[0] == "apply"
    assert argv[argv.index("-f") + 1] == "-"
    assert "--server-side" in argv  # no last-applied annotation holding the Secret's values
    assert argv[argv.index("--namespace") + 1] == NS
    assert "--kubeconfig=/etc/kube/config" in argv and "--context=prod" in argv
    assert not any(TOKEN in a for a in argv), "secret values never go on a command line"

    applied = [d for d in yaml.safe_load_all((fake_kubectl / "apply.stdin").read_text()) if d]
    assert [d["kind"] for d in applied] == ["Secret", "ConfigMap", "Service", "NetworkPolicy", "JobSet"]
    assert applied[0]["stringData"] == {"MLMESH_WORKER_TOKEN": TOKEN, "HF_AUTH": PASSWORD}
    pod_env = {e["name"]: e for e in _container(applied[1:])["env"]}
    assert pod_env["HF_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == applied[0]["metadata"]["name"]
    assert PASSWORD not in yaml.safe_dump_all(applied[1:])
    assert all(d["metadata"]["labels"]["mlmesh.io/run-id"] == "run-9" for d in applied)
    validate_manifests(applied)
    assert launched.objects == tuple(f"{d['kind']}/{d['metadata']['name']}" for d in applied)
    assert launched.workload_kind == "JobSet" and launched.workload_name == "mlmesh-run-run-9"
    assert launched.master_addr == "mlmesh-run-run-9-workers-0-0.mlmesh-run-run-9.mlmesh.svc"
    written = launched.manifest_path.read_text()
    assert TOKEN not in written and PASSWORD not in written

    await executor.stop("run-9", grace_s=12.5)
    argv = (fake_kubectl / "delete.argv").read_text().splitlines()
    assert argv[:2] == ["delete", "jobset,pod,service,networkpolicy,configmap,secret"]
    selector = dict(kv.split("=") for kv in argv[argv.index("-l") + 1].split(","))
    assert selector["mlmesh.io/run-id"] == "run-9"
    assert "--grace-period=13" in argv and "--ignore-not-found" in argv
    assert argv[argv.index("--namespace") + 1] == NS
    assert "--kubeconfig=/etc/kube/config" in argv


async def test_run_executor_hands_the_worker_nats_credentials_over_by_secret(fake_kubectl, tmp_path):
    """The controller's path (LaunchSpec.secret_env, as ActiveRun builds it from the trainer's
    WORKER_NATS_CREDS_FILE): the credentials reach the pods through the run's Secret alone."""
    settings = TrainerSettings(auth_jwks_url="https://auth.example.com/jwks", kubeconfig="/k", kubernetes_namespace=NS)
    config = tmp_path / "worker-config.json"
    config.write_text(json.dumps({**json.loads(CONFIG), "team": "team-a"}))
    spec = LaunchSpec(
        run_id="run-5",
        job_id="job-5",
        launch_id=0,
        world_size=2,
        argv=["python", "-m", "mlmesh.trainer.worker", "--config", str(config)],
        env={"PYTHONUNBUFFERED": "1", "MLMESH_NATS_URL": "nats://nats.mlmesh.svc:4222"},
        ranks=[RankLaunch(0, 0), RankLaunch(1, 0)],
        log_dir=tmp_path / "logs",
        secret_env={TOKEN_ENV: TOKEN, NATS_CREDS_ENV: NATS_CREDS},
    )
    group = await KubernetesRunExecutor(settings).launch(spec)

    applied = [d for d in yaml.safe_load_all((fake_kubectl / "apply.stdin").read_text()) if d]
    assert applied[0]["kind"] == "Secret"
    assert applied[0]["stringData"] == {TOKEN_ENV: TOKEN, NATS_CREDS_ENV: NATS_CREDS}
    pod_env = {e["name"]: e for e in _container(applied[1:])["env"]}
    for key in (TOKEN_ENV, NATS_CREDS_ENV):
        assert pod_env[key]["valueFrom"]["secretKeyRef"]["name"] == applied[0]["metadata"]["name"]
    assert pod_env["MLMESH_NATS_URL"]["value"] == "nats://nats.mlmesh.svc:4222"
    assert NATS_SEED not in yaml.safe_dump_all(applied[1:])
    written = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.yaml"))
    assert written and NATS_SEED not in written and TOKEN not in written
    argv = (fake_kubectl / "apply.argv").read_text()
    assert NATS_SEED not in argv
    await group.terminate(0)


async def test_job_mode_stop_and_plain_env(no_cluster, fake_kubectl, tmp_path):
    executor = KubernetesExecutor(_target(use_jobset=False, kubeconfig="/k"), in_cluster_token_path=no_cluster)
    await executor.launch(**_launch_args(tmp_path, env={"HF_HOME": "/tmp/hf"}))
    applied = [d for d in yaml.safe_load_all((fake_kubectl / "apply.stdin").read_text()) if d]
    assert [d["kind"] for d in applied] == ["ConfigMap", "Service", "NetworkPolicy", "Job"]
    await executor.stop("run-9", grace_s=0)
    argv = (fake_kubectl / "delete.argv").read_text().splitlines()
    assert argv[1].startswith("job,") and "--grace-period=1" in argv


async def test_kubectl_failure_is_reported_without_secret_values(no_cluster, fake_kubectl, tmp_path):
    (fake_kubectl / "fail").write_text(f'Error from server: Secret "x" is invalid: value {TOKEN}\n')
    executor = KubernetesExecutor(_target(kubeconfig="/k"), in_cluster_token_path=no_cluster)
    with pytest.raises(FailedPrecondition, match="kubectl failed") as info:
        await executor.launch(**_launch_args(tmp_path))
    assert TOKEN not in info.value.message and "<redacted>" in info.value.message


async def test_missing_kubectl_fails_precondition(no_cluster, monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    executor = KubernetesExecutor(_target(kubeconfig="/k"), in_cluster_token_path=no_cluster)
    with pytest.raises(FailedPrecondition, match="kubectl"):
        await executor.launch(**_launch_args(tmp_path))
    with pytest.raises(FailedPrecondition, match="kubectl"):
        await executor.stop("run-9", grace_s=5)
