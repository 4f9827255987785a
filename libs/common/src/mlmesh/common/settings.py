"""Service settings from `MLMESH_<SVC>_*` environment variables (pydantic-settings).

`load_settings` turns a validation failure into one line naming the variable, so a typo in a
deployment manifest fails fast with a readable message instead of a pydantic traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mlmesh.common.auth import ROLES

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class SettingsError(Exception):
    """A malformed or missing setting; the message is one line naming the variable."""


class ServiceSettings(BaseSettings):
    """Settings every service shares. Subclasses set `service_name` and `model_config.env_prefix`."""

    service_name: ClassVar[str] = "service"
    model_config = SettingsConfigDict(env_prefix="MLMESH_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    metrics_port: int = Field(default=0, ge=-1, le=65535, description="-1 disables, 0 picks a free port")
    nats_url: str = "nats://127.0.0.1:4222"
    nats_connect_timeout_s: float = Field(default=5.0, gt=0)
    nats_creds_file: Path | None = Field(default=None, description="this service's NATS credentials (.creds)")
    auth_public_key_file: Path | None = None
    auth_jwks_url: str | None = None
    auth_issuer: str = "mlmesh"
    auth_audience: str = "mlmesh"
    # Where an identity provider's tokens put the team and roles (mlmesh.common.claims).
    auth_team_claim: str = Field(default="team", min_length=1, description="claim name or dotted path")
    auth_roles_claim: str = Field(default="roles", min_length=1, description="claim name or dotted path")
    auth_team_prefix: str = Field(default="", description="keep team entries with this prefix, minus it")
    # NoDecode: parsed by the validator below, so bad JSON is one line naming the variable.
    auth_role_map: Annotated[dict[str, str] | None, NoDecode] = Field(
        default=None, description='JSON object, IdP role -> mlmesh role, e.g. {"ml-devs": "developer"}'
    )
    service_token_file: Path | None = None
    log_level: LogLevel = "INFO"
    log_json: bool = True
    stream_replicas: int = Field(default=1, ge=1, le=5, description="replicas of the JetStream streams and KV buckets")
    otlp_endpoint: str | None = Field(default=None, description="OTLP/gRPC collector; unset: no spans recorded")
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1, description="share of new traces recorded")
    max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    ready_file: Path | None = Field(default=None, description="written with the bound ports once SERVING")

    @field_validator("auth_role_map", mode="before")
    @classmethod
    def _role_map_json(cls, value):
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"must be a JSON object of role names ({exc.msg})") from None

    @field_validator("auth_role_map")
    @classmethod
    def _role_map_targets(cls, value: dict[str, str] | None):
        unknown = sorted(set((value or {}).values()) - ROLES)
        if unknown:
            raise ValueError(f"maps to unknown roles {unknown}; mlmesh roles are {sorted(ROLES)}")
        return value

    @model_validator(mode="after")
    def _one_key_source(self):
        if self.auth_public_key_file is None and not self.auth_jwks_url:
            raise ValueError("set AUTH_PUBLIC_KEY_FILE or AUTH_JWKS_URL: every call is authenticated")
        if self.auth_public_key_file is not None and self.auth_jwks_url:
            raise ValueError("set only one of AUTH_PUBLIC_KEY_FILE and AUTH_JWKS_URL")
        if self.auth_public_key_file is not None and not self.auth_public_key_file.is_file():
            raise ValueError(f"AUTH_PUBLIC_KEY_FILE {self.auth_public_key_file} does not exist")
        if self.nats_creds_file is not None and not self.nats_creds_file.is_file():
            raise ValueError(f"NATS_CREDS_FILE {self.nats_creds_file} does not exist")
        if not self.nats_url.startswith(("nats://", "tls://")):
            raise ValueError("NATS_URL must start with nats:// or tls://")
        if self.auth_roles_claim != "roles" and self.auth_role_map is None:
            # An identity provider's roles are its own names: passed through, a group that happens
            # to be called "admin" would act for every team.
            raise ValueError("AUTH_ROLES_CLAIM names an identity provider's roles: set AUTH_ROLE_MAP too")
        return self


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides) -> S:
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, cls.model_config.get("env_prefix", ""))) from None


def describe_validation_error(exc: ValidationError, env_prefix: str) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if loc:
            parts.append(f"{env_prefix}{'_'.join(loc).upper()}: {msg}")
        else:
            parts.append(f"{msg} (prefix {env_prefix})")
    return "invalid settings: " + "; ".join(parts)
