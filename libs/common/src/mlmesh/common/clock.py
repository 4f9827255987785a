"""Timestamps for records and events, in one place."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


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
