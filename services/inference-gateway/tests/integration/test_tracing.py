"""One trace follows an inference: tritonclient → the gateway's gRPC front → the valkey cache →
Triton, with a real telemetry process as the OTLP receiver. The client sends its own traceparent,
so the test knows the trace id; the gateway's spans hang under it, and GetTrace returns them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from mlmesh.api.telemetry.v1 import telemetry_service_pb2 as api
from mlmesh.api.telemetry.v1 import telemetry_service_pb2_grpc
from mlmesh.common.auth import generate_signing_key, mint_service_token, mint_token, write_secret
from mlmesh.local.process import start_service
from mlmesh.local.servers import NatsServer, TritonServer, ValkeyServer

from .conftest import TRITON_MODEL, Gateway, start_gateway, triton_env

pytestmark = pytest.mark.timeout(180)

INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def traced(tmp_path_factory, nats_server: NatsServer, triton_with_double: TritonServer, valkey_server: ValkeyServer):
    """A telemetry receiver, and a gateway exporting every span to it (one signing key for both)."""
    tmp = tmp_path_factory.mktemp("traced")
    private, public = generate_signing_key()
    write_secret(tmp / "public.pem", public)
    write_secret(tmp / "gateway.token", mint_service_token(private, "inference-gateway"))
    common = {"AUTH_PUBLIC_KEY_FILE": str(tmp / "public.pem"), "METRICS_PORT": "-1"}
    telemetry, info = start_service(
        "telemetry",
        {**common, **nats_server.service_settings("telemetry"), "SHUTDOWN_GRACE_S": "1"},
        tmp,
        timeout=60,
    )
    receiver = f"127.0.0.1:{info['grpc_port']}"
    try:
        gateways: Iterator[Gateway] = start_gateway(
            tmp / "gw",
            nats_server,
            {
                **triton_env(triton_with_double),
                **common,
                "VALKEY_URL": valkey_server.url,
                "CACHE_TTL_S": "60",
                "OTLP_ENDPOINT": receiver,
                "SERVICE_TOKEN_FILE": str(tmp / "gateway.token"),
            },
        )
        gateway = next(gateways)
        try:
            alice = mint_token(private, subject="alice", team="team-a", roles=["developer"])
            bob = mint_token(private, subject="bob", team="team-b", roles=["developer"])
            yield gateway, receiver, alice, bob
        finally:
            gateways.close()
    finally:
        telemetry.stop(grace=5)


def _get_trace(receiver: str, token: str, trace_id: str, needed: int, timeout: float = 20) -> api.Trace:
    with grpc.insecure_channel(receiver) as channel:
        stub = telemetry_service_pb2_grpc.TelemetryServiceStub(channel)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = stub.GetTrace(
                    api.GetTraceRequest(trace_id=trace_id), metadata=[("authorization", f"Bearer {token}")], timeout=5
                )
                if len(reply.trace.spans) >= needed:
                    return reply.trace
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                return reply.trace
            time.sleep(0.5)


def _infer(gateway: Gateway, token: str, traceparent: str, values: list[float]) -> np.ndarray:
    client = tgrpc.InferenceServerClient(gateway.grpc_address)
    try:
        x = tgrpc.InferInput("X", [len(values)], "FP32")
        x.set_data_from_numpy(np.array(values, dtype=np.float32))
        headers = {"authorization": f"Bearer {token}", "traceparent": traceparent}
        return client.infer(TRITON_MODEL.split("--")[1], [x], headers=headers).as_numpy("Y")
    finally:
        client.close()


def test_an_inference_is_one_trace_through_cache_and_triton(traced):
    gateway, receiver, alice, bob = traced
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    values = [float(v) for v in np.random.default_rng().random(4)]  # fresh input: a cache miss
    y = _infer(gateway, alice, f"00-{trace_id}-{parent}-01", values)
    assert np.allclose(y, np.array(values, dtype=np.float32) * 2)

    trace = _get_trace(receiver, alice, trace_id, needed=4)
    by_name: dict[str, list] = {}
    for span in trace.spans:
        by_name.setdefault(span.name, []).append(span)
    [server] = by_name[INFER]
    assert server.service == "mlmesh-gateway" and server.parent_span_id == parent
    assert server.attributes["mlmesh.team"] == "team-a" and server.attributes["mlmesh.model"] == "double"
    [lookup] = by_name["cache get"]
    [store] = by_name["cache set"]
    [triton] = by_name["triton ModelInfer"]
    assert lookup.attributes["mlmesh.cache_hit"] == "false" and lookup.attributes["db.system"] == "valkey"
    for child in (lookup, store, triton):
        assert child.parent_span_id == server.span_id, child
        assert server.start_time.ToNanoseconds() <= child.start_time.ToNanoseconds()
        assert child.end_time.ToNanoseconds() <= server.end_time.ToNanoseconds()
    assert triton.attributes["server.address"] and not triton.error
    # Ordered as they ran: lookup, the Triton call, then the store.
    assert lookup.end_time.ToNanoseconds() <= triton.start_time.ToNanoseconds()
    assert triton.end_time.ToNanoseconds() <= store.start_time.ToNanoseconds()

    # The same input again: a hit, no Triton call, in a trace of its own.
    second = secrets.token_hex(16)
    _infer(gateway, alice, f"00-{second}-{parent}-01", values)
    names = sorted(s.name for s in _get_trace(receiver, alice, second, needed=2).spans)
    assert names == sorted([INFER, "cache get"]), names

    # Another team's caller cannot read it; an unsampled request leaves no trace at all.
    with pytest.raises(grpc.RpcError) as err:
        _get_trace(receiver, bob, trace_id, needed=1, timeout=0)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    unsampled = secrets.token_hex(16)
    _infer(gateway, alice, f"00-{unsampled}-{parent}-00", [1.0])
    time.sleep(2.5)  # longer than the exporter's batch delay
    with pytest.raises(grpc.RpcError) as err:
        _get_trace(receiver, alice, unsampled, needed=1, timeout=0)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
