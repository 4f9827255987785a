"""Telemetry settings: `MLMESH_TELEMETRY_*` environment variables."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings

DEFAULT_RULES = Path(__file__).parent / "default_rules.yaml"


class TelemetrySettings(ServiceSettings):
    service_name: ClassVar[str] = "telemetry"
    model_config = SettingsConfigDict(env_prefix="MLMESH_TELEMETRY_", extra="ignore", frozen=True)

    alert_rules_file: Path = Field(default=DEFAULT_RULES, description="YAML alert rules")
    eval_interval_s: float = Field(default=10.0, gt=0, description="how often the rules are evaluated")
    history_s: float = Field(default=7 * 86400.0, gt=0, description="replayed on start; aggregates keep this long")
    failure_rate_window_s: float = Field(default=3600.0, gt=0)
    failure_rate_min_jobs: int = Field(default=3, ge=1, description="finished jobs before a failure rate counts")
    scrape_targets: str = Field(default="", description="comma-separated gateway /metrics URLs (inference p99)")
    scrape_interval_s: float = Field(default=15.0, gt=0)
    latency_window_s: float = Field(default=300.0, gt=0, description="window of the inference p99 signal")
    trace_max_traces: int = Field(default=1000, ge=1, description="traces the OTLP receiver keeps")
    trace_max_spans: int = Field(default=100_000, ge=1, description="spans it keeps over all traces")
    replica_id: str = ""
    lease_ttl_s: float = Field(default=15.0, gt=0)

    def targets(self) -> list[str]:
        return [t.strip() for t in self.scrape_targets.split(",") if t.strip()]
