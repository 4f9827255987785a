"""The alert loop: evaluate the rules every interval, publish each transition once.

- Only the replica holding the `telemetry_lease` evaluates; the others follow the alerts stream.
- Alerts are not stored anywhere but the stream: on start the replay of `mlmesh.alerts.>` restores
  what is firing, so a restart neither re-fires nor forgets an alert.
- A transition is published as `mlmesh.alerts.<severity>.<rule>[.<team>]` (the team of a team's
  alert, so its event credentials read it) with the event id
  `<alert id>-<state>`: a retry after a failed publish is dropped by JetStream's de-duplication,
  and a transition that could not be published is retried on the next tick, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

from google.protobuf.timestamp_pb2 import Timestamp

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.telemetry.v1 import alert_pb2
from mlmesh.common import contracts
from mlmesh.telemetry.domain import signals
from mlmesh.telemetry.domain.alerting import FIRING, RESOLVED, AlertStatus, evaluate, key_of
from mlmesh.telemetry.domain.rules import Rule

log = logging.getLogger("mlmesh.telemetry.alerts")

SEVERITY = {
    "info": alert_pb2.ALERT_SEVERITY_INFO,
    "warning": alert_pb2.ALERT_SEVERITY_WARNING,
    "critical": alert_pb2.ALERT_SEVERITY_CRITICAL,
}
SEVERITY_NAME = {v: k for k, v in SEVERITY.items()}
STATE = {FIRING: alert_pb2.ALERT_STATE_FIRING, RESOLVED: alert_pb2.ALERT_STATE_RESOLVED}
COMPARATOR = {
    "gt": alert_pb2.COMPARATOR_GREATER_THAN,
    "ge": alert_pb2.COMPARATOR_GREATER_OR_EQUAL,
    "lt": alert_pb2.COMPARATOR_LESS_THAN,
    "le": alert_pb2.COMPARATOR_LESS_OR_EQUAL,
    "eq": alert_pb2.COMPARATOR_EQUAL,
}
MAX_HISTORY = 1000


def _stamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    out = Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def to_proto(a: AlertStatus) -> alert_pb2.Alert:
    msg = alert_pb2.Alert(
        id=a.id,
        rule=a.rule,
        severity=SEVERITY[a.severity],
        state=STATE.get(a.state, alert_pb2.ALERT_STATE_UNSPECIFIED),
        labels=a.labels,
        summary=a.summary,
        description=a.description,
        value=a.value,
        threshold=a.threshold,
    )
    msg.start_time.CopyFrom(_stamp(a.since))
    if a.resolved_at is not None:
        msg.resolve_time.CopyFrom(_stamp(a.resolved_at))
    if a.last_eval:
        msg.last_eval_time.CopyFrom(_stamp(a.last_eval))
    return msg


def rule_to_proto(r: Rule) -> alert_pb2.AlertRule:
    rule = alert_pb2.AlertRule(
        name=r.name,
        severity=SEVERITY[r.severity],
        metric=r.metric,
        comparator=COMPARATOR[r.op],
        threshold=r.threshold,
        labels=r.labels,
        summary=r.summary,
        description=r.description,
        enabled=r.enabled,
    )
    rule.for_duration.FromNanoseconds(int(r.for_s * 1e9))
    return rule


def from_proto(msg: alert_pb2.Alert) -> AlertStatus:
    state = FIRING if msg.state == alert_pb2.ALERT_STATE_FIRING else RESOLVED
    return AlertStatus(
        id=msg.id,
        rule=msg.rule,
        severity=SEVERITY_NAME.get(msg.severity, "warning"),
        labels=dict(msg.labels),
        state=state,
        since=msg.start_time.ToNanoseconds() / 1e9,
        value=msg.value,
        threshold=msg.threshold,
        summary=msg.summary,
        description=msg.description,
        resolved_at=msg.resolve_time.ToNanoseconds() / 1e9 if msg.HasField("resolve_time") else None,
        last_eval=msg.last_eval_time.ToNanoseconds() / 1e9 if msg.HasField("last_eval_time") else 0.0,
    )


class AlertEngine:
    def __init__(self, rules: list[Rule], ingest, publisher, *, settings, scraper=None, lease=None):
        self.rules = rules
        self.ingest = ingest
        self.publisher = publisher
        self.settings = settings
        self.scraper = scraper
        self.lease = lease
        self.active: dict = {}  # key -> pending/firing AlertStatus
        self.history: OrderedDict[str, AlertStatus] = OrderedDict()  # id -> latest status, newest last
        self.outbox: list[AlertStatus] = []
        self.evaluating = False
        self.evaluations = 0
        self._task: asyncio.Task | None = None

    # --- the stream's view (restore on start; followers) -----------------------------------------

    def on_alert_event(self, alert: alert_pb2.Alert) -> None:
        status = from_proto(alert)
        self._remember(status)
        if self.evaluating:
            return  # the leader's own state is newer than its echo
        key = key_of(status.rule, status.labels)
        if status.state == FIRING:
            self.active[key] = status
        elif key in self.active and self.active[key].id == status.id:
            del self.active[key]

    def _remember(self, status: AlertStatus) -> None:
        self.history[status.id] = status
        self.history.move_to_end(status.id)
        while len(self.history) > MAX_HISTORY:
            self.history.popitem(last=False)

    # --- the loop --------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemetry-alerts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.lease is not None:
            with contextlib.suppress(Exception):
                await self.lease.release()

    async def _run(self) -> None:
        interval = self.settings.eval_interval_s
        while True:
            try:
                leader = self.lease is None or await self.lease.acquire_or_renew()
                if leader:
                    await self.tick(time.time())
                else:
                    self.evaluating = False
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert evaluation failed; retrying next interval")
            await asyncio.sleep(interval)

    async def tick(self, now: float) -> list[AlertStatus]:
        p99 = self.scraper.p99() if self.scraper is not None else {}
        async with self.ingest.lock:
            self.ingest.agg.prune(now)
            samples = signals.compute(
                self.ingest.agg,
                now,
                failure_window_s=self.settings.failure_rate_window_s,
                min_finished_jobs=self.settings.failure_rate_min_jobs,
                inference_p99=p99,
            )
        self.evaluating = True
        self.active, transitions = evaluate(self.rules, samples, self.active, now)
        self.evaluations += 1
        for t in transitions:
            log.warning(
                "alert %s %s: %s", t.rule, t.state, t.summary or t.labels, extra={"alert": t.id, "severity": t.severity}
            )
            self._remember(t)
        self.outbox.extend(transitions)
        await self._flush()
        return transitions

    async def _flush(self) -> None:
        while self.outbox:
            t = self.outbox[0]
            message = events_pb2.AlertFired if t.state == FIRING else events_pb2.AlertResolved
            try:
                await self.publisher.publish(
                    contracts.alert_subject(t.severity, t.rule, _subject_team(t.labels.get("team", ""))),
                    message(alert=to_proto(t)),
                    ce_subject=t.id,
                    event_id=f"{t.id}-{t.state}",
                )
            except Exception as exc:
                log.warning("alert %s not published yet (%s); retrying next interval", t.id, exc)
                return
            self.outbox.pop(0)

    # --- reads -----------------------------------------------------------------------------------

    def alerts(self) -> list[AlertStatus]:
        """Firing and recently resolved alerts, most recent first."""
        current = {a.id: a for a in self.active.values() if a.state == FIRING}
        merged = {**{k: v for k, v in self.history.items()}, **current}
        return sorted(merged.values(), key=lambda a: a.resolved_at or a.since, reverse=True)


def _subject_team(team: str) -> str:
    """The team token of an alert's subject; a label that is not a valid team id stays out of it."""
    return team if contracts.is_token(team) else ""
