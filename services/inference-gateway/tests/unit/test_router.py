"""The routing table: pass-through names, deployments, canaries, draining and in-flight counts."""

from __future__ import annotations

import asyncio
import random

import pytest

from mlmesh.common.errors import NotFound
from mlmesh.gateway.routing import Router, Served


def test_plain_names_pass_through_with_the_asked_version():
    route = Router().route("team-a", "m", "3")
    assert (route.triton, route.version, route.deployment, route.cache_ttl_s) == ("team-a--m", "3", None, None)
    with pytest.raises(NotFound):
        Router().route("team-a", "bad--name")


def test_a_deployment_routes_to_its_concrete_version_and_canary():
    router = Router(rng=random.Random(0))
    router.put(
        Served("team-a", "dep", 3, version=1, canary_version=2, canary_percent=50, sticky_key="x-user", cache_ttl_s=5)
    )
    assert router.route("team-b", "dep").deployment is None  # another team: just a (missing) name
    versions = {router.route("team-a", "dep").version for _ in range(50)}
    assert versions == {"1", "2"}
    sticky = {router.route("team-a", "dep", header={"x-user": "alice"}.get).version for _ in range(20)}
    assert len(sticky) == 1
    assert router.route("team-a", "dep", "7").version == "7"  # an explicit version is honoured
    assert router.route("team-a", "dep").cache_ttl_s == 5


def test_draining_refuses_and_idle_wakes_the_waiter():
    router = Router()
    served = Served("team-a", "dep", 3, version=1)
    router.put(served)

    async def scenario():
        route = router.route("team-a", "dep")
        with router.track(route):
            assert router.inflight("team-a", "dep") == 1
            waiter = asyncio.create_task(router.wait_idle("team-a", "dep", 5))
            await asyncio.sleep(0.01)
            assert not waiter.done()
        assert await waiter
        assert await router.wait_idle("team-a", "dep", 0)

    asyncio.run(scenario())
    router.put(Served("team-a", "dep", 3, version=1, draining=True))
    with pytest.raises(NotFound, match="undeployed"):
        router.route("team-a", "dep")
