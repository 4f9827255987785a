"""Timestamps for records and events, and reading the times requests carry, in one place."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from mlmesh.common.errors import InvalidArgument


def now_ts() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def ts_from_seconds(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def ts_ns(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


# protobuf's valid ranges. A request may carry any numbers, and the library's conversions
# (ToTimedelta, ToDatetime, ToNanoseconds of a Timestamp) raise on values outside them.
MAX_DURATION_S = 315_576_000_000  # 10,000 years
MIN_TIMESTAMP_S, MAX_TIMESTAMP_S = -62_135_596_800, 253_402_300_799  # years 1-9999


def valid_duration_s(value: Duration) -> float | None:
    """A Duration in seconds, or None when it is not a valid one."""
    seconds, nanos = value.seconds, value.nanos
    mixed = (seconds < 0 < nanos) or (nanos < 0 < seconds)
    if abs(seconds) > MAX_DURATION_S or abs(nanos) > 999_999_999 or mixed:
        return None
    return seconds + nanos / 1e9


def duration_s(value: Duration, field: str) -> float:
    """A request's Duration in seconds; InvalidArgument naming `field` when it is not a valid one."""
    seconds = valid_duration_s(value)
    if seconds is None:
        raise InvalidArgument.field(field, "not a valid duration (at most 10,000 years)")
    return seconds


def timestamp_s(value: Timestamp, field: str) -> float:
    """A request's Timestamp in seconds since the epoch; InvalidArgument naming `field` when it is
    not a valid one."""
    if not MIN_TIMESTAMP_S <= value.seconds <= MAX_TIMESTAMP_S or not 0 <= value.nanos <= 999_999_999:
        raise InvalidArgument.field(field, "not a valid timestamp (years 1-9999)")
    return value.seconds + value.nanos / 1e9
