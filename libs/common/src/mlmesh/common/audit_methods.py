"""Which RPCs the audit log records, and which object each one names.

A method is audited when it changes state or is an admin action. The rule reads the verb that
starts its name (Create, Delete, Set, ... vs Get, List, Watch, ...); `EXCEPTIONS` decides every
method the rule cannot, or gets wrong. A method neither decides is audited (fail closed), and a unit
test walks every served service so that no method is left to that default.
"""

from __future__ import annotations

import functools
import re

from google.protobuf.message import Message

MUTATING_VERBS = frozenset(
    {
        "Abort",
        "Begin",
        "Cancel",
        "Commit",
        "Cordon",
        "Create",
        "Delete",
        "Deploy",
        "Drain",
        "Issue",
        "Launch",
        "Move",
        "Register",
        "Set",
        "Start",
        "Stop",
        "Submit",
        "Uncordon",
        "Undeploy",
        "Update",
        "Upload",
    }
)
READ_VERBS = frozenset({"Check", "Download", "Explain", "Get", "List", "Query", "Resolve", "Stream", "Watch"})

# KServe v2 on the gateway: inference is the data plane (request metrics count it); what could
# change the server (repository, shared memory, trace and log settings) is audited.
_KSERVE_READS = (
    "ServerLive",
    "ServerReady",
    "ServerMetadata",
    "ModelReady",
    "ModelMetadata",
    "ModelConfig",
    "ModelStatistics",
    "ModelInfer",
    "ModelStreamInfer",
    "RepositoryIndex",
    "SystemSharedMemoryStatus",
    "CudaSharedMemoryStatus",
)
_KSERVE_WRITES = (
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "TraceSetting",
    "LogSettings",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
)

# Full method -> (audited, why): where the verb says nothing or the wrong thing.
EXCEPTIONS: dict[str, tuple[bool, str]] = {
    "/mlmesh.fabric.v1.FabricService/Heartbeat": (
        False,
        "a node agent's liveness signal every few seconds; what it changes is an event on MLMESH_FABRIC",
    ),
    "/mlmesh.fabric.v1.FabricService/BenchmarkLinks": (True, "admin action: loads the links it measures"),
    "/mlmesh.storage.v1.StorageService/CreateDirectDownload": (False, "a read: a presigned GET URL"),
    "/mlmesh.trainer.v1.TrainerService/PlanRun": (False, "a dry-run estimate; nothing is stored"),
    "/mlmesh.telemetry.v1.TelemetryService/ListAuditRecords": (True, "admin action: reading the audit log"),
    "/mlmesh.telemetry.v1.TelemetryService/VerifyAuditLog": (True, "admin action: reading the audit log"),
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export": (False, "span intake from services"),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": (False, "discovery, unauthenticated"),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": (False, "discovery, unauthenticated"),
    **{
        f"/inference.GRPCInferenceService/{m}": (False, "KServe v2 probe, metadata or inference") for m in _KSERVE_READS
    },
    **{f"/inference.GRPCInferenceService/{m}": (True, "KServe v2: changes the serving state") for m in _KSERVE_WRITES},
}

_VERB = re.compile(r"^[A-Z][a-z]*")


def classify(method: str) -> tuple[bool, str]:
    """(audited, source) for a full method `/pkg.Service/Name`; source: "table", "rule" or "default"."""
    if method in EXCEPTIONS:
        return EXCEPTIONS[method][0], "table"
    verb = _VERB.match(method.rsplit("/", 1)[-1])
    word = verb.group(0) if verb else ""
    if word in MUTATING_VERBS:
        return True, "rule"
    if word in READ_VERBS:
        return False, "rule"
    return True, "default"


def is_audited(method: str) -> bool:
    return classify(method)[0]


# --- the object an RPC names --------------------------------------------------------------------
# Fields that name an object, most specific first; a plural (`node_ids`) is taken too. Nothing else
# of a request is recorded: no payload, spec, reason or label.
ID_FIELDS = (
    "id",
    "job_id",
    "run_id",
    "node_id",
    "upload_id",
    "artifact_id",
    "alert_id",
    "deployment",
    "queue",
    "model",
    "model_name",
    "name",
    "alias",
    "version",
    "team",
)
_ID_SET = frozenset(ID_FIELDS)
MAX_VALUE = 128  # characters of one value
MAX_VALUES = 8  # entries of a repeated id field
MAX_DEPTH = 2  # message levels below the top (SubmitJobResponse.job.meta.id)


def object_ids(request: Message | None, response: Message | None = None) -> dict[str, str]:
    """The id fields of the request: top level, then inside its message fields (`spec.name`,
    `job.meta.id`). When the request names nothing at its top level (a create), the response's
    ids are added: the id of the job that SubmitJob created is what an auditor looks for."""
    out = _extract(request)
    if response is not None and not any("." not in key for key in out):
        for key, value in _extract(response).items():
            out.setdefault(key, value)
    return out


def _extract(message: Message | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(message, Message):
        _walk(message, _plan(message.DESCRIPTOR), "", out)
    return out


def _walk(message: Message, plan, prefix: str, out: dict[str, str]) -> None:
    own, nested = plan
    for name, repeated in own:
        value = getattr(message, name)
        if value:
            out[prefix + name] = _joined(value) if repeated else _short(value)
    for name, inner in nested:
        if message.HasField(name):  # an unset message field is skipped, never created
            _walk(getattr(message, name), inner, f"{prefix}{name}.", out)


@functools.cache
def _plan(descriptor, depth: int = MAX_DEPTH):
    """The id fields a message type can hold, as (own, nested): own = (name, repeated) by ID_FIELDS
    rank, nested = (message field, its plan) for singular message fields that can hold any. Built
    once per type: the RPC path only reads the fields named here."""
    own, nested = [], []
    for field in descriptor.fields:
        if field.message_type is not None:
            inner = _plan(field.message_type, depth - 1) if depth and not field.is_repeated else ((), ())
            if inner != ((), ()):
                nested.append((field.name, inner))
            continue
        singular = field.name[:-1] if field.name.endswith("s") else field.name
        name = field.name if field.name in _ID_SET else singular if singular in _ID_SET else None
        if name is not None:
            own.append((ID_FIELDS.index(name), field.name, field.is_repeated))
    return tuple((name, rep) for _, name, rep in sorted(own)), tuple(nested)


def _joined(values) -> str:
    values = list(values)
    text = ",".join(_short(v) for v in values[:MAX_VALUES])
    return text + (f",+{len(values) - MAX_VALUES}" if len(values) > MAX_VALUES else "")


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"
