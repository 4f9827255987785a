"""NATS decentralized JWT auth: the platform's trust chain and the credentials it issues.

    operator ──signs──> SYS account (the server's system account: claim pushes)
             └─signs──> MLMESH account (JetStream on; every identity's user lives here)
                              ├─ account key ──signs──> service, worker and admin users
                              └─ team signing key (scoped, role "team") ──signs──> team users

The team signing key is a NATS *scoped* signing key: the account JWT binds it to a permission
template (a team's read-only permissions, with `{{tag(team)}}` for the team), and a user it signs
carries only a `team:<team>` tag. Whoever holds it (the scheduler, to issue teams' event
credentials) can mint team users and nothing else: no service, no admin.

nats-server trusts only the operator's public JWT; it never sees a private key. A user proves
itself with the nkey seed of its credentials file, and the server enforces the permissions written
in the user JWT before any handler sees a message. Keys and JWTs come from the `nkeys` and
`nats-jwt` libraries (no crypto here). Seeds are secrets: written 0600, never logged.

Revocation: the account JWT carries a revocation list. `push_account` sends a newly signed account
JWT to the running server through the system account; the server disconnects revoked users at once.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nkeys
from nats_jwt.nkeys_ext import create_account_pair, create_operator_pair, create_user_pair
from nats_jwt.v2.account_claims import AccountClaims
from nats_jwt.v2.operator_claims import OperatorClaims
from nats_jwt.v2.user_claims import UserClaims

ACCOUNT_NAME = "MLMESH"
SYSTEM_ACCOUNT_NAME = "SYS"
UNLIMITED = -1
MAX_CONTROL_LINE = 32768

_SEEDS = ("operator", "system_account", "account", "account_signing")


@dataclass(frozen=True)
class Permissions:
    """Subjects a user may publish and subscribe to (NATS patterns); deny wins over allow."""

    pub_allow: tuple[str, ...] = ()
    sub_allow: tuple[str, ...] = ()
    pub_deny: tuple[str, ...] = ()
    sub_deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class Credentials:
    """A user's `.creds` file text, its public key (what revocation names) and its expiry."""

    text: str
    public_key: str
    expires_at: int  # unix seconds; 0 = never

    def write(self, path: Path) -> Path:
        write_secret(path, self.text)
        return path


def write_secret(path: Path, text: str) -> None:
    """Write owner-only, atomically: no moment where the file exists with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def creds_text(user_jwt: str, seed: bytes) -> str:
    """The standard NATS credentials file format (what `nsc` writes and every client reads)."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )


def jwt_claims(token: str) -> dict:
    """The (unverified) payload of a NATS JWT, e.g. to read a creds file's public key and expiry."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def read_creds_jwt(text: str) -> str:
    lines = text.splitlines()
    try:
        return lines[lines.index("-----BEGIN NATS USER JWT-----") + 1].strip()
    except (ValueError, IndexError):
        raise ValueError("not a NATS credentials file") from None


@dataclass
class NatsTrust:
    """The operator, the two accounts and the account's signing key, with the revocation list."""

    seeds: dict[str, bytes]
    revocations: dict[str, int] = field(default_factory=dict)

    @classmethod
    def generate(cls) -> NatsTrust:
        makers = {
            "operator": create_operator_pair,
            "system_account": create_account_pair,
            "account": create_account_pair,
            "account_signing": create_account_pair,
        }
        return cls({name: make().seed for name, make in makers.items()})

    # --- persistence: one 0600 file per seed, and the revocation list -----------------------------
    def save(self, directory: Path) -> None:
        for name in _SEEDS:
            if name in self.seeds:
                write_secret(directory / f"{name}.nk", self.seeds[name].decode())
        write_secret(directory / "revocations.json", json.dumps(self.revocations))

    @classmethod
    def load(cls, directory: Path) -> NatsTrust:
        seeds = {n: (directory / f"{n}.nk").read_bytes().strip() for n in _SEEDS if (directory / f"{n}.nk").exists()}
        rev = directory / "revocations.json"
        return cls(seeds, json.loads(rev.read_text()) if rev.exists() else {})

    def _kp(self, name: str) -> nkeys.KeyPair:
        try:
            return nkeys.from_seed(self.seeds[name])
        except KeyError:
            raise PermissionError(f"this process does not hold the NATS {name.replace('_', ' ')} key") from None

    def public_key(self, name: str) -> str:
        return self._kp(name).public_key.decode()

    # --- the JWTs the server trusts -------------------------------------------------------------
    def operator_jwt(self) -> str:
        op = self._kp("operator")
        claims = OperatorClaims(op.public_key.decode(), "mlmesh")
        claims.nats.system_account = self.public_key("system_account")
        return claims.encode(op)

    def system_account_jwt(self) -> str:
        return AccountClaims(self.public_key("system_account"), SYSTEM_ACCOUNT_NAME).encode(self._kp("operator"))

    def account_jwt(self) -> str:
        claims = AccountClaims(self.public_key("account"), ACCOUNT_NAME)
        limits = claims.nats.limits
        limits.memory_storage = limits.disk_storage = limits.streams = limits.consumer = UNLIMITED  # JetStream on
        # A list, not nats-jwt's SigningKeys (it serializes as a JSON object, which the server refuses).
        claims.nats.signing_keys = [self._team_scope()]
        # A plain dict: nats-jwt's RevocationList (a dict-derived dataclass) serializes as nothing.
        claims.nats.revocations = dict(self.revocations)
        return claims.encode(self._kp("operator"))

    def server_config(self, resolver_dir: Path) -> str:
        """The operator-mode part of nats-server's config: the trusted operator and a full resolver
        (it accepts signed account updates at run time, which revocation needs)."""
        sys_pub, acc_pub = self.public_key("system_account"), self.public_key("account")
        return (
            # A service's user JWT lists its subjects and rides in the CONNECT line (4 KiB default).
            f"max_control_line: {MAX_CONTROL_LINE}\n"
            f"operator: {self.operator_jwt()}\n"
            f"system_account: {sys_pub}\n"
            f'resolver: {{ type: full, dir: "{resolver_dir}", allow_delete: false, interval: "2m" }}\n'
            "resolver_preload: {\n"
            f"  {sys_pub}: {self.system_account_jwt()}\n"
            f"  {acc_pub}: {self.account_jwt()}\n"
            "}\n"
        )

    # --- users ----------------------------------------------------------------------------------
    def _team_scope(self) -> dict:
        """The team signing key's scope: its users get exactly a team's permissions."""
        template = scope_template()
        return {"kind": "user_scope", "key": self.public_key("account_signing"), "role": "team", "template": template}

    def issue(self, name: str, permissions: Permissions, *, ttl_s: float | None = None) -> Credentials:
        """A user of the MLMESH account with these permissions, signed with the account key."""
        return issue_user(self._kp("account"), "", name, permissions, ttl_s=ttl_s)

    def system_user(self, name: str = "sys") -> Credentials:
        """A user of the system account: it may push account updates (revocations)."""
        sys_kp = self._kp("system_account")
        user = create_user_pair()
        claims = UserClaims(user.public_key.decode(), name)
        claims.nats.pub.allow = ["$SYS.REQ.CLAIMS.UPDATE", "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE"]
        claims.nats.sub.allow = ["_INBOX.>"]
        return Credentials(creds_text(claims.encode(sys_kp), user.seed), user.public_key.decode(), 0)

    def revoke(self, public_key: str, at: int | None = None) -> None:
        """Users with this key issued at or before `at` (default now) are refused from the next push.
        `*` revokes every user issued until then."""
        self.revocations[public_key] = int(at if at is not None else time.time())


def issue_user(
    signing: nkeys.KeyPair, account_public_key: str, name: str, permissions: Permissions, *, ttl_s: float | None = None
) -> Credentials:
    """A user with explicit permissions. `account_public_key`: the account, when `signing` is one of
    its signing keys; "" when `signing` is the account key itself."""
    user = create_user_pair()
    claims = UserClaims(user.public_key.decode(), name)
    if account_public_key:
        claims.nats.issuer_account = account_public_key
    claims.nats.pub.allow, claims.nats.pub.deny = list(permissions.pub_allow), list(permissions.pub_deny)
    claims.nats.sub.allow, claims.nats.sub.deny = list(permissions.sub_allow), list(permissions.sub_deny)
    return _signed(claims, user, signing, ttl_s)


def issue_team_user(
    team_signing: nkeys.KeyPair, account_public_key: str, name: str, team: str, *, ttl_s: float | None = None
) -> Credentials:
    """A team's user, signed with the scoped team signing key: it carries only its team's tag; the
    server applies the key's template (a scoped key's users may hold no permissions or limits)."""
    user = create_user_pair()
    claims = UserClaims(user.public_key.decode(), name)
    claims.nats.issuer_account = account_public_key
    claims.nats.tags = [f"{TEAM_TAG}:{team}"]
    claims.nats.subs = claims.nats.data = claims.nats.payload = 0  # "none of its own": the scope's apply
    return _signed(claims, user, team_signing, ttl_s)


def _signed(claims: UserClaims, user: nkeys.KeyPair, signing: nkeys.KeyPair, ttl_s: float | None) -> Credentials:
    expires_at = int(time.time() + ttl_s) if ttl_s else 0
    if expires_at:
        claims.exp = expires_at
    return Credentials(creds_text(claims.encode(signing), user.seed), user.public_key.decode(), expires_at)


TEAM_TAG = "team"


def scope_template() -> dict:
    """The team scope's permission template, from the same table as every team's permissions."""
    from mlmesh.common import nats_permissions  # it imports this module for Permissions

    perms = nats_permissions.team_permissions(nats_permissions.TEAM_TEMPLATE)
    return {
        "pub": {"allow": list(perms.pub_allow), "deny": list(perms.pub_deny)},
        "sub": {"allow": list(perms.sub_allow)},
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
    }


async def push_account(nats_url: str, system_creds: Path, account_jwt: str, timeout_s: float = 5.0) -> None:
    """Send a signed account JWT to the running server(s) through the system account."""
    import nats

    nc = await nats.connect(nats_url, user_credentials=str(system_creds), max_reconnect_attempts=0)
    try:
        reply = await nc.request("$SYS.REQ.CLAIMS.UPDATE", account_jwt.encode(), timeout=timeout_s)
    finally:
        await nc.close()
    body = json.loads(reply.data or b"{}")
    if body.get("error"):
        raise RuntimeError(f"nats-server refused the account update: {body['error'].get('description', body)}")
