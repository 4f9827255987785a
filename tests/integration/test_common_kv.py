"""The KV repository against a real nats-server: create/update/delete with compare-and-set."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from mlmesh.api.events.v1 import events_pb2
from mlmesh.common import events
from mlmesh.common.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from mlmesh.common.kv import KvRepository

pytestmark = pytest.mark.timeout(60)

Value = events_pb2.JobStateChanged  # any proto message will do; `attempt` serves as a counter


@pytest.fixture
async def repo(nats_server):
    nc = await events.connect(nats_server.url, name="test-common-kv", timeout_s=5, **nats_server.client_options())
    js = nc.jetstream()
    bucket = f"test_kv_{uuid.uuid4().hex[:10]}"
    try:
        yield await KvRepository.open(js, bucket, Value, what="job")
    finally:
        await js.delete_key_value(bucket)
        await nc.close()


async def test_create_then_create_again_is_already_exists(repo: KvRepository):
    revision = await repo.create("jobs.job-1", Value(job_id="job-1", attempt=1))
    got = await repo.get("jobs.job-1")
    assert got.revision == revision and got.value == Value(job_id="job-1", attempt=1)

    with pytest.raises(AlreadyExists) as info:
        await repo.create("jobs.job-1", Value(job_id="job-1", attempt=99))
    assert info.value.grpc_code == grpc.StatusCode.ALREADY_EXISTS
    assert (await repo.get("jobs.job-1")).value.attempt == 1  # the loser changed nothing


async def test_update_with_a_stale_revision_is_a_conflict(repo: KvRepository):
    first = await repo.create("jobs.job-2", Value(attempt=1))
    second = await repo.update("jobs.job-2", Value(attempt=2), first)
    assert second > first

    with pytest.raises(Conflict) as info:
        await repo.update("jobs.job-2", Value(attempt=3), first)  # someone else wrote since `first`
    assert info.value.grpc_code == grpc.StatusCode.ABORTED
    assert str(first) in info.value.message
    got = await repo.get("jobs.job-2")
    assert got.value.attempt == 2 and got.revision == second

    with pytest.raises(Conflict):
        await repo.delete("jobs.job-2", revision=first)
    assert (await repo.get("jobs.job-2")).value.attempt == 2


async def test_concurrent_mutations_both_apply(repo: KvRepository):
    await repo.create("counter", Value(attempt=0))

    def increment(value: Value) -> Value:
        value.attempt += 1
        return value

    async def writer(n: int) -> None:
        for _ in range(n):
            await repo.mutate("counter", increment)

    await asyncio.gather(writer(10), writer(10))
    assert (await repo.get("counter")).value.attempt == 20


async def test_mutate_returning_none_leaves_the_value(repo: KvRepository):
    revision = await repo.create("jobs.job-3", Value(attempt=5))
    unchanged = await repo.mutate("jobs.job-3", lambda value: None)
    assert unchanged.revision == revision and unchanged.value.attempt == 5
    assert (await repo.get("jobs.job-3")).revision == revision


async def test_missing_and_deleted_keys_are_not_found_and_can_be_recreated(repo: KvRepository):
    with pytest.raises(NotFound) as info:
        await repo.get("jobs.absent")
    assert info.value.grpc_code == grpc.StatusCode.NOT_FOUND
    assert info.value.message == "job jobs.absent not found"

    await repo.create("jobs.job-4", Value(attempt=1))
    await repo.delete("jobs.job-4")
    with pytest.raises(NotFound):
        await repo.get("jobs.job-4")
    with pytest.raises(NotFound):
        await repo.mutate("jobs.job-4", lambda value: value)
    assert "jobs.job-4" not in await repo.keys()

    revision = await repo.create("jobs.job-4", Value(attempt=2))
    got = await repo.get("jobs.job-4")
    assert got.revision == revision and got.value.attempt == 2


async def test_keys_lists_live_keys_and_bad_keys_are_rejected(repo: KvRepository):
    assert await repo.keys() == []
    await repo.create("b", Value())
    await repo.create("a", Value())
    assert await repo.keys() == ["a", "b"]
    with pytest.raises(InvalidArgument):
        await repo.create("a\n", Value())
    with pytest.raises(InvalidArgument):
        await repo.get("a.>")
