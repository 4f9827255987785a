"""`mlmesh nats init`: a fresh trust and every file a deployment needs, owner-only; each identity's
credentials carry exactly its permissions; auth.conf trusts this operator and preloads both accounts;
an existing trust is replaced only with --force."""

from __future__ import annotations

import json
import stat

import pytest
from typer.testing import CliRunner

from mlmesh.cli.output import CliError
from mlmesh.common import contracts, nats_permissions
from mlmesh.common.nats_auth import NatsTrust, jwt_claims, read_creds_jwt

pytestmark = pytest.mark.timeout(60)

SECRETS = {"auth.conf", "admin.creds", "system.creds", "account_signing.nk", "account.pub"}
KEYS = {"operator.nk", "system_account.nk", "account.nk", "account_signing.nk", "revocations.json"}


def _init(*args: str):
    from mlmesh.cli.main import app

    return CliRunner().invoke(app, ["nats", "init", *args])


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _seeds(out, trust: NatsTrust) -> list[str]:
    users = [p.read_text().split("-----BEGIN USER NKEY SEED-----\n")[1].split("\n")[0] for p in out.glob("*.creds")]
    return [*users, *(s.decode() for s in trust.seeds.values())]


def _perms(claims: dict) -> dict:
    nats = claims["nats"]
    return {
        "pub_allow": tuple(nats.get("pub", {}).get("allow") or ()),
        "pub_deny": tuple(nats.get("pub", {}).get("deny") or ()),
        "sub_allow": tuple(nats.get("sub", {}).get("allow") or ()),
        "sub_deny": tuple(nats.get("sub", {}).get("deny") or ()),
    }


def test_writes_every_file_owner_only_with_each_identitys_permissions(tmp_path):
    out = tmp_path / "trust"
    result = _init("-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    paths = json.loads(result.stdout)
    assert set(paths["creds"]) == set(contracts.SERVICE_IDENTITIES)

    files = {p.name for p in out.iterdir() if p.is_file()}
    assert files == SECRETS | {f"{i}.creds" for i in contracts.SERVICE_IDENTITIES}
    assert {p.name for p in (out / "keys").iterdir()} == KEYS
    for path in [*out.iterdir(), *(out / "keys").iterdir()]:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    # No seed is printed; the warning says where the trust's seeds are and that they belong offline.
    trust = NatsTrust.load(out / "keys")
    for seed in _seeds(out, trust):
        assert seed not in result.output
    assert "offline" in result.stderr and str(out / "keys") in result.stderr

    account = trust.public_key("account")
    signing = trust.public_key("account_signing")
    for identity in contracts.SERVICE_IDENTITIES:
        assert paths["creds"][identity] == str(out / f"{identity}.creds")
        claims = jwt_claims(read_creds_jwt((out / f"{identity}.creds").read_text()))
        # Signed by the account key itself: the (scoped) signing key can mint only team users.
        assert claims["name"] == identity and claims["iss"] == account
        assert not claims["nats"].get("issuer_account")
        want = nats_permissions.service_permissions(identity)
        assert claims["nats"]["pub"]["allow"] == list(want.pub_allow)
        assert _perms(claims) == {
            "pub_allow": want.pub_allow,
            "pub_deny": want.pub_deny,
            "sub_allow": want.sub_allow,
            "sub_deny": want.sub_deny,
        }
        assert "exp" not in claims  # a service's credentials last until the Secret is replaced
    admin = jwt_claims(read_creds_jwt((out / "admin.creds").read_text()))
    assert _perms(admin)["pub_allow"] == nats_permissions.admin_permissions().pub_allow
    system = jwt_claims(read_creds_jwt((out / "system.creds").read_text()))
    assert system["iss"] == trust.public_key("system_account")

    # What the scheduler signs teams' credentials with (the scoped team signing key), and the
    # account they belong to (read whole as an env var: no newline).
    assert (out / "account_signing.nk").read_text() == trust.seeds["account_signing"].decode()
    assert (out / "account.pub").read_text() == account

    # auth.conf: this operator, its system account, both account JWTs (signed by the operator; the
    # account's lists the signing key that signed every .creds), the resolver on the NATS volume.
    conf = dict(line.split(": ", 1) for line in (out / "auth.conf").read_text().splitlines() if ": " in line)
    operator = trust.public_key("operator")
    assert jwt_claims(conf["operator"])["sub"] == operator
    assert conf["system_account"] == trust.public_key("system_account")
    preload = {key.strip(): jwt_claims(token) for key, token in conf.items() if key.startswith("  ")}
    assert set(preload) == {trust.public_key("system_account"), account}
    assert {(c["sub"], c["iss"], c["name"]) for c in preload.values()} == {
        (trust.public_key("system_account"), operator, "SYS"),
        (account, operator, "MLMESH"),
    }
    (scope,) = preload[account]["nats"]["signing_keys"]
    assert scope["kind"] == "user_scope" and scope["key"] == signing and scope["role"] == "team"
    assert "mlmesh.jobs.{{tag(team)}}.>" in scope["template"]["sub"]["allow"]
    assert 'dir: "/data/jwt"' in conf["resolver"]


def test_resolver_dir_option(tmp_path):
    result = _init("-o", str(tmp_path / "t"), "--resolver-dir", str(tmp_path / "jwt"))
    assert result.exit_code == 0, result.output
    assert f'dir: "{tmp_path / "jwt"}"' in (tmp_path / "t" / "auth.conf").read_text()
    # Human output: paths only.
    assert str(tmp_path / "t" / "scheduler.creds") in result.stdout
    for seed in _seeds(tmp_path / "t", NatsTrust.load(tmp_path / "t" / "keys")):
        assert seed not in result.output


def test_an_existing_trust_is_replaced_only_with_force(tmp_path):
    out = tmp_path / "trust"
    assert _init("-o", str(out)).exit_code == 0
    operator = (out / "keys" / "operator.nk").read_text()
    scheduler = (out / "scheduler.creds").read_text()

    result = _init("-o", str(out))
    assert result.exit_code != 0 and isinstance(result.exception, CliError)
    assert "--force" in result.exception.hint
    assert (out / "keys" / "operator.nk").read_text() == operator
    assert (out / "scheduler.creds").read_text() == scheduler
    # auth.conf alone (keys/ moved offline, as the warning says) still counts as a trust.
    (out / "keys" / "operator.nk").unlink()
    assert isinstance(_init("-o", str(out)).exception, CliError)

    result = _init("-o", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert (out / "keys" / "operator.nk").read_text() != operator
    assert (out / "scheduler.creds").read_text() != scheduler
