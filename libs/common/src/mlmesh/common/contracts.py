"""The bus contracts: every NATS subject, JetStream stream and KV bucket, with the service that owns it.

Subjects are built here and nowhere else, because NATS permissions are granted per subject: the
permission tables (`nats_permissions`) and the code that publishes read the same definitions, so
they cannot drift apart. Owners are the identities of `docs/security.md`.

Subject shape: `mlmesh.<area>.<...general to specific>`; every id token passes `subject_token`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlmesh.common.errors import InvalidArgument

# The identities that connect to NATS (one credential each; see nats_permissions).
SCHEDULER = "scheduler"
FABRIC = "fabric"
AGENT = "fabric-agent"
STORAGE = "storage"
TRAINER = "trainer"
WORKER = "worker"  # training worker processes: they only report to their controller
GATEWAY = "gateway"
TELEMETRY = "telemetry"
SERVICE_IDENTITIES = (SCHEDULER, FABRIC, AGENT, STORAGE, TRAINER, WORKER, GATEWAY, TELEMETRY)


class _Wildcard(str):
    """A pattern token; a plain "*" passed as an id is refused, so no id can widen a subject."""


ANY = _Wildcard("*")  # one whole token in a subscription or permission pattern
DAY_S = 24 * 3600.0

_TOKEN = re.compile(r"^[a-z0-9_-]{1,128}$")
# What any token of a subject built here must be: no separator, wildcard or whitespace, so one id can
# never widen a subject (ids are validated against `subject_token` where they enter the platform).
_SAFE_TOKEN = re.compile(r"^[^.*>\s]{1,256}$")


def is_token(value: str) -> bool:
    """Whether `value` may be a subject token (for validators that collect every bad field)."""
    return bool(_TOKEN.fullmatch(value or ""))  # fullmatch: `$` alone would let a trailing "\n" through


def subject_token(value: str, field_name: str = "id") -> str:
    """Validate one id before it becomes a subject token: lowercase, `[a-z0-9_-]`."""
    if not is_token(value):
        raise InvalidArgument.field(field_name, "must be 1-128 characters of [a-z0-9_-]")
    return value


def _join(*tokens: str) -> str:
    for t in tokens:  # `*` is a pattern token; anything else must be one plain token
        if not isinstance(t, _Wildcard) and not _SAFE_TOKEN.fullmatch(t or ""):
            raise InvalidArgument.field("subject", f"bad subject token {t!r}")
    return ".".join(("mlmesh", *tokens))


# --- subjects -----------------------------------------------------------------------------------
# Job events: the scheduler's state changes, the trainer's run outcomes and progress.
JOB_STATE, JOB_RUN, JOB_PROGRESS = "state", "run", "progress"


def job_subject(team: str, job: str, kind: str) -> str:
    return _join("jobs", team, job, kind)


def team_jobs(team: str) -> str:
    """Everything about one team's jobs (a team subscriber's filter)."""
    return f"{_join('jobs', team)}.>"


# Nodes: heartbeats from agents (core NATS), state changes from the fabric, worker exits from agents.
NODE_HEARTBEAT, NODE_STATE = "heartbeat", "state"


def node_subject(node: str, kind: str) -> str:
    return _join("fabric", "nodes", node, kind)


def worker_exited_subject(node: str, run: str) -> str:
    return _join("fabric", "nodes", node, "workers", run, "exited")


def artifact_subject(team: str, artifact: str, kind: str) -> str:
    return _join("storage", "artifacts", team, artifact, kind)


def team_artifacts(team: str) -> str:
    return f"{_join('storage', 'artifacts', team)}.>"


MODEL_REGISTERED, MODEL_ALIASED = "registered", "aliased"


def model_subject(name: str, version: str, kind: str) -> str:
    return _join("models", name, version, kind)


def deployment_subject(team: str, deployment: str, kind: str = "changed") -> str:
    return _join("deployments", team, deployment, kind)


def team_deployments(team: str) -> str:
    return f"{_join('deployments', team)}.>"


def alert_subject(severity: str, rule: str, team: str = "") -> str:
    """An alert about one team's work (a `team` label) carries the team as a fifth token, so the
    team's event credentials can read it; a platform alert (nodes, GPUs) has none."""
    return _join("alerts", severity, rule, team) if team else _join("alerts", severity, rule)


def team_alerts(team: str) -> str:
    return alert_subject(ANY, ANY, team)


def worker_report_subject(run: str, kind: str) -> str:
    """Worker → controller reports (core NATS, not stored)."""
    return _join("trainer", "runs", run, kind)


def audit_subject(service: str, instance: str) -> str:
    """One process's audit chain (`mlmesh.common.audit`)."""
    return _join("audit", subject_token(service, "service"), subject_token(instance, "instance"))


def service_audit_subjects(service: str) -> str:
    """Every chain of one service (a reader's filter, or a publish permission)."""
    return _join("audit", subject_token(service, "service"), ANY)


# --- streams ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    owner: str = ""  # "": the operator's (e.g. a test's own stream)
    max_age_s: float = 7 * DAY_S


# One stream per area; every stored subject falls into exactly one of them. The owner creates and
# updates it; other identities only read it (and publish the subjects they own into it).
JOBS_STREAM = StreamSpec("MLMESH_JOBS", ("mlmesh.jobs.>",), SCHEDULER, 30 * DAY_S)
FABRIC_STREAM = StreamSpec("MLMESH_FABRIC", ("mlmesh.fabric.>",), FABRIC, 1 * DAY_S)
STORAGE_STREAM = StreamSpec("MLMESH_STORAGE", ("mlmesh.storage.>",), STORAGE)
MODELS_STREAM = StreamSpec("MLMESH_MODELS", ("mlmesh.models.>",), STORAGE, 90 * DAY_S)
DEPLOYMENTS_STREAM = StreamSpec("MLMESH_DEPLOYMENTS", ("mlmesh.deployments.>",), GATEWAY, 30 * DAY_S)
ALERTS_STREAM = StreamSpec("MLMESH_ALERTS", ("mlmesh.alerts.>",), TELEMETRY, 30 * DAY_S)
STREAMS: tuple[StreamSpec, ...] = (
    JOBS_STREAM,
    FABRIC_STREAM,
    STORAGE_STREAM,
    MODELS_STREAM,
    DEPLOYMENTS_STREAM,
    ALERTS_STREAM,
)


# --- KV buckets ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BucketSpec:
    name: str
    owner: str
    readers: tuple[str, ...] = ()
    history: int = 5
    ttl_s: float | None = None


JOBS = "jobs"
QUEUES = "queues"
PRIORITY_CLASSES = "priority_classes"
JOB_REQUESTS = "job_requests"
SCHEDULER_LEASE = "scheduler_lease"
NODES = "nodes"
FABRIC_LEASE = "fabric_lease"
ARTIFACTS = "artifacts"
UPLOADS = "uploads"
STORAGE_QUOTAS = "quotas"
MODEL_VERSIONS = "models"
MODEL_RECORDS = "model_records"
MODEL_REQUESTS = "model_requests"
RUNS = "runs"
DEPLOYMENTS = "deployments"
TELEMETRY_LEASE = "telemetry_lease"

MODEL_REQUEST_TTL_S = 7 * DAY_S  # idempotency window of RegisterModelVersion request ids

BUCKETS: tuple[BucketSpec, ...] = (
    BucketSpec(JOBS, SCHEDULER, readers=(TELEMETRY,), history=1),
    BucketSpec(QUEUES, SCHEDULER),
    BucketSpec(PRIORITY_CLASSES, SCHEDULER),
    BucketSpec(JOB_REQUESTS, SCHEDULER, history=1),
    BucketSpec(SCHEDULER_LEASE, SCHEDULER, history=1),
    BucketSpec(NODES, FABRIC, readers=(SCHEDULER, TELEMETRY)),
    BucketSpec(FABRIC_LEASE, FABRIC, history=1),
    BucketSpec(ARTIFACTS, STORAGE),
    BucketSpec(UPLOADS, STORAGE, history=1),
    BucketSpec(STORAGE_QUOTAS, STORAGE),
    BucketSpec(MODEL_VERSIONS, STORAGE),
    BucketSpec(MODEL_RECORDS, STORAGE),
    BucketSpec(MODEL_REQUESTS, STORAGE, history=1, ttl_s=MODEL_REQUEST_TTL_S),
    BucketSpec(RUNS, TRAINER),
    BucketSpec(DEPLOYMENTS, GATEWAY),
    BucketSpec(TELEMETRY_LEASE, TELEMETRY, history=1),
)
_BUCKETS = {b.name: b for b in BUCKETS}


def bucket(name: str) -> BucketSpec | None:
    """The contract of a platform bucket (None for an ad-hoc bucket, e.g. in a test)."""
    return _BUCKETS.get(name)


def kv_stream(bucket_name: str) -> str:
    """The JetStream stream behind a KV bucket."""
    return f"KV_{bucket_name}"


# --- who publishes what -------------------------------------------------------------------------
# The subjects each identity may publish (NATS permission patterns). Nothing else is granted.
PUBLISHES: dict[str, tuple[str, ...]] = {
    SCHEDULER: (job_subject(ANY, ANY, JOB_STATE),),
    FABRIC: (node_subject(ANY, NODE_STATE),),
    AGENT: (node_subject(ANY, NODE_HEARTBEAT), worker_exited_subject(ANY, ANY)),
    STORAGE: (artifact_subject(ANY, ANY, ANY), model_subject(ANY, ANY, ANY)),
    TRAINER: (job_subject(ANY, ANY, JOB_RUN), job_subject(ANY, ANY, JOB_PROGRESS)),
    WORKER: (worker_report_subject(ANY, ANY),),
    GATEWAY: (deployment_subject(ANY, ANY, ANY),),
    TELEMETRY: (alert_subject(ANY, ANY), alert_subject(ANY, ANY, ANY)),
}

# Core-NATS subjects each identity subscribes to outside JetStream (live signals, not stored, or
# a stored subject it follows live).
SUBSCRIBES: dict[str, tuple[str, ...]] = {
    FABRIC: (node_subject(ANY, NODE_HEARTBEAT),),
    AGENT: (node_subject(ANY, NODE_STATE),),
    TRAINER: (worker_report_subject(ANY, ANY), worker_exited_subject(ANY, ANY)),
    TELEMETRY: (node_subject(ANY, NODE_HEARTBEAT),),
}

# Streams each identity reads through its own consumers, beside the ones it owns.
READS_STREAMS: dict[str, tuple[str, ...]] = {
    SCHEDULER: (FABRIC_STREAM.name,),
    GATEWAY: (MODELS_STREAM.name,),
    TELEMETRY: tuple(s.name for s in STREAMS),
}


# The audit log: its own stream (deny delete and purge; created by `audit.ensure_audit_stream`, not
# with STREAMS) and anchors bucket, owned by telemetry; every other identity publishes its own
# chains and writes its own anchors (keys `<service>.<instance>`).
AUDIT_STREAM = "MLMESH_AUDIT"
AUDIT_SUBJECTS = ("mlmesh.audit.>",)
AUDIT_ANCHORS = "audit_anchors"
AUDIT_OWNER = TELEMETRY


def streams_owned_by(identity: str) -> tuple[StreamSpec, ...]:
    return tuple(s for s in STREAMS if s.owner == identity)


def buckets_owned_by(identity: str) -> tuple[BucketSpec, ...]:
    return tuple(b for b in BUCKETS if b.owner == identity)


def buckets_read_by(identity: str) -> tuple[BucketSpec, ...]:
    return tuple(b for b in BUCKETS if identity in b.readers)


def inbox_prefix(identity: str) -> str:
    """Each identity's reply inbox prefix: replies to one identity are never readable by another
    (the default `_INBOX.>` would be shared by every connection of the account)."""
    return f"_INBOX_{identity}"


# --- team event credentials ---------------------------------------------------------------------
class _Template(str):
    """A token of a NATS permission template (a scoped signing key's); never an id."""


# In a scoped signing key's template, the server puts the user's `team:<team>` tag here.
TEAM_TEMPLATE = _Template("{{tag(team)}}")


def team_token(team: str) -> str:
    """A team id checked as a subject token, or the template's placeholder for it."""
    return team if isinstance(team, _Template) else subject_token(team, "team")


def team_subjects(team: str) -> tuple[str, ...]:
    """What a team may subscribe to: its jobs, artifacts, deployments and alerts."""
    team_token(team)
    return (team_jobs(team), team_artifacts(team), team_deployments(team), team_alerts(team))


def team_streams(team: str) -> tuple[tuple[str, str], ...]:
    """(stream, filter) pairs a team may create consumers on."""
    jobs, artifacts, deployments, alerts = team_subjects(team)
    return (
        (JOBS_STREAM.name, jobs),
        (STORAGE_STREAM.name, artifacts),
        (DEPLOYMENTS_STREAM.name, deployments),
        (ALERTS_STREAM.name, alerts),
    )
