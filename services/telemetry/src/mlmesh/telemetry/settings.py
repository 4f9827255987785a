"""Telemetry settings: `MLMESH_TELEMETRY_*` environment variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class TelemetrySettings(ServiceSettings):
    service_name: ClassVar[str] = "telemetry"
    model_config = SettingsConfigDict(env_prefix="MLMESH_TELEMETRY_", extra="ignore", frozen=True)
