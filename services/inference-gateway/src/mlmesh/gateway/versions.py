"""The concrete model version a request without one is served by, so "latest" never shares a
cache entry across versions: the highest version Triton reports ready (ModelMetadata `versions`),
remembered for a few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from tritonclient.grpc import service_pb2

from mlmesh.common.errors import MlmeshError
from mlmesh.gateway.backends import BackendError, BackendPool
from mlmesh.gateway.domain.single_flight import SingleFlight

RESOLVE_TIMEOUT_S = 2.0


class VersionResolver:
    def __init__(self, pool: BackendPool, *, ttl_s: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self._pool = pool
        self._ttl_s = ttl_s
        self._clock = clock
        self._known: dict[str, tuple[str, float]] = {}
        self._flight: SingleFlight[str | None] = SingleFlight()

    async def resolve(self, triton_model: str, timeout: float) -> str | None:
        """The version; None when Triton cannot tell (the model is not there, no backend), so the
        request goes uncached and Triton answers it."""
        known = self._known.get(triton_model)
        if known is not None and self._clock() - known[1] < self._ttl_s:
            return known[0]
        return await self._flight.do(triton_model, lambda: self._fetch(triton_model, timeout))

    async def _fetch(self, triton_model: str, timeout: float) -> str | None:
        request = service_pb2.ModelMetadataRequest(name=triton_model)
        try:
            reply = await self._pool.grpc("ModelMetadata", request, min(timeout, RESOLVE_TIMEOUT_S))
        except (BackendError, MlmeshError):
            return None
        versions = [int(v) for v in reply.versions if v.isdigit()]
        if not versions:
            return None
        version = str(max(versions))
        self._known[triton_model] = (version, self._clock())
        return version
