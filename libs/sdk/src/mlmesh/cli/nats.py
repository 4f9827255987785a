"""`mlmesh nats init`: a fresh NATS trust chain and every file a Kubernetes deployment needs.

It writes, owner-only, into one folder: `auth.conf` (the operator-mode part of nats-server's
config, for the Secret `mlmesh-nats-auth`), one `<identity>.creds` per service identity plus
`account_signing.nk` and `account.pub` (for the Secret `mlmesh-nats-creds`), `admin.creds` and
`system.creds` for the operator's tools, and under `keys/` the operator and account seeds. Those
seeds re-sign the account (revocations) and belong offline: nothing deployed holds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlmesh.cli.output import CliError, console, err_console, print_json
from mlmesh.common import contracts, nats_permissions
from mlmesh.common.nats_auth import NatsTrust, write_secret

nats_app = typer.Typer(help="NATS operator-mode trust for a deployment.", no_args_is_help=True, rich_markup_mode=None)

# Where the nats StatefulSet keeps account JWTs pushed at run time: on its PVC (deploy/k8s/base/nats.yaml).
DEFAULT_RESOLVER_DIR = "/data/jwt"
KEYS_DIR = "keys"
KEYS_WARNING = (
    "{keys} holds the operator and account seeds: move it offline. They re-sign the account "
    "(revocations) and are never deployed."
)


def _refuse_overwrite(out: Path) -> None:
    existing = [p for p in (out / KEYS_DIR / "operator.nk", out / "auth.conf") if p.exists()]
    if existing:
        raise CliError(
            f"{out} already holds a NATS trust ({existing[0].name})",
            hint="--force replaces it, and every credential issued from it stops working",
            exit_code=1,
        )


@nats_app.command("init")
def init(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for the trust and credentials.", show_default=False)
    ],
    resolver_dir: Annotated[
        str, typer.Option("--resolver-dir", help="nats-server's directory for account JWTs (on its volume).")
    ] = DEFAULT_RESOLVER_DIR,
    force: Annotated[bool, typer.Option("--force", help="Replace a trust already in the folder.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the paths as JSON.")] = False,
) -> None:
    """Generate an operator, accounts and an account signing key; write auth.conf and every .creds."""
    if not force:
        _refuse_overwrite(output)
    output.mkdir(parents=True, exist_ok=True, mode=0o700)
    trust = NatsTrust.generate()
    keys = output / KEYS_DIR
    keys.mkdir(exist_ok=True, mode=0o700)
    trust.save(keys)  # NatsTrust.load(keys) reads it back, e.g. to revoke a user

    auth_conf = output / "auth.conf"
    write_secret(auth_conf, trust.server_config(Path(resolver_dir)))
    creds: dict[str, str] = {}
    for identity in contracts.SERVICE_IDENTITIES:
        path = output / f"{identity}.creds"
        trust.issue(identity, nats_permissions.service_permissions(identity)).write(path)
        creds[identity] = str(path)
    admin = trust.issue(nats_permissions.ADMIN, nats_permissions.admin_permissions()).write(output / "admin.creds")
    system = trust.system_user().write(output / "system.creds")
    signing = output / "account_signing.nk"
    write_secret(signing, trust.seeds["account_signing"].decode())
    account = output / "account.pub"
    # No newline: the scheduler reads it whole as an environment variable (secretKeyRef).
    write_secret(account, trust.public_key("account"))

    err_console.print(f"warning: {KEYS_WARNING.format(keys=keys)}", style="bold yellow", markup=False, highlight=False)
    if json_output:
        print_json(
            {
                "auth_conf": str(auth_conf),
                "creds": creds,
                "admin_creds": str(admin),
                "system_creds": str(system),
                "account_signing_key": str(signing),
                "account_public_key": str(account),
                "keys_dir": str(keys),
            }
        )
        return
    console.print(f"NATS trust written to {output}", markup=False, highlight=False)
    for path in (auth_conf, *map(Path, creds.values()), signing, account, admin, system):
        console.print(f"  {path}", markup=False, highlight=False)
    console.print(
        "Create the Secrets mlmesh-nats-auth and mlmesh-nats-creds from them: deploy/k8s/README.md",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(nats_app, name="nats")
