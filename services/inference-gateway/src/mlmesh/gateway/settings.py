"""Gateway settings: `MLMESH_GATEWAY_*` environment variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: ClassVar[str] = "gateway"
    model_config = SettingsConfigDict(env_prefix="MLMESH_GATEWAY_", extra="ignore", frozen=True)
