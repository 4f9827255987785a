"""A worker's spans: one per rank under the trainer's launch span, with the notable phases
(data, model load, train loop, checkpoints, final save) as children.

Only when the trainer passed an OTLP endpoint and a sampled TRACEPARENT; otherwise nothing is set
up and every phase span is a shared no-op."""

from __future__ import annotations

import os

from opentelemetry.trace import StatusCode

from mlmesh.common import tracing
from mlmesh.common.telemetry import setup_tracing
from mlmesh.trainer.worker.config import OTLP_ENV, TOKEN_ENV, WorkerConfig

SERVICE = "trainer-worker"


class RankTrace:
    def __init__(self) -> None:
        self._span_cm = None
        self.span = None
        self._flush = None

    def start(self, cfg: WorkerConfig) -> None:
        endpoint = os.environ.get(OTLP_ENV, "")
        traceparent = os.environ.get(tracing.TRACEPARENT_ENV, "")
        if not endpoint or not tracing.is_sampled(traceparent):
            return
        self._flush = setup_tracing(SERVICE, endpoint, token=os.environ.get(TOKEN_ENV, ""))
        rank = int(os.environ.get("RANK", "0"))
        attributes = {
            tracing.RANK: rank,
            "mlmesh.world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "mlmesh.run_id": cfg.run_id,
        }
        self._span_cm = tracing.job_span(f"worker rank {rank}", traceparent, cfg.job_id, cfg.team, attributes)
        self.span = self._span_cm.__enter__()

    def fail(self, exc: BaseException, code: int) -> None:
        if self.span is not None:
            self.span.record_exception(exc)
            self.span.set_attribute("mlmesh.exit_code", code)
            self.span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: exit {code}")

    def close(self) -> None:
        """End the rank's span and send what is buffered (before the process exits)."""
        if self._span_cm is not None:
            self._span_cm.__exit__(None, None, None)
            self._span_cm = self.span = None
        if self._flush is not None:
            self._flush()
            self._flush = None


def phase(name: str, **attributes):
    """A child span of the current one for a phase of the worker; a no-op when untraced."""
    return tracing.child_span(f"worker.{name}", attributes=attributes or None)
