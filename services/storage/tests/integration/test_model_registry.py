"""ModelRegistryService through a real in-process gRPC server (the platform's auth and error
interceptors) against a real nats-server: KV buckets for state, JetStream for the events.

Artifact records are written straight into the `artifacts` bucket, standing in for artifacts the
storage service has committed."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.storage.v1 import artifact_pb2, model_registry_pb2, model_registry_service_pb2_grpc
from mlmesh.api.storage.v1 import model_registry_service_pb2 as api
from mlmesh.common import events
from mlmesh.common.auth import generate_signing_key, mint_token, write_secret
from mlmesh.common.grpc_server import build_server, make_verifier
from mlmesh.common.kv import KvRepository
from mlmesh.storage.registry import KvArtifactCatalog, RegistryStore
from mlmesh.storage.registry_servicer import ModelRegistryServicer
from mlmesh.storage.settings import StorageSettings

pytestmark = pytest.mark.timeout(60)

C = grpc.StatusCode
TEXT_CLS = common_pb2.MODEL_TASK_TEXT_CLASSIFICATION


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Registry:
    stub: model_registry_service_pb2_grpc.ModelRegistryServiceStub
    js: object
    artifacts: KvRepository[artifact_pb2.Artifact]
    alice: tuple  # team-a developer
    viewer: tuple  # team-a, no role
    bob: tuple  # team-b developer
    servicer: ModelRegistryServicer

    async def artifact(self, team: str = "team-a", kind=artifact_pb2.ARTIFACT_KIND_MODEL) -> str:
        art = artifact_pb2.Artifact(
            name="weights", kind=kind, state=artifact_pb2.ARTIFACT_STATE_COMMITTED, tier=artifact_pb2.STORAGE_TIER_HOT
        )
        art.meta.id = f"a{uuid.uuid4().hex[:15]}"
        art.meta.team = team
        art.manifest.files.add(path="adapter_model.safetensors", size_bytes=10, sha256="0" * 64)
        await self.artifacts.create(art.meta.id, art)
        return art.meta.id

    async def register(self, name: str, artifact_id: str, who=None, aliases=(), request_id="", **fields):
        mv = model_registry_pb2.ModelVersion(
            name=name,
            artifact_id=artifact_id,
            weights_kind=fields.pop("weights_kind", model_registry_pb2.WEIGHTS_KIND_FULL),
            task=fields.pop("task", TEXT_CLS),
            **fields,
        )
        req = api.RegisterModelVersionRequest(model_version=mv, aliases=list(aliases), request_id=request_id)
        return (await self.stub.RegisterModelVersion(req, metadata=who or self.alice, timeout=10)).model_version

    async def set_alias(self, name: str, alias: str, version: int, who=None, expected: int = 0):
        req = api.SetAliasRequest(name=name, alias=alias, version=version, expected_current_version=expected)
        return await self.stub.SetAlias(req, metadata=who or self.alice, timeout=10)

    async def subscribe(self, name: str):
        """An ordered JetStream consumer of the model's events, from the start of the stream."""
        return await self.js.subscribe(f"mlmesh.models.{name}.>", ordered_consumer=True)


@pytest.fixture
async def reg(nats_server, tmp_path: Path):
    private, public = generate_signing_key()
    write_secret(tmp_path / "public.pem", public)
    settings = StorageSettings(
        nats_url=nats_server.url,
        nats_creds_file=nats_server.creds("storage"),
        auth_public_key_file=tmp_path / "public.pem",
        grpc_port=0,
        metrics_port=-1,
    )
    nc = await events.connect(nats_server.url, name="test-model-registry", **nats_server.client_options("storage"))
    js = nc.jetstream()  # the fixture bootstrapped every stream and bucket
    store = await RegistryStore.open(js)
    artifacts = await KvRepository.open(js, "artifacts", artifact_pb2.Artifact, "artifact")
    servicer = ModelRegistryServicer(
        store, events.EventPublisher(js, source="//mlmesh/storage"), KvArtifactCatalog(artifacts)
    )
    server = build_server(settings, make_verifier(settings))
    model_registry_service_pb2_grpc.add_ModelRegistryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Registry(
            stub=model_registry_service_pb2_grpc.ModelRegistryServiceStub(channel),
            js=js,
            artifacts=artifacts,
            alice=bearer(mint_token(private, subject="alice", team="team-a", roles=["developer"])),
            viewer=bearer(mint_token(private, subject="val", team="team-a", roles=[])),
            bob=bearer(mint_token(private, subject="bob", team="team-b", roles=["developer"])),
            servicer=servicer,
        )
    finally:
        await channel.close()
        await server.stop(1)
        await store.stop()
        await nc.close()


def model_name() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    out = {}
    for detail in rpc_status.from_call(err).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out.update({v.field: v.description for v in bad.field_violations})
    return out


async def next_events(sub, count: int, timeout: float = 10.0) -> list[events.Event]:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
        data_type = (
            events_pb2.ModelAliasChanged if msg.subject.endswith(".aliased") else events_pb2.ModelVersionRegistered
        )
        got.append(events.decode_event(msg, data_type))
    return got


async def no_more_events(sub, wait: float = 0.5) -> None:
    with pytest.raises(Exception) as err:  # nats' TimeoutError
        await sub.next_msg(timeout=wait)
    assert "Timeout" in type(err.value).__name__


# --- tests -------------------------------------------------------------------------------------------


async def test_concurrent_registrations_get_distinct_versions(reg: Registry):
    name = model_name()
    sub = await reg.subscribe(name)
    arts = [await reg.artifact() for _ in range(4)]
    got = await asyncio.gather(*(reg.register(name, a, metrics={"acc": 0.9}) for a in arts))
    assert sorted(v.version for v in got) == [1, 2, 3, 4]
    assert [v.artifact_id for v in got] == arts
    assert all(v.team == "team-a" and v.create_time.seconds > 0 for v in got)

    model = (await reg.stub.GetModel(api.GetModelRequest(name=name), metadata=reg.viewer, timeout=5)).model
    assert (model.team, model.task, model.latest_version, model.version_count) == ("team-a", TEXT_CLS, 4, 4)
    assert model.revision > 0

    evs = await next_events(sub, 4)
    assert sorted(e.nats_subject for e in evs) == [f"mlmesh.models.{name}.{v}.registered" for v in (1, 2, 3, 4)]
    for e in evs:
        mv = e.data.model_version
        assert e.type == "mlmesh.events.v1.ModelVersionRegistered"
        assert e.id == f"{name}.{mv.version}.registered"
        assert e.nats_subject == f"mlmesh.models.{name}.{mv.version}.registered"
        assert (mv.name, mv.team, mv.metrics["acc"]) == (name, "team-a", pytest.approx(0.9))
        assert mv.artifact_id == {v.version: v.artifact_id for v in got}[mv.version]
    await sub.unsubscribe()


async def test_alias_moves_atomically_with_events_in_order(reg: Registry):
    name = model_name()
    v1 = await reg.register(name, await reg.artifact())
    v2 = await reg.register(name, await reg.artifact(), description="second")
    sub = await reg.subscribe(name)
    await next_events(sub, 2)  # the two registrations

    first = await reg.set_alias(name, "prod", v1.version)
    assert (first.model_version.version, first.previous_version) == (1, 0)
    assert list(first.model_version.aliases) == ["prod"]
    second = await reg.set_alias(name, "prod", v2.version, expected=1)
    assert (second.model_version.version, second.previous_version) == (2, 1)

    moved = await next_events(sub, 2)
    assert [e.nats_subject for e in moved] == [f"mlmesh.models.{name}.1.aliased", f"mlmesh.models.{name}.2.aliased"]
    assert [(e.data.alias, e.data.version, e.data.previous_version) for e in moved] == [("prod", 1, 0), ("prod", 2, 1)]
    assert all(e.data.name == name and e.data.team == "team-a" and e.data.change_time.seconds > 0 for e in moved)
    assert moved[0].id != moved[1].id

    resolved = (
        await reg.stub.ResolveAlias(api.ResolveAliasRequest(name=name, alias="prod"), metadata=reg.viewer, timeout=5)
    ).model_version
    assert (resolved.version, resolved.description, list(resolved.aliases)) == (2, "second", ["prod"])
    old = await reg.stub.GetModelVersion(api.GetModelVersionRequest(name=name, version=1), metadata=reg.viewer)
    assert list(old.model_version.aliases) == []
    model = (await reg.stub.GetModel(api.GetModelRequest(name=name), metadata=reg.alice)).model
    assert dict(model.aliases) == {"prod": 2}

    # A guarded promotion that lost the race is refused and moves nothing.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.set_alias(name, "prod", 1, expected=1)
    assert err.value.code() == C.FAILED_PRECONDITION
    # Pointing it where it already points changes nothing and emits nothing.
    same = await reg.set_alias(name, "prod", 2)
    assert (same.model_version.version, same.previous_version) == (2, 2)
    await no_more_events(sub)

    # Deleting the alias: event on the version it pointed at, version 0.
    deleted = await reg.stub.DeleteAlias(api.DeleteAliasRequest(name=name, alias="prod"), metadata=reg.alice)
    assert deleted.previous_version == 2
    (gone,) = await next_events(sub, 1)
    assert gone.nats_subject == f"mlmesh.models.{name}.2.aliased"
    assert (gone.data.alias, gone.data.version, gone.data.previous_version) == ("prod", 0, 2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.stub.ResolveAlias(api.ResolveAliasRequest(name=name, alias="prod"), metadata=reg.alice)
    assert err.value.code() == C.NOT_FOUND
    await sub.unsubscribe()


async def test_concurrent_alias_moves_are_serialized(reg: Registry):
    name = model_name()
    for _ in range(3):
        await reg.register(name, await reg.artifact())
    await reg.set_alias(name, "prod", 1)
    # Three promotions all guarded on "prod is at 1": exactly one wins.
    results = await asyncio.gather(
        *(reg.set_alias(name, "prod", v, expected=1) for v in (2, 3, 2)), return_exceptions=True
    )
    wins = [r for r in results if not isinstance(r, Exception)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(wins), len(losses)) == (1, 2)
    assert wins[0].previous_version == 1
    assert all(e.code() == C.FAILED_PRECONDITION for e in losses)
    model = (await reg.stub.GetModel(api.GetModelRequest(name=name), metadata=reg.alice)).model
    assert model.aliases["prod"] == wins[0].model_version.version


async def test_register_with_aliases_and_adapter_over_base_model(reg: Registry):
    base = model_name()
    await reg.register(base, await reg.artifact(), aliases=["prod"])
    sub = await reg.subscribe(base)
    (registered, aliased) = await next_events(sub, 2)
    assert list(registered.data.model_version.aliases) == ["prod"]
    assert (aliased.data.alias, aliased.data.version, aliased.data.previous_version) == ("prod", 1, 0)
    await sub.unsubscribe()

    adapter = model_name()
    dataset = await reg.artifact(kind=artifact_pb2.ARTIFACT_KIND_DATASET)
    mv = await reg.register(
        adapter,
        await reg.artifact(),
        weights_kind=model_registry_pb2.WEIGHTS_KIND_ADAPTER,
        base_model=f"model://{base}@prod",
        adapter_type="lora",
        framework="peft",
        lineage=model_registry_pb2.Lineage(job_id="j123", dataset_artifact_id=dataset, code_version="git:abc123"),
        properties={"num_labels": "2"},
        aliases=["canary"],
    )
    assert (mv.version, mv.base_model, list(mv.aliases)) == (1, f"model://{base}@prod", ["canary"])
    got = (await reg.stub.GetModelVersion(api.GetModelVersionRequest(name=adapter), metadata=reg.alice)).model_version
    assert (got.version, got.lineage.dataset_artifact_id, got.properties["num_labels"]) == (1, dataset, "2")


async def test_another_team_gets_not_found(reg: Registry):
    name = model_name()
    await reg.register(name, await reg.artifact())
    await reg.set_alias(name, "prod", 1)
    calls = {
        "GetModel": reg.stub.GetModel(api.GetModelRequest(name=name), metadata=reg.bob),
        "GetModelVersion": reg.stub.GetModelVersion(api.GetModelVersionRequest(name=name, version=1), metadata=reg.bob),
        "ListModelVersions": reg.stub.ListModelVersions(api.ListModelVersionsRequest(name=name), metadata=reg.bob),
        "ResolveAlias": reg.stub.ResolveAlias(api.ResolveAliasRequest(name=name, alias="prod"), metadata=reg.bob),
        "SetAlias": reg.set_alias(name, "prod", 1, who=reg.bob),
        "DeleteAlias": reg.stub.DeleteAlias(api.DeleteAliasRequest(name=name, alias="prod"), metadata=reg.bob),
        "DeleteModelVersion": reg.stub.DeleteModelVersion(
            api.DeleteModelVersionRequest(name=name, version=1), metadata=reg.bob
        ),
    }
    for rpc, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == C.NOT_FOUND, rpc
        assert "team-a" not in (err.value.details() or ""), rpc
    listed = await reg.stub.ListModels(api.ListModelsRequest(), metadata=reg.bob)
    assert name not in [m.name for m in listed.models]
    mine = await reg.stub.ListModels(api.ListModelsRequest(), metadata=reg.alice)
    assert name in [m.name for m in mine.models]
    # Names are global: team-b cannot register a version of team-a's model.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.register(name, await reg.artifact(team="team-b"), who=reg.bob)
    assert err.value.code() == C.ALREADY_EXISTS
    # The alias did not move.
    model = (await reg.stub.GetModel(api.GetModelRequest(name=name), metadata=reg.alice)).model
    assert dict(model.aliases) == {"prod": 1} and model.version_count == 1


async def test_invalid_input_names_every_field(reg: Registry):
    art = await reg.artifact()
    mv = model_registry_pb2.ModelVersion(
        name="Bad Name!",
        artifact_id=art,
        weights_kind=model_registry_pb2.WEIGHTS_KIND_FULL,
        base_model="model://x@prod",  # not allowed for full weights
        framework="Not A Framework",
        metrics={"acc": float("nan")},
        labels={"ok": "x" * 64},
    )
    req = api.RegisterModelVersionRequest(model_version=mv, aliases=["PROD", "7"], request_id="bad id")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.stub.RegisterModelVersion(req, metadata=reg.alice, timeout=5)
    assert err.value.code() == C.INVALID_ARGUMENT
    assert set(violations(err.value)) == {
        "model_version.name",
        "model_version.base_model",
        "model_version.framework",
        "model_version.task",
        "model_version.metrics[acc]",
        "model_version.labels[ok]",
        "aliases[0]",
        "aliases[1]",
        "request_id",
    }

    name = model_name()
    await reg.register(name, art)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.set_alias(name, "Prod!", 1)
    assert err.value.code() == C.INVALID_ARGUMENT and set(violations(err.value)) == {"alias"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.set_alias("NO", "prod", 0)
    assert set(violations(err.value)) == {"name", "version"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.stub.GetModel(api.GetModelRequest(name="a.b"), metadata=reg.alice)
    assert err.value.code() == C.INVALID_ARGUMENT and set(violations(err.value)) == {"name"}
    # An adapter needs its base model; a later version must keep the model's task.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.register(name, art, weights_kind=model_registry_pb2.WEIGHTS_KIND_ADAPTER)
    assert set(violations(err.value)) == {"model_version.base_model"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.register(name, art, task=common_pb2.MODEL_TASK_EMBEDDING)
    assert set(violations(err.value)) == {"model_version.task"}
    # A SetAlias to a version that does not exist.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.set_alias(name, "prod", 9)
    assert err.value.code() == C.NOT_FOUND


async def test_unknown_or_foreign_artifact_is_invalid_argument(reg: Registry):
    name = model_name()
    cases = {
        "missing": "a" + "0" * 15,
        "other team": await reg.artifact(team="team-b"),
        "not a model": await reg.artifact(kind=artifact_pb2.ARTIFACT_KIND_CHECKPOINT),
    }
    for case, artifact_id in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await reg.register(name, artifact_id)
        assert err.value.code() == C.INVALID_ARGUMENT, case
        assert set(violations(err.value)) == {"model_version.artifact_id"}, case
    with pytest.raises(grpc.aio.AioRpcError) as err:
        lineage = model_registry_pb2.Lineage(dataset_artifact_id="a" + "1" * 15)
        await reg.register(name, await reg.artifact(), lineage=lineage)
    assert set(violations(err.value)) == {"model_version.lineage.dataset_artifact_id"}
    # Nothing was registered, so the name is still free.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.stub.GetModel(api.GetModelRequest(name=name), metadata=reg.alice)
    assert err.value.code() == C.NOT_FOUND


async def test_delete_of_an_aliased_version_fails_and_unaliased_deletes(reg: Registry):
    name = model_name()
    art = await reg.artifact()
    await reg.register(name, art)
    await reg.register(name, await reg.artifact())
    assert (await reg.artifacts.get(art)).value.pinned
    await reg.set_alias(name, "prod", 1)
    await reg.set_alias(name, "canary", 1)
    delete = api.DeleteModelVersionRequest(name=name, version=1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.stub.DeleteModelVersion(delete, metadata=reg.alice)
    assert err.value.code() == C.FAILED_PRECONDITION
    assert "canary, prod" in err.value.details()
    assert await reg.stub.GetModelVersion(api.GetModelVersionRequest(name=name, version=1), metadata=reg.alice)

    with pytest.raises(grpc.aio.AioRpcError) as err:  # reading is not enough to delete
        await reg.stub.DeleteModelVersion(delete, metadata=reg.viewer)
    assert err.value.code() == C.PERMISSION_DENIED

    await reg.set_alias(name, "prod", 2)
    await reg.stub.DeleteAlias(api.DeleteAliasRequest(name=name, alias="canary"), metadata=reg.alice)
    await reg.stub.DeleteModelVersion(delete, metadata=reg.alice)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.stub.GetModelVersion(api.GetModelVersionRequest(name=name, version=1), metadata=reg.alice)
    assert err.value.code() == C.NOT_FOUND
    assert not (await reg.artifacts.get(art)).value.pinned  # no version references it any more
    model = (await reg.stub.GetModel(api.GetModelRequest(name=name), metadata=reg.alice)).model
    assert (model.version_count, model.latest_version) == (1, 2)
    # Numbers are never reused.
    assert (await reg.register(name, await reg.artifact())).version == 3


async def test_request_id_makes_registration_idempotent(reg: Registry):
    name = model_name()
    art = await reg.artifact()
    sub = await reg.subscribe(name)
    first, again = await asyncio.gather(
        reg.register(name, art, request_id="req-1"), reg.register(name, art, request_id="req-1")
    )
    assert first.version == again.version
    third = await reg.register(name, art, request_id="req-1")
    assert third.version == first.version
    (event,) = await next_events(sub, 1)
    assert event.data.model_version.version == first.version
    await no_more_events(sub)  # replays publish the same event id: de-duplicated
    versions = await reg.stub.ListModelVersions(api.ListModelVersionsRequest(name=name), metadata=reg.alice)
    assert [v.version for v in versions.model_versions] == [first.version]
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the same key for something else
        await reg.register(name, await reg.artifact(), request_id="req-1")
    assert err.value.code() == C.ALREADY_EXISTS
    await sub.unsubscribe()


async def test_roles_and_paging(reg: Registry):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.register(model_name(), await reg.artifact(), who=reg.viewer)
    assert err.value.code() == C.PERMISSION_DENIED

    name = model_name()
    for _ in range(5):
        await reg.register(name, await reg.artifact())
    seen, token = [], ""
    while True:
        page = await reg.stub.ListModelVersions(
            api.ListModelVersionsRequest(name=name, page_size=2, page_token=token), metadata=reg.viewer
        )
        seen += [v.version for v in page.model_versions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]  # newest first
    latest = await reg.stub.GetModelVersion(api.GetModelVersionRequest(name=name, version=0), metadata=reg.viewer)
    assert latest.model_version.version == 5


async def test_delete_racing_an_alias_move_puts_the_version_back(reg: Registry, monkeypatch):
    """The interleaving a lock-free delete must survive: a SetAlias that saw the version before the
    delete removed it commits its alias just after. The delete notices on its record CAS, restores
    the version and refuses, so the alias never points at a deleted version."""
    name = model_name()
    await reg.register(name, await reg.artifact())
    store = reg.servicer.registry.store
    real_delete = store.versions.delete

    async def delete_then_alias_lands(key, revision=None):
        await real_delete(key, revision)
        # The racing SetAlias's compare-and-set lands now.
        await store.records.mutate(name, lambda rec: (rec.aliases.__setitem__("prod", 1), rec)[1])

    monkeypatch.setattr(store.versions, "delete", delete_then_alias_lands)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reg.stub.DeleteModelVersion(api.DeleteModelVersionRequest(name=name, version=1), metadata=reg.alice)
    assert err.value.code() == C.FAILED_PRECONDITION
    resolved = await reg.stub.ResolveAlias(api.ResolveAliasRequest(name=name, alias="prod"), metadata=reg.alice)
    assert resolved.model_version.version == 1 and list(resolved.model_version.aliases) == ["prod"]
    assert (await store.versions.get(f"{name}.1")).value.artifact_id == resolved.model_version.artifact_id
