"""A typed JetStream KV repository with compare-and-set on revision.

Values are serialized protobuf. Every write names the revision it read (`update(..., revision)`),
so two writers racing on one key cannot both win: the loser gets `Conflict` and re-reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats.errors
from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from mlmesh.common import contracts
from mlmesh.common.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Unavailable

M = TypeVar("M", bound=Message)

_KEY = re.compile(r"^[A-Za-z0-9_=/.-]{1,512}$")


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key or "") or key.startswith(".") or key.endswith(".") or ".." in key:
        raise InvalidArgument.field("key", "must be 1-512 characters of [A-Za-z0-9_=/.-], dot-separated")
    return key


@dataclass(frozen=True)
class Versioned(Generic[M]):
    key: str
    value: M
    revision: int


# Replicas of the buckets this process creates; the bootstrap sets it from STREAM_REPLICAS (a
# process-wide setting, like the NATS connection every bucket shares).
BUCKET_REPLICAS = 1


async def open_bucket(js: JetStreamContext, bucket: str, *, history: int = 5) -> KeyValue:
    """Open a bucket, creating it (file storage, BUCKET_REPLICAS replicas) on first use.

    A platform bucket is created with its contract's settings (`contracts.BUCKETS`), whatever the
    caller passes, so every opener agrees. Only its owner's NATS identity may create it; another
    identity that opens it too early gets UNAVAILABLE naming the owner.
    """
    spec = contracts.bucket(bucket)
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    config = KeyValueConfig(
        bucket=bucket,
        history=spec.history if spec else history,
        ttl=spec.ttl_s if spec else None,
        storage=StorageType.FILE,
        replicas=BUCKET_REPLICAS,
    )
    try:
        return await js.create_key_value(config)
    except (asyncio.TimeoutError, nats.errors.TimeoutError):  # a permission violation gets no reply
        owner = spec.owner if spec else "its owner"
        raise Unavailable(f"KV bucket {bucket!r} does not exist yet; {owner} creates it") from None


class KvRepository(Generic[M]):
    def __init__(self, kv: KeyValue, message_type: type[M], what: str = "object"):
        self._kv = kv
        self._type = message_type
        self._what = what

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, message_type: type[M], what: str = "object", history: int = 5
    ) -> KvRepository[M]:
        return cls(await open_bucket(js, bucket, history=history), message_type, what)

    def _decode(self, key: str, raw: bytes, revision: int) -> Versioned[M]:
        msg = self._type()
        msg.ParseFromString(raw or b"")
        return Versioned(key, msg, revision)

    async def get(self, key: str) -> Versioned[M]:
        try:
            entry = await self._kv.get(check_key(key))
        except (KeyNotFoundError, KeyDeletedError):
            raise NotFound(f"{self._what} {key} not found") from None
        return self._decode(key, entry.value, entry.revision)

    async def create(self, key: str, value: M) -> int:
        """Write a new key; fails with AlreadyExists if it is present (a deleted key may be re-created)."""
        try:
            return await self._kv.create(check_key(key), value.SerializeToString())
        except KeyWrongLastSequenceError:
            raise AlreadyExists(f"{self._what} {key} already exists") from None

    async def update(self, key: str, value: M, revision: int) -> int:
        """Write only if the key is still at `revision`; otherwise Conflict."""
        try:
            return await self._kv.update(check_key(key), value.SerializeToString(), last=revision)
        except KeyWrongLastSequenceError:
            raise Conflict(f"{self._what} {key} changed concurrently (expected revision {revision})") from None

    async def delete(self, key: str, revision: int | None = None) -> None:
        try:
            await self._kv.delete(check_key(key), last=revision)
        except BadRequestError as exc:
            # nats-py maps a wrong last sequence to KeyWrongLastSequenceError on put/update only; a
            # delete raises the bare BadRequestError (10071/10164: JSStreamWrongLastSequence*).
            if not isinstance(exc, KeyWrongLastSequenceError) and exc.err_code not in (10071, 10164):
                raise
            raise Conflict(f"{self._what} {key} changed concurrently (expected revision {revision})") from None

    async def keys(self) -> list[str]:
        """Every live key. Built on `watch`, not nats-py's `keys()`, which can return early (see
        `watch`) and report an empty bucket that is not."""
        out: set[str] = set()
        async for change in self.watch():
            if change is None:
                break
            key, value = change
            if value is None:
                out.discard(key)
            else:
                out.add(key)
        return sorted(out)

    async def watch(self) -> AsyncIterator[tuple[str, Versioned[M] | None] | None]:
        """Every current key as (key, value), then None once caught up, then each change as it
        happens; a deleted key comes as (key, None). This is how a replica rebuilds its view.

        nats-py's own "caught up" marker comes from a consumer-info check that races with the
        initial delivery: under load it can arrive before the backlog is processed. Trusting it
        would let a restarted scheduler act on a partial view, so the marker is taken from the
        last backlog entry (no messages pending after it), or only for a bucket that is empty."""
        watcher = await self._kv.watchall()
        caught_up = False
        try:
            async for entry in watcher:
                if entry is None:
                    if not caught_up and (await self._kv.status()).values == 0:
                        caught_up = True
                        yield None
                    continue
                if entry.operation in ("DEL", "PURGE"):
                    yield entry.key, None
                else:
                    yield entry.key, self._decode(entry.key, entry.value, entry.revision)
                if not caught_up and entry.delta == 0:
                    caught_up = True
                    yield None
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def mutate(self, key: str, change: Callable[[M], M | None], attempts: int = 8) -> Versioned[M]:
        """Read-modify-write with CAS, re-reading on conflict. `change` must be pure: it may run
        several times. Returning None leaves the value as it is."""
        for attempt in range(attempts):
            current = await self.get(key)
            draft = self._type()
            draft.CopyFrom(current.value)
            new = change(draft)
            if new is None:
                return current
            try:
                return Versioned(key, new, await self.update(key, new, current.revision))
            except Conflict:
                # Back off with jitter: retrying at once, the writer that just lost tends to lose
                # every round to a writer in a loop, and gives up while the other keeps winning.
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise Conflict(f"{self._what} {key} kept changing; gave up after {attempts} attempts")
