"""Storage settings: `MLMESH_STORAGE_*` environment variables."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class StorageSettings(ServiceSettings):
    service_name: ClassVar[str] = "storage"
    model_config = SettingsConfigDict(env_prefix="MLMESH_STORAGE_", extra="ignore", frozen=True)

    hot_dir: Path = Field(default=Path("/var/lib/mlmesh/hot"), description="fast local disk; uploads stage here")
    warm_dir: Path = Field(default=Path("/var/lib/mlmesh/warm"), description="a second filesystem")
    s3_endpoint_url: str | None = Field(default=None, description="cold tier; unset = no cold tier")
    s3_bucket: str = "mlmesh-cold"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    hot_capacity_bytes: int = Field(default=0, ge=0, description="0 = unbounded")
    hot_idle_s: float = Field(default=24 * 3600.0, gt=0)
    warm_idle_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    tier_interval_s: float = Field(default=60.0, gt=0, description="how often tiering and GC run")
    upload_ttl_s: float = Field(default=24 * 3600.0, gt=0, description="an unfinished upload expires after this")
    default_quota_bytes: int = Field(default=0, ge=0, description="per team; 0 = unlimited")
    chunk_size_bytes: int = Field(default=4 << 20, ge=64 << 10, le=32 << 20)
