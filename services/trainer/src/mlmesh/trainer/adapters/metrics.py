"""Prometheus metrics of training runs (the same figures as the progress events)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

_LABELS = ["team", "job_id"]
STEP = Gauge("mlmesh_training_step", "Optimizer steps done by the job's current run", _LABELS)
LOSS = Gauge("mlmesh_training_loss", "Latest training loss", _LABELS)
TOKENS = Gauge("mlmesh_training_tokens_per_second", "Training throughput in tokens/s, all ranks", _LABELS)
SAMPLES = Gauge("mlmesh_training_samples_per_second", "Training throughput in samples/s, all ranks", _LABELS)
MFU = Gauge("mlmesh_training_mfu_ratio", "Model FLOPs utilization 0..1 (GPU runs)", _LABELS)
ETA = Gauge("mlmesh_training_eta_seconds", "Estimated seconds to completion", _LABELS)
RESTARTS = Counter("mlmesh_trainer_restarts_total", "Worker-group restarts by failure class", ["failure_class"])
RUNS = Counter("mlmesh_trainer_runs_finished_total", "Runs reaching a terminal state", ["state"])
_ALL = (STEP, LOSS, TOKENS, SAMPLES, MFU, ETA)


def record_progress(team: str, job_id: str, p: dict) -> None:
    STEP.labels(team, job_id).set(p.get("step", 0))
    LOSS.labels(team, job_id).set(p.get("loss", 0.0))
    TOKENS.labels(team, job_id).set(p.get("tokens_per_second", 0.0))
    SAMPLES.labels(team, job_id).set(p.get("samples_per_second", 0.0))
    MFU.labels(team, job_id).set(p.get("mfu", 0.0))
    ETA.labels(team, job_id).set(p.get("eta_s", 0.0))


def forget(team: str, job_id: str) -> None:
    """A finished job's series go away, so the label set stays bounded."""
    for gauge in _ALL:
        with contextlib.suppress(KeyError):
            gauge.remove(team, job_id)
