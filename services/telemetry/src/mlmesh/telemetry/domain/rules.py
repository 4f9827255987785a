"""Alert rules from YAML: parsing with errors that name the bad field.

A rule compares one signal (see `signals.SIGNALS`) against a threshold; each label set of the
signal is its own alert. Example:

    rules:
      - name: gpu_memory_high
        severity: warning            # info | warning | critical
        metric: gpu_memory_used_ratio
        op: ">"                      # > >= < <= ==
        threshold: 0.9
        for: 60s                     # the condition must hold this long before it fires
        summary: "GPU {gpu} on {node} uses {value:.0%} of its memory"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from mlmesh.common.errors import FieldViolation, InvalidArgument

SEVERITIES = ("info", "warning", "critical")
OPS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "==": "eq"}
_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
FIELDS = {"name", "severity", "metric", "op", "threshold", "for", "summary", "description", "labels", "enabled"}
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    metric: str
    op: str
    threshold: float
    for_s: float = 0.0
    summary: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    enabled: bool = True

    def matches(self, value: float) -> bool:
        t = self.threshold
        return {
            "gt": value > t,
            "ge": value >= t,
            "lt": value < t,
            "le": value <= t,
            "eq": value == t,
        }[self.op]


def parse_duration(value, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value).strip())
        if not m:
            raise InvalidArgument.field(where, f"{value!r} is not a duration like 30s, 5m or 1h")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds < 0:
        raise InvalidArgument.field(where, "must not be negative")
    return seconds


def parse_rules(text: str, known_metrics: set[str]) -> list[Rule]:
    """Parse a rules file; every problem is reported at once, each naming `rules[i].field`."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"alert rules are not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rules", []), list):
        raise InvalidArgument.field("rules", "must be a list of rules")
    problems: list[tuple[str, str]] = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc.get("rules") or []):
        where = f"rules[{i}]"
        if not isinstance(raw, dict):
            problems.append((where, "must be a mapping"))
            continue
        rule = _parse_one(raw, where, known_metrics, problems)
        if rule is None:
            continue
        if rule.name in seen:
            problems.append((f"{where}.name", f"{rule.name!r} is defined twice"))
        seen.add(rule.name)
        rules.append(rule)
    if problems:
        detail = "; ".join(f"{f}: {d}" for f, d in problems)
        raise InvalidArgument(f"invalid alert rules: {detail}", [FieldViolation(f, d) for f, d in problems])
    return rules


def _parse_one(raw: dict, where: str, known: set[str], problems: list[tuple[str, str]]) -> Rule | None:
    unknown = set(raw) - FIELDS
    for key in sorted(unknown):
        problems.append((f"{where}.{key}", "unknown field"))
    name = str(raw.get("name", ""))
    if not _NAME.match(name):
        problems.append((f"{where}.name", "required; lowercase letters, digits, _ and - (it is a NATS subject token)"))
    severity = str(raw.get("severity", "warning")).lower()
    if severity not in SEVERITIES:
        problems.append((f"{where}.severity", f"must be one of {', '.join(SEVERITIES)}"))
    metric = str(raw.get("metric", ""))
    if metric not in known:
        problems.append((f"{where}.metric", f"unknown signal {metric!r}; known: {', '.join(sorted(known))}"))
    op = str(raw.get("op", ">"))
    if op not in OPS:
        problems.append((f"{where}.op", f"must be one of {' '.join(OPS)}"))
    threshold = raw.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        problems.append((f"{where}.threshold", "required; a number"))
    for_s = 0.0
    try:
        for_s = parse_duration(raw.get("for", 0), f"{where}.for")
    except InvalidArgument as exc:
        problems.extend((v.field, v.description) for v in exc.violations)
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict):
        problems.append((f"{where}.labels", "must be a mapping of strings"))
        labels = {}
    if any(f == where or f.startswith(where + ".") for f, _ in problems):
        return None
    return Rule(
        name=name,
        severity=severity,
        metric=metric,
        op=OPS[op],
        threshold=float(threshold),
        for_s=for_s,
        summary=str(raw.get("summary", "")),
        description=str(raw.get("description", "")),
        labels={str(k): str(v) for k, v in labels.items()},
        enabled=bool(raw.get("enabled", True)),
    )
