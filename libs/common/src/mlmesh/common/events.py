"""The NATS JetStream event bus: streams, CloudEvents (binary mode) publish, and a pull consumer.

An event is a proto message whose proto3-JSON form is the NATS payload, so `nats sub` shows it
readably and the generated types decode it. CloudEvents attributes travel as `ce-*` headers;
`Nats-Msg-Id` = `ce-id`, so JetStream drops a re-published event inside the duplicate window; and
`traceparent` carries the trace into the consumer's span.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Generic, TypeVar

import nats
from google.protobuf import json_format
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from opentelemetry import propagate, trace
from prometheus_client import Counter

from mlmesh.common import contracts
from mlmesh.common.contracts import STREAMS, StreamSpec, is_token, subject_token  # noqa: F401 (re-exported)
from mlmesh.common.errors import Unauthenticated, Unavailable

log = logging.getLogger("mlmesh.events")
tracer = trace.get_tracer("mlmesh.events")

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
DUPLICATE_WINDOW_S = 120.0

M = TypeVar("M", bound=Message)

# `type` is the event's proto name without the package: a small, fixed set of label values.
PUBLISHED = Counter("mlmesh_events_published_total", "Events published", ["source", "type", "outcome"])
CONSUMED = Counter("mlmesh_events_consumed_total", "Events handled by a consumer", ["consumer", "type", "outcome"])


async def connect(
    url: str,
    name: str,
    timeout_s: float = 5.0,
    *,
    creds_file: str | os.PathLike | None = None,
    inbox_prefix: str | None = None,
) -> NatsClient:
    """Connect to NATS with a credentials file; one clear error when the server cannot be reached
    or refuses the credentials.

    The first connect gives up after a few tries so a misconfigured service fails fast; once
    connected, the client reconnects forever, since a running service must ride out a NATS restart.
    `inbox_prefix` is the identity's own reply inbox (its permissions allow no other).
    """

    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, nats.errors.Error) and "authorization" in str(exc).lower():
            refused.append(_server_error(exc))
        log.warning("nats: %s", exc or type(exc).__name__)

    options: dict = {}
    if creds_file is not None:
        options["user_credentials"] = str(creds_file)
    if inbox_prefix:
        options["inbox_prefix"] = inbox_prefix
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                url,
                name=name,
                connect_timeout=timeout_s,
                allow_reconnect=True,
                max_reconnect_attempts=2,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                **options,
            ),
            timeout=3 * timeout_s,
        )
    except (OSError, asyncio.TimeoutError, nats.errors.NoServersError) as exc:
        if refused:  # the server answered, and said no to these credentials
            raise Unauthenticated(f"NATS at {url} refused the connection: {refused[-1]}") from None
        raise Unavailable(f"cannot connect to NATS at {url}: {type(exc).__name__}") from None
    except nats.errors.Error as exc:  # the server's -ERR, e.g. 'Authorization Violation'
        raise Unauthenticated(f"NATS at {url} refused the connection: {_server_error(exc)}") from None
    nc.options["max_reconnect_attempts"] = -1
    return nc


def _server_error(exc: Exception) -> str:
    return str(exc).removeprefix("nats: ").strip("'") or type(exc).__name__


def identity_options(identity: str, creds_file: str | os.PathLike | None) -> dict:
    """connect() keywords for a platform identity: its credentials and its own inbox."""
    return {"creds_file": creds_file, "inbox_prefix": contracts.inbox_prefix(identity) if creds_file else None}


async def ensure_streams(js: JetStreamContext, streams: tuple[StreamSpec, ...] = STREAMS, replicas: int = 1) -> None:
    """Create or update streams (idempotent). A service ensures the streams it owns
    (`contracts.streams_owned_by`); its NATS identity may not touch the others.
    `replicas`: 3 on a 3-server NATS cluster, so a stream survives losing a server."""
    for spec in streams:
        config = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            storage=StorageType.FILE,
            max_age=spec.max_age_s,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
        )
        try:
            await js.stream_info(spec.name)
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)


async def ensure_bus(js: JetStreamContext, replicas: int = 1) -> None:
    """Create every platform stream and KV bucket (the operator's bootstrap, before the services
    start): a service's identity creates only what it owns, so one that reads another's bucket
    would otherwise have to wait for the owner to start."""
    from mlmesh.common import audit, kv  # neither imports events; keep it that way

    kv.BUCKET_REPLICAS = replicas
    await ensure_streams(js, STREAMS, replicas=replicas)
    for spec in contracts.BUCKETS:
        await kv.open_bucket(js, spec.name)
    await audit.ensure_audit_stream(js, replicas)


@dataclass
class Event(Generic[M]):
    """A received event: its CloudEvents attributes, decoded data and the raw message."""

    id: str
    type: str
    source: str
    subject: str
    time: str
    data: M
    nats_subject: str
    headers: dict[str, str]
    delivery_count: int = 1
    raw: object = field(default=None, repr=False)


class EventPublisher:
    """Publishes proto messages as CloudEvents into JetStream."""

    def __init__(self, js: JetStreamContext, source: str):
        self._js = js
        self._source = source

    async def publish(
        self,
        nats_subject: str,
        data: Message,
        *,
        ce_subject: str = "",
        event_id: str | None = None,
        event_type: str | None = None,
        timeout_s: float = 5.0,
    ):
        """Publish once; a retry with the same `event_id` is de-duplicated by JetStream."""
        headers = build_headers(
            source=self._source,
            event_type=event_type or data.DESCRIPTOR.full_name,
            ce_subject=ce_subject,
            event_id=event_id or uuid.uuid4().hex,
        )
        payload = json_format.MessageToJson(data, indent=None, preserving_proto_field_name=False).encode()
        kind = data.DESCRIPTOR.name
        try:
            ack = await self._js.publish(nats_subject, payload, headers=headers, timeout=timeout_s)
        except Exception:
            PUBLISHED.labels(self._source, kind, "error").inc()
            raise
        PUBLISHED.labels(self._source, kind, "duplicate" if getattr(ack, "duplicate", False) else "ok").inc()
        return ack


def build_headers(*, source: str, event_type: str, ce_subject: str, event_id: str) -> dict[str, str]:
    headers = {
        "ce-specversion": SPEC_VERSION,
        "ce-id": event_id,
        "ce-source": source,
        "ce-type": event_type,
        "ce-time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "ce-datacontenttype": CONTENT_TYPE,
        "Nats-Msg-Id": event_id,
    }
    if ce_subject:
        headers["ce-subject"] = ce_subject
    propagate.inject(headers)  # adds traceparent (and tracestate) from the current span
    return headers


def decode_event(msg, message_type: type[M]) -> Event[M]:
    headers = dict(msg.headers or {})
    data = message_type()
    json_format.Parse(msg.data or b"{}", data, ignore_unknown_fields=True)
    try:
        delivered = msg.metadata.num_delivered
    except Exception:  # a plain (non-JetStream) message has no metadata
        delivered = 1
    return Event(
        id=headers.get("ce-id", ""),
        type=headers.get("ce-type", ""),
        source=headers.get("ce-source", ""),
        subject=headers.get("ce-subject", ""),
        time=headers.get("ce-time", ""),
        data=data,
        nats_subject=msg.subject,
        headers=headers,
        delivery_count=delivered,
        raw=msg,
    )


Handler = Callable[[Event[M]], Awaitable[None]]


class Consumer(Generic[M]):
    """A durable pull consumer with manual ack.

    The handler must be idempotent: an event is acked only after the handler returns, so a crash
    or an error means redelivery (with backoff, up to `max_deliver` times). A payload that cannot be
    decoded is terminated instead, since redelivering it can never succeed.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        message_type: type[M],
        handler: Handler,
        batch: int = 32,
        max_deliver: int = 5,
        ack_wait_s: float = 30.0,
        deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    ):
        self._js = js
        self._stream = stream
        self._durable = durable
        self._filter = filter_subject
        self._type = message_type
        self._handler = handler
        self._batch = batch
        self._config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=max_deliver,
            ack_wait=ack_wait_s,
            filter_subject=filter_subject,
            deliver_policy=deliver_policy,
        )
        self._task: asyncio.Task | None = None
        self._sub = None

    async def start(self) -> None:
        self._sub = await self._js.pull_subscribe(
            self._filter, durable=self._durable, stream=self._stream, config=self._config
        )
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._durable}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _run(self) -> None:
        while True:
            try:
                msgs = await self._sub.fetch(self._batch, timeout=1.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue  # nothing to fetch within the poll window
            except Exception:
                log.warning("fetch from %s failed; retrying", self._durable, exc_info=True)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._handle(msg)

    async def _handle(self, msg) -> None:
        try:
            event = decode_event(msg, self._type)
        except Exception:
            log.error("undecodable event on %s; terminating it", msg.subject, exc_info=True)
            CONSUMED.labels(self._durable, "unknown", "undecodable").inc()
            await msg.term()
            return
        kind = self._type.DESCRIPTOR.name
        parent = propagate.extract(event.headers)
        with tracer.start_as_current_span(
            f"consume {self._filter}", context=parent, kind=trace.SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.message.id", event.id)
            try:
                await self._handler(event)
            except Exception:
                delay = min(30.0, 0.5 * 2 ** (event.delivery_count - 1))
                log.warning(
                    "handler for %s failed (delivery %d); redelivering in %.1fs",
                    event.nats_subject,
                    event.delivery_count,
                    delay,
                    exc_info=True,
                )
                CONSUMED.labels(self._durable, kind, "retry").inc()
                await msg.nak(delay=delay)
                return
        await msg.ack()
        CONSUMED.labels(self._durable, kind, "ok").inc()
