"""Fabric settings: `MLMESH_FABRIC_*` environment variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class FabricSettings(ServiceSettings):
    service_name: ClassVar[str] = "fabric"
    model_config = SettingsConfigDict(env_prefix="MLMESH_FABRIC_", extra="ignore", frozen=True)
