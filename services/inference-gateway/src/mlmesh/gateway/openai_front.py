"""The OpenAI-compatible HTTP API, served under `/v1` on the KServe HTTP front's port.

- `GET /v1/models`: the caller's team's deployments.
- `POST /v1/completions`, `POST /v1/chat/completions`: text generation models. The request becomes
  one Triton generation request (PROMPT, MAX_TOKENS, TEMPERATURE; see
  `domain.model_repository.CONTRACT`), streamed from Triton over gRPC and either joined into one
  answer or passed on as Server-Sent Events (`stream: true`) as Triton produces the text.
  Chat messages become one prompt: `<role>: <content>` lines, then `assistant:` (the model's
  tokenizer, and any chat template it has, live in Triton, not here).
- `POST /v1/embeddings`: embedding models; the inputs go to Triton as one TEXT batch (in chunks of
  the model's max batch size).

Names, auth, rate limits and routing are the KServe fronts': a team's model `m` is Triton's
`<team>--m` (a deployment's, at its primary or canary version). A deployment of another task
answers 400; a model that is not there, or another team's, 404. Errors take OpenAI's shape:
`{"error": {"message", "type", "param", "code"}}`.

Cached (when the result cache is on and the deployment caches): embeddings, and non-streamed
completions at temperature 0, keyed by team, model, concrete version and a digest of the inputs.
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tritonclient.grpc import service_pb2

from mlmesh.common.auth import Identity, TokenVerifier
from mlmesh.common.errors import INTERNAL_MESSAGE, InvalidArgument, MlmeshError, NotFound
from mlmesh.common.http import bearer_auth
from mlmesh.gateway.backends import BackendError, BackendPool
from mlmesh.gateway.cached import Cached
from mlmesh.gateway.domain.cache_key import cache_key
from mlmesh.gateway.domain.model_repository import EMBEDDING, GENERATION
from mlmesh.gateway.http_front import read_limited
from mlmesh.gateway.routing import Route, Router
from mlmesh.gateway.streaming import EMPTY_FINAL, FIRST_TOKEN, STREAMED, is_final

log = logging.getLogger("mlmesh.gateway.openai")

FRONT = "openai"

# OpenAI's error types by HTTP status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    body = {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _invalid(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, message, param, "invalid_value")


# Request bodies. Fields OpenAI defines that this API does not serve are declared, so that using
# them answers 400 rather than being silently ignored; unknown fields are ignored.


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logprobs: Any = None

    def unsupported(self) -> None:
        if self.n not in (None, 1):
            raise _invalid("n", "only n=1 is served")
        if self.stop:
            raise _invalid("stop", "stop sequences are not supported")
        if self.logprobs:
            raise _invalid("logprobs", "logprobs are not supported")

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionBody(_Body):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=None, ge=1)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def text(self) -> str:
        self.unsupported()
        if self.echo:
            raise _invalid("echo", "echo is not supported")
        if self.best_of not in (None, 1):
            raise _invalid("best_of", "only best_of=1 is served")
        if self.suffix:
            raise _invalid("suffix", "suffix is not supported")
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise _invalid("prompt", "exactly one prompt per request is served")
        if not prompts[0].strip():
            raise _invalid("prompt", "prompt must not be empty")
        return prompts[0]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def prompt(self) -> str:
        """The chat template: one `<role>: <content>` line per message, then `assistant:`."""
        self.unsupported()
        lines = [f"{m.role}: {m.text()}" for m in self.messages]
        return "\n".join([*lines, "assistant:"])

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    def texts(self) -> list[str]:
        if self.dimensions is not None:
            raise _invalid("dimensions", "dimensions is not supported: the model's own size is served")
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts:
            raise _invalid("input", "input must not be empty")
        for i, text in enumerate(texts):
            if not text.strip():
                raise _invalid("input", f"input {i} is empty")
        return texts


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple) -> str | None:
    """The dotted field path of a validation error, without pydantic's union-member tags."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p))]
    return ".".join(parts) or None


def _parse(model: type[BaseModel], body: bytes):
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error.get("type") == "json_invalid":
            raise OpenAIError(400, "the request body is not valid JSON") from None
        param = _param(tuple(error.get("loc", ())))
        raise OpenAIError(400, f"{param or 'body'}: {error.get('msg', 'invalid')}", param, "invalid_value") from None


# Triton tensors in gRPC messages.


def _bytes_input(request: service_pb2.ModelInferRequest, name: str, values: list[str], shape: list[int]) -> None:
    tensor = request.inputs.add(name=name, datatype="BYTES", shape=shape)
    tensor.contents.bytes_contents.extend(v.encode("utf-8") for v in values)


def _output(reply: service_pb2.ModelInferResponse, name: str):
    for index, output in enumerate(reply.outputs):
        if output.name != name:
            continue
        raw = reply.raw_output_contents[index] if index < len(reply.raw_output_contents) else None
        shape = tuple(output.shape)
        if output.datatype == "BYTES":
            if raw is None:
                return list(output.contents.bytes_contents)
            values, offset = [], 0
            while offset < len(raw):
                (length,) = struct.unpack_from("<I", raw, offset)
                values.append(raw[offset + 4 : offset + 4 + length])
                offset += 4 + length
            return values
        dtype = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16}[output.datatype]
        if raw is None:
            contents = output.contents
            data = contents.fp32_contents if output.datatype == "FP32" else contents.int_contents
            return np.array(list(data), dtype=dtype).reshape(shape)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    raise OpenAIError(502, f"the model answered without its {name} output", code="bad_model_output")


def _backend_error(exc: BackendError, route: Route) -> OpenAIError:
    message = exc.message.replace(route.triton, route.model)
    status = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400, "UNAVAILABLE": 503, "RESOURCE_EXHAUSTED": 429}.get(
        exc.code.name, 500
    )
    if status == 404:
        return OpenAIError(404, f"model {route.model!r} not found", "model", "model_not_found")
    return OpenAIError(status, message, None, exc.code.name.lower())


def _stream_error(message: str, route: Route) -> OpenAIError:
    """An error Triton sent in the stream (text only: the stream protocol has no code)."""
    message = message.replace(route.triton, route.model)
    if "unknown model" in message or "is not found" in message:
        return OpenAIError(404, f"model {route.model!r} not found", "model", "model_not_found")
    if message.startswith(("generation failed", "inference failed")):  # the model's own failures
        return OpenAIError(500, message, None, "model_error")
    return OpenAIError(400, message, None, "invalid_value")


@dataclass
class Chunk:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(document: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"


def create_openai_app(
    pool: BackendPool,
    verifier: TokenVerifier,
    *,
    router: Router,
    cached: Cached | None,
    max_request_bytes: int,
    timeout_s: float,
) -> FastAPI:
    app = FastAPI(title="mlmesh inference gateway (OpenAI-compatible)", docs_url=None, redoc_url=None, openapi_url=None)
    Caller = Annotated[Identity, Depends(bearer_auth(verifier))]
    max_batch: dict[tuple[str, str], int] = {}

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError):
        return _error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(MlmeshError)
    async def _domain_error(request: Request, exc: MlmeshError):
        param = exc.violations[0].field if isinstance(exc, InvalidArgument) and exc.violations else None
        if isinstance(exc, NotFound):
            return _error_response(404, exc.message, "model", "model_not_found")
        return _error_response(exc.http_status, exc.message, param, exc.grpc_code.name.lower())

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("%s %s raised an unexpected error", request.method, request.url.path, exc_info=exc)
        return _error_response(500, INTERNAL_MESSAGE)

    def route_for(identity: Identity, request: Request, model: str, task: int) -> Route:
        route = router.route(identity.team, model, "", request.headers.get)
        if route.task and route.task != task:
            raise OpenAIError(400, f"model {model!r} does not serve this endpoint", "model", "wrong_model_task")
        return route

    async def version_of(route: Route) -> str | None:
        if route.version:
            return route.version
        return await cached.versions.resolve(route.triton, timeout_s) if cached is not None else None

    async def with_cache(route: Route, digest: str, fetch, what: str):
        """`fetch()` (returning JSON-able data) through the result cache when it applies."""
        ttl = cached.cache.ttl_for(route.cache_ttl_s) if cached is not None else 0
        if ttl <= 0:
            return await fetch()
        version = await version_of(route)
        if version is None:
            cached.cache.bypass()
            return await fetch()
        key = cache_key(route.team, route.model, version, digest)

        async def through() -> Any:
            value = await cached.cache.get(key)
            if value is not None:
                return json.loads(value)
            result = await fetch()
            await cached.cache.set(key, json.dumps(result, separators=(",", ":")).encode(), ttl)
            return result

        return await cached.flight.do((what, key), through)

    # Generation.

    async def generate(route: Route, prompt: str, max_tokens: int | None, temperature: float | None):
        """Triton's chunks of one generation (an async generator); errors before the first chunk
        raise from the first `__anext__`."""
        request = service_pb2.ModelInferRequest(model_name=route.triton, model_version=route.version, id="1")
        _bytes_input(request, "PROMPT", [prompt], [1])
        if max_tokens is not None:
            request.inputs.add(name="MAX_TOKENS", datatype="INT32", shape=[1]).contents.int_contents.append(max_tokens)
        if temperature is not None:
            tensor = request.inputs.add(name="TEMPERATURE", datatype="FP32", shape=[1])
            tensor.contents.fp32_contents.append(temperature)
        request.parameters[EMPTY_FINAL].bool_param = True

        async def one() -> AsyncIterator[service_pb2.ModelInferRequest]:
            yield request

        try:
            async with contextlib.aclosing(pool.stream(one(), timeout_s)) as responses:
                async for response in responses:
                    if response.error_message:
                        raise _stream_error(response.error_message, route)
                    reply = response.infer_response
                    if reply.outputs:
                        yield Chunk(
                            b"".join(_output(reply, "TEXT")).decode("utf-8"),
                            b"".join(_output(reply, "FINISH_REASON")).decode(),
                            int(_output(reply, "PROMPT_TOKENS").reshape(-1)[0]),
                            int(_output(reply, "COMPLETION_TOKENS").reshape(-1)[0]),
                        )
                    if is_final(reply):
                        return
        except BackendError as exc:
            raise _backend_error(exc, route) from None

    async def joined(route: Route, prompt: str, max_tokens: int | None, temperature: float | None, started: float):
        parts, last = [], Chunk("", "", 0, 0)
        async with contextlib.aclosing(generate(route, prompt, max_tokens, temperature)) as chunks:
            async for chunk in chunks:
                if not parts:
                    FIRST_TOKEN.labels(FRONT).observe(time.perf_counter() - started)
                parts.append(chunk.text)
                last = chunk
        return {
            "text": "".join(parts),
            "finish_reason": last.finish_reason or "stop",
            "usage": _usage(last.prompt_tokens, last.completion_tokens),
        }

    async def serve_generation(
        request: Request, identity: Identity, body: _Body, prompt: str, max_tokens: int | None, chat: bool
    ) -> Response:
        started = time.perf_counter()
        route = route_for(identity, request, body.model, GENERATION)
        stack = contextlib.ExitStack()
        stack.enter_context(router.track(route))
        try:
            if cached is not None:
                await cached.limit(route)
            ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
            created = int(time.time())
            if body.stream:
                tracking, stack = stack, contextlib.ExitStack()  # the stream owns the tracking now
                try:
                    return await stream_generation(
                        route, body, prompt, max_tokens, chat, ident, created, started, tracking
                    )
                except BaseException:
                    tracking.close()
                    raise
            deterministic = body.temperature == 0 or (
                body.temperature is None
                and route.deployment is not None
                and route.deployment.parameters.get("temperature") in ("0", "0.0")
            )

            async def fetch():
                return await joined(route, prompt, max_tokens, body.temperature, started)

            if deterministic:
                params = dict(route.deployment.parameters) if route.deployment else {}
                digest = _digest("openai-generate", prompt, max_tokens, params)
                result = await with_cache(route, digest, fetch, "openai-generate")
            else:
                result = await fetch()
        finally:
            stack.close()
        choice: dict[str, Any] = {"index": 0, "finish_reason": result["finish_reason"]}
        if chat:
            choice["message"] = {"role": "assistant", "content": result["text"]}
            kind = "chat.completion"
        else:
            choice.update(text=result["text"], logprobs=None)
            kind = "text_completion"
        return JSONResponse(
            {
                "id": ident,
                "object": kind,
                "created": created,
                "model": body.model,
                "choices": [choice],
                "usage": result["usage"],
            }
        )

    async def stream_generation(
        route: Route,
        body: _Body,
        prompt: str,
        max_tokens: int | None,
        chat: bool,
        ident: str,
        created: int,
        started: float,
        tracking: contextlib.ExitStack,
    ) -> StreamingResponse:
        chunks = generate(route, prompt, max_tokens, body.temperature)
        try:
            first = await anext(chunks)  # errors before the stream starts keep their status
        except StopAsyncIteration:
            first = None
        except BaseException:
            await chunks.aclose()
            raise
        if first is not None:
            FIRST_TOKEN.labels(FRONT).observe(time.perf_counter() - started)
        kind = "chat.completion.chunk" if chat else "text_completion"

        def event(text: str | None, finish: str | None, role: bool = False) -> bytes:
            if chat:
                delta: dict[str, Any] = {}
                if role:
                    delta["role"] = "assistant"
                if text is not None:
                    delta["content"] = text
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            STREAMED.labels(FRONT).inc()
            return _sse({"id": ident, "object": kind, "created": created, "model": body.model, "choices": [choice]})

        async def events() -> AsyncIterator[bytes]:
            last = Chunk("", "", 0, 0)
            try:
                if chat:
                    yield event("", None, role=True)
                pending = first
                while pending is not None:
                    last = pending
                    if pending.text:
                        yield event(pending.text, None)
                    try:
                        pending = await anext(chunks)
                    except StopAsyncIteration:
                        pending = None
                yield event(None if chat else "", last.finish_reason or "stop")
                if body.include_usage:
                    usage = _usage(last.prompt_tokens, last.completion_tokens)
                    document = {"id": ident, "object": kind, "created": created, "model": body.model}
                    yield _sse({**document, "choices": [], "usage": usage})
            except OpenAIError as exc:  # after the 200: reported in the stream
                error = {"message": exc.message, "type": _ERROR_TYPES.get(exc.status, "server_error")}
                yield _sse({"error": {**error, "param": exc.param, "code": exc.code}})
            except MlmeshError as exc:
                yield _sse({"error": {"message": exc.message, "type": "server_error", "param": None, "code": None}})
            finally:
                await chunks.aclose()
                tracking.close()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.post("/completions")
    async def completions(request: Request, identity: Caller) -> Response:
        body = _parse(CompletionBody, await read_limited(request, max_request_bytes))
        prompt = body.text()
        return await serve_generation(request, identity, body, prompt, body.max_tokens, chat=False)

    @app.post("/chat/completions")
    async def chat_completions(request: Request, identity: Caller) -> Response:
        body = _parse(ChatBody, await read_limited(request, max_request_bytes))
        prompt = body.prompt()
        return await serve_generation(request, identity, body, prompt, body.limit, chat=True)

    # Embeddings.

    async def batch_size(route: Route) -> int:
        key = (route.triton, route.version)
        if key not in max_batch:
            request = service_pb2.ModelConfigRequest(name=route.triton, version=route.version)
            try:
                reply = await pool.grpc("ModelConfig", request, timeout_s)
            except BackendError as exc:
                raise _backend_error(exc, route) from None
            max_batch[key] = int(reply.config.max_batch_size)
        return max_batch[key]

    async def embed(route: Route, texts: list[str]) -> dict[str, Any]:
        size = await batch_size(route)
        step = size if size > 0 else 1

        async def infer(part: list[str]):
            request = service_pb2.ModelInferRequest(model_name=route.triton, model_version=route.version)
            _bytes_input(request, "TEXT", part, [len(part), 1] if size > 0 else [1])
            try:
                reply = await pool.grpc("ModelInfer", request, timeout_s)
            except BackendError as exc:
                raise _backend_error(exc, route) from None
            vectors = _output(reply, "EMBEDDING").reshape(len(part), -1)
            tokens = _output(reply, "TOKENS").reshape(-1)
            return vectors, tokens

        parts = await asyncio.gather(*(infer(texts[i : i + step]) for i in range(0, len(texts), step)))
        vectors = np.concatenate([p[0] for p in parts]).astype("<f4")
        tokens = int(sum(int(p[1].sum()) for p in parts))
        return {"vectors": base64.b64encode(vectors.tobytes()).decode(), "dim": vectors.shape[1], "tokens": tokens}

    @app.post("/embeddings")
    async def embeddings(request: Request, identity: Caller) -> Response:
        body = _parse(EmbeddingBody, await read_limited(request, max_request_bytes))
        texts = body.texts()
        route = route_for(identity, request, body.model, EMBEDDING)
        with router.track(route):
            if cached is not None:
                await cached.limit(route)
            result = await with_cache(
                route, _digest("openai-embed", texts), lambda: embed(route, texts), "openai-embed"
            )
        raw = base64.b64decode(result["vectors"])
        vectors = np.frombuffer(raw, dtype="<f4").reshape(len(texts), result["dim"])
        data = []
        for i, vector in enumerate(vectors):
            encoded: Any
            if body.encoding_format == "base64":
                encoded = base64.b64encode(vector.tobytes()).decode()
            else:
                encoded = vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        usage = {"prompt_tokens": result["tokens"], "total_tokens": result["tokens"]}
        return JSONResponse({"object": "list", "data": data, "model": body.model, "usage": usage})

    @app.get("/models")
    async def models(identity: Caller) -> Response:
        data = [
            {"id": served.name, "object": "model", "created": 0, "owned_by": served.team}
            for served in router.deployments(identity.team)
            if not served.draining
        ]
        return JSONResponse({"object": "list", "data": data})

    return app


def _digest(domain: str, *parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(domain.encode() + b"\0" + canonical).hexdigest()
