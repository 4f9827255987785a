"""JWKS verification against a key server on loopback: keys found by `kid`, the fetch kept off the
event loop, and a key server that is down answering UNAVAILABLE rather than UNAUTHENTICATED."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import OKPAlgorithm

from mlmesh.common.auth import TokenVerifier, generate_signing_key, mint_token
from mlmesh.common.errors import Unauthenticated, Unavailable

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def jwks_server():
    private_pem, public_pem = generate_signing_key()
    jwk = json.loads(OKPAlgorithm.to_jwk(serialization.load_pem_public_key(public_pem)))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "EdDSA"}]}).encode()
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", private_pem, hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_jwks_token_verifies_off_the_event_loop(jwks_server):
    url, private_pem, hits = jwks_server
    verifier = TokenVerifier(jwks_url=url)
    token = mint_token(private_pem, subject="u", team="t", key_id="k1")
    identity = await verifier.verify_header_async(f"Bearer {token}")
    assert (identity.subject, identity.team) == ("u", "t")
    assert hits == ["/jwks.json"]
    # Cached: the second call neither fetches keys nor verifies again.
    assert (await verifier.verify_header_async(f"Bearer {token}")) == identity
    assert hits == ["/jwks.json"]


async def test_unknown_kid_is_unauthenticated(jwks_server):
    url, private_pem, _ = jwks_server
    token = mint_token(private_pem, subject="u", team="t", key_id="other")
    with pytest.raises(Unauthenticated):
        await TokenVerifier(jwks_url=url).verify_header_async(f"Bearer {token}")


async def test_key_server_down_is_unavailable():
    private_pem, _ = generate_signing_key()
    token = mint_token(private_pem, subject="u", team="t", key_id="k1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/jwks.json"  # bound, not listening: refused
        with pytest.raises(Unavailable):
            await TokenVerifier(jwks_url=url).verify_header_async(f"Bearer {token}")
