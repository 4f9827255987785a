"""Fabric settings: the service (`MLMESH_FABRIC_*`) and the node agent (`MLMESH_AGENT_*`)."""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlmesh.common.settings import ServiceSettings


class FabricSettings(ServiceSettings):
    service_name: ClassVar[str] = "fabric"
    model_config = SettingsConfigDict(env_prefix="MLMESH_FABRIC_", extra="ignore", frozen=True)

    heartbeat_interval_s: float = Field(default=1.0, gt=0, description="what agents are told to use")
    missed_heartbeats: int = Field(default=3, ge=1, description="NotReady after this many missed heartbeats")
    lease_ttl_s: float = Field(default=6.0, ge=1)
    replica_id: str | None = None


class AgentSettings(ServiceSettings):
    """The node agent is a gRPC server too (NodeAgentService), so it shares the service settings."""

    service_name: ClassVar[str] = "fabric-agent"
    model_config = SettingsConfigDict(env_prefix="MLMESH_AGENT_", extra="ignore", frozen=True)

    fabric_address: str = Field(description="host:port of the fabric service")
    node_id: str | None = Field(default=None, description="default: the hostname, sanitized")
    advertise_host: str | None = Field(default=None, description="host other nodes reach this agent on")
    rack: str = ""
    switch: str = ""
    zone: str = ""
    nvlink_domain: str = ""
    pool: Literal["onprem", "cloud"] = "onprem"
    spot: bool = False
    reserve_cpu_millis: int = Field(default=0, ge=0)
    reserve_memory_bytes: int = Field(default=0, ge=0)
    log_dir: Path = Path("/tmp/mlmesh-workers")
    stop_grace_s: float = Field(default=10.0, ge=0)
