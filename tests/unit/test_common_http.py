"""The FastAPI glue: the same error mapping as gRPC, and the bearer-token dependency."""

from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from mlmesh.common import errors
from mlmesh.common.auth import Identity, TokenVerifier, current_identity
from mlmesh.common.errors import INTERNAL_MESSAGE, InvalidArgument, MlmeshError
from mlmesh.common.http import bearer_auth, install_error_handlers

pytestmark = pytest.mark.timeout(30)

EXPECTED_HTTP: dict[type[MlmeshError], int] = {
    errors.InvalidArgument: 400,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Conflict: 409,
    errors.FailedPrecondition: 412,
    errors.TooLarge: 413,
    errors.QuotaExceeded: 429,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
    errors.DataLoss: 500,
}
SECRET = "secret detail"


class Item(BaseModel):
    name: str
    count: int


@pytest.fixture
def client(signing_key):
    verifier = TokenVerifier(public_key=signing_key.public_pem)
    app = FastAPI()
    install_error_handlers(app)
    require_identity = bearer_auth(verifier)

    @app.get("/raise/{name}")
    async def raise_error(name: str):
        if name == "runtime":
            raise RuntimeError(SECRET)
        if name == "InvalidArgument":
            raise InvalidArgument("2 fields are invalid", {"spec.workers": "must be at least 1", "team": "required"})
        raise getattr(errors, name)(f"{name} happened")

    @app.post("/items")
    async def create_item(item: Item):
        return {"name": item.name}

    @app.get("/me")
    async def me(identity: Annotated[Identity, Depends(require_identity)]):
        ident = current_identity()
        return {"subject": identity.subject, "team": identity.team, "current": ident.subject}

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_every_domain_error_has_an_http_status():
    def subclasses(cls):
        return {s for sub in cls.__subclasses__() for s in (sub, *subclasses(sub))}

    assert subclasses(MlmeshError) == set(EXPECTED_HTTP)


@pytest.mark.parametrize("cls", list(EXPECTED_HTTP), ids=lambda c: c.__name__)
def test_domain_error_maps_to_its_http_status(client: TestClient, cls):
    reply = client.get(f"/raise/{cls.__name__}")
    assert reply.status_code == EXPECTED_HTTP[cls]
    body = reply.json()["error"]
    assert body["code"] == cls.grpc_code.name
    if cls is InvalidArgument:
        assert body["message"] == "2 fields are invalid"
        assert sorted(body["field_violations"], key=lambda v: v["field"]) == [
            {"field": "spec.workers", "description": "must be at least 1"},
            {"field": "team", "description": "required"},
        ]
    else:
        assert body["message"] == f"{cls.__name__} happened"
        assert "field_violations" not in body
    if cls is errors.Unauthenticated:
        assert reply.headers["www-authenticate"] == "Bearer"


def test_unexpected_exception_is_500_without_detail(client: TestClient):
    reply = client.get("/raise/runtime")
    assert reply.status_code == 500
    assert reply.json() == {"error": {"code": "INTERNAL", "message": INTERNAL_MESSAGE}}
    assert SECRET not in reply.text


def test_request_validation_error_is_400_naming_the_field(client: TestClient):
    reply = client.post("/items", json={"name": "x", "count": "many"})
    assert reply.status_code == 400
    body = reply.json()["error"]
    assert body["code"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in body["field_violations"]] == ["count"]

    reply = client.post("/items", json={"count": 1})
    assert reply.status_code == 400
    assert [v["field"] for v in reply.json()["error"]["field_violations"]] == ["name"]


def test_bearer_auth_rejects_a_missing_or_bad_token(client: TestClient, signing_key):
    reply = client.get("/me")
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "UNAUTHENTICATED"
    assert reply.headers["www-authenticate"] == "Bearer"

    expired = signing_key.token(ttl_s=-3600)
    reply = client.get("/me", headers={"authorization": f"Bearer {expired}"})
    assert reply.status_code == 401
    assert expired not in reply.text


def test_bearer_auth_accepts_a_valid_token_and_sets_the_identity(client: TestClient, signing_key):
    token = signing_key.token(subject="bob", team="team-b")
    reply = client.get("/me", headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 200
    assert reply.json() == {"subject": "bob", "team": "team-b", "current": "bob"}


def test_routes_without_the_dependency_stay_open(client: TestClient):
    assert client.get("/healthz").status_code == 200
