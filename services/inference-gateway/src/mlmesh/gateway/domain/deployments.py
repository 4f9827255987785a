"""Deployments as data: request validation, spec updates by field mask, the defaults a spec gets,
and what routing needs of a stored deployment. No I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping

from google.protobuf import field_mask_pb2

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.gateway.v1 import deployment_pb2 as d
from mlmesh.common.clock import valid_duration_s
from mlmesh.gateway.domain.model_repository import CONTRACT
from mlmesh.gateway.routing import Served

NAME = re.compile(r"[a-z0-9_-]{1,63}")
PARAM_KEY = re.compile(r"[A-Za-z0-9_.-]{1,63}")
MAX_INSTANCES = 64
MAX_BATCH = 1024
MAX_QUEUE_DELAY_S = 1.0
MAX_CACHE_TTL_S = 7 * 24 * 3600.0
MAX_LABELS = 32

S = d.DeploymentState
LIVE_STATES = (S.DEPLOYMENT_STATE_PENDING, S.DEPLOYMENT_STATE_LOADING, S.DEPLOYMENT_STATE_READY)
# States in which the rollout task owns the record (resumed after a crash).
ROLLING_STATES = (S.DEPLOYMENT_STATE_PENDING, S.DEPLOYMENT_STATE_LOADING, S.DEPLOYMENT_STATE_UPDATING)


def valid_name(name: str) -> bool:
    """Deployment names are URL and Triton name tokens; `--` separates team and name in Triton."""
    return bool(NAME.fullmatch(name)) and "--" not in name


def _check_ref(ref: d.ModelRef, path: str, bad: dict[str, str]) -> None:
    if not NAME.fullmatch(ref.name):
        bad[f"{path}.name"] = "is required: a registry model name, [a-z0-9_-]{1,63}"
    which = ref.WhichOneof("selector")
    if which == "version" and ref.version < 1:
        bad[f"{path}.version"] = "must be >= 1 (leave version and alias unset for the latest)"
    if which == "alias" and not NAME.fullmatch(ref.alias):
        bad[f"{path}.alias"] = "must be [a-z0-9_-]{1,63}"


def validate_spec(spec: d.DeploymentSpec, bad: dict[str, str], prefix: str = "spec") -> None:
    """Every problem of a spec, by field path; nothing is resolved against the registry here."""
    if not spec.HasField("model"):
        bad[f"{prefix}.model"] = "is required"
    else:
        _check_ref(spec.model, f"{prefix}.model", bad)
    if spec.task and spec.task not in CONTRACT:
        bad[f"{prefix}.task"] = "must be TEXT_GENERATION, TEXT_CLASSIFICATION or EMBEDDING (or unset: the registry's)"
    if not 0 <= spec.instance_count <= MAX_INSTANCES:
        bad[f"{prefix}.instance_count"] = f"must be 0-{MAX_INSTANCES} (0 = 1)"
    if spec.instance_kind not in d.InstanceKind.values():
        bad[f"{prefix}.instance_kind"] = "unknown instance kind"
    b = spec.batching
    if not 0 <= b.max_batch_size <= MAX_BATCH:
        bad[f"{prefix}.batching.max_batch_size"] = f"must be 0-{MAX_BATCH} (0 = the default, 8)"
    delay = valid_duration_s(b.max_queue_delay)
    if delay is None or not 0 <= delay <= MAX_QUEUE_DELAY_S:
        bad[f"{prefix}.batching.max_queue_delay"] = f"must be 0-{MAX_QUEUE_DELAY_S:g}s"
    if any(size < 1 for size in b.preferred_batch_sizes):
        bad[f"{prefix}.batching.preferred_batch_sizes"] = "must all be >= 1"
    ttl = valid_duration_s(spec.cache_ttl)
    if ttl is None or not 0 <= ttl <= MAX_CACHE_TTL_S:
        bad[f"{prefix}.cache_ttl"] = f"must be 0-{MAX_CACHE_TTL_S:.0f}s (0 = not cached)"
    if spec.HasField("canary"):
        canary = spec.canary
        if not 0 <= canary.percent <= 100:
            bad[f"{prefix}.canary.percent"] = "must be 0-100"
        if canary.HasField("model"):
            _check_ref(canary.model, f"{prefix}.canary.model", bad)
            if spec.HasField("model") and canary.model.name != spec.model.name:
                bad[f"{prefix}.canary.model.name"] = "must be the primary's model: a canary is another version of it"
        else:
            bad[f"{prefix}.canary.model"] = "is required with a canary"
        if canary.sticky_key and not re.fullmatch(r"[a-z0-9-]{1,63}", canary.sticky_key):
            bad[f"{prefix}.canary.sticky_key"] = "must be a lowercase header / metadata name"
    r = spec.rate_limit
    if r.requests_per_second < 0:
        bad[f"{prefix}.rate_limit.requests_per_second"] = "must be >= 0 (0 = the team's limit)"
    if r.burst < 0:
        bad[f"{prefix}.rate_limit.burst"] = "must be >= 0"
    for key, value in spec.parameters.items():
        if not PARAM_KEY.fullmatch(key) or len(value) > 1024:
            bad[f"{prefix}.parameters"] = "keys are [A-Za-z0-9_.-]{1,63}, values at most 1024 characters"
            break


def validate_create(name: str, team: str, spec: d.DeploymentSpec, labels: Mapping[str, str]) -> dict[str, str]:
    bad: dict[str, str] = {}
    if not valid_name(name):
        bad["name"] = "is required: [a-z0-9_-]{1,63}, without '--'"
    if team and not NAME.fullmatch(team):
        bad["team"] = "must be a team id"
    validate_spec(spec, bad)
    if len(labels) > MAX_LABELS or any(len(k) > 63 or len(v) > 63 or not k for k, v in labels.items()):
        bad["labels"] = f"at most {MAX_LABELS}, keys and values 1-63 characters"
    return bad


def apply_update(current: d.DeploymentSpec, new: d.DeploymentSpec, paths: list[str]) -> d.DeploymentSpec:
    """The spec after an update: `new` whole when no paths are named, else `current` with the
    named fields taken from `new`. ValueError names a path that is not a DeploymentSpec field."""
    if not paths:
        out = d.DeploymentSpec()
        out.CopyFrom(new)
        return out
    mask = field_mask_pb2.FieldMask(paths=paths)
    if not mask.IsValidForDescriptor(d.DeploymentSpec.DESCRIPTOR):
        unknown = [
            p
            for p in paths
            if not field_mask_pb2.FieldMask(paths=[p]).IsValidForDescriptor(d.DeploymentSpec.DESCRIPTOR)
        ]
        raise ValueError(", ".join(unknown))
    out = d.DeploymentSpec()
    out.CopyFrom(current)
    mask.MergeMessage(new, out, replace_message_field=True, replace_repeated_field=True)
    return out


def served(deployment: d.Deployment) -> Served | None:
    """What routing needs of a stored deployment; None while nothing of it is serving. A failed
    update leaves the previous versions serving (READY, reason UpdateFailed), so FAILED means a
    first load that never served."""
    status = deployment.status
    if status.model_version <= 0 or status.state in (S.DEPLOYMENT_STATE_DELETED, S.DEPLOYMENT_STATE_FAILED):
        return None
    spec = deployment.spec
    canary = spec.canary if spec.HasField("canary") else None
    return Served(
        team=deployment.meta.team,
        name=deployment.meta.id,
        task=spec.task or common_pb2.MODEL_TASK_UNSPECIFIED,
        version=status.model_version,
        canary_version=status.canary_version,
        canary_percent=canary.percent if canary is not None and status.canary_version else 0,
        sticky_key=canary.sticky_key if canary is not None else "",
        cache_ttl_s=spec.cache_ttl.ToTimedelta().total_seconds(),
        rate_per_s=spec.rate_limit.requests_per_second,
        rate_burst=spec.rate_limit.burst,
        parameters=dict(spec.parameters),
        draining=status.state == S.DEPLOYMENT_STATE_DRAINING,
    )


def kv_key(team: str, name: str) -> str:
    return f"{team}.{name}"
