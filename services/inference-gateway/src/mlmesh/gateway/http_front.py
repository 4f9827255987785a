"""The HTTP front: KServe v2 REST, forwarded to Triton's HTTP port, so tritonclient.http works
unchanged (JSON and binary tensor data alike).

Bodies are never decoded on the way in: the path carries the model name, which is rewritten to the
team's Triton name, and the body and the headers that shape it pass through. On the way out the
model's name is rewritten back in the JSON part of the reply (the binary tail is left as is).
"""

import asyncio
import contextlib
import gzip
import json
import logging
import socket
import zlib
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mlmesh.common import tracing
from mlmesh.common.auth import Identity, TokenVerifier
from mlmesh.common.errors import MlmeshError, TooLarge
from mlmesh.common.http import bearer_auth, install_error_handlers
from mlmesh.gateway.backends import BackendPool, HttpResponse
from mlmesh.gateway.cached import Cached
from mlmesh.gateway.domain.cache_key import cache_key, http_request_digest
from mlmesh.gateway.routing import Route, Router

log = logging.getLogger("mlmesh.gateway.http")

# Headers that shape a KServe v2 body (binary tensor extension, compression) travel unchanged.
REQUEST_HEADERS = ("content-type", "inference-header-content-length", "content-encoding", "accept-encoding")
REPLY_HEADERS = ("content-type", "inference-header-content-length", "content-encoding")
HEADER_LENGTH = "inference-header-content-length"


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _encode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    return body


def rewrite_head(body: bytes, headers: dict[str, str], edit: Callable[[dict], None]) -> tuple[bytes, dict[str, str]]:
    """`body` with `edit` applied to its JSON part (the JSON header of a binary reply, or the whole
    body), and `headers` with the JSON length updated; unchanged when it cannot be decoded."""
    headers = dict(headers)
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "deflate"):
        return body, headers  # an encoding we cannot rewrite: pass through
    try:
        decoded = _decode(body, encoding)
    except (OSError, zlib.error, EOFError):
        return body, headers
    json_length = int(headers[HEADER_LENGTH]) if HEADER_LENGTH in headers else len(decoded)
    head, tail = decoded[:json_length], decoded[json_length:]
    try:
        document = json.loads(head) if head else None
    except ValueError:
        return body, headers
    if not isinstance(document, dict):
        return body, headers
    edit(document)
    new_head = json.dumps(document, separators=(",", ":")).encode()
    if HEADER_LENGTH in headers:
        headers[HEADER_LENGTH] = str(len(new_head))
    return _encode(new_head + tail, encoding), headers


def rename_in_reply(reply: HttpResponse, triton: str, model: str) -> tuple[bytes, dict[str, str]]:
    """The reply's body and headers with Triton's model name replaced by the caller's, in the JSON
    part only (the JSON header of a binary reply, or the whole body)."""
    headers = {k.lower(): v for k, v in reply.headers.items() if k.lower() in REPLY_HEADERS}

    def rename(document: dict) -> None:
        for key in ("name", "model_name"):
            if document.get(key) == triton:
                document[key] = model
        if isinstance(document.get("error"), str):
            document["error"] = document["error"].replace(triton, model)

    return rewrite_head(reply.body, headers, rename)


def with_request_id(body: bytes, headers: dict[str, str], request_id: Any) -> tuple[bytes, dict[str, str]]:
    """A reply stored without an id, given the id of the request it now answers (if any)."""
    if request_id is None:
        return body, headers

    def put(document: dict) -> None:
        document["id"] = request_id

    return rewrite_head(body, headers, put)


def without_request_id(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return rewrite_head(body, headers, lambda document: document.pop("id", None))


async def read_limited(request: Request, max_request_bytes: int) -> bytes:
    """The request's body; TooLarge (413) past `max_request_bytes`, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
        raise TooLarge(f"request of {declared} bytes exceeds the limit of {max_request_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_request_bytes:
            raise TooLarge(f"request exceeds the limit of {max_request_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    pool: BackendPool,
    verifier: TokenVerifier,
    *,
    max_request_bytes: int,
    timeout_s: float,
    cached: Cached | None = None,
    router: Router | None = None,
) -> FastAPI:
    router = router or Router()
    app = FastAPI(title="mlmesh inference gateway (KServe v2)", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    @app.exception_handler(MlmeshError)
    async def _kserve_error(request: Request, exc: MlmeshError):
        # KServe v2 errors are {"error": "<message>"}; tritonclient shows that string.
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return JSONResponse(
            {"error": exc.message, "code": exc.grpc_code.name}, status_code=exc.http_status, headers=headers
        )

    Caller = Annotated[Identity, Depends(bearer_auth(verifier))]

    async def read_body(request: Request) -> bytes:
        return await read_limited(request, max_request_bytes)

    async def forward(request: Request, identity: Identity, model: str, version: str, suffix: str) -> Response:
        route = router.route(identity.team, model, version, request.headers.get)
        tracing.tag(team=identity.team, model=model)
        with router.track(route):
            return await forward_route(request, route, suffix)

    async def forward_route(request: Request, route: Route, suffix: str) -> Response:
        model, triton, version = route.model, route.triton, route.version
        if suffix == "/infer" and cached is not None:
            await cached.limit(route)
            ttl = cached.cache.ttl_for(route.cache_ttl_s)
            if ttl > 0:
                return await cached_infer(request, route, cached, ttl)
        body = await read_body(request) if request.method == "POST" else None
        path = f"/v2/models/{triton}" + (f"/versions/{version}" if version else "") + suffix
        headers = {k: v for k, v in request.headers.items() if k.lower() in REQUEST_HEADERS}
        reply = await pool.http(request.method, path, headers, body, timeout_s)
        content, reply_headers = rename_in_reply(reply, triton, model)
        return Response(content=content, status_code=reply.status, headers=reply_headers)

    async def cached_infer(request: Request, route: Route, cached: Cached, ttl: float) -> Response:
        model, triton, version = route.model, route.triton, route.version
        body = await read_body(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() in REQUEST_HEADERS}
        keyed = http_request_digest(
            body,
            request.headers.get(HEADER_LENGTH),
            request.headers.get("content-encoding", ""),
            request.headers.get("accept-encoding", ""),
        )
        concrete = (version or await cached.versions.resolve(triton, timeout_s)) if keyed is not None else None
        if keyed is None or concrete is None:  # uncached: Triton answers as it would
            cached.cache.bypass()
            path = f"/v2/models/{triton}" + (f"/versions/{version}" if version else "") + "/infer"
            reply = await pool.http("POST", path, headers, body, timeout_s)
            content, reply_headers = rename_in_reply(reply, triton, model)
            return Response(content=content, status_code=reply.status, headers=reply_headers)
        key = cache_key(route.team, model, concrete, keyed.digest)
        # Forwarded with the concrete version, so what is stored is what the key names.
        path = f"/v2/models/{triton}/versions/{concrete}/infer"

        async def fetch() -> tuple[int, dict[str, str], bytes]:
            # The lookup is inside the flight too: a caller that joins no flight looks up after
            # the last flight stored its reply.
            value = await cached.cache.get(key)
            if value is not None:
                return _unpack(value)
            reply = await pool.http("POST", path, headers, body, timeout_s)
            content, reply_headers = rename_in_reply(reply, triton, model)
            if keyed.request_id is not None:
                content, reply_headers = without_request_id(content, reply_headers)
            if reply.status == 200:  # only successes are cached
                await cached.cache.set(key, _pack(reply.status, reply_headers, content), ttl)
            return reply.status, reply_headers, content

        status, stored_headers, content = await cached.flight.do(("http", key), fetch)
        content, reply_headers = with_request_id(content, stored_headers, keyed.request_id)
        return Response(content=content, status_code=status, headers=reply_headers)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if pool.available() else 503)

    @app.get("/v2")
    async def server_metadata(identity: Caller) -> Response:
        reply = await pool.http("GET", "/v2", {}, None, timeout_s)
        headers = {k.lower(): v for k, v in reply.headers.items() if k.lower() in REPLY_HEADERS}
        return Response(content=reply.body, status_code=reply.status, headers=headers)

    for suffix, methods in (("", ["GET"]), ("/ready", ["GET"]), ("/config", ["GET"]), ("/infer", ["POST"])):

        def make(suffix: str):
            async def model_route(request: Request, identity: Caller, model: str, version: str = "") -> Response:
                return await forward(request, identity, model, version, suffix)

            return model_route

        handler = make(suffix)
        app.add_api_route(f"/v2/models/{{model}}{suffix}", handler, methods=methods)
        app.add_api_route(f"/v2/models/{{model}}/versions/{{version}}{suffix}", handler, methods=methods)

    # The OpenAI-compatible API (/v1/...), a sub-application: its errors take OpenAI's shape.
    from mlmesh.gateway.openai_front import create_openai_app

    app.mount(
        "/v1",
        create_openai_app(
            pool, verifier, router=router, cached=cached, max_request_bytes=max_request_bytes, timeout_s=timeout_s
        ),
    )
    return app


def _pack(status: int, headers: dict[str, str], body: bytes) -> bytes:
    """A cached HTTP reply: a JSON line (status, headers), then the body."""
    return json.dumps({"status": status, "headers": headers}, separators=(",", ":")).encode() + b"\n" + body


def _unpack(value: bytes) -> tuple[int, dict[str, str], bytes]:
    meta, _, body = value.partition(b"\n")
    parsed = json.loads(meta)
    return int(parsed["status"]), dict(parsed["headers"]), body


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the service's event loop: the service owns the signals and the shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn releases
        pass


class HttpFront:
    """The FastAPI app served by uvicorn as a task of the running loop, on a socket bound up front
    (so port 0 is known at once)."""

    def __init__(self, app: FastAPI, host: str, port: int, *, shutdown_grace_s: float = 10.0):
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of a socket that names
        # it. Without it every keep-alive reply with a body waited ~40 ms (Nagle + delayed ACK).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise OSError(f"cannot bind HTTP to {host}:{port}: {exc.strerror}") from None
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=shutdown_grace_s,
            server_header=False,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="http front")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the HTTP front stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sock.close()
