"""Fuzzing the live mesh with valid tokens.

- gRPC: hypothesis-built requests (from each served descriptor, see protofuzz.py) against every
  method of every process. Pass: no INTERNAL or UNKNOWN, no unary call running into its deadline (a
  hang), every process healthy afterwards.
- HTTP: schemathesis against the gateway's app (KServe v2 and OpenAI fronts), from its OpenAPI
  schema with the request bodies the handlers parse themselves added. Pass: no 5xx, and every
  error in the front's documented shape.

Examples are bounded per method and operation so the whole file takes about two minutes.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter, defaultdict

import grpc
import pytest
import requests
from google.protobuf import text_format
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.openapi import from_dict

from mlmesh.local.mesh import grpc_healthy
from mlmesh.local.process import pid_running
from tests.e2e import protofuzz, surface

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    # hypothesis labels strategies by their arguments, and reading a field descriptor's label warns
    pytest.mark.filterwarnings("ignore:label\\(\\) is deprecated:DeprecationWarning"),
]

GRPC_EXAMPLES = 40
HTTP_EXAMPLES = 20
DEADLINE_S = 5.0
STREAM_DEADLINE_S = 0.5  # a watch or a followed log may rightly wait for more

# Admin- and service-only methods, fuzzed with the admin token (which holds every role) so the fuzz
# gets past the role check. None of them starts a process.
AS_ADMIN = {
    *(f"mlmesh.scheduler.v1.SchedulerService/{m}" for m in ("CreateQueue", "UpdateQueue", "DeleteQueue")),
    *(f"mlmesh.scheduler.v1.SchedulerService/{m}PriorityClass" for m in ("Create", "Update", "Delete")),
    "mlmesh.storage.v1.StorageService/SetQuota",
    *(f"mlmesh.fabric.v1.FabricService/{m}" for m in ("RegisterNode", "Heartbeat", "Cordon", "Drain", "Uncordon")),
    "mlmesh.fabric.v1.FabricService/BenchmarkLinks",
    "mlmesh.fabric.v1.NodeAgentService/GetWorkers",
    "mlmesh.fabric.v1.NodeAgentService/StreamWorkerLogs",
    "opentelemetry.proto.collector.trace.v1.TraceService/Export",
}
# StartRun, StopRun, LaunchWorkers and StopWorkers would run or kill processes on this machine:
# they get the developer token like everything else, so the fuzz checks that their role check
# refuses every random request cleanly (not what they do with one).
FAILING = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}


def _explain(request) -> str:
    text = text_format.MessageToString(request, as_one_line=True)
    return text if len(text) < 300 else text[:300] + f"... ({request.ByteSize()} bytes)"


FUZZ_SETTINGS = settings(deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))


def _fuzz_method(channel, method: surface.Method, metadata, codes: Counter, failures: list[str]) -> None:
    streaming = method.desc.server_streaming
    timeout = STREAM_DEADLINE_S if streaming else DEADLINE_S

    @settings(FUZZ_SETTINGS, max_examples=GRPC_EXAMPLES)
    @given(protofuzz.requests(method.desc.input_type))
    def fuzz(request):
        outcome = surface.invoke(channel, method, request, metadata=metadata, timeout=timeout)
        codes[outcome.code.name] += 1
        hang = outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED and not streaming
        if outcome.code in FAILING or hang:
            failures.append(f"{method.name}: {outcome.code.name} {outcome.details!r} for {_explain(request)}")

    fuzz()


def test_grpc_methods_survive_random_requests(live_mesh, capsys):
    admin = surface.bearer(live_mesh.admin_token)
    developer = surface.bearer(live_mesh.token("xt-fuzz"))
    methods = [m for m in surface.mesh_methods(live_mesh.endpoints) if not m.open]
    failures: list[str] = []
    codes: dict[str, Counter] = defaultdict(Counter)
    for method in methods:
        metadata = admin if method.name in AS_ADMIN else developer
        with grpc.insecure_channel(method.target) as channel:
            _fuzz_method(channel, method, metadata, codes[method.service], failures)

    dead = _unhealthy(live_mesh)
    with capsys.disabled():
        print(f"\ngRPC fuzz: {len(methods)} methods, {GRPC_EXAMPLES} requests each")
        for service, counted in sorted(codes.items()):
            print(f"  {service}: {sum(counted.values())} calls {dict(counted.most_common())}")
    assert not dead, f"unhealthy after the fuzz: {dead}"
    assert not failures, "\n".join(failures)


def _unhealthy(mesh) -> list[str]:
    out = [name for name, ep in mesh.services.items() if not (pid_running(ep["pid"]) and grpc_healthy(ep["grpc"]))]
    try:
        with urllib.request.urlopen(mesh.gateway_http + "/v2/health/live", timeout=5) as reply:
            if reply.status != 200:
                out.append("inference-gateway http")
    except OSError:
        out.append("inference-gateway http")
    return out


# --- HTTP ----------------------------------------------------------------------------------------

# A KServe v2 inference request (the body the gateway passes to Triton unread).
KSERVE_INFER = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"enum": ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
                    "parameters": {"type": "object"},
                    "data": {"type": "array"},
                },
            },
        },
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
    },
}


def fuzz_schema() -> dict:
    """The gateway's OpenAPI document with the request bodies its handlers parse from the raw
    body (so FastAPI does not list them): OpenAI's from the front's own pydantic models."""
    from mlmesh.gateway import openai_front

    schema = surface.openapi_schema(surface.gateway_app())
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    bodies = {
        "/v1/completions": openai_front.CompletionBody,
        "/v1/chat/completions": openai_front.ChatBody,
        "/v1/embeddings": openai_front.EmbeddingBody,
    }
    for path, model in bodies.items():
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    for path, item in schema["paths"].items():
        if path.endswith("/infer"):
            item["post"]["requestBody"] = {"required": True, "content": {"application/json": {"schema": KSERVE_INFER}}}
    return schema


def _error_shape(path: str, status: int, headers, body: bytes) -> str:
    """Why an error reply is not in its front's documented shape, or ''."""
    if status < 400:
        return ""
    try:
        document = json.loads(body)
    except ValueError:
        return f"HTTP {status} body is not JSON: {body[:200]!r}"
    error = document.get("error") if isinstance(document, dict) else None
    if path.startswith("/v1"):  # OpenAI: {"error": {"message", "type", "param", "code"}}
        ok = isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)
    else:  # KServe v2: {"error": "<message>"}
        ok = isinstance(error, str)
    if not ok:
        return f"HTTP {status} error not in the front's shape: {body[:200]!r}"
    if status == 401 and "www-authenticate" not in {k.lower() for k in headers}:
        return "401 without WWW-Authenticate"
    return ""


def _fuzz_operation(operation, session, base: str, headers: dict, statuses: Counter, failures: list[str]) -> None:
    @settings(FUZZ_SETTINGS, max_examples=HTTP_EXAMPLES)
    @given(operation.as_strategy())
    def fuzz(case):
        response = case.call(base_url=base, session=session, headers=headers, timeout=DEADLINE_S)
        statuses[response.status_code] += 1
        label = f"{operation.method.upper()} {case.formatted_path}"
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
        except Exception as exc:  # schemathesis' failure group: keep going, report all
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
        why = _error_shape(case.formatted_path, response.status_code, response.headers, response.content)
        if why:
            failures.append(f"{label}: {why}")

    fuzz()


def test_gateway_http_fronts_survive_schemathesis(live_mesh, capsys):
    schema = from_dict(fuzz_schema())
    headers = {"authorization": f"Bearer {live_mesh.token('xt-fuzz')}"}
    failures: list[str] = []
    statuses: Counter = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    with requests.Session() as session:
        for operation in operations:
            _fuzz_operation(operation, session, live_mesh.gateway_http, headers, statuses, failures)
    with capsys.disabled():
        print(f"\nHTTP fuzz: {len(operations)} operations, {sum(statuses.values())} calls, statuses {dict(statuses)}")
    assert not _unhealthy(live_mesh)
    assert not failures, "\n".join(failures)


# --- out-of-range times ------------------------------------------------------------------------

BAD_TIMES = {
    "google.protobuf.Duration": [{"seconds": 2**63 - 1}, {"seconds": -(2**63)}, {"seconds": 1, "nanos": -1}],
    "google.protobuf.Timestamp": [{"seconds": 2**63 - 1}, {"seconds": -(2**63)}, {"nanos": -1}],
}


def time_fields(desc, prefix=(), seen=frozenset()):
    """Paths (tuples of field descriptors) to every Duration and Timestamp in a request."""
    for f in desc.fields:
        m = f.message_type
        if m is None or m.GetOptions().map_entry or m.full_name in seen:
            continue
        if m.full_name in BAD_TIMES:
            yield (*prefix, f)
        else:
            yield from time_fields(m, (*prefix, f), seen | {m.full_name})


def _with_time(method: surface.Method, path, value: dict):
    request = method.request()
    node = request
    for f in path[:-1]:
        node = getattr(node, f.name).add() if f.is_repeated else getattr(node, f.name)
    target = getattr(node, path[-1].name)
    target = target.add() if path[-1].is_repeated else target
    for key, number in value.items():
        setattr(target, key, number)
    return request


def test_out_of_range_times_are_refused_as_invalid(live_mesh, capsys):
    """Durations and timestamps outside protobuf's valid ranges, in every request field that holds
    one: the library's conversions raise on them, which must end as INVALID_ARGUMENT, not INTERNAL."""
    admin = surface.bearer(live_mesh.admin_token)
    developer = surface.bearer(live_mesh.token("xt-fuzz"))
    failures, calls = [], 0
    for method in (m for m in surface.mesh_methods(live_mesh.endpoints) if not m.open):
        metadata = admin if method.name in AS_ADMIN else developer
        with grpc.insecure_channel(method.target) as channel:
            for path in time_fields(method.desc.input_type):
                for value in BAD_TIMES[path[-1].message_type.full_name]:
                    request = _with_time(method, path, value)
                    timeout = STREAM_DEADLINE_S if method.desc.server_streaming else DEADLINE_S
                    outcome = surface.invoke(channel, method, request, metadata=metadata, timeout=timeout)
                    calls += 1
                    if outcome.code in FAILING:
                        field = ".".join(f.name for f in path)
                        failures.append(f"{method.name} {field}={value}: {outcome.code.name} {outcome.details!r}")
    with capsys.disabled():
        print(f"\nout-of-range times: {calls} calls")
    assert not failures, "\n".join(failures)
