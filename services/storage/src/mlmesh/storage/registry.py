"""The model registry: named models, their numbered immutable versions, and movable aliases.

State (JetStream KV, three buckets; every write compare-and-set or create-if-absent):

- `models`         `<name>.<version>` -> ModelVersion. Immutable once written; deleted on
                   DeleteModelVersion. Its `aliases` field is never stored: it is filled in on read
                   from the model record, so a version record never needs rewriting.
- `model_records`  `<name>` -> Model. The per-model record: owning team, task, the version counter
                   (`latest_version` as stored = the highest number ever reserved) and the alias map.
- `model_requests` `<name>.<request_id>` -> ModelVersion holding only name/version/team: the
                   idempotency pointer of RegisterModelVersion (expires after contracts.MODEL_REQUEST_TTL_S).

Version numbers: a registration first reserves `latest_version + 1` with one CAS on the model
record, so two concurrent registrations never get the same number; a registration that dies after
reserving leaves a gap, never a duplicate. Numbers are never reused, even after a delete.

Aliases live in the model record's alias map, so moving an alias is one CAS write of one record:
readers see the old or the new target, never neither, and `expected_current_version` is checked
inside that same CAS. (A key per alias would also be atomic per alias, but then "aliases of this
model" and "no alias points at the version being deleted" would span many keys.)

Deleting a version that an alias points at is FAILED_PRECONDITION. SetAlias checks, from KV, that
the version exists before its CAS on the model record; DeleteModelVersion deletes the version key
and then CASes the model record at the revision where it saw no alias on that version. If that CAS
loses to a SetAlias that just pointed an alias at the version, the delete puts the version back and
fails. So an alias never ends up pointing at a deleted version (for at most that short window).

Events go out after the KV write: ModelVersionRegistered on `mlmesh.models.<name>.<version>.registered`
(event id `<name>.<version>.registered`) and ModelAliasChanged on `mlmesh.models.<name>.<version>.aliased`
(event id `<name>.<alias>.<record revision>.aliased`), so a re-publish is de-duplicated by JetStream.
A registration retried with its request_id after a failed publish publishes the same event again.

Reads (Get/List/Resolve) come from in-memory KvIndex mirrors of `models` and `model_records`, with
a KV read where the mirror has not caught up yet; checks that guard writes read KV directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nats.js import JetStreamContext

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.storage.v1 import artifact_pb2, model_registry_pb2
from mlmesh.common import contracts
from mlmesh.common.auth import ROLE_DEVELOPER, Identity
from mlmesh.common.clock import now_ts
from mlmesh.common.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TooLarge,
    Unavailable,
)
from mlmesh.common.events import EventPublisher
from mlmesh.common.kv import KvRepository, open_bucket
from mlmesh.common.kv_index import KvIndex

log = logging.getLogger("mlmesh.storage.registry")

ModelVersion = model_registry_pb2.ModelVersion
Model = model_registry_pb2.Model

VERSIONS_BUCKET = contracts.MODEL_VERSIONS
RECORDS_BUCKET = contracts.MODEL_RECORDS
REQUESTS_BUCKET = contracts.MODEL_REQUESTS  # expires after contracts.MODEL_REQUEST_TTL_S
REGISTRY_BUCKETS = (VERSIONS_BUCKET, RECORDS_BUCKET, REQUESTS_BUCKET)

NAME = re.compile(r"[a-z0-9_-]{1,63}")
ARTIFACT_ID = re.compile(r"[a-z0-9_-]{1,63}")
LINEAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
FRAMEWORK = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,62}")
METRIC_KEY = re.compile(r"[A-Za-z0-9_./-]{1,128}")
PROPERTY_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")
LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
HF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
RESERVED_ALIASES = frozenset({"latest"})  # "model://x@latest" means the newest version

MAX_VERSION_BYTES = 1 << 20
MAX_MAP_ENTRIES = 64
MAX_LABEL_VALUE = 63
MAX_PROPERTY_VALUE = 64 << 10
MAX_PROPERTIES_BYTES = 256 << 10
MAX_DESCRIPTION = 4096
MAX_CODE_VERSION = 256
MAX_BASE_MODEL = 256
MAX_ALIASES_PER_REQUEST = 16
MAX_ALIASES_PER_MODEL = 64
CAS_ATTEMPTS = 10

FULL = model_registry_pb2.WEIGHTS_KIND_FULL
ADAPTER = model_registry_pb2.WEIGHTS_KIND_ADAPTER
_TASKS = frozenset(v for v in common_pb2.ModelTask.values() if v != common_pb2.MODEL_TASK_UNSPECIFIED)


def version_key(name: str, version: int) -> str:
    return f"{name}.{version}"


def registered_subject(name: str, version: int) -> str:
    return contracts.model_subject(name, str(version), contracts.MODEL_REGISTERED)


def aliased_subject(name: str, version: int) -> str:
    return contracts.model_subject(name, str(version), contracts.MODEL_ALIASED)


# --- validation ------------------------------------------------------------------------------------


def check_name(value: str, field: str, bad: dict[str, str]) -> None:
    if not NAME.fullmatch(value or ""):
        bad[field] = "must be 1-63 characters of [a-z0-9_-]"


def check_alias(value: str, field: str, bad: dict[str, str]) -> None:
    if not NAME.fullmatch(value or ""):
        bad[field] = "must be 1-63 characters of [a-z0-9_-]"
    elif value.isdigit():
        bad[field] = "must not be a number (it would read as a version)"
    elif value in RESERVED_ALIASES:
        bad[field] = f"{value!r} is reserved"


def raise_if(bad: dict[str, str], what: str) -> None:
    if bad:
        raise InvalidArgument(f"invalid {what}: {len(bad)} problem(s): {', '.join(sorted(bad))}", bad)


def _check_map(
    entries, field: str, bad: dict[str, str], key_re: re.Pattern, key_rule: str, value_check: Callable
) -> None:
    if len(entries) > MAX_MAP_ENTRIES:
        bad[field] = f"at most {MAX_MAP_ENTRIES} entries"
        return
    for key, value in entries.items():
        if not key_re.fullmatch(key):
            bad[f"{field}[{key[:40]}]"] = key_rule
        else:
            problem = value_check(value)
            if problem:
                bad[f"{field}[{key}]"] = problem


def parse_base_model(ref: str) -> tuple[str, str, str]:
    """("model", name, version-or-alias) | ("artifact", id, "") | ("builtin", name, "") | ("name", ref, "");
    ValueError if malformed. `builtin:<name>` is a model the trainer ships (e.g. builtin:minilm)."""
    if ref.startswith("builtin:"):
        name = ref[len("builtin:") :]
        if not NAME.fullmatch(name):
            raise ValueError("builtin references are builtin:<name>")
        return "builtin", name, ""
    if ref.startswith("model://"):
        name, sep, target = ref[len("model://") :].partition("@")
        target = target if sep else "latest"
        if not NAME.fullmatch(name) or not (target.isdigit() or NAME.fullmatch(target)) or target == "0":
            raise ValueError("model references are model://<name>@<version|alias>")
        return "model", name, target
    if ref.startswith("artifact://"):
        art = ref[len("artifact://") :]
        if not ARTIFACT_ID.fullmatch(art):
            raise ValueError("artifact references are artifact://<artifact id>")
        return "artifact", art, ""
    if "://" in ref or not HF_NAME.fullmatch(ref):
        raise ValueError(
            "must be model://<name>@<version|alias>, artifact://<id>, builtin:<name> or a model name like org/model"
        )
    return "name", ref, ""


def validate_registration(mv: ModelVersion, aliases, request_id: str) -> None:
    """Every problem of a RegisterModelVersion request at once, as INVALID_ARGUMENT field violations."""
    if mv.ByteSize() > MAX_VERSION_BYTES:
        raise TooLarge(f"model_version is {mv.ByteSize()} bytes; the limit is {MAX_VERSION_BYTES}")
    f = "model_version."
    bad: dict[str, str] = {}
    check_name(mv.name, f + "name", bad)
    if mv.team:
        check_name(mv.team, f + "team", bad)
    if not ARTIFACT_ID.fullmatch(mv.artifact_id or ""):
        bad[f + "artifact_id"] = "is required: an artifact id of 1-63 characters of [a-z0-9_-]"
    if mv.weights_kind not in (FULL, ADAPTER):
        bad[f + "weights_kind"] = "is required: WEIGHTS_KIND_FULL or WEIGHTS_KIND_ADAPTER"
    if mv.weights_kind == ADAPTER:
        if not mv.base_model:
            bad[f + "base_model"] = "is required for an adapter"
        if mv.adapter_type and not NAME.fullmatch(mv.adapter_type):
            bad[f + "adapter_type"] = "must be 1-63 characters of [a-z0-9_-], e.g. lora"
    elif mv.weights_kind == FULL:
        if mv.base_model:
            bad[f + "base_model"] = "must be empty for full weights"
        if mv.adapter_type:
            bad[f + "adapter_type"] = "must be empty for full weights"
    if mv.base_model:
        if len(mv.base_model) > MAX_BASE_MODEL:
            bad[f + "base_model"] = f"at most {MAX_BASE_MODEL} characters"
        else:
            try:
                parse_base_model(mv.base_model)
            except ValueError as exc:
                bad[f + "base_model"] = str(exc)
    if mv.framework and not FRAMEWORK.fullmatch(mv.framework):
        bad[f + "framework"] = "must be 1-63 characters of [a-z0-9_.+-], e.g. transformers"
    if mv.task not in _TASKS:
        bad[f + "task"] = "is required: a MODEL_TASK_* value"
    if len(mv.description) > MAX_DESCRIPTION:
        bad[f + "description"] = f"at most {MAX_DESCRIPTION} characters"

    def metric(v: float) -> str:
        return "" if math.isfinite(v) else "must be a finite number"

    def label(v: str) -> str:
        return "" if len(v) <= MAX_LABEL_VALUE else f"label values are at most {MAX_LABEL_VALUE} characters"

    def prop(v: str) -> str:
        return "" if len(v) <= MAX_PROPERTY_VALUE else f"at most {MAX_PROPERTY_VALUE} characters"

    _check_map(mv.metrics, f + "metrics", bad, METRIC_KEY, "metric names are 1-128 of [A-Za-z0-9_./-]", metric)
    _check_map(mv.labels, f + "labels", bad, LABEL_KEY, "label keys are [prefix/]name of letters, digits, -_.", label)
    _check_map(mv.properties, f + "properties", bad, PROPERTY_KEY, "property keys are 1-128 of [A-Za-z0-9_.-]", prop)
    if sum(len(k) + len(v) for k, v in mv.properties.items()) > MAX_PROPERTIES_BYTES:
        bad[f + "properties"] = f"at most {MAX_PROPERTIES_BYTES} characters in all"
    lin = mv.lineage
    for name in ("job_id", "run_id"):
        value = getattr(lin, name)
        if value and not LINEAGE_ID.fullmatch(value):
            bad[f"{f}lineage.{name}"] = "must be 1-128 characters of [A-Za-z0-9_.:-]"
    for name in ("dataset_artifact_id", "checkpoint_artifact_id"):
        value = getattr(lin, name)
        if value and not ARTIFACT_ID.fullmatch(value):
            bad[f"{f}lineage.{name}"] = "must be an artifact id of 1-63 characters of [a-z0-9_-]"
    if len(lin.code_version) > MAX_CODE_VERSION or not lin.code_version.isprintable():
        bad[f + "lineage.code_version"] = f"at most {MAX_CODE_VERSION} printable characters"
    if len(aliases) > MAX_ALIASES_PER_REQUEST:
        bad["aliases"] = f"at most {MAX_ALIASES_PER_REQUEST}"
    else:
        for i, alias in enumerate(aliases):
            check_alias(alias, f"aliases[{i}]", bad)
        if len(set(aliases)) != len(aliases):
            bad["aliases"] = "must not repeat an alias"
    if request_id:
        check_name(request_id, "request_id", bad)
    raise_if(bad, "model version")


# --- the artifact catalog, as the registry sees it -------------------------------------------------


class ArtifactCatalog(Protocol):
    """What the registry needs from the artifact store."""

    async def get(self, artifact_id: str) -> artifact_pb2.Artifact | None:
        """The artifact record, or None if there is none."""

    async def set_pinned(self, artifact_id: str, pinned: bool) -> None:
        """Pin (retention may not delete it) or unpin an artifact; a missing one is ignored."""


class KvArtifactCatalog:
    """The artifact catalog read straight from the `artifacts` KV bucket (records keyed by id).

    With `pin=True` it also sets `Artifact.pinned` (CAS) when a version starts or stops referencing
    an artifact; pass `pin=False` where the artifact store owns pinning itself."""

    def __init__(self, repo: KvRepository[artifact_pb2.Artifact], *, pin: bool = True):
        self.repo = repo
        self.pin = pin

    async def get(self, artifact_id: str) -> artifact_pb2.Artifact | None:
        try:
            return (await self.repo.get(artifact_id)).value
        except NotFound:
            return None

    async def set_pinned(self, artifact_id: str, pinned: bool) -> None:
        if not self.pin:
            return

        def change(a: artifact_pb2.Artifact) -> artifact_pb2.Artifact | None:
            if a.pinned == pinned:
                return None
            a.pinned = pinned
            return a

        with contextlib.suppress(NotFound):
            await self.repo.mutate(artifact_id, change)


# --- KV store --------------------------------------------------------------------------------------


class RegistryStore:
    """The registry's KV repositories and their in-memory mirrors.

    `versions` also keeps `by_name[name][version]`, so a model's versions are found without a scan."""

    def __init__(
        self,
        versions: KvRepository[ModelVersion],
        records: KvRepository[Model],
        requests: KvRepository[ModelVersion],
    ):
        self.versions = versions
        self.records = records
        self.requests = requests
        self.version_index: KvIndex[ModelVersion] = KvIndex(versions, lambda _m, _r: None)
        self.record_index: KvIndex[Model] = KvIndex(records)
        self.by_name: dict[str, dict[int, ModelVersion]] = {}
        self.version_index.subscribe(self._on_version)

    @classmethod
    async def open(cls, js: JetStreamContext) -> RegistryStore:
        """Open (creating on first use) the three buckets and load the mirrors."""
        versions = KvRepository(await open_bucket(js, VERSIONS_BUCKET), ModelVersion, "model version")
        records = KvRepository(await open_bucket(js, RECORDS_BUCKET), Model, "model")
        requests = KvRepository(await open_bucket(js, REQUESTS_BUCKET), ModelVersion, "request")
        store = cls(versions, records, requests)
        await store.start()
        return store

    async def start(self) -> None:
        await self.record_index.start()
        await self.version_index.start()

    async def stop(self) -> None:
        await self.version_index.stop()
        await self.record_index.stop()

    def _on_version(self, before: ModelVersion | None, after: ModelVersion | None) -> None:
        if after is not None:
            self.by_name.setdefault(after.name, {})[after.version] = after
        elif before is not None:
            versions = self.by_name.get(before.name, {})
            versions.pop(before.version, None)
            if not versions:
                self.by_name.pop(before.name, None)

    def live_versions(self, name: str) -> dict[int, ModelVersion]:
        return self.by_name.get(name, {})


# --- the registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AliasMove:
    alias: str
    version: int  # 0 when deleted
    previous: int  # 0 when new


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))


class ModelRegistry:
    def __init__(self, store: RegistryStore, publisher: EventPublisher, artifacts: ArtifactCatalog):
        self.store = store
        self.publisher = publisher
        self.artifacts = artifacts

    # --- reads ------------------------------------------------------------------------------------

    async def _record(self, name: str) -> Model | None:
        """The model record from the mirror, or from KV if the mirror has not seen it yet."""
        rec = self.store.record_index.items.get(name)
        if rec is not None:
            return rec
        try:
            got = await self.store.records.get(name)
        except NotFound:
            return None
        got.value.revision = got.revision
        return got.value

    async def visible_model(self, name: str, ident: Identity) -> Model:
        bad: dict[str, str] = {}
        check_name(name, "name", bad)
        raise_if(bad, "request")
        rec = await self._record(name)
        if rec is None or not ident.can_access(rec.team):
            raise NotFound(f"model {name} not found")
        return rec

    def _present_version(self, mv: ModelVersion, rec: Model) -> ModelVersion:
        out = ModelVersion()
        out.CopyFrom(mv)
        out.ClearField("aliases")
        out.aliases.extend(sorted(a for a, v in rec.aliases.items() if v == mv.version))
        return out

    def present_model(self, rec: Model) -> Model:
        out = Model()
        out.CopyFrom(rec)
        live = self.store.live_versions(rec.name)
        out.version_count = len(live)
        out.latest_version = max(live, default=0)
        return out

    async def _version(self, name: str, version: int) -> ModelVersion | None:
        mv = self.store.live_versions(name).get(version)
        if mv is not None:
            return mv
        try:
            return (await self.store.versions.get(version_key(name, version))).value
        except NotFound:
            return None

    async def get_version(self, ident: Identity, name: str, version: int) -> ModelVersion:
        rec = await self.visible_model(name, ident)
        if version < 0:
            raise InvalidArgument.field("version", "must be a version number, or 0 for the latest")
        if version == 0:
            version = max(self.store.live_versions(name), default=0)
        mv = await self._version(name, version) if version else None
        if mv is None:
            raise NotFound(f"model version {name}:{version or 'latest'} not found")
        return self._present_version(mv, rec)

    async def get_model(self, ident: Identity, name: str) -> Model:
        return self.present_model(await self.visible_model(name, ident))

    def list_models(self, team: str, task: int) -> list[Model]:
        rows = [m for m in self.store.record_index.items.values() if m.team == team and (not task or m.task == task)]
        return [self.present_model(m) for m in sorted(rows, key=lambda m: m.name)]

    async def list_versions(self, ident: Identity, name: str) -> list[ModelVersion]:
        """Newest first."""
        rec = await self.visible_model(name, ident)
        live = self.store.live_versions(name)
        return [self._present_version(live[v], rec) for v in sorted(live, reverse=True)]

    async def resolve(self, ident: Identity, name: str, alias: str) -> ModelVersion:
        bad: dict[str, str] = {}
        check_name(name, "name", bad)
        check_name(alias, "alias", bad)
        raise_if(bad, "request")
        rec = await self.visible_model(name, ident)
        version = rec.aliases.get(alias)
        if not version:
            raise NotFound(f"alias {alias} of model {name} not found")
        mv = await self._version(name, version)
        if mv is None:  # only inside DeleteModelVersion's put-back window
            raise NotFound(f"model version {name}:{version} not found")
        return self._present_version(mv, rec)

    # --- model record CAS ---------------------------------------------------------------------------

    async def _cas_record(
        self, name: str, change: Callable[[Model | None], Model | None]
    ) -> tuple[Model | None, Model | None]:
        """Read-modify-write of the model record from KV with CAS, retried on conflict. `change` gets
        a copy of the current record (None if absent) and returns the new one, or None for no write.
        Returns (before, after); after is the stored record with its new revision."""
        for attempt in range(CAS_ATTEMPTS):
            try:
                current = await self.store.records.get(name)
            except NotFound:
                current = None
            before = None
            if current is not None:
                before = Model()
                before.CopyFrom(current.value)
                before.revision = current.revision
            draft = None
            if before is not None:
                draft = Model()
                draft.CopyFrom(before)
            new = change(draft)
            if new is None:
                return before, before
            new.revision = 0  # never stored; set from KV on read
            try:
                if current is None:
                    revision = await self.store.records.create(name, new)
                else:
                    revision = await self.store.records.update(name, new, current.revision)
            except (Conflict, AlreadyExists):
                await _backoff(attempt)
                continue
            new.revision = revision
            stored = Model()
            stored.CopyFrom(new)
            self.store.record_index.apply(name, stored, revision)
            return before, new
        raise Conflict(f"model {name} kept changing; try again")

    # --- writes -----------------------------------------------------------------------------------

    async def register(
        self, ident: Identity, request: ModelVersion, aliases: list[str], request_id: str = ""
    ) -> ModelVersion:
        ident.require_role(ROLE_DEVELOPER)
        validate_registration(request, aliases, request_id)
        mv = ModelVersion()
        mv.CopyFrom(request)
        for server_field in ("version", "create_time", "aliases"):
            mv.ClearField(server_field)
        mv.team = mv.team or ident.team
        if mv.team != ident.team and not (ident.is_admin or ident.is_service):
            raise PermissionDenied(f"you may only register models for team {ident.team}")
        name = mv.name

        existing = await self._record(name)
        self._check_owner(existing, mv)
        await self._check_references(mv, ident)

        number = 0
        if request_id:
            try:
                number = (await self.store.requests.get(f"{name}.{request_id}")).value.version
            except NotFound:
                number = 0
        if not number:
            number = await self._reserve(mv)
            if request_id:
                pointer = ModelVersion(name=name, version=number, team=mv.team)
                try:
                    await self.store.requests.create(f"{name}.{request_id}", pointer)
                except AlreadyExists:
                    # The same request is being (or was) registered concurrently: follow its
                    # number; ours stays a gap.
                    number = (await self.store.requests.get(f"{name}.{request_id}")).value.version

        mv.version = number
        mv.create_time.CopyFrom(now_ts())
        await self.artifacts.set_pinned(mv.artifact_id, True)
        try:
            revision = await self.store.versions.create(version_key(name, number), mv)
        except AlreadyExists:
            # A replay of request_id (its version was written before) or its concurrent twin.
            stored = (await self.store.versions.get(version_key(name, number))).value
            if not request_id or stored.artifact_id != mv.artifact_id or stored.team != mv.team:
                raise AlreadyExists(
                    f"request_id {request_id} already registered {name}:{number} from another artifact"
                    if request_id
                    else f"model version {name}:{number} already exists"
                ) from None
            rec = await self._record(name)
            out = self._present_version(stored, rec) if rec is not None else stored
            await self._publish_registered(out)  # same event id: de-duplicated if it went out before
            return out
        self.store.version_index.apply(version_key(name, number), mv, revision)

        moves: list[AliasMove] = []

        def finalize(rec: Model | None) -> Model | None:
            moves.clear()
            if rec is None:  # cannot happen: _reserve created it
                raise Conflict(f"model {name} disappeared during registration")
            for alias in aliases:
                previous = rec.aliases.get(alias, 0)
                if previous != number:
                    moves.append(AliasMove(alias, number, previous))
                    rec.aliases[alias] = number
            if len(rec.aliases) > MAX_ALIASES_PER_MODEL:
                raise FailedPrecondition(f"model {name} would have more than {MAX_ALIASES_PER_MODEL} aliases")
            rec.update_time.CopyFrom(mv.create_time)
            return rec

        _, after = await self._cas_record(name, finalize)
        out = self._present_version(mv, after)
        log.info("model version registered", extra={"team": mv.team, "model": name, "version": number})
        await self._publish_registered(out)
        for move in moves:
            await self._publish_alias(after, move)
        return out

    def _check_owner(self, rec: Model | None, mv: ModelVersion) -> None:
        if rec is None:
            return
        if rec.team != mv.team:
            raise AlreadyExists(f"model name {mv.name} is already taken by another team")
        if rec.task and rec.task != mv.task:
            raise InvalidArgument.field(
                "model_version.task",
                f"must be {common_pb2.ModelTask.Name(rec.task)}, the task of model {mv.name}",
            )

    async def _check_references(self, mv: ModelVersion, ident: Identity) -> None:
        """The artifacts and base model a version names must exist and be the model team's."""
        bad: dict[str, str] = {}
        art = await self.artifacts.get(mv.artifact_id)
        if art is None or art.meta.team != mv.team:
            bad["model_version.artifact_id"] = f"no artifact {mv.artifact_id} in team {mv.team}"
        elif art.kind != artifact_pb2.ARTIFACT_KIND_MODEL:
            bad["model_version.artifact_id"] = "must be a model artifact (ARTIFACT_KIND_MODEL)"
        elif art.state == artifact_pb2.ARTIFACT_STATE_DELETING:
            bad["model_version.artifact_id"] = "the artifact is being deleted"
        for field, kind in (
            ("dataset_artifact_id", artifact_pb2.ARTIFACT_KIND_DATASET),
            ("checkpoint_artifact_id", artifact_pb2.ARTIFACT_KIND_CHECKPOINT),
        ):
            ref = getattr(mv.lineage, field)
            if not ref:
                continue
            other = await self.artifacts.get(ref)
            if other is None or other.meta.team != mv.team:
                bad[f"model_version.lineage.{field}"] = f"no artifact {ref} in team {mv.team}"
            elif other.kind != kind:
                bad[f"model_version.lineage.{field}"] = f"must be an {artifact_pb2.ArtifactKind.Name(kind)} artifact"
        if mv.base_model:
            kind, ref, target = parse_base_model(mv.base_model)
            if kind == "artifact":
                other = await self.artifacts.get(ref)
                if other is None or not ident.can_access(other.meta.team):
                    bad["model_version.base_model"] = f"no artifact {ref}"
            elif kind == "model":
                base = await self._record(ref)
                if base is None or not ident.can_access(base.team):
                    bad["model_version.base_model"] = f"no model {ref}"
                elif target != "latest" and not target.isdigit() and target not in base.aliases:
                    bad["model_version.base_model"] = f"model {ref} has no alias {target}"
                elif target.isdigit() and await self._version(ref, int(target)) is None:
                    bad["model_version.base_model"] = f"model {ref} has no version {target}"
        raise_if(bad, "model version")

    async def _reserve(self, mv: ModelVersion) -> int:
        """Reserve the next version number: one CAS on the model record (created on first use)."""

        def reserve(rec: Model | None) -> Model:
            if rec is None:
                now = now_ts()
                return Model(
                    name=mv.name, team=mv.team, task=mv.task, latest_version=1, create_time=now, update_time=now
                )
            self._check_owner(rec, mv)
            rec.latest_version += 1
            return rec

        _, after = await self._cas_record(mv.name, reserve)
        return after.latest_version

    async def set_alias(
        self, ident: Identity, name: str, alias: str, version: int, expected: int
    ) -> tuple[ModelVersion, int]:
        bad: dict[str, str] = {}
        check_name(name, "name", bad)
        check_alias(alias, "alias", bad)
        if version <= 0:
            bad["version"] = "must be a version number (1 or more)"
        if expected < 0:
            bad["expected_current_version"] = "must be 0 (any) or a version number"
        raise_if(bad, "request")
        await self.visible_model(name, ident)
        ident.require_role(ROLE_DEVELOPER)
        try:  # from KV, not the mirror: DeleteModelVersion's race check relies on it
            target = (await self.store.versions.get(version_key(name, version))).value
        except NotFound:
            raise NotFound(f"model version {name}:{version} not found") from None
        moves: list[AliasMove] = []

        def move(rec: Model | None) -> Model | None:
            moves.clear()
            if rec is None:
                raise NotFound(f"model {name} not found")
            current = rec.aliases.get(alias, 0)
            if expected and current != expected:
                raise FailedPrecondition(
                    f"alias {alias} points at {current or 'nothing'}, not {expected}; it was moved concurrently"
                )
            if current == version:
                return None
            if alias not in rec.aliases and len(rec.aliases) >= MAX_ALIASES_PER_MODEL:
                raise FailedPrecondition(f"model {name} already has {MAX_ALIASES_PER_MODEL} aliases")
            rec.aliases[alias] = version
            rec.update_time.CopyFrom(now_ts())
            moves.append(AliasMove(alias, version, current))
            return rec

        _, after = await self._cas_record(name, move)
        if not moves:  # already there
            return self._present_version(target, after), version
        await self._publish_alias(after, moves[0])
        log.info("alias moved", extra={"model": name, "alias": alias, "version": version, "team": after.team})
        return self._present_version(target, after), moves[0].previous

    async def delete_alias(self, ident: Identity, name: str, alias: str) -> int:
        bad: dict[str, str] = {}
        check_name(name, "name", bad)
        check_name(alias, "alias", bad)
        raise_if(bad, "request")
        await self.visible_model(name, ident)
        ident.require_role(ROLE_DEVELOPER)
        moves: list[AliasMove] = []

        def drop(rec: Model | None) -> Model | None:
            moves.clear()
            if rec is None or alias not in rec.aliases:
                raise NotFound(f"alias {alias} of model {name} not found")
            moves.append(AliasMove(alias, 0, rec.aliases.pop(alias)))
            rec.update_time.CopyFrom(now_ts())
            return rec

        _, after = await self._cas_record(name, drop)
        await self._publish_alias(after, moves[0])
        return moves[0].previous

    async def delete_version(self, ident: Identity, name: str, version: int) -> None:
        bad: dict[str, str] = {}
        check_name(name, "name", bad)
        if version <= 0:
            bad["version"] = "must be a version number (1 or more)"
        raise_if(bad, "request")
        await self.visible_model(name, ident)
        ident.require_role(ROLE_DEVELOPER)
        key = version_key(name, version)
        record = await self.store.records.get(name)
        _refuse_if_aliased(record.value, name, version)
        try:
            existing = await self.store.versions.get(key)
        except NotFound:
            raise NotFound(f"model version {name}:{version} not found") from None
        await self.store.versions.delete(key, revision=existing.revision)
        self.store.version_index.apply(key, None)
        # Touch the record at the revision that had no alias on the version. Losing that CAS to a
        # SetAlias that has just pointed an alias here means: put the version back and refuse.
        for attempt in range(CAS_ATTEMPTS):
            touched = Model()
            touched.CopyFrom(record.value)
            touched.update_time.CopyFrom(now_ts())
            touched.revision = 0
            try:
                revision = await self.store.records.update(name, touched, record.revision)
            except Conflict:
                record = await self.store.records.get(name)
                if version in record.value.aliases.values():
                    revision = await self.store.versions.create(key, existing.value)
                    self.store.version_index.apply(key, existing.value, revision)
                    _refuse_if_aliased(record.value, name, version)
                await _backoff(attempt)
                continue
            self.store.record_index.apply(name, touched, revision)
            break
        else:
            raise Conflict(f"model {name} kept changing while deleting version {version}; try again")
        log.info("model version deleted", extra={"model": name, "version": version, "team": record.value.team})
        artifact_id = existing.value.artifact_id
        still_used = any(
            mv.artifact_id == artifact_id for versions in self.store.by_name.values() for mv in versions.values()
        )
        if not still_used:
            await self.artifacts.set_pinned(artifact_id, False)

    # --- events -----------------------------------------------------------------------------------

    async def _publish_registered(self, mv: ModelVersion) -> None:
        await self._publish(
            registered_subject(mv.name, mv.version),
            events_pb2.ModelVersionRegistered(model_version=mv),
            ce_subject=f"{mv.name}:{mv.version}",
            event_id=f"{mv.name}.{mv.version}.registered",
        )

    async def _publish_alias(self, rec: Model, move: AliasMove) -> None:
        event = events_pb2.ModelAliasChanged(
            name=rec.name, team=rec.team, alias=move.alias, version=move.version, previous_version=move.previous
        )
        event.change_time.CopyFrom(rec.update_time)
        await self._publish(
            aliased_subject(rec.name, move.version or move.previous),
            event,
            ce_subject=f"{rec.name}@{move.alias}",
            event_id=f"{rec.name}.{move.alias}.{rec.revision}.aliased",
        )

    async def _publish(self, subject: str, data, *, ce_subject: str, event_id: str) -> None:
        try:
            await self.publisher.publish(subject, data, ce_subject=ce_subject, event_id=event_id)
        except Exception as exc:
            # The KV write stands; a registration retried with its request_id publishes again.
            log.warning("publishing %s failed: %s", subject, exc, exc_info=True)
            raise Unavailable(f"the change was saved but its event could not be published ({subject})") from None


def _refuse_if_aliased(rec: Model, name: str, version: int) -> None:
    pointing = sorted(a for a, v in rec.aliases.items() if v == version)
    if pointing:
        raise FailedPrecondition(
            f"model version {name}:{version} is the target of alias(es) {', '.join(pointing)}; move them first"
        )
