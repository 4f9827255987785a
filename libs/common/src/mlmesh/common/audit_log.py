"""The audit log's I/O: each process's publisher (queue → chain → JetStream, anchors), and reading back.

The RPC path only puts an entry on a bounded asyncio queue; one background task seals entries into
the chain and publishes them one at a time with `Nats-Expected-Last-Subject-Sequence`, so a second
writer on the same chain subject is refused instead of forking it. A failed publish is retried with
backoff. A full queue drops the entry (counted, logged) rather than slow an RPC; the next record
stored is a `dropped` marker saying how many were lost, so the gap is in the log itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from datetime import datetime

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError, NoStreamResponseError, NotFoundError
from prometheus_client import Counter

from mlmesh.common.audit import (
    AUDIT_ANCHORS,
    AUDIT_OWNER,
    AUDIT_STREAM,
    AUDIT_SUBJECTS,
    DROPPED_MARK,
    FORKED_MARK,
    Anchor,
    Chain,
    Stored,
    anchor_key,
    audit_subject,
    decode_record,
    encode,
    ensure_audit_stream,
    new_instance,
    utc_now,
    utc_time,
)

log = logging.getLogger("mlmesh.audit")

DROPPED = Counter("mlmesh_audit_dropped_total", "Audit records dropped: the publish queue was full", ["service"])
WRONG_LAST_SEQUENCE = 10071  # JetStream: Nats-Expected-Last-Subject-Sequence did not hold


class AuditLog:
    """One process's audit chain. `record` never blocks; `start` once NATS is up; `close` at shutdown."""

    def __init__(
        self,
        service: str,
        *,
        instance: str | None = None,
        max_queue: int = 10_000,
        anchor_interval_s: float = 30.0,
        publish_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        replicas: int = 1,
        ensure_stream: bool | None = None,
    ):
        self.service = service
        # Only the owner creates the stream and bucket (and recreates them if deleted): under
        # per-identity NATS permissions the others may only publish. Their records wait for it.
        self._ensure = service == AUDIT_OWNER if ensure_stream is None else ensure_stream
        self.chain = Chain(service, instance or new_instance())
        self._queue: asyncio.Queue[dict] = asyncio.Queue(max_queue)
        self._anchor_interval = anchor_interval_s
        self._timeout = publish_timeout_s
        self._max_backoff = max_backoff_s
        self._replicas = replicas
        self._js: JetStreamContext | None = None
        self._kv = None
        self._tasks: list[asyncio.Task] = []
        self._dropped = 0  # since the last marker
        self._last_drop_log = 0.0
        self._anchored = (0, "")

    @property
    def instance(self) -> str:
        return self.chain.instance

    @property
    def subject(self) -> str:
        return audit_subject(self.service, self.instance)

    # --- the RPC side -----------------------------------------------------------------------------
    def record(self, entry: dict) -> None:
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.count_lost()
            now = time.monotonic()
            if now - self._last_drop_log >= 10.0:  # one line per 10 s, not one per RPC
                self._last_drop_log = now
                log.error("audit queue full (NATS slow or down?): dropping records", extra={"dropped": self._dropped})

    def count_lost(self) -> None:
        """One record that will never be stored: counted, and named by the next dropped marker."""
        self._dropped += 1
        DROPPED.labels(self.service).inc()

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self, js: JetStreamContext) -> None:
        self._js = js
        if self._ensure:
            await self._ensure_stream()
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="audit-publisher"),
            asyncio.create_task(self._anchor_loop(), name="audit-anchor"),
        ]
        log.info("audit log started", extra={"instance": self.instance, "audit_subject": self.subject})

    async def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued (bounded by `timeout_s`), anchor the head, stop the tasks."""
        if not self._tasks:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except asyncio.TimeoutError:
            log.error("audit flush timed out; records lost", extra={"unpublished": self._queue.qsize()})
            for _ in range(self._queue.qsize()):
                self.count_lost()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._dropped:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._append(self._dropped_marker()), timeout_s)
        await self._anchor()

    # --- publishing -------------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            try:
                if self._dropped:
                    await self._append(self._dropped_marker())
                await self._append(_formatted(entry))
            except Exception:  # never let one record end the publisher; the marker counts it
                log.exception("audit record could not be published")
                self.count_lost()
            finally:
                self._queue.task_done()

    def _dropped_marker(self) -> dict:
        count, self._dropped = self._dropped, 0
        return {"kind": DROPPED_MARK, "time": utc_now(), "count": count}

    async def _append(self, entry: Mapping) -> None:
        pending = [entry]
        while pending:
            if await self._publish(self.chain.seal(pending[0])):
                pending.pop(0)
                continue
            # Another writer appended to this chain (or the stream was recreated under it): go on as
            # a new chain whose first record names the old one, so `verify` reports it.
            old, at = self.instance, self.chain.seq
            self.chain = Chain(self.service, new_instance())
            log.error("audit chain taken over; continuing as a new chain", extra={"old": old, "new": self.instance})
            pending.insert(0, {"kind": FORKED_MARK, "time": utc_now(), "forked_instance": old, "forked_at_seq": at})

    async def _publish(self, record: dict) -> bool:
        """Store `record` (retrying until it is); False if the chain's subject moved on without it."""
        payload = encode(record)
        delay = 0.1
        while True:
            headers = {
                "Nats-Expected-Last-Subject-Sequence": str(self.chain.stream_seq),
                # A retry after a lost ack is stored once; the hash keeps another writer's record
                # at the same seq from passing for this one.
                "Nats-Msg-Id": f"{self.instance}-{record['seq']}-{record['hash'][:16]}",
            }
            try:
                ack = await self._js.publish(
                    self.subject, payload, timeout=self._timeout, stream=AUDIT_STREAM, headers=headers
                )
            except BadRequestError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                stored = await self._stored_head()
                if stored is None or stored[1] != record["hash"]:
                    return False
                ack_seq = stored[0]  # ours after all: the ack was lost after the duplicate window
            except NoStreamResponseError:  # not created yet, or deleted (the anchors show that loss)
                log.warning("audit stream missing; retrying", extra={"retry_s": delay, "creating": self._ensure})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                if self._ensure:
                    await self._ensure_stream()
                continue
            except Exception as exc:  # timeouts, reconnects: keep the record and try again
                log.warning("audit publish failed; retrying", extra={"error": type(exc).__name__, "retry_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            else:
                ack_seq = ack.seq
            self.chain.advance(record, ack_seq)
            return True

    async def _ensure_stream(self) -> None:
        try:
            await ensure_audit_stream(self._js, self._replicas)
        except Exception as exc:
            log.error("audit stream not ensured", extra={"error": type(exc).__name__})

    async def _stored_head(self) -> tuple[int, str] | None:
        """The stream seq and hash of the last record on this chain's subject, if it can be read.
        Unreadable counts as foreign: moving to a new chain is always safe, forking never is."""
        try:
            msg = await self._js.get_last_msg(AUDIT_STREAM, self.subject)
        except Exception:
            return None
        rec = decode_record(msg.data or b"")
        return (msg.seq, rec["hash"]) if rec else (msg.seq, "")

    # --- anchoring --------------------------------------------------------------------------------
    async def _anchor_loop(self) -> None:
        while True:
            await asyncio.sleep(self._anchor_interval)
            await self._anchor()

    async def _anchor(self) -> None:
        """Write the chain head to `audit_anchors` when it moved: a later cut of the tail shows as
        an anchor beyond the log."""
        head = (self.chain.seq, self.chain.head)
        if self._js is None or head[0] == 0 or head == self._anchored:
            return
        anchor = Anchor(self.instance, self.service, head[0], head[1], self.chain.stream_seq, utc_now())
        try:
            if self._kv is None:
                self._kv = await asyncio.wait_for(self._js.key_value(AUDIT_ANCHORS), self._timeout)
            await asyncio.wait_for(
                self._kv.put(anchor_key(self.service, self.instance), anchor.encode()), self._timeout
            )
        except Exception as exc:
            log.warning("audit anchor failed; next interval retries", extra={"error": type(exc).__name__})
            return
        self._anchored = head


def _formatted(entry: dict) -> dict:
    """The interceptor queues the time (epoch seconds) and trace id (int) raw; format them here."""
    out = dict(entry)
    if isinstance(out.get("time"), float):
        out["time"] = utc_time(out["time"])
    if isinstance(out.get("trace_id"), int):
        out["trace_id"] = format(out["trace_id"], "032x") if out["trace_id"] else ""
    return out


# --- reading back -------------------------------------------------------------------------------
async def _read(js: JetStreamContext, stream: str, subject: str, config: ConsumerConfig) -> AsyncIterator:
    """Every message the config selects, in stream order, through an ephemeral pull consumer; ends
    once nothing is pending."""
    config.ack_policy = AckPolicy.NONE
    config.inactive_threshold = 60.0  # the server removes it should this reader die
    config.mem_storage = True
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        pending = (await sub.consumer_info()).num_pending
        while pending > 0:
            try:
                msgs = await sub.fetch(min(256, pending), timeout=10)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                return  # what was pending expired meanwhile
            for msg in msgs:
                yield msg
                pending = msg.metadata.num_pending
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def read_records(
    js: JetStreamContext, *, subject: str = AUDIT_SUBJECTS[0], since: datetime | None = None
) -> AsyncIterator[Stored]:
    """The stream's records in order: all, or those stored from `since` (timezone-aware)."""
    policy = DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL
    async for msg in _read(js, AUDIT_STREAM, subject, ConsumerConfig(deliver_policy=policy, opt_start_time=since)):
        yield Stored(msg.metadata.sequence.stream, msg.subject, msg.data)


async def tail_records(js: JetStreamContext, limit: int, **kw) -> list[Stored]:
    """The last `limit` records of `read_records(**kw)`, oldest first."""
    out: deque[Stored] = deque(maxlen=limit)
    async for stored in read_records(js, **kw):
        out.append(stored)
    return list(out)


async def read_anchors(js: JetStreamContext) -> list[Anchor]:
    """Every chain's anchor. Read from the bucket's stream (last per key) rather than through
    nats-py's `keys()`, which can return before it has seen every key."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
    out = []
    try:
        async for msg in _read(js, f"KV_{AUDIT_ANCHORS}", f"$KV.{AUDIT_ANCHORS}.>", config):
            if (msg.headers or {}).get("KV-Operation") not in ("DEL", "PURGE"):
                out.append(Anchor.decode(msg.data))
    except NotFoundError:  # no bucket yet: no chain was ever anchored
        return []
    return out


async def first_stream_seq(js: JetStreamContext) -> int:
    """The stream's first sequence: records below it expired (max_age)."""
    return (await js.stream_info(AUDIT_STREAM)).state.first_seq
