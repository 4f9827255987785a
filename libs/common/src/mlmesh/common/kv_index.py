"""An in-memory mirror of a KV bucket, kept current by a KV watch.

Replicas read from it instead of KV (the scheduler's jobs, queues and priority classes; the
fabric's nodes), get change notifications from it, and rebuild it from KV alone after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from google.protobuf.message import Message

from mlmesh.common.kv import KvRepository

log = logging.getLogger("mlmesh.kv_index")

M = TypeVar("M", bound=Message)
Listener = Callable[[M | None, M | None], None]  # (before, after)


class KvIndex(Generic[M]):
    def __init__(self, repo: KvRepository[M], set_revision: Callable[[M, int], None] | None = None):
        self._repo = repo
        # Records carry their KV revision (`meta.revision` or `revision`) for compare-and-set.
        self._set_revision = set_revision or store_revision
        self.items: dict[str, M] = {}
        self.loaded = asyncio.Event()
        self.changed = asyncio.Event()  # set on every change; the controller clears it
        self.version = 0  # bumped on every change, so a reader can tell whether to rebuild
        self._listeners: set[Listener] = set()
        self._task: asyncio.Task | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        self._task = asyncio.create_task(self._run(), name="kv-index")
        await asyncio.wait_for(self.loaded.wait(), timeout_s)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def apply(self, key: str, value: M | None, revision: int = 0) -> None:
        """Record a change (from the watch, or from this replica's own write, which the watch
        then confirms); older revisions never overwrite newer ones."""
        before = self.items.get(key)
        if value is None:
            if before is None:
                return
            del self.items[key]
        else:
            if before is not None and _revision(before) > revision > 0:
                return
            self._set_revision(value, revision)
            self.items[key] = value
        self.version += 1
        self.changed.set()
        for listener in list(self._listeners):
            try:
                listener(before, value)
            except Exception:
                log.exception("index listener failed")

    async def _run(self) -> None:
        while True:
            try:
                async for change in self._repo.watch():
                    if change is None:
                        self.loaded.set()
                        continue
                    key, versioned = change
                    if versioned is None:
                        self.apply(key, None)
                    else:
                        self.apply(key, versioned.value, versioned.revision)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("KV watch ended; re-watching", exc_info=True)
                await asyncio.sleep(1.0)


def store_revision(msg, revision: int) -> None:
    """Write the KV revision where `_revision` reads it."""
    meta = getattr(msg, "meta", None)
    if meta is not None:
        meta.revision = revision
    elif hasattr(msg, "revision"):
        msg.revision = revision


def _revision(msg) -> int:
    meta = getattr(msg, "meta", None)
    if meta is not None:
        return meta.revision
    return getattr(msg, "revision", 0)
