"""Scheduler settings: `MLMESH_SCHEDULER_*` environment variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    service_name: ClassVar[str] = "scheduler"
    model_config = SettingsConfigDict(env_prefix="MLMESH_SCHEDULER_", extra="ignore", frozen=True)
