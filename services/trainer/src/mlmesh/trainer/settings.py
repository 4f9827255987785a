"""Trainer settings: `MLMESH_TRAINER_*` environment variables."""

import sys
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    service_name: ClassVar[str] = "trainer"
    model_config = SettingsConfigDict(env_prefix="MLMESH_TRAINER_", extra="ignore", frozen=True)

    storage_address: str | None = Field(default=None, description="host:port of storage; unset = no checkpoints")
    fabric_address: str | None = Field(default=None, description="host:port of the fabric, for GPU facts")
    work_dir: Path = Field(default=Path(".mlmesh/trainer"), description="run directories: configs, logs")
    executor: Literal["local", "agents", "kubernetes"] = "local"
    worker_nats_creds_file: Path | None = Field(
        default=None, description="NATS credentials handed to workers (the worker identity: reports only)"
    )

    @model_validator(mode="after")
    def _workers_can_report(self):
        # With NATS auth on, a worker without credentials could never report: refuse at start.
        if self.nats_creds_file is not None and self.worker_nats_creds_file is None:
            raise ValueError("NATS_CREDS_FILE is set: set WORKER_NATS_CREDS_FILE too (workers report over NATS)")
        if self.worker_nats_creds_file is not None and not self.worker_nats_creds_file.is_file():
            raise ValueError(f"WORKER_NATS_CREDS_FILE {self.worker_nats_creds_file} does not exist")
        return self

    worker_python: str = Field(default=sys.executable, description="interpreter of local workers")
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_timeout_s: float = Field(default=15.0, gt=0, description="a rank silent this long is dead")
    startup_timeout_s: float = Field(default=900.0, gt=0, description="longest wait for a rank's first heartbeat")
    collective_timeout_s: float = Field(default=300.0, gt=0)
    default_stop_grace_s: float = Field(default=120.0, ge=0)
    default_max_restarts: int = Field(default=2, ge=0, description="when the spec's max_restarts is 0")
    default_checkpoint_interval_s: float = Field(
        default=1800.0, ge=0, description="when a spec sets no checkpoint policy"
    )
    progress_event_interval_s: float = Field(default=1.0, ge=0, description="JobProgress events at most this often")
    kubernetes_namespace: str = "mlmesh"
    kubernetes_image: str = "ghcr.io/mlmesh/trainer:0.1.0"
    kubeconfig: str | None = None
