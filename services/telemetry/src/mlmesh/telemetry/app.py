"""Wiring of the telemetry service: what it registers on the shared gRPC server bootstrap.

The service API itself (Telemetry's RPCs) is built in its own issue; until then the process serves
gRPC health and reflection, and holds its NATS connection and state buckets.
"""

from collections.abc import Iterable

from mlmesh.common.grpc_server import Runtime


async def register(runtime: Runtime) -> Iterable[str]:
    return []
