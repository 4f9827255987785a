"""TelemetryService: alerts, rules, job metric series, usage aggregates, traces and the audit log.

Visibility follows the usual rule: a team sees its own jobs, usage and alerts (an alert is a team's
when its `team` label says so); admins and services see everything; anything else is NOT_FOUND.
"""

from __future__ import annotations

import time

from google.protobuf.duration_pb2 import Duration

from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api
from mlmesh.api.telemetry.v1 import telemetry_service_pb2_grpc
from mlmesh.common.auth import current_identity
from mlmesh.common.clock import duration_s, timestamp_s
from mlmesh.common.errors import InvalidArgument, NotFound
from mlmesh.telemetry.alerts import SEVERITY, STATE, rule_to_proto, to_proto
from mlmesh.telemetry.domain.aggregates import Usage

DEFAULT_PAGE = 100
MAX_PAGE = 1000
DAY_S = 86400.0


def _page(request) -> tuple[int, int]:
    if request.page_size < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    try:
        offset = int(request.page_token or 0)
    except ValueError:
        raise InvalidArgument.field("page_token", "not a token this server returned") from None
    if offset < 0:
        raise InvalidArgument.field("page_token", "not a token this server returned")
    return offset, min(request.page_size or DEFAULT_PAGE, MAX_PAGE)


def _duration(seconds: float) -> Duration:
    out = Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def usage_proto(u: Usage) -> api.TeamUsage:
    return api.TeamUsage(
        team=u.team,
        gpu_hours=u.gpu_hours,
        gpu_utilization=u.gpu_utilization,
        queue_wait_p50=_duration(u.queue_wait_p50_s),
        queue_wait_p95=_duration(u.queue_wait_p95_s),
        outcomes=api.JobOutcomes(**u.outcomes),
        gpus_in_use=u.gpus_in_use,
    )


class TelemetryServicer(telemetry_service_pb2_grpc.TelemetryServiceServicer):
    def __init__(self, ingest, engine, traces=None, history_s: float = 7 * DAY_S, audit=None):
        self.ingest = ingest
        self.engine = engine
        self.traces = traces  # answers GetTrace(request, identity); None when no receiver runs
        self.history_s = history_s
        self.audit = audit  # an AuditReader (admins only)

    # --- alerts ----------------------------------------------------------------------------------

    def _visible(self, labels: dict[str, str]) -> bool:
        ident = current_identity()
        team = labels.get("team")
        return ident.is_admin or ident.is_service or team == ident.team

    async def ListAlerts(self, request, context):
        offset, size = _page(request)
        for i, state in enumerate(request.states):
            if state not in STATE.values():
                raise InvalidArgument.field(f"states[{i}]", "unknown alert state")
        for i, severity in enumerate(request.severities):
            if severity not in SEVERITY.values():
                raise InvalidArgument.field(f"severities[{i}]", "unknown severity")
        selected = [
            a
            for a in self.engine.alerts()
            if self._visible(a.labels)
            and (not request.states or STATE.get(a.state) in request.states)
            and (not request.severities or SEVERITY[a.severity] in request.severities)
            and (not request.rule or a.rule == request.rule)
            and all(a.labels.get(k) == v for k, v in request.match_labels.items())
        ]
        page = [to_proto(a) for a in selected[offset : offset + size]]
        more = offset + size < len(selected)
        return api.ListAlertsResponse(alerts=page, next_page_token=str(offset + size) if more else "")

    async def GetAlert(self, request, context):
        if not request.alert_id:
            raise InvalidArgument.field("alert_id", "required")
        for a in self.engine.alerts():
            if a.id == request.alert_id and self._visible(a.labels):
                return api.GetAlertResponse(alert=to_proto(a))
        raise NotFound(f"alert {request.alert_id} not found")

    async def ListAlertRules(self, request, context):
        return api.ListAlertRulesResponse(rules=[rule_to_proto(r) for r in self.engine.rules])

    # --- jobs and usage --------------------------------------------------------------------------

    async def QueryJobMetrics(self, request, context):
        if not request.job_id:
            raise InvalidArgument.field("job_id", "required")
        if request.max_points < 0:
            raise InvalidArgument.field("max_points", "must not be negative")
        lo = timestamp_s(request.start_time, "start_time") if request.HasField("start_time") else None
        hi = timestamp_s(request.end_time, "end_time") if request.HasField("end_time") else None
        if lo is not None and hi is not None and hi < lo:
            raise InvalidArgument.field("end_time", "is before start_time")
        async with self.ingest.lock:
            job = self.ingest.agg.jobs.get(request.job_id)
            if job is None or not current_identity().can_access(job.team):
                raise NotFound(f"job {request.job_id} not found (or no metrics reported yet)")
            series = self.ingest.agg.series(request.job_id, list(request.metrics), lo, hi, request.max_points)
        out = api.QueryJobMetricsResponse()
        for name, points in series.items():
            s = out.series.add(name=name)
            for at, step, value in points:
                p = s.points.add(step=step, value=value)
                p.time.FromNanoseconds(int(at * 1e9))
        return out

    async def GetUsage(self, request, context):
        ident = current_identity()
        window = duration_s(request.window, "window") if request.HasField("window") else DAY_S
        if window <= 0:
            raise InvalidArgument.field("window", "must be positive")
        if window > self.history_s:
            raise InvalidArgument.field("window", f"at most {self.history_s:.0f} s of history is kept")
        everyone = ident.is_admin or ident.is_service
        if request.team == "*" and not everyone:
            raise NotFound("team * not found (all teams need an admin token)")
        if request.team not in ("", "*") and not ident.can_access(request.team):
            raise NotFound(f"team {request.team} not found")
        now = time.time()
        async with self.ingest.lock:
            agg = self.ingest.agg
            teams = agg.teams() if request.team == "*" else [request.team or ident.team]
            out = api.GetUsageResponse(teams=[usage_proto(agg.usage(t, window, now)) for t in teams])
            if everyone:
                out.cluster.CopyFrom(usage_proto(agg.usage(None, window, now)))
        out.window_start_time.FromNanoseconds(int((now - window) * 1e9))
        return out

    async def GetTrace(self, request, context):
        if self.traces is None:
            raise NotFound("no trace receiver runs in this telemetry service")
        return self.traces(request, current_identity())

    # --- audit log (admins only; the reader checks) ----------------------------------------------

    async def ListAuditRecords(self, request, context):
        return await self.audit.list(request)

    async def VerifyAuditLog(self, request, context):
        return await self.audit.verify(request)
