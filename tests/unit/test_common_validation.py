"""Id and key validation before they reach NATS subjects or KV keys."""

from __future__ import annotations

import grpc
import pytest

from mlmesh.common.errors import InvalidArgument
from mlmesh.common.events import subject_token
from mlmesh.common.kv import check_key

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("value", ["a", "job-1", "team_a", "0", "a" * 128, "abc-def_123"])
def test_subject_token_accepts_lowercase_ids(value):
    assert subject_token(value, "job_id") == value


@pytest.mark.parametrize(
    "value", ["A", "Job", "a.b", "a*", ">", "*", "", "a" * 129, "a b", "a\n", "a\nPUB x 1", "é", None]
)
def test_subject_token_rejects_everything_else(value):
    with pytest.raises(InvalidArgument) as info:
        subject_token(value, "job_id")
    assert info.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["job_id"]
    assert "job_id" in info.value.message


@pytest.mark.parametrize("key", ["a", "jobs.team-a.job-1", "A/b=c_d-e", "x" * 512])
def test_kv_check_key_accepts_valid_keys(key):
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", ".a", "a.", "a..b", "a b", "a*", ">", "a\n", "x" * 513, "ключ"])
def test_kv_check_key_rejects_invalid_keys(key):
    with pytest.raises(InvalidArgument) as info:
        check_key(key)
    assert info.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["key"]
