"""Failure detection, run by the lease holder: a node silent for `missed_heartbeats` intervals
goes NotReady, and the transition is published so the scheduler requeues its jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from mlmesh.common.lease import Lease
from mlmesh.fabric.domain import node_states as ns
from mlmesh.fabric.domain.liveness import overdue
from mlmesh.fabric.registry import NodeRegistry

log = logging.getLogger("mlmesh.fabric.monitor")


class LivenessMonitor:
    def __init__(self, registry: NodeRegistry, lease: Lease, interval_s: float, misses: int):
        self.registry = registry
        self.lease = lease
        self.interval_s = interval_s
        self.misses = misses
        self._task: asyncio.Task | None = None
        self._leading = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="fabric-liveness")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.lease.release()

    async def _loop(self) -> None:
        # Checking four times per interval keeps detection within 3.25 intervals (3.5 s target).
        period = self.interval_s / 4
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("liveness check failed")
            await asyncio.sleep(period)

    async def check(self) -> list[str]:
        if not await self.lease.acquire_or_renew():
            self._leading = False
            return []
        now = time.monotonic()
        live = {n.id for n in self.registry.index.items.values() if ns.live(n.state)}
        if not self._leading:
            # A new leader has heard nothing yet: give every node a full window before judging it.
            self._leading = True
            for node_id in live:
                self.registry.last_seen[node_id] = max(self.registry.last_seen.get(node_id, 0.0), now)
        seen = {n: self.registry.last_seen.get(n, now) for n in live}
        dead = overdue(seen, now, self.interval_s, self.misses)
        for node_id in dead:
            silent = now - seen[node_id]
            await self.registry.change_state(
                node_id,
                lambda d: ns.NOT_READY if ns.live(d.state) else None,
                "MissedHeartbeats",
                f"no heartbeat for {silent:.1f}s ({self.misses} missed at {self.interval_s:g}s)",
            )
            log.warning("node not ready", extra={"node": node_id, "silent_s": round(silent, 2)})
        return dead
