"""What a worker is told to do: a JSON file the controller writes, read once at start.

Secrets are not in it: the storage token comes in the environment (MLMESH_WORKER_TOKEN), and so
does the trace context (TRACEPARENT, MLMESH_WORKER_OTLP_ENDPOINT)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

TOKEN_ENV = "MLMESH_WORKER_TOKEN"
# The worker identity's NATS credentials (file text): workers may only publish their reports.
NATS_CREDS_ENV = "MLMESH_WORKER_NATS_CREDS"
# Where the worker sends its spans (the trainer's own OTLP endpoint); unset: the worker records none.
# The token (TOKEN_ENV) authenticates the export; TRACEPARENT names the run's span as the parent.
OTLP_ENV = "MLMESH_WORKER_OTLP_ENDPOINT"


@dataclass
class WorkerConfig:
    run_id: str
    job_id: str
    team: str
    # "builtin:<name>" or a local Hugging Face directory.
    model: str
    # Local jsonl file.
    dataset: str
    # "text_generation" or "text_classification" (embedding models train as classifiers).
    task: str
    # The planner's Plan as proto3 JSON (camelCase keys, as json_format writes them).
    plan: dict
    # Hyperparameters as proto3 JSON.
    hyperparameters: dict = field(default_factory=dict)
    column_mapping: dict = field(default_factory=dict)
    output_dir: str = "."
    # Checkpointing.
    checkpoint_every_n_steps: int = 0
    checkpoint_every_s: float = 0.0
    async_checkpoint: bool = False
    retention: dict = field(default_factory=dict)  # storage RetentionPolicy as proto3 JSON
    # Local directory of a checkpoint to resume from, or a storage artifact id to fetch it from.
    resume_dir: str = ""
    resume_artifact_id: str = ""
    # Where results go; empty = local only (benchmarks).
    storage_address: str = ""
    nats_url: str = ""
    heartbeat_interval_s: float = 1.0
    # Rank 0 appends one JSON line per logged step here (losses, throughput).
    progress_file: str = ""
    log_every_n_steps: int = 1
    collective_timeout_s: float = 300.0
    peak_flops_per_device: float = 0.0
    # Upload the final weights as a MODEL artifact (needs storage).
    upload_model: bool = True
    # Steps to time before the first progress report counts (compile warm-up).
    warmup_report_steps: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def load(cls, path: str | Path) -> WorkerConfig:
        data = json.loads(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown worker config keys {sorted(unknown)}")
        return cls(**data)
