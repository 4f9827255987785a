"""Wiring of the inference-gateway service: what it registers on the shared gRPC server bootstrap.

The service API itself (Gateway's RPCs) is built in its own issue; until then the process serves
gRPC health and reflection, and holds its NATS connection and state buckets.
"""

from collections.abc import Iterable

from mlmesh.common.grpc_server import Runtime
from mlmesh.common.kv import open_bucket

KV_BUCKETS = ("deployments",)


async def register(runtime: Runtime) -> Iterable[str]:
    # Durable state lives in JetStream KV; open (and on first start create) the buckets now, so a
    # broken NATS fails the start rather than the first request.
    for bucket in KV_BUCKETS:
        await open_bucket(runtime.js, bucket)
    return []
