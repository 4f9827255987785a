"""Storage settings: `MLMESH_STORAGE_*` environment variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class StorageSettings(ServiceSettings):
    service_name: ClassVar[str] = "storage"
    model_config = SettingsConfigDict(env_prefix="MLMESH_STORAGE_", extra="ignore", frozen=True)
