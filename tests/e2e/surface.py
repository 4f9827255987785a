"""The mesh's whole callable surface, discovered rather than listed: every gRPC method each process
serves (from server reflection, so a new method or service is covered without editing a list) and
every HTTP route of the gateway's FastAPI app (from the app object). Plus one way to call any gRPC
method with any message and get back its status code.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

import mlmesh.api

# Served by every process and open by design (probes and discovery).
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
# KServe v2 probes on the gateway's Triton front: open like /v2/health/*.
OPEN_METHODS = ("inference.GRPCInferenceService/ServerLive", "inference.GRPCInferenceService/ServerReady")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Method:
    process: str  # the mesh process serving it (endpoints.json name)
    target: str
    desc: MethodDescriptor

    @property
    def service(self) -> str:
        return self.desc.containing_service.full_name

    @property
    def name(self) -> str:
        return f"{self.service}/{self.desc.name}"

    @property
    def path(self) -> str:
        return f"/{self.name}"

    @property
    def open(self) -> bool:
        return self.service in OPEN_SERVICES or self.name in OPEN_METHODS

    def request(self, **fields):
        return message_factory.GetMessageClass(self.desc.input_type)(**fields)

    @property
    def response_class(self):
        return message_factory.GetMessageClass(self.desc.output_type)


def reflected(process: str, target: str) -> list[Method]:
    """Every method of every service `target` lists through reflection, with descriptors from the
    server itself (its file descriptors, not this checkout's)."""
    with grpc.insecure_channel(target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(db)
        services: list[ServiceDescriptor] = [pool.FindServiceByName(name) for name in db.get_services()]
        # Resolve everything while the channel is open: message classes are built lazily later.
        for svc in services:
            for m in svc.methods:
                message_factory.GetMessageClass(m.input_type)
                message_factory.GetMessageClass(m.output_type)
    return [Method(process, target, m) for svc in services for m in svc.methods]


def mesh_methods(endpoints: dict) -> list[Method]:
    return [m for name, ep in endpoints["services"].items() for m in reflected(name, ep["grpc"])]


def declared_services() -> set[str]:
    """Every gRPC service the repo's contracts declare (mlmesh.api.<area>.v1.*_pb2)."""
    names = set()
    for info in pkgutil.walk_packages(mlmesh.api.__path__, "mlmesh.api."):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(info.name)
            names |= {s.full_name for s in module.DESCRIPTOR.services_by_name.values()}
    return names


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    reply: object = None  # the unary reply, or the first streamed one
    details: str = ""


def invoke(
    channel: grpc.Channel, method: Method, request, *, metadata=(), timeout: float = 5.0, stream_items: int = 1
) -> Outcome:
    """Call `method` once: unary kinds to their reply; streaming responses up to the first
    `stream_items` (the call is then cancelled); a client stream sends `request` alone."""
    desc = method.desc
    kw = {
        "request_serializer": type(request).SerializeToString,
        "response_deserializer": method.response_class.FromString,
    }
    kind = ("stream" if desc.client_streaming else "unary") + "_" + ("stream" if desc.server_streaming else "unary")
    callable_ = getattr(channel, kind)(method.path, **kw)
    payload = iter([request]) if desc.client_streaming else request
    try:
        if not desc.server_streaming:
            return Outcome(grpc.StatusCode.OK, callable_(payload, metadata=metadata, timeout=timeout))
        call = callable_(payload, metadata=metadata, timeout=timeout)
        first = None
        try:
            for i, item in enumerate(call):
                first = item if first is None else first
                if i + 1 >= stream_items:
                    break
        finally:
            call.cancel()
        return Outcome(grpc.StatusCode.OK, first)
    except grpc.RpcError as err:
        return Outcome(err.code(), None, "; ".join([err.details() or "", *_violations(err)]))


def _violations(err: grpc.RpcError) -> list[str]:
    """The field violations of a google.rpc.BadRequest in the status details: the message alone
    says only how many problems there were."""
    status = rpc_status.from_call(err)
    out = []
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out += [f"{v.field}: {v.description}" for v in bad.field_violations]
    return out


def channels(endpoints: dict) -> Iterator[tuple[str, grpc.Channel]]:
    for name, ep in endpoints["services"].items():
        yield name, grpc.insecure_channel(ep["grpc"])


# --- the gateway's HTTP app --------------------------------------------------------------------


def gateway_app():
    """The gateway's FastAPI app as the service builds it (`http_front.create_app`), without
    backends: only its routes and schema are read here, nothing is served."""
    from mlmesh.common.auth import TokenVerifier, generate_signing_key
    from mlmesh.gateway.http_front import create_app

    pool = object()  # the handlers would use it; building the app does not
    verifier = TokenVerifier(public_key=generate_signing_key()[1])
    return create_app(pool, verifier, max_request_bytes=1 << 20, timeout_s=5.0)


def http_routes(app, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path template) of every route, mounted sub-applications included."""
    from starlette.routing import Mount, Route

    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            out += http_routes(route.app, prefix + route.path)
        elif isinstance(route, Route) and route.include_in_schema:
            out += [(m, prefix + route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def openapi_schema(app, prefix: str = "") -> dict:
    """The app's OpenAPI document with every mounted sub-application's paths merged in."""
    from starlette.routing import Mount

    schema = app.openapi()
    schema = {**schema, "paths": {prefix + p: v for p, v in schema.get("paths", {}).items()}}
    for route in app.routes:
        if isinstance(route, Mount):
            sub = openapi_schema(route.app, prefix + route.path)
            schema["paths"].update(sub["paths"])
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                sub.get("components", {}).get("schemas", {})
            )
    return schema
