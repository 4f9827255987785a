"""Reading the Durations and Timestamps requests carry: any numbers may arrive, and protobuf's own
conversions raise on values outside its ranges (which became INTERNAL answers)."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from mlmesh.common.clock import duration_s, timestamp_s, valid_duration_s
from mlmesh.common.errors import InvalidArgument

pytestmark = pytest.mark.timeout(30)


def test_valid_durations_read_as_seconds():
    assert duration_s(Duration(seconds=90, nanos=500_000_000), "ttl") == 90.5
    assert duration_s(Duration(seconds=-2, nanos=-500_000_000), "ttl") == -2.5
    assert valid_duration_s(Duration(seconds=315_576_000_000)) == 315_576_000_000


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(2**63 - 1, 0), (-(2**63), 0), (315_576_000_001, 0), (1, -1), (-1, 1), (0, 10**9)]
)
def test_invalid_durations_name_the_field(seconds, nanos):
    value = Duration(seconds=seconds, nanos=nanos)
    assert valid_duration_s(value) is None
    with pytest.raises(InvalidArgument) as info:
        duration_s(value, "spec.ttl")
    assert [v.field for v in info.value.violations] == ["spec.ttl"]


def test_timestamps_in_and_out_of_range():
    assert timestamp_s(Timestamp(seconds=1_700_000_000, nanos=250_000_000), "start_time") == 1_700_000_000.25
    for bad in (Timestamp(seconds=2**63 - 1), Timestamp(seconds=-(2**63)), Timestamp(nanos=-1)):
        with pytest.raises(InvalidArgument) as info:
            timestamp_s(bad, "start_time")
        assert info.value.violations[0].field == "start_time"
