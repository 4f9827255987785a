"""IssueEventCredentials' ttl: any Duration may arrive, and protobuf's conversion raised on values
outside its range (the call answered INTERNAL); now they are a bad `ttl` like any other."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration

from mlmesh.api.scheduler.v1 import team_access_service_pb2 as api
from mlmesh.common.errors import InvalidArgument
from mlmesh.scheduler.team_access import DEFAULT_TTL_S, ttl_seconds

pytestmark = pytest.mark.timeout(30)


def test_default_and_in_range():
    assert ttl_seconds(api.IssueEventCredentialsRequest()) == DEFAULT_TTL_S
    assert ttl_seconds(api.IssueEventCredentialsRequest(ttl=Duration(seconds=3600))) == 3600


@pytest.mark.parametrize(
    "ttl", [Duration(seconds=2**63 - 1), Duration(seconds=-(2**63)), Duration(seconds=1, nanos=-1)]
)
def test_out_of_range_names_the_field(ttl):
    with pytest.raises(InvalidArgument) as info:
        ttl_seconds(api.IssueEventCredentialsRequest(ttl=ttl))
    assert [v.field for v in info.value.violations] == ["ttl"]
