"""Trainer settings: `MLMESH_TRAINER_*` environment variables."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    service_name: ClassVar[str] = "trainer"
    model_config = SettingsConfigDict(env_prefix="MLMESH_TRAINER_", extra="ignore", frozen=True)
