"""Where an inference request goes: the caller's model name → a Triton model and version.

A name that is one of the caller's team's deployments routes to that deployment's Triton model
(`<team>--<deployment>`), at the concrete version of the primary or, by the canary split, of the
canary. Any other name passes through to `<team>--<name>` with the version the caller asked for
(models loaded into Triton by other means, e.g. the tests' fixtures).

The table of deployments is filled by the deployment watcher (every replica sees every change
through the KV watch); `track` counts in-flight requests per deployment, so an undeploy can drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from mlmesh.common.errors import NotFound
from mlmesh.gateway.domain.canary import use_canary
from mlmesh.gateway.domain.naming import check_version, triton_name


@dataclass(frozen=True)
class Served:
    """What routing needs of one deployment (kept by the watcher; immutable, replaced on change)."""

    team: str
    name: str
    task: int  # mlmesh.common.v1.ModelTask
    version: int  # concrete primary version
    canary_version: int = 0
    canary_percent: int = 0
    sticky_key: str = ""  # header / metadata name hashed for the canary choice
    cache_ttl_s: float = 0.0  # 0 = no caching for this deployment
    rate_per_s: float = 0.0
    rate_burst: int = 0
    parameters: Mapping[str, str] = field(default_factory=dict)
    draining: bool = False

    @property
    def versions(self) -> tuple[int, ...]:
        return (self.version, self.canary_version) if self.canary_version else (self.version,)


@dataclass(frozen=True)
class Route:
    team: str
    model: str  # the caller's name for it
    triton: str  # Triton's model name
    version: str  # the version to send: concrete for deployments; "" lets Triton's policy pick
    deployment: Served | None = None

    @property
    def task(self) -> int:
        return self.deployment.task if self.deployment else 0

    @property
    def cache_ttl_s(self) -> float | None:
        """The deployment's TTL (0 = not cached); None for a plain model: the service default."""
        return self.deployment.cache_ttl_s if self.deployment else None


class Router:
    def __init__(self, rng: random.Random | None = None):
        self._served: dict[tuple[str, str], Served] = {}
        self._inflight: dict[tuple[str, str], int] = {}
        self._idle: dict[tuple[str, str], asyncio.Event] = {}
        self._rng = rng or random.Random()

    # The watcher's side.
    def put(self, served: Served) -> None:
        self._served[(served.team, served.name)] = served

    def remove(self, team: str, name: str) -> None:
        self._served.pop((team, name), None)

    def get(self, team: str, name: str) -> Served | None:
        return self._served.get((team, name))

    def deployments(self, team: str) -> list[Served]:
        return sorted((s for (t, _), s in self._served.items() if t == team), key=lambda s: s.name)

    # The fronts' side.
    def route(
        self, team: str, model: str, version: str = "", header: Callable[[str], str | None] | None = None
    ) -> Route:
        """The route of a request; NotFound for an invalid name or a deployment being undeployed.
        `header(name)` reads a request header / metadata entry, for sticky canaries."""
        check_version(model, version)
        triton = triton_name(team, model)
        served = self._served.get((team, model))
        if served is None:
            return Route(team, model, triton, version)
        if served.draining:
            raise NotFound(f"deployment {model!r} is being undeployed")
        if version:  # an explicit version is honoured; Triton answers NOT_FOUND if it is not served
            return Route(team, model, triton, version, served)
        chosen = served.version
        if served.canary_version:
            sticky = header(served.sticky_key) if header and served.sticky_key else None
            if use_canary(f"{team}/{model}", served.canary_percent, sticky, self._rng):
                chosen = served.canary_version
        return Route(team, model, triton, str(chosen), served)

    @contextlib.contextmanager
    def track(self, route: Route) -> Iterator[None]:
        """Counts the request in flight for its deployment until the block ends."""
        if route.deployment is None:
            yield
            return
        key = (route.team, route.model)
        self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            yield
        finally:
            self._inflight[key] -= 1
            if not self._inflight[key]:
                del self._inflight[key]
                idle = self._idle.pop(key, None)
                if idle is not None:
                    idle.set()

    def inflight(self, team: str, name: str) -> int:
        return self._inflight.get((team, name), 0)

    async def wait_idle(self, team: str, name: str, timeout_s: float) -> bool:
        """Wait until the deployment has no request in flight here; False at the timeout."""
        key = (team, name)
        if not self._inflight.get(key):
            return True
        idle = self._idle.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(idle.wait(), timeout_s)
        except (TimeoutError, asyncio.TimeoutError):
            return False
        return True
