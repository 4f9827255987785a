"""`mlmesh events credentials|revoke`: a team's credentials for the event bus (NATS).

`credentials` asks the scheduler's TeamAccessService, so a team automates it with its own token.
`revoke` is the operator's: it re-signs the NATS account with the operator key (here, the local
mesh's, in <state dir>/nats-auth) and pushes it to the running server, which drops the user at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf import duration_pb2

from mlmesh.api.scheduler.v1 import team_access_service_pb2 as api
from mlmesh.cli.auth import parse_ttl
from mlmesh.cli.common import EndpointOpt, JsonOpt, TimeoutOpt, print_message
from mlmesh.cli.output import CliError, console
from mlmesh.common.nats_auth import NatsTrust, push_account, write_secret
from mlmesh.local import mesh
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S, team_access_client

events_app = typer.Typer(help="The event bus: a team's NATS credentials.", no_args_is_help=True, rich_markup_mode=None)

StateDirOpt = Annotated[
    Path | None, typer.Option("--state-dir", help="The local mesh's state [env MLMESH_STATE_DIR; default .mlmesh]")
]


def issue(team: str, ttl_s: int, endpoint: str | None, timeout: float) -> api.IssueEventCredentialsResponse:
    request = api.IssueEventCredentialsRequest(team=team, ttl=duration_pb2.Duration(seconds=ttl_s))
    with team_access_client(endpoint) as client:
        client.default_timeout = timeout
        return client.call(client.stub.IssueEventCredentials, request)


@events_app.command("credentials")
def credentials(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the .creds file (0600).")],
    team: Annotated[str, typer.Option("--team", help="The team [default: your token's team].")] = "",
    ttl: Annotated[str, typer.Option("--ttl", metavar="DURATION", help="Lifetime, e.g. 24h; at most 7d.")] = "24h",
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Write a standard NATS .creds file that may only read the team's events."""
    reply = issue(team, parse_ttl(ttl), endpoint, timeout)
    write_secret(output, reply.credentials)
    if json_output:
        reply.credentials = ""  # the secret is in the file only
        print_message(reply)
        return
    console.print(f"wrote {output} (user {reply.public_key}, expires {reply.expires_at.ToJsonString()})")
    console.print(f"subscribe to: {', '.join(reply.subjects)}")
    console.print(f"connect with inbox_prefix={reply.inbox_prefix!r}; consumers need a name and a filter above")


@events_app.command("revoke")
def revoke(
    public_key: Annotated[str, typer.Argument(help="The user's public key (U...), as `credentials` printed.")],
    keys: Annotated[
        Path | None, typer.Option("--keys", help="The operator's keys (`mlmesh nats init`'s keys/) [local mesh's]")
    ] = None,
    nats_url: Annotated[str | None, typer.Option("--nats-url", help="A server of the mesh [local mesh's]")] = None,
    system_creds: Annotated[
        Path | None, typer.Option("--system-creds", help="System account credentials that push the update")
    ] = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Revoke event credentials now: the server drops the user at once and refuses it after.

    Needs the operator key: the local mesh's by default; for a cluster, the offline keys/ folder of
    `mlmesh nats init`, a NATS URL (e.g. through a port-forward) and its system.creds.
    """
    if not (public_key.startswith("U") and len(public_key) == 56):
        raise CliError(f"{public_key!r} is not a NATS user public key (U..., 56 characters)", exit_code=2)
    root = mesh.state_dir(state_dir)
    trust_dir = keys or root / "nats-auth"
    if not (trust_dir / "operator.nk").is_file():
        raise CliError(f"no NATS operator key in {trust_dir}", hint="revocation re-signs the account: pass --keys")
    if nats_url is None:
        endpoints = mesh.read_endpoints(root)
        if endpoints is None:
            raise CliError(f"no local mesh in {root}", hint="pass --nats-url and --system-creds for a cluster")
        nats_url = endpoints["infra"]["nats"]["url"]
    trust = NatsTrust.load(trust_dir)
    trust.revoke(public_key)
    trust.save(trust_dir)  # the list is kept: a server restarted from a fresh volume needs it again
    if system_creds is None:
        system_creds = trust_dir / "creds" / "revoker.creds"
        trust.system_user("revoker").write(system_creds)
    asyncio.run(push_account(nats_url, system_creds, trust.account_jwt()))
    console.print(f"revoked {public_key}")


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
