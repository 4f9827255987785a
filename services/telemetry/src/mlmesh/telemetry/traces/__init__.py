"""Recent traces: the bounded store, the OTLP receiver and the GetTrace answer."""

from mlmesh.telemetry.traces.otlp import get_trace
from mlmesh.telemetry.traces.receiver import OTLP_TRACE_SERVICE, register_trace_receiver
from mlmesh.telemetry.traces.store import TraceStore

__all__ = ["OTLP_TRACE_SERVICE", "TraceStore", "get_trace", "register_trace_receiver"]
