"""Settings from MLMESH_<SVC>_* variables: a bad value is one line naming the variable."""

from __future__ import annotations

import os

import pytest

from mlmesh.common.settings import SettingsError, load_settings
from mlmesh.scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def env(monkeypatch, signing_key):
    for name in list(os.environ):
        if name.startswith("MLMESH_SCHEDULER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLMESH_SCHEDULER_AUTH_PUBLIC_KEY_FILE", str(signing_key.public_key_file))
    return monkeypatch


def _error(**overrides) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(SchedulerSettings, **overrides)
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


def test_env_vars_are_read(env):
    env.setenv("MLMESH_SCHEDULER_GRPC_PORT", "5123")
    env.setenv("MLMESH_SCHEDULER_LOG_LEVEL", "DEBUG")
    settings = load_settings(SchedulerSettings)
    assert settings.grpc_port == 5123
    assert settings.log_level == "DEBUG"
    assert settings.service_name == "scheduler"


def test_malformed_port_names_the_variable(env):
    env.setenv("MLMESH_SCHEDULER_GRPC_PORT", "abc")
    message = _error()
    assert "MLMESH_SCHEDULER_GRPC_PORT" in message
    assert "Traceback" not in message


def test_out_of_range_port_names_the_variable(env):
    env.setenv("MLMESH_SCHEDULER_GRPC_PORT", "70000")
    assert "MLMESH_SCHEDULER_GRPC_PORT" in _error()


def test_several_bad_values_are_all_named_on_one_line(env):
    env.setenv("MLMESH_SCHEDULER_GRPC_PORT", "abc")
    env.setenv("MLMESH_SCHEDULER_LOG_LEVEL", "LOUD")
    message = _error()
    assert "MLMESH_SCHEDULER_GRPC_PORT" in message and "MLMESH_SCHEDULER_LOG_LEVEL" in message


def test_missing_key_source_mentions_auth_public_key_file(env):
    env.delenv("MLMESH_SCHEDULER_AUTH_PUBLIC_KEY_FILE")
    assert "AUTH_PUBLIC_KEY_FILE" in _error()


def test_missing_key_file_is_named(env, tmp_path):
    env.setenv("MLMESH_SCHEDULER_AUTH_PUBLIC_KEY_FILE", str(tmp_path / "absent.pem"))
    message = _error()
    assert "AUTH_PUBLIC_KEY_FILE" in message and "absent.pem" in message


def test_bad_nats_url_is_named(env):
    env.setenv("MLMESH_SCHEDULER_NATS_URL", "http://127.0.0.1:4222")
    assert "NATS_URL" in _error()


def test_missing_nats_creds_file_is_named(env, tmp_path):
    env.setenv("MLMESH_SCHEDULER_NATS_CREDS_FILE", str(tmp_path / "absent.creds"))
    message = _error()
    assert "NATS_CREDS_FILE" in message and "absent.creds" in message


def test_an_identity_providers_roles_need_a_role_map(env):
    """Passed through, an IdP group named "admin" would act for every team."""
    env.setenv("MLMESH_SCHEDULER_AUTH_ROLES_CLAIM", "realm_access.roles")
    assert "AUTH_ROLE_MAP" in _error()
    env.setenv("MLMESH_SCHEDULER_AUTH_ROLE_MAP", '{"ml-devs": "developer"}')
    _ = SchedulerSettings()  # with the map it loads
