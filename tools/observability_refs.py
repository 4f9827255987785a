"""The mlmesh metrics that the observability config (Grafana dashboards, Prometheus rule files) reads.

`referenced_metrics(root)` maps each dashboard under `deploy/grafana/dashboards` and each rule file
under `deploy/prometheus` to the mlmesh metric names its PromQL expressions reference: histogram
series (`_bucket`, `_sum`, `_count`) are reported by their family name, counters as written (with
`_total`), and recording-rule outputs (`mlmesh:...`, or any name a rule file records) not at all.

`family_name(ref, families)` maps such a name to the family Prometheus' text parser yields for it
(counters without `_total`, histograms by family name), or None when no family matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

DASHBOARDS = Path("deploy/grafana/dashboards")
PROMETHEUS = Path("deploy/prometheus")
RULE_FILE_SUFFIXES = ("_rules.yaml", "_rules.yml")

# A metric name starts where no name character (or `:`, recording-rule names) precedes it.
_NAME = re.compile(r"(?<![A-Za-z0-9_:])mlmesh_[a-z0-9_]+")
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|#[^\n]*')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"(mlmesh_[a-z0-9_]+)"')
_SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])(mlmesh_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _strip(expr: str) -> str:
    """The expression without string literals and comments (names in them are no references)."""
    return _STRING_OR_COMMENT.sub(lambda m: "" if m.group(0).startswith("#") else '""', expr)


def _base(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def names_in(expr: str) -> set[str]:
    """The mlmesh metric names one PromQL expression references (histogram suffixes stripped)."""
    found = set(_NAME_MATCHER.findall(expr)) | set(_NAME.findall(_strip(expr)))
    return {_base(n) for n in found}


def label_matchers(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched in its `{...}` selector) for each mlmesh selector in `expr`."""
    return [(_base(m.group(1)), set(_MATCHER_LABEL.findall(m.group(2)))) for m in _SELECTOR.finditer(_strip(expr))]


def _dashboard_exprs(node) -> Iterator[str]:
    """Panel target `expr`s (nested rows included) and template-variable queries of a dashboard."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        if node.get("type") == "query" and "name" in node:  # a template variable
            query = node.get("query")
            if isinstance(query, dict):
                query = query.get("query")
            if isinstance(query, str):
                yield query
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from _dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_exprs(item)


def rule_files(root: Path) -> list[Path]:
    folder = root / PROMETHEUS
    return sorted(p for p in folder.glob("*") if p.name.endswith(RULE_FILE_SUFFIXES)) if folder.is_dir() else []


def _rules(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text()) or {}
    return [rule for group in doc.get("groups") or [] for rule in group.get("rules") or []]


def expressions(root: Path) -> dict[str, list[str]]:
    """Per file (path relative to `root`), the PromQL expressions in it."""
    out: dict[str, list[str]] = {}
    folder = root / DASHBOARDS
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        out[str(path.relative_to(root))] = list(_dashboard_exprs(json.loads(path.read_text())))
    for path in rule_files(root):
        out[str(path.relative_to(root))] = [str(r["expr"]) for r in _rules(path) if "expr" in r]
    return out


def recorded_names(root: Path) -> set[str]:
    """Every name a rule file records (these are rule outputs, not exported metrics)."""
    return {str(r["record"]) for path in rule_files(root) for r in _rules(path) if "record" in r}


def referenced_metrics(root: Path) -> dict[str, set[str]]:
    recorded = recorded_names(root)
    return {name: {n for expr in exprs for n in names_in(expr)} - recorded for name, exprs in expressions(root).items()}


def family_name(ref: str, families: set[str]) -> str | None:
    """The exported family (as the text parser names it) a referenced series name belongs to.

    By name only (families carry no types here): an exact match first, then the name less a counter
    (`_total`, `_created`) or histogram (`_bucket`, `_sum`, `_count`) suffix."""
    if ref in families:
        return ref
    for suffix in ("_total", "_created", *HISTOGRAM_SUFFIXES):
        if ref.endswith(suffix) and ref[: -len(suffix)] in families:
            return ref[: -len(suffix)]
    return None


if __name__ == "__main__":
    import sys

    for file, names in referenced_metrics(Path(sys.argv[1] if len(sys.argv) > 1 else ".")).items():
        print(file, *sorted(names), sep="\n  ")
