"""The `mlmesh` command line: the local mesh here; jobs and queues in their own modules."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from mlmesh.cli import artifacts, audit, auth, events, jobs, models, nats, nodes, plan, queues, teams, trace
from mlmesh.cli.output import CliError, console, print_error, print_json, print_table
from mlmesh.common.errors import MlmeshError
from mlmesh.common.settings import SettingsError
from mlmesh.local import mesh
from mlmesh.local.errors import InfraError

app = typer.Typer(
    name="mlmesh",
    help="mlmesh: train, fine-tune and serve models on a mesh of services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts contain [a-z0-9_-]; never read them as markup
)

StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where the local mesh keeps state [env MLMESH_STATE_DIR; default .mlmesh]"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


@app.command()
def up(
    state_dir: StateDirOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each component.", min=1)] = 90.0,
    json_output: JsonOpt = False,
) -> None:
    """Start the local mesh: nats, valkey, S3, Triton and the six services."""
    root = mesh.state_dir(state_dir)
    if json_output:
        endpoints = mesh.up(root, timeout=timeout)
        print_json(_public(endpoints))
        return
    with console.status("starting the mesh…") as spinner:
        endpoints = mesh.up(root, timeout=timeout, on_progress=lambda m: console.print(f"  {m}"))
        spinner.update("done")
    console.print(f"[green]mesh up[/green]: {len(endpoints['infra'])} servers, {len(endpoints['services'])} services")
    console.print(f"endpoints: {root / mesh.ENDPOINTS_FILE}")
    console.print(f"admin token: {endpoints['auth']['admin_token']}")
    console.print(f"logs: {root / 'logs'}")


@app.command()
def down(state_dir: StateDirOpt = None) -> None:
    """Stop everything `mlmesh up` started."""
    root = mesh.state_dir(state_dir)
    if not mesh.down(root, on_progress=lambda m: console.print(m)):
        console.print(f"nothing is running from {root}")
        return
    console.print("[green]mesh down[/green]")


@app.command()
def status(state_dir: StateDirOpt = None, json_output: JsonOpt = False) -> None:
    """Health of every component; exits 0 only when everything is healthy."""
    rows = mesh.status(mesh.state_dir(state_dir))
    if json_output:
        print_json([asdict(r) for r in rows])
    else:
        print_table(
            "mlmesh",
            ["kind", "name", "endpoint", "pid", "health"],
            [
                (r.kind, r.name, r.endpoint, r.pid, "[green]healthy[/green]" if r.healthy else f"[red]{r.detail}[/red]")
                for r in rows
            ],
        )
    bad = [r.name for r in rows if not r.healthy]
    if bad:
        raise CliError(f"unhealthy: {', '.join(bad)}", hint="see the logs in <state dir>/logs", exit_code=1)


jobs.register(app)
queues.register(app)
nodes.register(app)
artifacts.register(app)
models.register(app)
plan.register(app)
trace.register(app)
auth.register(app)
events.register(app)
teams.register(app)
audit.register(app)
nats.register(app)

_SECRET_KEYS = {"password", "secret_key", "access_key"}


def _public(endpoints: dict) -> dict:
    """Endpoints without secrets, for printing (the file itself is private to the user)."""
    infra = {
        name: {k: ("***" if k in _SECRET_KEYS else v) for k, v in ep.items() if k != "url" or name != "valkey"}
        for name, ep in endpoints["infra"].items()
    }
    return {**endpoints, "infra": infra}


def main() -> None:
    try:
        app()
    except CliError as exc:
        print_error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except InfraError as exc:
        print_error(str(exc), "see the logs in <state dir>/logs; `mlmesh down` cleans up")
        sys.exit(1)
    except SettingsError as exc:
        print_error(str(exc), "fix the environment variable named above")
        sys.exit(2)
    except MlmeshError as exc:
        print_error(f"{exc.grpc_code.name.lower()}: {exc.message}")
        sys.exit(1)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
