"""The local OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
on the telemetry service's own gRPC server, so services point `MLMESH_<SVC>_OTLP_ENDPOINT` at it.
Calls are authenticated like every RPC; only services and admins may export."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from mlmesh.common.auth import ROLE_SERVICE, current_identity
from mlmesh.common.grpc_server import Runtime
from mlmesh.telemetry.traces.otlp import spans_from_request
from mlmesh.telemetry.traces.store import TraceStore

OTLP_TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: TraceStore):
        self.store = store

    async def Export(self, request, context) -> trace_service_pb2.ExportTraceServiceResponse:
        current_identity().require_role(ROLE_SERVICE)
        refused = self.store.add(spans_from_request(request))
        reply = trace_service_pb2.ExportTraceServiceResponse()
        if refused:  # OTLP partial success: the exporter logs it and does not retry
            reply.partial_success.rejected_spans = refused
            reply.partial_success.error_message = "trace holds the maximum number of spans"
        return reply


def register_trace_receiver(runtime: Runtime, store: TraceStore) -> str:
    """Add the OTLP trace receiver to the service's gRPC server; returns its full service name
    (for the list `register` returns, so health and reflection name it)."""
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceReceiver(store), runtime.server)
    return OTLP_TRACE_SERVICE
