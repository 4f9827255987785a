"""Leader election on one JetStream KV key, for services that run several replicas but need one
actor (the scheduler's admission loop, the fabric's liveness monitor)."""

from __future__ import annotations

import contextlib
import json
import time

from google.protobuf import wrappers_pb2

from mlmesh.common.errors import AlreadyExists, Conflict, NotFound
from mlmesh.common.kv import KvRepository


class Lease:
    """Leader election on one KV key: a holder id and an expiry, renewed by compare-and-set.

    Only the holder acts. A replica that misses renewals loses the key to another, and its next
    CAS fails, so it stops acting; `valid()` also turns false before the expiry by a safety margin,
    since the old holder cannot know it lost until it tries to write."""

    def __init__(
        self, repo: KvRepository[wrappers_pb2.StringValue], holder: str, ttl_s: float = 6.0, key: str = "leader"
    ):
        self.key = key
        self._repo = repo
        self.holder = holder
        self.ttl_s = ttl_s
        self._revision: int | None = None
        self._expires = 0.0

    def valid(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._revision is not None and now < self._expires - self.ttl_s / 3

    async def acquire_or_renew(self) -> bool:
        now = time.time()
        if self._revision is not None and now < self._expires - 2 * self.ttl_s / 3:
            return True  # renewed recently: skip two KV round trips on this cycle
        value = wrappers_pb2.StringValue(value=json.dumps({"holder": self.holder, "expires": now + self.ttl_s}))
        try:
            current = await self._repo.get(self.key)
        except NotFound:
            try:
                self._revision = await self._repo.create(self.key, value)
            except AlreadyExists:
                return self._lose()
            self._expires = now + self.ttl_s
            return True
        info = json.loads(current.value.value or "{}")
        if info.get("holder") != self.holder and info.get("expires", 0) > now:
            return self._lose()
        try:
            self._revision = await self._repo.update(self.key, value, current.revision)
        except Conflict:
            return self._lose()
        self._expires = now + self.ttl_s
        return True

    async def release(self) -> None:
        if self._revision is not None:
            with contextlib.suppress(Conflict, NotFound):
                await self._repo.delete(self.key, revision=self._revision)
        self._lose()

    def _lose(self) -> bool:
        self._revision = None
        self._expires = 0.0
        return False
