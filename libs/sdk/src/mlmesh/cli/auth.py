"""`mlmesh auth token`: a bearer token for a member of a team, on the local mesh.

It signs with the dev key `mlmesh up` wrote to <state dir>/auth/signing_key.pem, readable only by
the user who started the mesh, so only that local admin can mint. A production mesh trusts its
identity provider's keys (AUTH_JWKS_URL) and has no signing key here: there the command refuses.
"""

from __future__ import annotations

import getpass
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from mlmesh.cli.output import CliError, print_json
from mlmesh.common.auth import ROLE_ADMIN, ROLE_DEVELOPER, ROLE_SERVICE, mint_token
from mlmesh.common.events import is_token
from mlmesh.local import mesh

auth_app = typer.Typer(help="Bearer tokens for the local mesh.", no_args_is_help=True, rich_markup_mode=None)

# The admin token `mlmesh up` writes lives 30 days; nothing minted here outlives it.
MAX_TTL_S = 30 * 86400
_TTL = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Subjects end up in `created_by`, log lines and messages: a user name or an email, nothing else.
_SUBJECT = re.compile(r"[A-Za-z0-9_.@+-]{1,128}")


def parse_ttl(text: str) -> int:
    """`90s`, `30m`, `8h`, `1d` as seconds; 0, negative and more than 30 days are refused."""
    match = _TTL.fullmatch(text.strip())
    if text.strip().startswith("-"):
        raise CliError(f"--ttl {text}: must be positive", exit_code=2)
    if match is None:
        raise CliError(f"--ttl {text}: a whole number and a unit, s, m, h or d (e.g. 8h, 30m, 1d)", exit_code=2)
    seconds = int(match[1]) * _UNIT_S[match[2]]
    if seconds == 0:
        raise CliError(f"--ttl {text}: must be positive", exit_code=2)
    if seconds > MAX_TTL_S:
        raise CliError(f"--ttl {text}: at most 30d", exit_code=2)
    return seconds


def check_roles(roles: list[str], allow_admin: bool, auth_dir: Path) -> list[str]:
    for role in roles:
        if role == ROLE_SERVICE:
            raise CliError(
                "role service: services have their own tokens", hint=f"{auth_dir}/<service>.token", exit_code=2
            )
        if role == ROLE_ADMIN and not allow_admin:
            raise CliError(
                "role admin acts for every team: add --allow-admin",
                hint=f"or use the admin token in {auth_dir}/admin.token",
                exit_code=2,
            )
        if role not in (ROLE_DEVELOPER, ROLE_ADMIN):
            raise CliError(f"role {role}: one of {ROLE_DEVELOPER}, {ROLE_ADMIN}", exit_code=2)
    return sorted(set(roles))


def _default_subject() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the passwd database
        return ""


def signing_key(auth_dir: Path) -> bytes:
    path = auth_dir / "signing_key.pem"
    if not path.is_file():
        # One line: scripts capture it. `mlmesh up` makes the key of a local mesh.
        raise CliError(
            f"no local signing key in {auth_dir} (`mlmesh up` makes one): "
            "tokens for a production mesh come from your identity provider"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", hint="only the user who ran `mlmesh up` can") from None


@auth_app.command("token")
def token(
    team: Annotated[str, typer.Option("--team", help="The team it acts for, [a-z0-9_-].", show_default=False)],
    role: Annotated[
        list[str] | None, typer.Option("--role", metavar="ROLE", help="developer (default) or admin; repeat for both.")
    ] = None,
    ttl: Annotated[
        str, typer.Option("--ttl", metavar="DURATION", help="Lifetime: 90s, 30m, 8h, 1d; at most 30d.")
    ] = "8h",
    subject: Annotated[
        str | None, typer.Option("--subject", help="Who it names (sub) [default: your user name].")
    ] = None,
    allow_admin: Annotated[bool, typer.Option("--allow-admin", help="Permit role admin (every team).")] = False,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="The local mesh's state [env MLMESH_STATE_DIR; default .mlmesh]"),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print {token, subject, team, roles, expires_at}.")
    ] = False,
) -> None:
    """Mint a bearer token signed with the local mesh's key; prints only the token.

    export MLMESH_TOKEN=$(mlmesh auth token --team vision). The token stops verifying when `mlmesh up`
    makes a new key (after `mlmesh down`).
    """
    auth_dir = mesh.state_dir(state_dir) / "auth"
    if not is_token(team):
        raise CliError(f"--team {team!r}: 1-128 characters of [a-z0-9_-]", exit_code=2)
    roles = check_roles(role or [ROLE_DEVELOPER], allow_admin, auth_dir)
    ttl_s = parse_ttl(ttl)
    subject = subject if subject is not None else _default_subject()
    if not _SUBJECT.fullmatch(subject):
        raise CliError(f"--subject {subject!r}: 1-128 characters of [A-Za-z0-9_.@+-]", exit_code=2)
    key = signing_key(auth_dir)
    now = time.time()
    try:
        signed = mint_token(key, subject=subject, team=team, roles=roles, ttl_s=ttl_s, now=now)
    except (ValueError, TypeError):
        raise CliError(f"{auth_dir}/signing_key.pem is not a usable private key") from None
    if json_output:
        expires = datetime.fromtimestamp(int(now + ttl_s), tz=timezone.utc)
        print_json(
            {
                "token": signed,
                "subject": subject,
                "team": team,
                "roles": roles,
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
            }
        )
        return
    # Plain write: a console would wrap the long token at the terminal width.
    sys.stdout.write(signed + "\n")


def register(app: typer.Typer) -> None:
    app.add_typer(auth_app, name="auth")
