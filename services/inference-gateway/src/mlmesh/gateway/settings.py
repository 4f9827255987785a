"""Gateway settings: `MLMESH_GATEWAY_*` environment variables."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


def split_urls(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class GatewaySettings(ServiceSettings):
    service_name: ClassVar[str] = "gateway"
    model_config = SettingsConfigDict(env_prefix="MLMESH_GATEWAY_", extra="ignore", frozen=True)

    # Triton backends: comma-separated, paired by position (the n-th gRPC URL and the n-th HTTP URL
    # are the same server).
    triton_grpc_urls: str = Field(default="127.0.0.1:8001", description="host:port of each Triton's gRPC port")
    triton_http_urls: str = Field(default="http://127.0.0.1:8000", description="URL of each Triton's HTTP port")
    http_host: str | None = Field(default=None, description="defaults to HOST")
    http_port: int = Field(default=8000, ge=0, le=65535, description="KServe v2 REST front; 0 picks a free port")
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="larger requests answer 413 / RESOURCE_EXHAUSTED"
    )
    request_timeout_s: float = Field(default=60.0, gt=0, description="deadline of a call that brings none")
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=5.0, ge=0)
    health_interval_s: float = Field(default=2.0, gt=0)
    health_failures_unhealthy: int = Field(default=2, ge=1, description="failed ServerLive checks in a row")
    retry_ratio: float = Field(default=0.1, ge=0)
    retry_min_per_s: float = Field(default=10.0, ge=0)
    # Deployments: registry versions written into Triton's model repository and loaded there.
    storage_address: str | None = Field(default=None, description="host:port of storage (the model registry)")
    model_repository: Path | None = Field(
        default=None, description="Triton's --model-repository, shared with every Triton; unset = no deployments"
    )
    reconcile_interval_s: float = Field(default=15.0, gt=0, description="how often READY deployments are checked")
    load_timeout_s: float = Field(default=600.0, gt=0, description="longest Triton load of one deployment")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="default wait for in-flight requests on undeploy")
    # Result cache and rate limits (valkey / Redis; optional: without it nothing is cached or limited).
    valkey_url: SecretStr | None = Field(default=None, description="redis://host:6379/0; may hold a password")
    valkey_password: SecretStr | None = Field(default=None, description="never logged")
    valkey_timeout_s: float = Field(default=0.05, gt=0, description="socket timeout of each valkey call")
    cache_ttl_s: float = Field(default=60.0, ge=0, description="0 disables the result cache")
    rate_limit_per_s: float = Field(default=0.0, ge=0, description="per team; 0 disables the limit")
    rate_limit_burst: int = Field(default=0, ge=0, description="bucket size; 0 = one second's worth (at least 1)")

    @model_validator(mode="after")
    def _paired_backends(self):
        grpc_urls, http_urls = split_urls(self.triton_grpc_urls), split_urls(self.triton_http_urls)
        if not grpc_urls:
            raise ValueError("TRITON_GRPC_URLS must name at least one Triton")
        if len(grpc_urls) != len(http_urls):
            raise ValueError("TRITON_GRPC_URLS and TRITON_HTTP_URLS must list the same servers, paired by position")
        return self

    @property
    def backend_urls(self) -> list[tuple[str, str]]:
        return list(zip(split_urls(self.triton_grpc_urls), split_urls(self.triton_http_urls), strict=True))
