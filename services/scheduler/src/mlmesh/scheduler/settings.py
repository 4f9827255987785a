"""Scheduler settings: `MLMESH_SCHEDULER_*` environment variables."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    service_name: ClassVar[str] = "scheduler"
    model_config = SettingsConfigDict(env_prefix="MLMESH_SCHEDULER_", extra="ignore", frozen=True)

    trainer_address: str | None = Field(default=None, description="host:port of the trainer; unset = no dispatch")
    storage_address: str | None = Field(default=None, description="host:port of storage, for register_model steps")
    inference_gateway_address: str | None = Field(
        default=None, description="host:port of the inference gateway, for deploy_model steps"
    )
    inventory_file: Path | None = Field(default=None, description="JSON list of fabric.v1.Node; unset = fabric KV")
    cycle_interval_s: float = Field(default=0.5, gt=0, description="admission cycle period when nothing changes")
    lease_ttl_s: float = Field(default=6.0, ge=1)
    replica_id: str | None = Field(default=None, description="lease holder name; default host-pid")
    max_admissions_per_cycle: int = Field(default=5000, ge=1)
    nats_account_signing_key_file: Path | None = Field(
        default=None, description="nkey seed that signs teams' event credentials; unset = none issued"
    )
    nats_account: str = Field(default="", description="public key of the NATS account the credentials belong to")
