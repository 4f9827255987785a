"""FastAPI glue: the same error mapping and bearer-token auth as the gRPC interceptors.

Needs the `http` extra (`mlmesh-common[http]`). Health and metrics routes simply do not declare the
`require_identity` dependency, so they stay open.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mlmesh.common.auth import Identity, TokenVerifier, set_current_identity
from mlmesh.common.errors import INTERNAL_MESSAGE, InvalidArgument, MlmeshError

log = logging.getLogger("mlmesh.http")


def error_body(exc: MlmeshError) -> dict:
    body: dict = {"error": {"code": exc.grpc_code.name, "message": exc.message}}
    if isinstance(exc, InvalidArgument) and exc.violations:
        body["error"]["field_violations"] = [{"field": v.field, "description": v.description} for v in exc.violations]
    return body


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MlmeshError)
    async def _domain(request: Request, exc: MlmeshError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return JSONResponse(error_body(exc), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        violations = {
            ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body": err.get("msg", "invalid")
            for err in exc.errors()
        }
        return JSONResponse(error_body(InvalidArgument("invalid request", violations)), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("%s %s raised an unexpected error", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": {"code": "INTERNAL", "message": INTERNAL_MESSAGE}}, status_code=500)


def bearer_auth(verifier: TokenVerifier):
    """A FastAPI dependency that authenticates the caller and exposes the identity to the handler."""

    async def require_identity(request: Request) -> Identity:
        identity = await verifier.verify_header_async(request.headers.get("authorization"))
        set_current_identity(identity)
        return identity

    return require_identity
