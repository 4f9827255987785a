"""ListAuditRecords and VerifyAuditLog: the audit log read back from MLMESH_AUDIT, for admins only.

The CLI asks here instead of reading the stream itself, so users never need NATS credentials that
can read every team's audit trail. A verify reads the whole stream; it keeps only each record's
link fields (about 200 bytes), not payloads.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from datetime import datetime, timezone

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mlmesh.api.telemetry.v1 import audit_pb2
from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api
from mlmesh.common.audit import (
    AUDIT_SUBJECTS,
    DROPPED_MARK,
    FORKED_MARK,
    RPC,
    Problem,
    Verifier,
    decode_record,
    service_audit_subjects,
)
from mlmesh.common.audit_log import first_stream_seq, read_anchors, read_records
from mlmesh.common.auth import ROLE_ADMIN, current_identity
from mlmesh.common.errors import InvalidArgument
from mlmesh.common.events import is_token

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
DEFAULT_WINDOW_S = 86400.0

_KIND = {
    RPC: audit_pb2.AUDIT_RECORD_KIND_RPC,
    DROPPED_MARK: audit_pb2.AUDIT_RECORD_KIND_DROPPED,
    FORKED_MARK: audit_pb2.AUDIT_RECORD_KIND_FORKED,
}
# "edited" -> AUDIT_PROBLEM_KIND_EDITED, ...
_PROBLEM = {k.removeprefix("AUDIT_PROBLEM_KIND_").lower(): v for k, v in audit_pb2.AuditProblemKind.items() if v}


def record_proto(rec: dict, stream_seq: int) -> audit_pb2.AuditRecord:
    out = audit_pb2.AuditRecord(
        kind=_KIND.get(rec.get("kind"), audit_pb2.AUDIT_RECORD_KIND_UNSPECIFIED),
        service=rec["service"],
        instance=rec["instance"],
        seq=rec["seq"],
        subject=str(rec.get("subject", "")),
        team=str(rec.get("team", "")),
        roles=[str(r) for r in rec.get("roles") or ()],
        method=str(rec.get("method", "")),
        outcome=str(rec.get("outcome", "")),
        trace_id=str(rec.get("trace_id", "")),
        dropped_count=rec["count"] if isinstance(rec.get("count"), int) else 0,
        prev_hash=rec["prev_hash"],
        hash=rec["hash"],
        stream_sequence=stream_seq,
    )
    ids = rec.get("object") if isinstance(rec.get("object"), dict) else {}
    if rec.get("kind") == FORKED_MARK:
        ids = {"forked_instance": rec.get("forked_instance"), "forked_at_seq": rec.get("forked_at_seq")}
    out.object.update({str(k): str(v) for k, v in ids.items()})
    with contextlib.suppress(ValueError):  # an edited time: VerifyAuditLog reports the record
        out.time.FromJsonString(str(rec.get("time", "")))
    return out


def problem_proto(p: Problem) -> audit_pb2.AuditProblem:
    return audit_pb2.AuditProblem(kind=_PROBLEM.get(p.kind, 0), instance=p.instance, seq=p.seq, detail=p.detail)


class AuditReader:
    def __init__(self, js: JetStreamContext):
        self.js = js

    async def list(self, request: api.ListAuditRecordsRequest) -> api.ListAuditRecordsResponse:
        current_identity().require_role(ROLE_ADMIN)
        if request.limit < 0:
            raise InvalidArgument.field("limit", "must not be negative")
        if request.service and not is_token(request.service):
            raise InvalidArgument.field("service", "must be a service name ([a-z0-9_-])")
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        try:
            since = (
                request.start_time.ToDatetime(tzinfo=timezone.utc)
                if request.HasField("start_time")
                else datetime.fromtimestamp(time.time() - DEFAULT_WINDOW_S, timezone.utc)
            )
        except (ValueError, OverflowError):
            raise InvalidArgument.field("start_time", "not a valid time") from None
        subject = service_audit_subjects(request.service) if request.service else AUDIT_SUBJECTS[0]
        out: deque[audit_pb2.AuditRecord] = deque(maxlen=limit)
        try:
            async for stored in read_records(self.js, subject=subject, since=since):
                rec = decode_record(stored.data)
                if rec is not None and (not request.team or rec.get("team") == request.team):
                    out.append(record_proto(rec, stored.stream_seq))
        except NotFoundError:  # no stream yet: nothing was ever audited
            pass
        return api.ListAuditRecordsResponse(records=list(out))

    async def verify(self, request: api.VerifyAuditLogRequest) -> api.VerifyAuditLogResponse:
        current_identity().require_role(ROLE_ADMIN)
        # Anchors first: every head they name was stored before they were read, so a record
        # published meanwhile can never look like a cut tail.
        anchors = await read_anchors(self.js)
        verifier = Verifier()
        first = 1
        try:
            first = await first_stream_seq(self.js)
            async for stored in read_records(self.js):
                verifier.add(stored)
        except NotFoundError:  # no stream: any anchor then says what was lost
            pass
        problems = verifier.finish(anchors, first)
        return api.VerifyAuditLogResponse(
            problems=[problem_proto(p) for p in problems],
            records=verifier.records,
            chains=len(verifier.chains),
            anchors=len(anchors),
        )
