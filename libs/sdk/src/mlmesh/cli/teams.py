"""`mlmesh teams create`: onboard a team in one command (local admin).

It makes the team's default queue, mints a developer token with the local mesh's dev key and
issues the team's event credentials, and writes both owner-only into one folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mlmesh.api.scheduler.v1 import scheduler_service_pb2 as api
from mlmesh.cli import auth, events, queues
from mlmesh.cli.common import EndpointOpt, TimeoutOpt, scheduler
from mlmesh.cli.output import CliError, console, print_json
from mlmesh.common.auth import ROLE_DEVELOPER, mint_token
from mlmesh.common.events import is_token
from mlmesh.common.nats_auth import write_secret
from mlmesh.local import mesh
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S

teams_app = typer.Typer(help="Teams: onboarding in one command.", no_args_is_help=True, rich_markup_mode=None)


@teams_app.command("create")
def create(
    team: Annotated[str, typer.Argument(help="Team name, [a-z0-9_-].", show_default=False)],
    gpus: Annotated[int, typer.Option("--gpus", help="Nominal (guaranteed) GPUs.", min=0)] = 0,
    cpu: queues.CpuOpt = None,
    memory: queues.MemoryOpt = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for <team>.token and <team>.creds.")] = Path(
        "."
    ),
    token_ttl: Annotated[str, typer.Option("--token-ttl", metavar="DURATION", help="Token lifetime.")] = "8h",
    creds_ttl: Annotated[str, typer.Option("--creds-ttl", metavar="DURATION", help="Credentials lifetime.")] = "24h",
    state_dir: events.StateDirOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the paths as JSON.")] = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Create the team's default queue, and write its developer token and event credentials."""
    if not is_token(team):
        raise CliError(f"team {team!r}: 1-128 characters of [a-z0-9_-]", exit_code=2)
    token_s, creds_s = auth.parse_ttl(token_ttl), auth.parse_ttl(creds_ttl)
    key = auth.signing_key(mesh.state_dir(state_dir) / "auth")
    spec = queues.quota_spec(team, gpus, cpu, memory)
    with scheduler(endpoint, timeout) as client:
        client.call(client.stub.CreateQueue, api.CreateQueueRequest(name=team, spec=spec))
    token = mint_token(key, subject=f"{team}-developer", team=team, roles=[ROLE_DEVELOPER], ttl_s=token_s)
    reply = events.issue(team, creds_s, endpoint, timeout)
    token_path, creds_path = output / f"{team}.token", output / f"{team}.creds"
    write_secret(token_path, token + "\n")
    write_secret(creds_path, reply.credentials)
    result = {
        "team": team,
        "queue": team,
        "token_file": str(token_path),
        "token_expires_at": int(time.time() + token_s),
        "creds_file": str(creds_path),
        "creds_public_key": reply.public_key,
        "inbox_prefix": reply.inbox_prefix,
    }
    if json_output:
        print_json(result)
        return
    console.print(f"team {team}: queue {team} (default), token {token_path}, event credentials {creds_path}")
    console.print(f"  export MLMESH_TOKEN=$(cat {token_path})")
    console.print(f"  nats: user_credentials={str(creds_path)!r}, inbox_prefix={reply.inbox_prefix!r}")


def register(app: typer.Typer) -> None:
    app.add_typer(teams_app, name="teams")
