"""JSON logging: one line per record with service, trace/span ids, team and context fields."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from mlmesh.common.auth import Identity, reset_current_identity, set_current_identity
from mlmesh.common.logging import JsonFormatter, log_context

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def capture():
    """A private logger whose records are formatted by JsonFormatter into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("scheduler"))
    logger = logging.getLogger("mlmesh.tests.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[dict]:
        text = stream.getvalue()
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]

    try:
        yield logger, lines
    finally:
        logger.removeHandler(handler)


def test_record_carries_service_trace_team_and_context(capture):
    logger, lines = capture
    provider = TracerProvider()
    tracer = provider.get_tracer("tests")
    token = set_current_identity(Identity("alice", "team-a", frozenset()))
    try:
        span = tracer.start_span("handle")
        with trace.use_span(span, end_on_exit=True), log_context(job="job-7", queue="default"):
            logger.info("placed %s on %d nodes", "job-7", 2, extra={"attempt": 3})
    finally:
        reset_current_identity(token)
    [record] = lines()
    ctx = span.get_span_context()
    assert record["service"] == "scheduler"
    assert record["level"] == "INFO"
    assert record["logger"] == "mlmesh.tests.json"
    assert record["msg"] == "placed job-7 on 2 nodes"
    assert record["trace_id"] == format(ctx.trace_id, "032x")
    assert record["span_id"] == format(ctx.span_id, "016x")
    assert record["team"] == "team-a" and record["subject"] == "alice"
    assert record["job"] == "job-7" and record["queue"] == "default"
    assert record["attempt"] == 3
    assert record["ts"].endswith("Z")
    provider.shutdown()


def test_fields_leave_with_their_context(capture):
    logger, lines = capture
    with log_context(job="job-1"):
        with log_context(team="team-b"):
            logger.info("inner")
        logger.info("outer")
    logger.info("after")
    inner, outer, after = lines()
    assert inner["job"] == "job-1" and inner["team"] == "team-b"
    assert outer["job"] == "job-1" and "team" not in outer
    assert "job" not in after
    # No active span and no caller: no ids are invented.
    assert "trace_id" not in after and "span_id" not in after and "subject" not in after


def test_multiline_message_and_traceback_stay_on_one_line(capture):
    logger, lines = capture
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("failed:\nsee below")
    [record] = lines()  # `lines` parses each line as JSON: exactly one line was written
    assert record["msg"] == "failed:\nsee below"
    assert "ValueError: bad" in record["exc"] and "Traceback" in record["exc"]
    assert record["level"] == "ERROR"


def test_non_json_extra_values_are_rendered(capture):
    logger, lines = capture
    logger.warning("odd", extra={"shape": (2, 3), "ok": True})
    [record] = lines()
    assert record["shape"] == "(2, 3)" and record["ok"] is True
