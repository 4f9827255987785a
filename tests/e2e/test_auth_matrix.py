"""Authentication matrix: every gRPC method of every mesh process and every HTTP route of the
gateway, called with each kind of bad credential, must answer UNAUTHENTICATED / 401; only health,
reflection, metrics and the KServe live/ready probes stay open.

The methods come from each process's server reflection and the routes from the gateway's app
object, so a method or route added later is in the matrix without editing this file. Requests are
empty: authentication must reject a call before anything reads the request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict

import grpc
import pytest

from mlmesh.common.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER, generate_signing_key, mint_token
from tests.e2e import surface

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ADMIN_CLAIMS = {"subject": "admin", "team": "platform", "roles": ["admin"]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict, key: bytes | None) -> str:
    """A JWT with admin claims, `header` as given, signed HS256 with `key` (or unsigned)."""
    now = int(time.time())
    claims = {
        "sub": "admin",
        "team": "platform",
        "roles": ["admin"],
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "iat": now,
        "exp": now + 3600,
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest()) if key is not None else ""
    return f"{signing_input}.{signature}"


def bad_credentials(mesh) -> dict[str, tuple]:
    """Name -> gRPC metadata of each credential that must be refused."""
    other_key, _ = generate_signing_key()
    tokens = {
        # Right claims, signed by an Ed25519 key the mesh does not trust.
        "bad-signature": mint_token(other_key, **ADMIN_CLAIMS),
        # Signed by the mesh's own key, expired an hour ago (well past the verifier's leeway).
        "expired": mint_token(mesh.signing_key, **ADMIN_CLAIMS, now=time.time() - 7200, ttl_s=3600),
        "alg-none": _forged({"alg": "none", "typ": "JWT"}, None),
        # Key confusion: HMAC keyed with the public key PEM, which an attacker can read.
        "hs256-public-key": _forged({"alg": "HS256", "typ": "JWT"}, mesh.public_key),
    }
    return {"no-token": (), **{name: surface.bearer(token) for name, token in tokens.items()}}


def test_every_grpc_method_refuses_bad_credentials(live_mesh, capsys):
    methods = surface.mesh_methods(live_mesh.endpoints)
    served = {m.service for m in methods}
    # Reflection is the source of the matrix: it must list every service the contracts declare,
    # Triton's data plane on the gateway and the trace receiver on telemetry.
    missing = surface.declared_services() - served
    assert not missing, f"declared but served by no mesh process: {sorted(missing)}"
    by_process = {(m.process, m.service) for m in methods}
    assert ("inference-gateway", "inference.GRPCInferenceService") in by_process
    assert ("telemetry", "opentelemetry.proto.collector.trace.v1.TraceService") in by_process

    credentials = bad_credentials(live_mesh)
    valid = surface.bearer(live_mesh.admin_token)
    wrong: list[str] = []
    calls: Counter = Counter()
    guarded: dict[str, set] = defaultdict(set)
    open_seen: set[str] = set()
    for process, channel in surface.channels(live_mesh.endpoints):
        with channel:
            for method in (m for m in methods if m.process == process):
                if method.open:
                    outcome = surface.invoke(channel, method, _open_request(method), timeout=5)
                    calls[method.service] += 1
                    open_seen.add(method.name)
                    if outcome.code != grpc.StatusCode.OK:
                        wrong.append(f"{process} {method.name} (open) without a token: {outcome.code.name}")
                    continue
                guarded[method.service].add(method.desc.name)
                for cred, metadata in credentials.items():
                    outcome = surface.invoke(channel, method, method.request(), metadata=metadata, timeout=5)
                    calls[method.service] += 1
                    if outcome.code != grpc.StatusCode.UNAUTHENTICATED:
                        wrong.append(f"{process} {method.name} with {cred}: {outcome.code.name} {outcome.details}")
                # Control: the same call with a valid token gets past authentication, so the
                # refusals above are the credentials' doing.
                outcome = surface.invoke(channel, method, method.request(), metadata=valid, timeout=2)
                calls[method.service] += 1
                if outcome.code == grpc.StatusCode.UNAUTHENTICATED:
                    wrong.append(f"{process} {method.name} refused a valid admin token: {outcome.details}")

    assert {f"{s}/{m}" for s in ("grpc.health.v1.Health",) for m in ("Check", "Watch")} <= open_seen
    assert set(surface.OPEN_METHODS) <= open_seen
    with capsys.disabled():
        print(f"\nauth matrix (gRPC): {len(credentials)} bad credentials per guarded method")
        for service in sorted(calls):
            print(f"  {service}: {len(guarded[service])} guarded methods, {calls[service]} calls")
        print(f"  total: {sum(len(v) for v in guarded.values())} guarded methods, {sum(calls.values())} calls")
    assert not wrong, "\n".join(wrong)


def _open_request(method: surface.Method):
    if method.service.startswith("grpc.reflection."):
        return method.request(list_services="")
    return method.request()


HTTP_OPEN = {("GET", "/v2/health/live"), ("GET", "/v2/health/ready")}


def _http(url: str, method: str, headers: dict, body: bytes | None) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


def test_every_gateway_route_refuses_bad_credentials(live_mesh, capsys):
    routes = surface.http_routes(surface.gateway_app())
    fronts = {path.split("/")[1] for _, path in routes}
    assert fronts == {"v1", "v2"}, fronts  # KServe v2 and OpenAI
    assert set(routes) >= HTTP_OPEN
    base = live_mesh.gateway_http
    credentials = {name: dict(md) for name, md in bad_credentials(live_mesh).items()}
    wrong, calls = [], Counter()
    for verb, template in routes:
        path = template.replace("{model}", "m").replace("{version}", "1")
        body = b"{}" if verb == "POST" else None
        json_type = {"content-type": "application/json"}
        if (verb, template) in HTTP_OPEN:
            status = _http(base + path, verb, {}, body)
            calls["open"] += 1
            # Ready may be 503 while no backend serves; never a demand for credentials.
            if status not in (200, 503) or (template.endswith("/live") and status != 200):
                wrong.append(f"{verb} {template} (open) without a token: {status}")
            continue
        for cred, headers in credentials.items():
            status = _http(base + path, verb, {**json_type, **headers}, body)
            calls[template.split("/")[1]] += 1
            if status != 401:
                wrong.append(f"{verb} {template} with {cred}: HTTP {status}")
        status = _http(base + path, verb, {**json_type, "authorization": f"Bearer {live_mesh.admin_token}"}, body)
        calls[template.split("/")[1]] += 1
        if status == 401:
            wrong.append(f"{verb} {template} refused a valid admin token")
    with capsys.disabled():
        print(
            f"\nauth matrix (HTTP): {len(routes)} routes, {len(routes) - len(HTTP_OPEN)} guarded, calls {dict(calls)}"
        )
    assert not wrong, "\n".join(wrong)


def test_metrics_endpoints_stay_open(live_mesh):
    for name, ep in live_mesh.services.items():
        with urllib.request.urlopen(ep["metrics_url"], timeout=10) as reply:
            assert reply.status == 200, name
            assert b"mlmesh_rpc_requests" in reply.read(), name
