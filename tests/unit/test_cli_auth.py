"""`mlmesh auth token`: tokens signed with the local mesh's key verify as the team member asked for;
bad input and a missing key are refused with one line, and nothing but the token goes to stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime

import jwt
import pytest
from typer.testing import CliRunner

from mlmesh.cli.auth import MAX_TTL_S, parse_ttl
from mlmesh.cli.output import CliError
from mlmesh.common.auth import Identity, TokenVerifier, generate_signing_key, write_secret

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def state(tmp_path):
    """A state dir laid out as `mlmesh up` leaves it: the dev key pair under auth/."""
    private_pem, public_pem = generate_signing_key()
    write_secret(tmp_path / "auth" / "signing_key.pem", private_pem)
    write_secret(tmp_path / "auth" / "public_key.pem", public_pem)
    return tmp_path, TokenVerifier(public_key=public_pem)


@pytest.fixture
def cli(state, monkeypatch):
    from mlmesh.cli.main import app

    monkeypatch.setenv("MLMESH_STATE_DIR", str(state[0]))
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["auth", "token", *args], catch_exceptions=True)


def test_prints_only_a_token_for_the_team(cli, state):
    result = cli("--team", "vision", "--role", "developer", "--ttl", "8h", "--subject", "alice")
    assert result.exit_code == 0, result.output
    token = result.stdout.removesuffix("\n")
    assert "\n" not in token and token.count(".") == 2
    assert state[1].verify(token) == Identity("alice", "vision", frozenset({"developer"}))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert abs(claims["exp"] - (time.time() + 8 * 3600)) < 60


def test_json_names_what_the_token_carries(cli, state):
    result = cli("--team", "nlp", "--ttl", "30m", "--subject", "bob@example.com", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"token", "subject", "team", "roles", "expires_at"}
    assert (out["subject"], out["team"], out["roles"]) == ("bob@example.com", "nlp", ["developer"])
    assert state[1].verify(out["token"]).team == "nlp"
    exp = jwt.decode(out["token"], options={"verify_signature": False})["exp"]
    assert datetime.fromisoformat(out["expires_at"].replace("Z", "+00:00")).timestamp() == exp


def test_admin_needs_the_explicit_flag(cli, state):
    refused = cli("--team", "platform", "--role", "admin")
    assert isinstance(refused.exception, CliError) and "--allow-admin" in refused.exception.message
    assert refused.stdout == ""
    granted = cli("--team", "platform", "--role", "admin", "--allow-admin", "--subject", "root")
    assert granted.exit_code == 0, granted.output
    assert state[1].verify(granted.stdout.strip()).is_admin


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["--team", "Vision"], "--team"),
        (["--team", "a.b"], "--team"),
        (["--team", "vision", "--role", "service"], "services have their own tokens"),
        (["--team", "vision", "--role", "viewer"], "one of developer, admin"),
        (["--team", "vision", "--subject", "a b"], "--subject"),
        (["--team", "vision", "--ttl", "0h"], "must be positive"),
        (["--team", "vision", "--ttl", "-1h"], "must be positive"),
        (["--team", "vision", "--ttl", "31d"], "at most 30d"),
        (["--team", "vision", "--ttl", "8"], "a whole number and a unit"),
    ],
)
def test_bad_input_is_refused(cli, args, check):
    result = cli(*args)
    assert isinstance(result.exception, CliError), result.output
    assert check in result.exception.message and result.exception.exit_code == 2
    assert result.stdout == ""


def test_ttl_units():
    assert [parse_ttl(t) for t in ("90s", "30m", "8h", "1d", "30d")] == [90, 1800, 8 * 3600, 86400, MAX_TTL_S]


def _mlmesh(*args: str, state_dir) -> subprocess.CompletedProcess:
    code = "from mlmesh.cli.main import main; main()"
    argv = ["auth", "token", *args, "--state-dir", str(state_dir)]
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=30, check=False)


def test_real_process_stdout_is_the_token_alone(state):
    # `export MLMESH_TOKEN=$(mlmesh auth token ...)`: a terminal-width console must not wrap it.
    done = _mlmesh("--team", "vision", "--subject", "alice", state_dir=state[0])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and state[1].verify(done.stdout.strip()).team == "vision"


def test_no_signing_key_is_one_line(tmp_path):
    done = _mlmesh("--team", "vision", state_dir=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert f"no local signing key in {tmp_path.resolve() / 'auth'}" in line
    assert "identity provider" in line
