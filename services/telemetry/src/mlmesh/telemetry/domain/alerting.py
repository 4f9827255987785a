"""Alert evaluation: a pure state machine over (rule, label set).

inactive → pending (condition true) → firing (still true after `for`) → resolved (false again).
A pending alert whose condition turns false is dropped without a word. A label set that vanishes
(a node removed, a job finished) counts as false, so its firing alert resolves. Only the two edges
firing and resolved are transitions, and each happens once per alert id: an alert that fires again
later is a new alert with a new id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from mlmesh.telemetry.domain.rules import Rule

Labels = tuple[tuple[str, str], ...]  # sorted, hashable
Samples = dict[str, list[tuple[dict[str, str], float]]]  # signal -> [(labels, value)]

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"


@dataclass(frozen=True)
class AlertStatus:
    id: str
    rule: str
    severity: str
    labels: dict[str, str]
    state: str
    since: float  # pending or firing since
    value: float
    threshold: float
    summary: str = ""
    description: str = ""
    resolved_at: float | None = None
    last_eval: float = 0.0
    extra: dict = field(default_factory=dict)


def key_of(rule: str, labels: dict[str, str]) -> tuple[str, Labels]:
    return rule, tuple(sorted(labels.items()))


def alert_id(rule: str, labels: dict[str, str], since: float) -> str:
    text = rule + "|" + "|".join(f"{k}={v}" for k, v in sorted(labels.items())) + f"|{since:.3f}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render(template: str, labels: dict[str, str], value: float, threshold: float) -> str:
    """Fill `{label}`, `{value}` and `{threshold}` (with format specs); a broken template stays as is."""
    try:
        return template.format(value=value, threshold=threshold, **labels)
    except (KeyError, ValueError, IndexError):
        return template


def evaluate(rules: list[Rule], samples: Samples, active: dict, now: float) -> tuple[dict, list[AlertStatus]]:
    """One evaluation. `active` maps key_of(...) to pending or firing alerts; returns the new map
    and the transitions (alerts that just fired or just resolved)."""
    out: dict = {}
    transitions: list[AlertStatus] = []
    by_rule = {r.name: r for r in rules if r.enabled}
    for rule in by_rule.values():
        for labels, value in samples.get(rule.metric, []):
            full = {**labels, **rule.labels}
            key = key_of(rule.name, full)
            previous = active.get(key)
            if not rule.matches(value):
                continue
            if previous is None:
                previous = AlertStatus(
                    id=alert_id(rule.name, full, now),
                    rule=rule.name,
                    severity=rule.severity,
                    labels=full,
                    state=PENDING,
                    since=now,
                    value=value,
                    threshold=rule.threshold,
                )
            current = replace(
                previous,
                value=value,
                last_eval=now,
                summary=render(rule.summary, full, value, rule.threshold),
                description=render(rule.description, full, value, rule.threshold),
            )
            if current.state == PENDING and now - current.since >= rule.for_s:
                current = replace(current, state=FIRING, since=now)
                transitions.append(current)
            out[key] = current
    for key, previous in active.items():
        if key in out:
            continue
        if previous.state == FIRING:  # the condition is gone, or the rule was removed
            transitions.append(replace(previous, state=RESOLVED, resolved_at=now, last_eval=now))
    return out, transitions
