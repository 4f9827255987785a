"""The bounded in-memory trace store behind `GetTrace` and `mlmesh trace`.

Spans arrive in OTLP batches from every service. The store keeps the most recently updated
traces: at most `max_traces` traces and `max_spans` spans in all; the trace updated longest ago is
evicted first. A job id maps to the first trace seen carrying it (its submission's), read from the
spans' `mlmesh.job_id` attribute. A trace is visible to admins and services, and to a caller whose
team is the `mlmesh.team` of one of its spans; to anyone else it is NOT_FOUND.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlmesh.common.auth import Identity

JOB_ID = "mlmesh.job_id"
TEAM = "mlmesh.team"
DEFAULT_MAX_TRACES = 1000
DEFAULT_MAX_SPANS = 100_000


@dataclass(frozen=True)
class StoredSpan:
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_span_id: str  # "" for a root
    name: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, str] = field(default_factory=dict)
    error: bool = False
    status_message: str = ""


@dataclass
class _Trace:
    spans: dict[str, StoredSpan] = field(default_factory=dict)
    teams: set[str] = field(default_factory=set)
    jobs: set[str] = field(default_factory=set)


class TraceStore:
    def __init__(self, max_traces: int = DEFAULT_MAX_TRACES, max_spans: int = DEFAULT_MAX_SPANS):
        if max_traces < 1 or max_spans < 1:
            raise ValueError("max_traces and max_spans must be >= 1")
        self.max_traces = max_traces
        self.max_spans = max_spans
        self._traces: OrderedDict[str, _Trace] = OrderedDict()
        self._by_job: dict[str, str] = {}
        self.span_count = 0
        self.dropped_spans = 0  # spans of a trace already holding max_spans

    def __len__(self) -> int:
        return len(self._traces)

    def add(self, spans: Iterable[StoredSpan]) -> int:
        """Store spans (a re-sent span replaces itself); returns how many were refused."""
        refused = 0
        for span in spans:
            held = self._traces.get(span.trace_id)
            if held is None:
                held = self._traces[span.trace_id] = _Trace()
            else:
                self._traces.move_to_end(span.trace_id)
            if span.span_id not in held.spans:
                if len(held.spans) >= self.max_spans:
                    refused += 1
                    continue
                self.span_count += 1
            held.spans[span.span_id] = span
            if team := span.attributes.get(TEAM):
                held.teams.add(team)
            if (job := span.attributes.get(JOB_ID)) and job not in held.jobs:
                held.jobs.add(job)
                self._by_job.setdefault(job, span.trace_id)
            self._evict(keep=span.trace_id)
        self.dropped_spans += refused
        return refused

    def _evict(self, keep: str) -> None:
        while len(self._traces) > self.max_traces or self.span_count > self.max_spans:
            oldest = next(iter(self._traces))
            if oldest == keep:  # only the trace being written is left
                return
            gone = self._traces.pop(oldest)
            self.span_count -= len(gone.spans)
            for job in gone.jobs:
                if self._by_job.get(job) == oldest:
                    del self._by_job[job]

    def trace_of_job(self, job_id: str) -> str | None:
        return self._by_job.get(job_id)

    def get(self, trace_id: str, caller: Identity) -> list[StoredSpan] | None:
        """The trace's spans by start time, or None when not held or not visible to `caller`."""
        held = self._traces.get(trace_id)
        if held is None or not visible(held.teams, caller):
            return None
        return sorted(held.spans.values(), key=lambda s: (s.start_ns, s.span_id))


def visible(teams: set[str], caller: Identity) -> bool:
    return caller.is_admin or caller.is_service or caller.team in teams
