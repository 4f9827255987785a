"""Result-cache keys: `mlmesh:gw:infer:{team}:{model}:{version}:{sha256}` (pure).

The digest covers everything that shapes a reply (inputs: names, datatypes, shapes and contents in
order; request, input and output parameters; the requested outputs) and nothing that does not: the
request id, and the model name and version, which are in the key already. The gRPC and HTTP fronts
cache different values (a serialized proto, an HTTP body), so their digests are domain-separated.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

from tritonclient.grpc import service_pb2

from mlmesh.common.valkey_acl import GATEWAY_KEY_PREFIX

# Under the gateway's prefix: its valkey user may touch no other key.
PREFIX = f"{GATEWAY_KEY_PREFIX}infer"


def cache_key(team: str, model: str, version: str, digest: str) -> str:
    """Team and model are validated tokens (`[a-z0-9_-]`), the version is decimal: no `:` inside."""
    return f"{PREFIX}:{team}:{model}:{version}:{digest}"


def grpc_request_digest(request: service_pb2.ModelInferRequest) -> str:
    """sha256 of the request's deterministic serialization without id, model name and version."""
    stripped = service_pb2.ModelInferRequest()
    stripped.CopyFrom(request)
    stripped.id = ""
    stripped.model_name = ""
    stripped.model_version = ""
    h = hashlib.sha256(b"grpc\0")
    h.update(stripped.SerializeToString(deterministic=True))
    return h.hexdigest()


_NO_ID = object()


@dataclass(frozen=True)
class HttpRequestKey:
    digest: str
    request_id: Any  # the JSON value of "id", or None when the request had none


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def http_request_digest(
    body: bytes, header_length: str | None, content_encoding: str, accept_encoding: str = ""
) -> HttpRequestKey | None:
    """The digest of a KServe v2 HTTP infer body (JSON header, then an optional binary tail);
    None when the body cannot be keyed (an unknown encoding, a JSON header that is not an object),
    so it goes uncached and Triton answers it.

    The reply's encoding follows Accept-Encoding, and a cached reply is returned as stored, so
    Accept-Encoding is part of the key."""
    encoding = content_encoding.strip().lower()
    if encoding not in ("", "identity", "gzip", "deflate"):
        return None
    try:
        raw = _decode(body, encoding)
    except (OSError, zlib.error, EOFError):
        return None
    if header_length is not None:
        if not header_length.strip().isdigit():
            return None
        json_length = int(header_length)
        if json_length > len(raw):
            return None
    else:
        json_length = len(raw)
    head, tail = raw[:json_length], raw[json_length:]
    try:
        document = json.loads(head)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    request_id = document.pop("id", None)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    h = hashlib.sha256(b"http\0")
    for part in (accept_encoding.strip().lower().encode(), canonical, tail):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return HttpRequestKey(h.hexdigest(), request_id)
