"""The event bus against a real nats-server: CloudEvents headers, trace context, de-duplication,
redelivery, and the platform streams."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime, timezone

import pytest
from google.protobuf import json_format, timestamp_pb2
from nats.js.api import StorageType
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.common import events
from mlmesh.common.events import Consumer, EventPublisher, StreamSpec

pytestmark = pytest.mark.timeout(60)

JobStateChanged = events_pb2.JobStateChanged


@pytest.fixture
async def nc(nats_server):
    client = await events.connect(
        nats_server.url, name="test-common-events", timeout_s=5, **nats_server.client_options()
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def stream(nc):
    """A private stream (unique name and subjects) so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:10]
    spec = StreamSpec(f"TEST_EVENTS_{suffix.upper()}", (f"test{suffix}.>",), max_age_s=600)
    js = nc.jetstream()
    await events.ensure_streams(js, (spec,))
    try:
        yield spec, f"test{suffix}"
    finally:
        await js.delete_stream(spec.name)


@pytest.fixture
def tracing(monkeypatch):
    """A local SDK provider with an in-memory exporter; the consumer's tracer is pointed at it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(events, "tracer", provider.get_tracer("mlmesh.events"))
    try:
        yield provider.get_tracer("tests"), exporter
    finally:
        provider.shutdown()


def _job_event() -> JobStateChanged:
    return JobStateChanged(
        job_id="job-1",
        team="team-a",
        queue="default",
        from_state=job_pb2.JOB_STATE_PENDING,
        to_state=job_pb2.JOB_STATE_ADMITTED,
        reason="placed",
        attempt=1,
        revision=7,
        labels={"owner": "alice"},
        transition_time=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5_000_000),
    )


async def _wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def test_event_round_trip_carries_cloudevents_headers_and_trace(nc, stream, tracing):
    spec, prefix = stream
    tracer, exporter = tracing
    js = nc.jetstream()
    received: asyncio.Queue = asyncio.Queue()

    async def handler(event):
        await received.put((event, trace.get_current_span().get_span_context()))

    sent = _job_event()
    publisher = EventPublisher(js, source="//mlmesh/scheduler")
    with tracer.start_as_current_span("submit") as publish_span:
        ack = await publisher.publish(f"{prefix}.jobs.team-a.job-1.state", sent, ce_subject="job-1", event_id="evt-1")
    assert ack.stream == spec.name and not ack.duplicate

    consumer = Consumer(
        js,
        stream=spec.name,
        durable="roundtrip",
        filter_subject=f"{prefix}.>",
        message_type=JobStateChanged,
        handler=handler,
    )
    await consumer.start()
    try:
        event, consumer_ctx = await asyncio.wait_for(received.get(), 15)
        # Acked once the handler returned: nothing pending or awaiting an ack.
        await _wait_for(lambda: _settled(js, spec.name, "roundtrip"))
    finally:
        await consumer.stop()

    h = event.headers
    assert h["ce-specversion"] == "1.0"
    assert h["ce-id"] == "evt-1" == event.id
    assert h["ce-source"] == "//mlmesh/scheduler" == event.source
    assert h["ce-type"] == "mlmesh.events.v1.JobStateChanged" == JobStateChanged.DESCRIPTOR.full_name == event.type
    assert h["ce-subject"] == "job-1" == event.subject
    assert h["ce-datacontenttype"] == "application/json"
    assert h["Nats-Msg-Id"] == h["ce-id"]
    sent_at = datetime.fromisoformat(h["ce-time"].replace("Z", "+00:00"))
    assert sent_at.tzinfo is not None and abs((datetime.now(timezone.utc) - sent_at).total_seconds()) < 60
    assert h["traceparent"].split("-")[1] == format(publish_span.get_span_context().trace_id, "032x")

    # The payload is the proto3 JSON form (readable with `nats sub`) and decodes back to the same message.
    raw = event.raw.data
    as_json = json.loads(raw)
    assert as_json["jobId"] == "job-1" and as_json["toState"] == "JOB_STATE_ADMITTED"
    assert json_format.Parse(raw, JobStateChanged()) == sent
    assert event.data == sent
    assert event.nats_subject == f"{prefix}.jobs.team-a.job-1.state"
    assert event.delivery_count == 1

    # The consumer's span continues the publisher's trace, as a child of the publishing span.
    assert consumer_ctx.trace_id == publish_span.get_span_context().trace_id
    [consume_span] = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.CONSUMER]
    assert consume_span.parent.span_id == publish_span.get_span_context().span_id
    assert consume_span.attributes["messaging.message.id"] == "evt-1"


async def _settled(js, stream_name: str, durable: str) -> bool:
    info = await js.consumer_info(stream_name, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0


async def test_same_event_id_published_twice_is_stored_once(nc, stream):
    spec, prefix = stream
    js = nc.jetstream()
    publisher = EventPublisher(js, source="//mlmesh/tests")
    first = await publisher.publish(f"{prefix}.jobs.a", _job_event(), event_id="evt-dup")
    second = await publisher.publish(f"{prefix}.jobs.a", _job_event(), event_id="evt-dup")
    assert not first.duplicate
    assert second.duplicate and second.seq == first.seq
    assert (await js.stream_info(spec.name)).state.messages == 1

    # A different id is a different event.
    third = await publisher.publish(f"{prefix}.jobs.a", _job_event(), event_id="evt-other")
    assert not third.duplicate and third.seq == first.seq + 1
    assert (await js.stream_info(spec.name)).state.messages == 2


async def test_failed_handler_gets_the_event_again_then_it_is_acked(nc, stream):
    spec, prefix = stream
    js = nc.jetstream()
    deliveries: list[tuple[str, int]] = []

    async def handler(event):
        deliveries.append((event.id, event.delivery_count))
        if event.delivery_count == 1:
            raise RuntimeError("transient failure")

    await EventPublisher(js, source="//mlmesh/tests").publish(f"{prefix}.jobs.a", _job_event(), event_id="evt-r")
    consumer = Consumer(
        js,
        stream=spec.name,
        durable="retry",
        filter_subject=f"{prefix}.>",
        message_type=JobStateChanged,
        handler=handler,
        ack_wait_s=1.0,
    )
    await consumer.start()
    try:
        await _wait_for(lambda: _async_value(len(deliveries) >= 2))
        # With a 1 s ack wait, an un-acked event would come back within the next 2 s.
        await asyncio.sleep(2.5)
        info = await js.consumer_info(spec.name, "retry")
    finally:
        await consumer.stop()
    assert deliveries == [("evt-r", 1), ("evt-r", 2)]
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert info.ack_floor.stream_seq == 1


async def _async_value(value):
    return value


async def test_undecodable_payload_is_terminated_not_redelivered(nc, stream, caplog):
    spec, prefix = stream
    js = nc.jetstream()
    seen: list[str] = []

    async def handler(event):
        seen.append(event.id)

    caplog.set_level(logging.ERROR, logger="mlmesh.events")
    await js.publish(f"{prefix}.jobs.bad", b"{not json", headers={"ce-id": "evt-bad", "Nats-Msg-Id": "evt-bad"})
    await EventPublisher(js, source="//mlmesh/tests").publish(f"{prefix}.jobs.good", _job_event(), event_id="evt-ok")
    consumer = Consumer(
        js,
        stream=spec.name,
        durable="poison",
        filter_subject=f"{prefix}.>",
        message_type=JobStateChanged,
        handler=handler,
        ack_wait_s=1.0,
    )
    await consumer.start()
    try:
        await _wait_for(lambda: _async_value(seen == ["evt-ok"]))
        await asyncio.sleep(2.5)  # past the ack wait: a merely un-acked message would be back by now
        info = await js.consumer_info(spec.name, "poison")
    finally:
        await consumer.stop()
    assert seen == ["evt-ok"]  # the bad payload never reached the handler, the good one after it did
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert info.num_redelivered == 0
    assert any("undecodable" in r.getMessage() for r in caplog.records)


async def test_ensure_streams_is_idempotent_with_file_storage_and_dedup_window(nc):
    js = nc.jetstream()
    await events.ensure_streams(js)
    await events.ensure_streams(js)
    for spec in events.STREAMS:
        info = await js.stream_info(spec.name)
        assert info.config.storage == StorageType.FILE
        assert info.config.duplicate_window == pytest.approx(120.0)
        assert info.config.max_age == pytest.approx(spec.max_age_s)
        assert tuple(info.config.subjects) == spec.subjects
    names = [s.name for s in events.STREAMS]
    assert len(set(names)) == len(names) and all(n.startswith("MLMESH_") for n in names)
    assert await js.find_stream_name_by_subject("mlmesh.jobs.team-a.job-1.state") == "MLMESH_JOBS"
    assert await js.find_stream_name_by_subject("mlmesh.alerts.fired") == "MLMESH_ALERTS"
