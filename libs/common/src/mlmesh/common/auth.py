"""Bearer-token authentication: JWT verification, identities and token minting.

Tokens are JWTs with `sub`, `team` and `roles`. Verification pins the algorithm list, so a token
signed with `alg=none` (or an HMAC token forged with the public key) never verifies. Locally,
`mlmesh up` makes an Ed25519 signing key; in production a JWKS URL supplies the keys, and a
`ClaimMapping` (claims.py) reads the team and roles from where the identity provider puts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mlmesh.common.claims import ClaimMapping
from mlmesh.common.errors import NotFound, PermissionDenied, Unauthenticated, Unavailable

ALGORITHMS = ("EdDSA", "RS256", "ES256")
DEFAULT_ISSUER = "mlmesh"
DEFAULT_AUDIENCE = "mlmesh"
ROLE_ADMIN = "admin"
ROLE_SERVICE = "service"
ROLE_DEVELOPER = "developer"  # may submit and cancel work for its team
PLATFORM_TEAM = "platform"
ROLES = frozenset({ROLE_ADMIN, ROLE_SERVICE, ROLE_DEVELOPER})  # what an IdP's roles may map to


@dataclass(frozen=True)
class Identity:
    subject: str
    team: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return ROLE_ADMIN in self.roles

    @property
    def is_service(self) -> bool:
        return ROLE_SERVICE in self.roles

    def require_role(self, role: str) -> None:
        """Admins hold every role and services every role but admin; a missing role is
        PERMISSION_DENIED."""
        if role in self.roles or self.is_admin or (self.is_service and role != ROLE_ADMIN):
            return
        raise PermissionDenied(f"role {role!r} required")

    def can_access(self, team: str) -> bool:
        """Services and admins act for any team; everyone else only for their own."""
        return self.team == team or self.is_admin or self.is_service

    def ensure_team(self, team: str, what: str) -> None:
        """Another team's object answers NOT_FOUND, so its existence does not leak."""
        if not self.can_access(team):
            raise NotFound(f"{what} not found")


_current_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("mlmesh_identity", default=None)


def current_identity() -> Identity:
    """The caller of the RPC or HTTP request being handled."""
    ident = _current_identity.get()
    if ident is None:
        raise Unauthenticated("no authenticated caller")
    return ident


def set_current_identity(identity: Identity | None) -> contextvars.Token:
    return _current_identity.set(identity)


def reset_current_identity(token: contextvars.Token) -> None:
    # A streaming handler can be finalised from another context; the variable dies with it.
    with contextlib.suppress(ValueError):
        _current_identity.reset(token)


class TokenVerifier:
    """Verifies bearer tokens against a fixed public key or a JWKS URL."""

    def __init__(
        self,
        *,
        public_key: str | bytes | None = None,
        jwks_url: str | None = None,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        leeway_s: float = 5.0,
        cache_size: int = 10_000,
        claims: ClaimMapping | None = None,
    ):
        if (public_key is None) == (jwks_url is None):
            raise ValueError("exactly one of public_key or jwks_url is required")
        self._claims = claims or ClaimMapping()
        if self._claims.role_map and not set(self._claims.role_map.values()) <= ROLES:
            raise ValueError(f"role_map may only map to {sorted(ROLES)}")
        self._key = _load_public_key(public_key) if public_key is not None else None
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s
        # A signature check costs ~0.2 ms; clients send the same token on every call, so a verified
        # token is remembered until it expires. Only successes are cached.
        self._cache: OrderedDict[str, tuple[Identity, float]] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, token: str) -> Identity:
        hit = self._cache.get(token)
        if hit is not None:
            identity, expires = hit
            if time.time() <= expires + self._leeway:
                self._cache.move_to_end(token)
                return identity
            del self._cache[token]
            raise Unauthenticated("token expired")
        identity, expires = self._verify_signature(token)
        if self._cache_size > 0:
            self._cache[token] = (identity, expires)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return identity

    def _verify_signature(self, token: str) -> tuple[Identity, float]:
        try:
            key = self._key if self._jwks is None else self._jwks.get_signing_key_from_jwt(token).key
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.PyJWKClientConnectionError:
            # The key server is down: the caller may retry, and its token is not at fault.
            raise Unavailable("cannot fetch the token signing keys (JWKS)") from None
        except jwt.PyJWTError as exc:
            # The reason names the check that failed, never the token itself.
            raise Unauthenticated(f"invalid token: {type(exc).__name__}") from None
        team, roles = self._claims.team(claims), self._claims.roles(claims)
        return Identity(subject=str(claims["sub"]), team=team, roles=roles), float(claims["exp"])

    @property
    def fetches_keys(self) -> bool:
        """Whether verifying an unseen token may do network I/O (a JWKS fetch)."""
        return self._jwks is not None

    def is_cached(self, token: str) -> bool:
        return token in self._cache

    async def verify_header_async(self, authorization: str | None) -> Identity:
        """`verify_header` for async servers: a JWKS fetch runs in a thread, off the event loop."""
        token = bearer_token(authorization)
        if self.fetches_keys and not self.is_cached(token):
            return await asyncio.to_thread(self.verify, token)
        return self.verify(token)

    def verify_header(self, authorization: str | None) -> Identity:
        return self.verify(bearer_token(authorization))


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing bearer token (authorization header)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization header must be 'Bearer <token>'")
    return token.strip()


def _load_public_key(key: str | bytes):
    data = key.encode() if isinstance(key, str) else key
    return serialization.load_pem_public_key(data)


# --- local signing (dev key made by `mlmesh up`, service tokens, tests) ---------------------------


def generate_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def mint_token(
    private_key_pem: bytes,
    *,
    subject: str,
    team: str,
    roles: Iterable[str] = (),
    ttl_s: float = 3600,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
    key_id: str | None = None,
) -> str:
    issued = time.time() if now is None else now
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    claims = {
        "sub": subject,
        "team": team,
        "roles": sorted(set(roles)),
        "iss": issuer,
        "aud": audience,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": key_id} if key_id else None)


def mint_service_token(private_key_pem: bytes, service: str, ttl_s: float = 30 * 24 * 3600) -> str:
    """A token one service uses to call another; it may act for any team."""
    return mint_token(
        private_key_pem, subject=f"service:{service}", team=PLATFORM_TEAM, roles=[ROLE_SERVICE], ttl_s=ttl_s
    )


def write_secret(path: Path, data: str | bytes) -> None:
    """Write a key or token readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    raw = data.encode() if isinstance(data, str) else data
    tmp.touch(mode=0o600, exist_ok=True)
    tmp.chmod(0o600)
    tmp.write_bytes(raw)
    tmp.replace(path)
