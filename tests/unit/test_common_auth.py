"""Token verification and identities, without a server."""

from __future__ import annotations

import base64
import json
import stat
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from mlmesh.common.auth import (
    Identity,
    TokenVerifier,
    generate_signing_key,
    mint_service_token,
    mint_token,
    write_secret,
)
from mlmesh.common.errors import NotFound, PermissionDenied, Unauthenticated

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def verifier(signing_key) -> TokenVerifier:
    return TokenVerifier(public_key=signing_key.public_pem)


def test_verify_returns_subject_team_and_roles(verifier, signing_key):
    ident = verifier.verify(signing_key.token(subject="alice", team="team-a", roles=["trainer", "viewer"]))
    assert ident == Identity("alice", "team-a", frozenset({"trainer", "viewer"}))
    assert not ident.is_admin and not ident.is_service


def test_verify_header_requires_the_bearer_scheme(verifier, signing_key):
    token = signing_key.token()
    assert verifier.verify_header(f"Bearer {token}").subject == "alice"
    assert verifier.verify_header(f"bearer  {token} ").subject == "alice"
    for header in (None, "", "Bearer", "Bearer ", f"Basic {token}", token):
        with pytest.raises(Unauthenticated):
            verifier.verify_header(header)


def test_expiry_honours_the_leeway(signing_key):
    verifier = TokenVerifier(public_key=signing_key.public_pem, leeway_s=5)
    just_expired = signing_key.token(now=time.time() - 62, ttl_s=60)  # 2 s past exp: inside the leeway
    assert verifier.verify(just_expired).subject == "alice"
    long_expired = signing_key.token(now=time.time() - 120, ttl_s=60)
    with pytest.raises(Unauthenticated, match="token expired"):
        verifier.verify(long_expired)


def test_roles_must_be_a_list_of_strings(verifier, signing_key):
    key = serialization.load_pem_private_key(signing_key.private_pem, password=None)
    now = int(time.time())
    claims = {"sub": "a", "team": "t", "iss": "mlmesh", "aud": "mlmesh", "exp": now + 60, "roles": "admin"}
    with pytest.raises(Unauthenticated, match="roles"):
        verifier.verify(jwt.encode(claims, key, algorithm="EdDSA"))


def test_verifier_needs_exactly_one_key_source(signing_key):
    with pytest.raises(ValueError):
        TokenVerifier()
    with pytest.raises(ValueError):
        TokenVerifier(public_key=signing_key.public_pem, jwks_url="http://127.0.0.1:1/jwks")


def test_service_token_acts_for_any_team(verifier, signing_key):
    ident = verifier.verify(mint_service_token(signing_key.private_pem, "fabric"))
    assert ident.subject == "service:fabric" and ident.is_service
    ident.ensure_team("team-a", "job")
    ident.ensure_team("team-z", "job")


def test_ensure_team_hides_other_teams_objects():
    alice = Identity("alice", "team-a", frozenset({"viewer"}))
    alice.ensure_team("team-a", "job")
    with pytest.raises(NotFound) as info:
        alice.ensure_team("team-b", "job")
    assert info.value.message == "job not found"
    assert "team-b" not in info.value.message

    Identity("root", "team-x", frozenset({"admin"})).ensure_team("team-b", "job")
    Identity("service:scheduler", "platform", frozenset({"service"})).ensure_team("team-b", "job")


def test_require_role():
    Identity("a", "t", frozenset({"trainer"})).require_role("trainer")
    Identity("a", "t", frozenset({"admin"})).require_role("trainer")
    with pytest.raises(PermissionDenied):
        Identity("a", "t", frozenset({"viewer"})).require_role("trainer")


def test_generated_keys_differ_and_do_not_cross_verify(signing_key):
    _private, public = generate_signing_key()
    assert public != signing_key.public_pem
    other = TokenVerifier(public_key=public)
    with pytest.raises(Unauthenticated):
        other.verify(signing_key.token())


def test_write_secret_is_owner_only(tmp_path):
    path = tmp_path / "keys" / "admin.token"
    write_secret(path, "tok")
    assert path.read_text() == "tok"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]


def test_a_cached_token_still_expires(signing_key, monkeypatch):
    verifier = TokenVerifier(public_key=signing_key.public_pem, leeway_s=5)
    now = time.time()
    token = signing_key.token(now=now, ttl_s=60)
    assert verifier.verify(token).subject == "alice"
    assert verifier.verify(token).subject == "alice"  # served from the cache
    monkeypatch.setattr(time, "time", lambda: now + 60 + 6)  # past exp and the leeway
    with pytest.raises(Unauthenticated, match="token expired"):
        verifier.verify(token)


def test_a_cached_token_does_not_vouch_for_a_tampered_copy(verifier, signing_key):
    token = signing_key.token(team="team-a")
    assert verifier.verify(token).team == "team-a"
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "team": "team-b"}).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated):
        verifier.verify(f"{header}.{forged}.{signature}")
    assert verifier.verify(token).team == "team-a"


def test_a_rejected_token_is_not_remembered(verifier, signing_key):
    other_private, _ = generate_signing_key()
    bad = mint_token(other_private, subject="mallory", team="team-a")
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            verifier.verify(bad)
