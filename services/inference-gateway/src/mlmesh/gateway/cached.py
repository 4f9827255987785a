"""What the fronts share for inference calls: the result cache, single flight, the rate limiter and
the version resolver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlmesh.gateway.cache import ResultCache
from mlmesh.gateway.domain.single_flight import SingleFlight
from mlmesh.gateway.rate_limit import RateLimiter
from mlmesh.gateway.routing import Route
from mlmesh.gateway.versions import VersionResolver


@dataclass
class Cached:
    cache: ResultCache
    limiter: RateLimiter
    versions: VersionResolver
    flight: SingleFlight[Any] = field(default_factory=SingleFlight)

    async def limit(self, route: Route) -> None:
        """The rate limit of the route's deployment, else of its team."""
        served = route.deployment
        if served is not None and served.rate_per_s > 0:
            await self.limiter.check(route.team, served.name, served.rate_per_s, served.rate_burst)
        else:
            await self.limiter.check(route.team)
