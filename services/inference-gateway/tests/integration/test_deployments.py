"""DeploymentService end to end: real nats-server, the storage service (registry), tritonserver
(python backend) and valkey, with the gateway as a process. Registry versions of MiniLM (real
weights; version 2 with perturbed weights, so the two answer differently) are deployed, split by a
canary, moved by an alias, cached per deployment, and undeployed while traffic flows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from google.protobuf import duration_pb2
from nats.aio.client import Client as NATS

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.gateway.v1 import deployment_pb2 as d
from mlmesh.api.gateway.v1 import deployment_service_pb2 as api
from mlmesh.api.gateway.v1 import deployment_service_pb2_grpc
from mlmesh.api.storage.v1 import (
    artifact_pb2,
    model_registry_pb2,
    model_registry_service_pb2,
    model_registry_service_pb2_grpc,
    storage_service_pb2_grpc,
)
from mlmesh.api.storage.v1 import storage_service_pb2 as storage_api
from mlmesh.common import builtin_models
from mlmesh.common.auth import generate_signing_key, mint_service_token, mint_token, write_secret
from mlmesh.local.process import ManagedProcess, start_service
from mlmesh.sdk import transfer
from mlmesh.sdk.client import Client

S = d.DeploymentState
EMBEDDING = common_pb2.MODEL_TASK_EMBEDDING


@dataclass
class Stack:
    tmp: Path
    private: bytes
    storage: ManagedProcess
    storage_address: str
    gateway: ManagedProcess | None
    grpc_address: str
    http_address: str
    metrics_url: str
    repository: Path
    triton_http: str
    nats_url: str
    nats_creds: str
    alice: str
    bob: str

    def md(self, token: str | None = None):
        return (("authorization", f"Bearer {token or self.alice}"),)

    def stub(self) -> deployment_service_pb2_grpc.DeploymentServiceStub:
        return deployment_service_pb2_grpc.DeploymentServiceStub(grpc.insecure_channel(self.grpc_address))


def _start_gateway(stack_tmp: Path, settings: dict) -> tuple[ManagedProcess, dict]:
    return start_service("gateway", settings, stack_tmp, prefix="MLMESH_GATEWAY_", timeout=90)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, nats_server, triton_server, valkey_server):
    tmp = tmp_path_factory.mktemp("deploy")
    private, public = generate_signing_key()
    write_secret(tmp / "public.pem", public)
    write_secret(tmp / "gateway.token", mint_service_token(private, "gateway"))
    common = {"AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem")}
    storage, info = start_service(
        "storage",
        {
            **common,
            **nats_server.service_settings("storage"),
            "METRICS_PORT": "-1",
            "HOT_DIR": str(tmp / "hot"),
            "WARM_DIR": str(tmp / "warm"),
        },
        tmp,
    )
    storage_address = f"127.0.0.1:{info['grpc_port']}"
    settings = {
        **common,
        **nats_server.service_settings("gateway"),
        "METRICS_PORT": "0",
        "HTTP_PORT": "0",
        "SHUTDOWN_GRACE_S": "2",
        "TRITON_GRPC_URLS": triton_server.grpc_url,
        "TRITON_HTTP_URLS": triton_server.http_url,
        "STORAGE_ADDRESS": storage_address,
        "SERVICE_TOKEN_FILE": str(tmp / "gateway.token"),
        "MODEL_REPOSITORY": str(triton_server.model_repository),
        "VALKEY_URL": valkey_server.url,
        "CACHE_TTL_S": "60",
        "RECONCILE_INTERVAL_S": "2",
        "DRAIN_TIMEOUT_S": "10",
    }
    gateway, ginfo = _start_gateway(tmp, settings)
    stack = Stack(
        tmp=tmp,
        private=private,
        storage=storage,
        storage_address=storage_address,
        gateway=gateway,
        grpc_address=f"127.0.0.1:{ginfo['grpc_port']}",
        http_address=f"127.0.0.1:{ginfo['http_port']}",
        metrics_url=f"http://127.0.0.1:{ginfo['metrics_port']}/metrics",
        repository=triton_server.model_repository,
        triton_http=triton_server.http_url.removeprefix("http://"),
        nats_url=nats_server.url,
        nats_creds=str(nats_server.creds("admin")),
        alice=mint_token(private, subject="alice", team="team-a", roles=["developer"]),
        bob=mint_token(private, subject="bob", team="team-b", roles=["developer"]),
    )
    stack.settings = settings  # type: ignore[attr-defined]
    try:
        yield stack
    finally:
        if stack.gateway is not None:
            _undeploy_all(stack)  # the KV bucket outlives this module on the session's nats-server
            stack.gateway.stop(grace=5)
        storage.stop(grace=5)


def _undeploy_all(stack: Stack) -> None:
    for token in (stack.alice, stack.bob):
        try:
            listed = stack.stub().ListDeployments(api.ListDeploymentsRequest(), metadata=stack.md(token), timeout=10)
            for dep in listed.deployments:
                stack.stub().DeleteDeployment(
                    api.DeleteDeploymentRequest(name=dep.meta.id), metadata=stack.md(token), timeout=60
                )
        except grpc.RpcError:
            pass  # best effort: a failed test may have left the gateway unusable


def _minilm_dirs(tmp: Path) -> tuple[Path, Path]:
    """Version 1: MiniLM as shipped; version 2: the same with every weight scaled (other outputs)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    v1 = tmp / "minilm-v1"
    shutil.copytree(builtin_models.minilm_path(), v1)
    v2 = tmp / "minilm-v2"
    model = AutoModel.from_pretrained(str(v1))
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(-1.0)
    model.save_pretrained(str(v2))
    AutoTokenizer.from_pretrained(str(v1)).save_pretrained(str(v2))
    return v1, v2


def _registry(stack: Stack, token: str) -> Client:
    return Client(
        "storage", model_registry_service_pb2_grpc.ModelRegistryServiceStub, endpoint=stack.storage_address, token=token
    )


def _register(stack: Stack, directory: Path, name: str, token: str, aliases=(), task=EMBEDDING) -> int:
    sc = Client("storage", storage_service_pb2_grpc.StorageServiceStub, endpoint=stack.storage_address, token=token)
    draft = storage_api.ArtifactDraft(name=f"{name}-model", kind=artifact_pb2.ARTIFACT_KIND_MODEL)
    artifact = transfer.upload(sc, directory, draft)
    rc = _registry(stack, token)
    mv = model_registry_pb2.ModelVersion(
        name=name,
        artifact_id=artifact.meta.id,
        weights_kind=model_registry_pb2.WEIGHTS_KIND_FULL,
        framework="transformers",
        task=task,
    )
    reply = rc.call(
        rc.stub.RegisterModelVersion,
        model_registry_service_pb2.RegisterModelVersionRequest(model_version=mv, aliases=list(aliases)),
    )
    return reply.model_version.version


def _set_alias(stack: Stack, name: str, alias: str, version: int) -> None:
    rc = _registry(stack, stack.alice)
    rc.call(rc.stub.SetAlias, model_registry_service_pb2.SetAliasRequest(name=name, alias=alias, version=version))


@pytest.fixture(scope="module")
def minilm(stack: Stack) -> dict[str, int]:
    v1, v2 = _minilm_dirs(stack.tmp)
    versions = {
        "v1": _register(stack, v1, "dep-minilm", stack.alice, aliases=("prod",)),
        "v2": _register(stack, v2, "dep-minilm", stack.alice),
    }
    assert versions == {"v1": 1, "v2": 2}
    return versions


def _embed(stack: Stack, model: str, text: str, token: str | None = None, headers=None) -> tuple[np.ndarray, str]:
    client = triton_grpc.InferenceServerClient(stack.grpc_address)
    try:
        data = triton_grpc.InferInput("TEXT", [1, 1], "BYTES")
        data.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
        result = client.infer(
            model, [data], headers={"authorization": f"Bearer {token or stack.alice}", **(headers or {})}
        )
        return result.as_numpy("EMBEDDING")[0], result.get_response().model_version
    finally:
        client.close()


def _create(stack: Stack, name: str, spec: d.DeploymentSpec, token=None, wait=True, timeout=240) -> d.Deployment:
    request = api.CreateDeploymentRequest(name=name, spec=spec, wait_ready=wait)
    return stack.stub().CreateDeployment(request, metadata=stack.md(token), timeout=timeout).deployment


def _get(stack: Stack, name: str, token=None) -> d.Deployment:
    return (
        stack.stub().GetDeployment(api.GetDeploymentRequest(name=name), metadata=stack.md(token), timeout=10).deployment
    )


def _wait(stack: Stack, name: str, until, timeout: float = 240) -> d.Deployment:
    deadline = time.monotonic() + timeout
    while True:
        dep = _get(stack, name)
        if until(dep):
            return dep
        assert time.monotonic() < deadline, f"deployment stuck: {dep.status}"
        time.sleep(0.2)


def _delete(stack: Stack, name: str, drain_s: float | None = None) -> d.Deployment:
    request = api.DeleteDeploymentRequest(name=name)
    if drain_s is not None:
        request.drain_timeout.FromSeconds(int(drain_s))
    return stack.stub().DeleteDeployment(request, metadata=stack.md(), timeout=120).deployment


def _spec(version: int = 0, alias: str = "", **fields) -> d.DeploymentSpec:
    ref = d.ModelRef(name="dep-minilm")
    if alias:
        ref.alias = alias
    elif version:
        ref.version = version
    return d.DeploymentSpec(model=ref, **fields)


def _loaded(stack: Stack, triton: str) -> bool:
    client = triton_http.InferenceServerClient(stack.triton_http)
    try:
        return client.is_model_ready(triton)
    finally:
        client.close()


def _violations(err: grpc.RpcError) -> dict[str, str]:
    from google.rpc import error_details_pb2, status_pb2

    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return {v.field: v.description for v in bad.field_violations}
    return {}


def test_bad_requests_name_the_field(stack: Stack, minilm):
    stub = stack.stub()
    spec = _spec(1)
    spec.canary.percent = 150
    spec.cache_ttl.FromSeconds(-1)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateDeployment(api.CreateDeploymentRequest(name="Bad--Name", spec=spec), metadata=stack.md(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = _violations(err.value)
    assert {"name", "spec.canary.percent", "spec.canary.model", "spec.cache_ttl"} <= set(bad), bad
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateDeployment(api.CreateDeploymentRequest(name="nomodel"), metadata=stack.md(), timeout=10)
    assert "spec.model" in _violations(err.value)
    # An unknown model, and alice's model asked for by bob: NOT_FOUND alike.
    for token, model in ((stack.alice, "no-such-model"), (stack.bob, "dep-minilm")):
        spec = d.DeploymentSpec(model=d.ModelRef(name=model, version=1))
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateDeployment(
                api.CreateDeploymentRequest(name="x", spec=spec), metadata=stack.md(token), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDeployment(api.GetDeploymentRequest(name="x"), metadata=(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_deploy_serves_the_registry_version(stack: Stack, minilm):
    events: list[dict] = []
    import asyncio

    async def listen(stop: threading.Event):
        nc = NATS()
        await nc.connect(stack.nats_url, user_credentials=stack.nats_creds)
        sub = await nc.subscribe("mlmesh.deployments.team-a.embed.changed")
        while not stop.is_set():
            try:
                msg = await sub.next_msg(timeout=0.2)
            except Exception:
                continue
            events.append(json.loads(msg.data))
        await nc.close()

    stop = threading.Event()
    listener = threading.Thread(target=lambda: asyncio.run(listen(stop)))
    listener.start()
    try:
        time.sleep(0.3)
        dep = _create(stack, "embed", _spec(1))
    finally:
        time.sleep(0.5)
        stop.set()
        listener.join()
    assert dep.status.state == S.DEPLOYMENT_STATE_READY, dep.status
    assert dep.status.model_version == 1 and dep.spec.task == EMBEDDING
    assert list(dep.status.backend_model_names) == ["team-a--embed"]
    entry = stack.repository / "team-a--embed"
    assert (entry / "config.pbtxt").is_file() and (entry / "1" / "model.py").is_file()
    assert (entry / "1" / "model" / "model.safetensors").is_file()
    assert not any((stack.repository / ".staging").glob("*")), "a staging directory was left behind"
    states = [e["deployment"]["status"]["state"] for e in events]
    assert states[0] == "DEPLOYMENT_STATE_PENDING" and states[-1] == "DEPLOYMENT_STATE_READY", states
    assert "DEPLOYMENT_STATE_LOADING" in states

    vector, version = _embed(stack, "embed", "the gateway serves registry models")
    assert version == "1" and vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    # Another team: the deployment does not exist for it, on the data plane and the control plane.
    with pytest.raises(Exception) as err:
        _embed(stack, "embed", "hello", token=stack.bob)
    assert "not found" in str(err.value).lower()
    with pytest.raises(grpc.RpcError) as err:
        _get(stack, "embed", token=stack.bob)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = stack.stub().ListDeployments(api.ListDeploymentsRequest(), metadata=stack.md(stack.bob), timeout=10)
    assert not listed.deployments
    with pytest.raises(grpc.RpcError) as err:
        _create(stack, "embed", _spec(1))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def _traffic(stack: Stack, model: str, stop: threading.Event, outcomes: list, user: str = "") -> None:
    client = triton_grpc.InferenceServerClient(stack.grpc_address)
    data = triton_grpc.InferInput("TEXT", [1, 1], "BYTES")
    data.set_data_from_numpy(np.array([[b"steady traffic"]], dtype=object))
    headers = {"authorization": f"Bearer {stack.alice}"}
    try:
        while not stop.is_set():
            try:
                result = client.infer(model, [data], headers=headers, client_timeout=30)
                outcomes.append(("ok", result.get_response().model_version))
            except Exception as exc:  # recorded and asserted on
                outcomes.append(("error", str(exc)))
            time.sleep(0.01)
    finally:
        client.close()


def test_canary_split_is_sticky_and_updates_keep_serving(stack: Stack, minilm):
    dep = _get(stack, "embed")
    stop, outcomes = threading.Event(), []
    worker = threading.Thread(target=_traffic, args=(stack, "embed", stop, outcomes))
    worker.start()
    try:
        spec = d.DeploymentSpec(
            canary=d.Canary(model=d.ModelRef(name="dep-minilm", version=2), percent=50, sticky_key="x-user")
        )
        request = api.UpdateDeploymentRequest(
            name="embed", spec=spec, update_mask={"paths": ["canary"]}, expected_revision=dep.meta.revision
        )
        stack.stub().UpdateDeployment(request, metadata=stack.md(), timeout=30)
        dep = _wait(
            stack, "embed", lambda x: x.status.canary_version == 2 and x.status.state == S.DEPLOYMENT_STATE_READY
        )
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join()
    errors = [o for o in outcomes if o[0] == "error"]
    assert not errors, f"{len(errors)} of {len(outcomes)} requests failed during the update: {errors[:3]}"
    assert dep.status.model_version == 1
    assert sorted(p.name for p in (stack.repository / "team-a--embed").iterdir() if p.name.isdigit()) == ["1", "2"]

    by_user: dict[str, set[str]] = {}
    for i in range(40):
        user = f"user-{i}"
        for _ in range(2):
            _, version = _embed(stack, "embed", "which arm am I on", headers={"x-user": user})
            by_user.setdefault(user, set()).add(version)
    assert all(len(v) == 1 for v in by_user.values()), "a sticky user saw both versions"
    arms = Counter(next(iter(v)) for v in by_user.values())
    assert arms["1"] >= 8 and arms["2"] >= 8, arms  # 50/50 over 40 users
    one, _ = _embed(stack, "embed", "same text", headers={"x-user": next(u for u, v in by_user.items() if v == {"1"})})
    two, _ = _embed(stack, "embed", "same text", headers={"x-user": next(u for u, v in by_user.items() if v == {"2"})})
    assert float(np.dot(one, two)) < 0.99  # the versions really differ

    # A stale expected revision is refused.
    with pytest.raises(grpc.RpcError) as err:
        stack.stub().UpdateDeployment(
            api.UpdateDeploymentRequest(
                name="embed", spec=spec, update_mask={"paths": ["canary"]}, expected_revision=1
            ),
            metadata=stack.md(),
            timeout=30,
        )
    assert err.value.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION)
    with pytest.raises(grpc.RpcError) as err:
        stack.stub().UpdateDeployment(
            api.UpdateDeploymentRequest(name="embed", spec=spec, update_mask={"paths": ["no_such_field"]}),
            metadata=stack.md(),
            timeout=30,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in _violations(err.value)


def test_alias_move_rolls_out_and_retires_the_old_version(stack: Stack, minilm):
    dep = _create(stack, "embed-prod", _spec(alias="prod"))
    assert dep.status.state == S.DEPLOYMENT_STATE_READY and dep.status.model_version == 1
    _set_alias(stack, "dep-minilm", "prod", 2)
    dep = _wait(stack, "embed-prod", lambda x: x.status.model_version == 2, timeout=240)
    assert dep.status.reason in ("AliasMoved", "Ready")
    _, version = _embed(stack, "embed-prod", "after the alias moved")
    assert version == "2"
    entry = stack.repository / "team-a--embed-prod"
    deadline = time.monotonic() + 120
    while (entry / "1").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (entry / "1").exists(), "the retired version was not pruned"
    _set_alias(stack, "dep-minilm", "prod", 1)  # for other tests
    _wait(stack, "embed-prod", lambda x: x.status.model_version == 1, timeout=240)
    _delete(stack, "embed-prod")


def _triton_count(stack: Stack, triton: str, expected: int = 0) -> int:
    """Triton's count of successful inferences of a model; Triton updates it as it releases the
    request, which can be just after the response arrived: wait (briefly) for `expected`."""
    client = triton_http.InferenceServerClient(stack.triton_http)
    deadline = time.monotonic() + 3
    try:
        while True:
            stats = client.get_inference_statistics(triton)
            count = sum(int(s["inference_stats"]["success"]["count"]) for s in stats["model_stats"])
            if count >= expected or time.monotonic() > deadline:
                return count
            time.sleep(0.05)
    finally:
        client.close()


def test_cache_ttl_is_per_deployment(stack: Stack, minilm):
    spec = _spec(1)
    spec.cache_ttl.CopyFrom(duration_pb2.Duration(seconds=60))
    _create(stack, "embed-cached", spec)
    before = _triton_count(stack, "team-a--embed-cached")
    first, _ = _embed(stack, "embed-cached", "cache me")
    again, _ = _embed(stack, "embed-cached", "cache me")
    assert np.array_equal(first, again)
    assert _triton_count(stack, "team-a--embed-cached", before + 2) == before + 1, "the repeat was not a cache hit"
    # `embed` has no cache_ttl: not cached, though the gateway's default TTL is 60 s.
    before = _triton_count(stack, "team-a--embed")
    _embed(stack, "embed", "do not cache me", headers={"x-user": "u"})
    _embed(stack, "embed", "do not cache me", headers={"x-user": "u"})
    assert _triton_count(stack, "team-a--embed", before + 2) == before + 2
    _delete(stack, "embed-cached")


def _cli(stack: Stack, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMESH_")}
    env["MLMESH_TOKEN"] = token or stack.alice
    command = [sys.executable, "-m", "mlmesh.cli.main", "models", *args, "--endpoint", stack.grpc_address]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_cli_deploys_lists_and_undeploys(stack: Stack, minilm):
    out = _cli(stack, "deploy", "dep-minilm@prod", "--name", "cli-embed", "--cache-ttl", "0")
    assert out.returncode == 0, out.stderr
    assert "cli-embed: ready" in out.stdout and "cli-embed serves dep-minilm@prod as v1" in out.stdout, out.stdout
    _, version = _embed(stack, "cli-embed", "deployed from the command line")
    assert version == "1"

    listed = _cli(stack, "ls", "--deployed", "--json")
    assert listed.returncode == 0, listed.stderr
    names = {dep["meta"]["id"]: dep for dep in json.loads(listed.stdout)["deployments"]}
    assert names["cli-embed"]["status"]["state"] == "DEPLOYMENT_STATE_READY"
    other = _cli(stack, "ls", "--deployed", "--json", token=stack.bob)
    assert "cli-embed" not in other.stdout  # another team's deployments are not listed

    missing = _cli(stack, "deploy", "no-such-model:1", "--name", "cli-missing")
    assert missing.returncode != 0 and "no-such-model" in missing.stderr + missing.stdout

    gone = _cli(stack, "undeploy", "cli-embed", "--drain-timeout", "5")
    assert gone.returncode == 0 and "cli-embed: deleted" in gone.stdout, gone.stdout + gone.stderr
    again = _cli(stack, "undeploy", "cli-embed")
    assert again.returncode != 0 and "not found" in (again.stderr + again.stdout).lower()


def test_undeploy_drains_then_unloads(stack: Stack, minilm):
    stop, outcomes = threading.Event(), []
    workers = [threading.Thread(target=_traffic, args=(stack, "embed", stop, outcomes)) for _ in range(3)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    try:
        dep = _delete(stack, "embed", drain_s=10)
    finally:
        time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join()
    assert dep.status.state == S.DEPLOYMENT_STATE_DELETED, dep.status
    ok = [o for o in outcomes if o[0] == "ok"]
    refused = [o for o in outcomes if o[0] == "error"]
    assert ok, "no request succeeded before the undeploy"
    # Every request either finished or was refused as not found (by the gateway while draining, by
    # Triton once the model is gone): none was cut by the unload (UNAVAILABLE / INTERNAL).
    cut = [m for _, m in refused if "StatusCode.NOT_FOUND" not in m]
    assert not cut, cut[:3]
    with pytest.raises(grpc.RpcError) as err:
        _get(stack, "embed")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (stack.repository / "team-a--embed").exists()
    deadline = time.monotonic() + 30
    while _loaded(stack, "team-a--embed") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _loaded(stack, "team-a--embed")


def test_a_failed_load_reports_and_a_gateway_crash_resumes(stack: Stack, minilm):
    broken = stack.tmp / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    _register(stack, broken, "dep-broken", stack.alice)
    dep = _create(stack, "broken", d.DeploymentSpec(model=d.ModelRef(name="dep-broken", version=1)))
    assert dep.status.state == S.DEPLOYMENT_STATE_FAILED and dep.status.reason == "LoadFailed", dep.status
    assert dep.status.message
    with pytest.raises(Exception) as err:
        _embed(stack, "broken", "x")
    assert "not" in str(err.value).lower()
    _delete(stack, "broken")

    # kill -9 the gateway while a rollout runs; the restarted gateway finishes it.
    _create(stack, "resumed", _spec(1), wait=False)
    time.sleep(0.5)
    stack.gateway.stop(grace=0)  # SIGKILL: no shutdown hooks run
    restarted = stack.tmp / "restart"
    restarted.mkdir()
    stack.gateway, info = _start_gateway(restarted, stack.settings)  # type: ignore[attr-defined]
    stack.grpc_address = f"127.0.0.1:{info['grpc_port']}"
    dep = _wait(stack, "resumed", lambda x: x.status.state in (S.DEPLOYMENT_STATE_READY, S.DEPLOYMENT_STATE_FAILED))
    assert dep.status.state == S.DEPLOYMENT_STATE_READY, dep.status
    _, version = _embed(stack, "resumed", "after a crash")
    assert version == "1"
    _delete(stack, "resumed")
