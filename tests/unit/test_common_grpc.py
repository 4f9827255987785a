"""The gRPC interceptors through a real in-process grpc.aio server: error mapping and bearer auth."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from mlmesh.common import errors
from mlmesh.common.auth import current_identity, generate_signing_key, mint_service_token, mint_token
from mlmesh.common.errors import INTERNAL_MESSAGE, InvalidArgument, MlmeshError
from mlmesh.common.grpc_server import build_server, make_verifier

pytestmark = pytest.mark.timeout(30)

SERVICE = "mlmesh.commontest.v1.Probe"
C = grpc.StatusCode

# Every domain error and the status it must map to. A new error class without a row fails
# `test_the_table_covers_every_domain_error`.
EXPECTED_CODES: dict[type[MlmeshError], grpc.StatusCode] = {
    errors.InvalidArgument: C.INVALID_ARGUMENT,
    errors.NotFound: C.NOT_FOUND,
    errors.AlreadyExists: C.ALREADY_EXISTS,
    errors.Conflict: C.ABORTED,
    errors.FailedPrecondition: C.FAILED_PRECONDITION,
    errors.QuotaExceeded: C.RESOURCE_EXHAUSTED,
    errors.TooLarge: C.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: C.UNAUTHENTICATED,
    errors.PermissionDenied: C.PERMISSION_DENIED,
    errors.Unavailable: C.UNAVAILABLE,
    errors.DeadlineExceeded: C.DEADLINE_EXCEEDED,
    errors.DataLoss: C.DATA_LOSS,
}
VIOLATIONS = {"spec.workers": "must be at least 1", "team": "is required"}
SECRET = "secret detail"


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def make_error(name: str) -> Exception:
    if name == "runtime":
        return RuntimeError(SECRET)
    if name == "InvalidArgument":
        return InvalidArgument("2 fields are invalid", VIOLATIONS)
    return getattr(errors, name)(f"{name} happened")


# --- a tiny bytes-in, bytes-out service -----------------------------------------------------------


async def _raise(request: bytes, context) -> bytes:
    raise make_error(request.decode())


async def _raise_stream(request: bytes, context):
    yield b"first"
    raise make_error(request.decode())


async def _write_then_raise(request: bytes, context) -> None:
    # The other streaming style: a coroutine that writes through the context.
    await context.write(b"written")
    raise make_error(request.decode())


def _identity_json() -> bytes:
    ident = current_identity()
    return json.dumps(
        {"subject": ident.subject, "team": ident.team, "roles": sorted(ident.roles), "is_service": ident.is_service}
    ).encode()


async def _whoami(request: bytes, context) -> bytes:
    return _identity_json()


async def _whoami_stream(request: bytes, context):
    for _ in range(2):
        yield _identity_json()


HANDLER = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "Raise": grpc.unary_unary_rpc_method_handler(_raise),
        "RaiseStream": grpc.unary_stream_rpc_method_handler(_raise_stream),
        "WriteThenRaise": grpc.unary_stream_rpc_method_handler(_write_then_raise),
        "WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami),
        "WhoAmIStream": grpc.unary_stream_rpc_method_handler(_whoami_stream),
    },
)


@dataclass
class Probe:
    channel: grpc.aio.Channel
    token: str

    def _metadata(self, token: str | None) -> tuple:
        return () if token is None else (("authorization", f"Bearer {token}"),)

    async def unary(self, method: str, payload: bytes = b"", token: str | None = "default") -> bytes:
        token = self.token if token == "default" else token
        call = self.channel.unary_unary(f"/{SERVICE}/{method}")
        return await call(payload, metadata=self._metadata(token), timeout=10)

    def stream(self, method: str, payload: bytes = b"", token: str | None = "default"):
        token = self.token if token == "default" else token
        call = self.channel.unary_stream(f"/{SERVICE}/{method}")
        return call(payload, metadata=self._metadata(token), timeout=10)

    async def stream_until_error(self, method: str, payload: bytes, token: str | None = "default"):
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for item in self.stream(method, payload, token):
                received.append(item)
        return received, info.value


@pytest.fixture
async def probe(make_settings, signing_key):
    settings = make_settings()
    server = build_server(settings, make_verifier(settings))
    server.add_generic_rpc_handlers((HANDLER,))
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Probe(channel, signing_key.token(subject="alice", team="team-a", roles=["viewer"]))
    finally:
        await channel.close()
        await server.stop(0)


def _bad_request(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)
    assert status is not None, "no google.rpc.Status in the trailing metadata"
    assert status.code == err.code().value[0]
    assert status.message == err.details()
    found = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad), f"unexpected detail {detail.type_url}"
        found += [(v.field, v.description) for v in bad.field_violations]
    return found


def test_the_table_covers_every_domain_error():
    assert _subclasses(MlmeshError) == set(EXPECTED_CODES)
    for cls, code in EXPECTED_CODES.items():
        assert cls.grpc_code == code


# --- error mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(EXPECTED_CODES), ids=lambda c: c.__name__)
async def test_unary_domain_error_maps_to_its_status(probe: Probe, cls):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe.unary("Raise", cls.__name__.encode())
    err = info.value
    assert err.code() == EXPECTED_CODES[cls]
    violations = _bad_request(err)
    if cls is InvalidArgument:
        assert err.details() == "2 fields are invalid"
        assert sorted(violations) == sorted(VIOLATIONS.items())
    else:
        assert err.details() == f"{cls.__name__} happened"
        assert violations == []


@pytest.mark.parametrize("cls", [InvalidArgument, errors.NotFound, errors.Conflict], ids=lambda c: c.__name__)
async def test_streaming_error_after_a_message_maps_to_its_status(probe: Probe, cls):
    received, err = await probe.stream_until_error("RaiseStream", cls.__name__.encode())
    assert received == [b"first"]
    assert err.code() == EXPECTED_CODES[cls]
    if cls is InvalidArgument:
        assert sorted(_bad_request(err)) == sorted(VIOLATIONS.items())
    else:
        assert err.details() == f"{cls.__name__} happened"


async def test_streaming_coroutine_using_context_write_maps_errors(probe: Probe):
    received, err = await probe.stream_until_error("WriteThenRaise", b"FailedPrecondition")
    assert received == [b"written"]
    assert err.code() == C.FAILED_PRECONDITION
    assert err.details() == "FailedPrecondition happened"


async def test_unexpected_exception_is_internal_without_leaking_its_detail(probe: Probe, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe.unary("Raise", b"runtime")
    err = info.value
    assert err.code() == C.INTERNAL
    assert err.details() == INTERNAL_MESSAGE
    assert SECRET not in err.debug_error_string()
    assert all(SECRET.encode() not in (v if isinstance(v, bytes) else v.encode()) for _, v in err.trailing_metadata())
    # ...but the operator gets the traceback in the server log.
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert logged and str(logged[0].exc_info[1]) == SECRET


async def test_unexpected_exception_in_a_stream_is_internal(probe: Probe):
    received, err = await probe.stream_until_error("RaiseStream", b"runtime")
    assert received == [b"first"]
    assert err.code() == C.INTERNAL
    assert err.details() == INTERNAL_MESSAGE
    assert SECRET not in err.details()


# --- auth ---------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, sign) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _claims(**overrides) -> dict:
    now = int(time.time())
    claims = {"sub": "mallory", "team": "team-a", "roles": ["admin"], "iss": "mlmesh", "aud": "mlmesh"}
    return {**claims, "iat": now, "exp": now + 3600, **overrides}


def bad_tokens(signing_key) -> dict[str, str]:
    other_private, _ = generate_signing_key()
    key = serialization.load_pem_private_key(signing_key.private_pem, password=None)
    no_team = {k: v for k, v in _claims().items() if k != "team"}
    return {
        "other_key": mint_token(other_private, subject="mallory", team="team-a", roles=["admin"]),
        "expired": signing_key.token(now=time.time() - 7200, ttl_s=3600),
        "alg_none": _forge({"alg": "none", "typ": "JWT"}, _claims(), lambda _: b""),
        "hs256_public_key_as_secret": _forge(
            {"alg": "HS256", "typ": "JWT"},
            _claims(),
            lambda data: hmac.new(signing_key.public_pem, data, hashlib.sha256).digest(),
        ),
        "no_team": jwt.encode(no_team, key, algorithm="EdDSA"),
        "wrong_audience": signing_key.token(audience="someone-else"),
        "tampered_claims": _tamper(signing_key.token(team="team-a"), team="team-b"),
        "garbage": "not-a-jwt",
    }


def _tamper(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_b64(json.dumps({**claims, **changes}).encode())}.{signature}"


BAD_TOKEN_NAMES = [
    "other_key",
    "expired",
    "alg_none",
    "hs256_public_key_as_secret",
    "no_team",
    "wrong_audience",
    "tampered_claims",
    "garbage",
]


async def test_no_token_is_unauthenticated(probe: Probe):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe.unary("WhoAmI", token=None)
    assert info.value.code() == C.UNAUTHENTICATED
    assert "missing bearer token" in info.value.details()


async def test_non_bearer_scheme_is_unauthenticated(probe: Probe):
    call = probe.channel.unary_unary(f"/{SERVICE}/WhoAmI")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"", metadata=(("authorization", f"Basic {probe.token}"),), timeout=10)
    assert info.value.code() == C.UNAUTHENTICATED


@pytest.mark.parametrize("name", BAD_TOKEN_NAMES)
async def test_bad_token_is_unauthenticated_and_never_echoed(probe: Probe, signing_key, caplog, name):
    caplog.set_level(logging.DEBUG)
    token = bad_tokens(signing_key)[name]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe.unary("WhoAmI", token=token)
    err = info.value
    assert err.code() == C.UNAUTHENTICATED
    if name == "expired":
        assert err.details() == "token expired"
    elif name == "no_team":
        assert "team" in err.details()
    # The token never travels back to the caller nor into the logs.
    secret_part = token.split(".")[-1] or token.split(".")[1]
    for text in (err.details(), err.debug_error_string(), caplog.text):
        assert token not in text
        assert secret_part not in text
    for record in caplog.records:
        assert token not in repr(record.args) and token not in record.getMessage()
    assert any("UNAUTHENTICATED" in r.getMessage() for r in caplog.records), "the rejection was not logged"


async def test_streaming_call_without_token_is_unauthenticated(probe: Probe):
    received, err = await probe.stream_until_error("WhoAmIStream", b"", token=None)
    assert received == []
    assert err.code() == C.UNAUTHENTICATED


async def test_valid_token_exposes_the_identity_to_the_handler(probe: Probe):
    seen = json.loads(await probe.unary("WhoAmI"))
    assert seen == {"subject": "alice", "team": "team-a", "roles": ["viewer"], "is_service": False}
    streamed = [json.loads(item) async for item in probe.stream("WhoAmIStream")]
    assert [s["subject"] for s in streamed] == ["alice", "alice"]
    assert all(s["team"] == "team-a" for s in streamed)


async def test_service_token_is_accepted_and_marked_as_service(probe: Probe, signing_key):
    token = mint_service_token(signing_key.private_pem, "scheduler")
    seen = json.loads(await probe.unary("WhoAmI", token=token))
    assert seen == {"subject": "service:scheduler", "team": "platform", "roles": ["service"], "is_service": True}


async def test_health_answers_without_a_token(probe: Probe):
    stub = health_pb2_grpc.HealthStub(probe.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # ...while the same server still demands one for everything else.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe.unary("WhoAmI", token=None)
    assert info.value.code() == C.UNAUTHENTICATED
