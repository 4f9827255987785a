"""Pure deployment logic: validation by field, updates by field mask, routing facts, config text."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.gateway.v1 import deployment_pb2 as d
from mlmesh.gateway.domain import deployments as dom
from mlmesh.gateway.domain.canary import bucket, use_canary
from mlmesh.gateway.domain.model_repository import CLASSIFICATION, GENERATION, EntryConfig, render_config


def spec(**fields) -> d.DeploymentSpec:
    return d.DeploymentSpec(model=d.ModelRef(name="m", version=1), **fields)


def test_a_good_spec_has_no_violations():
    assert dom.validate_create("my-dep", "", spec(), {}) == {}


def test_every_bad_field_is_named():
    s = spec(task=99, instance_count=-1)
    s.canary.percent = 101
    s.canary.model.name = "other"
    s.canary.sticky_key = "Bad Header"
    s.cache_ttl.CopyFrom(duration_pb2.Duration(seconds=-5))
    s.batching.max_batch_size = 5000
    s.rate_limit.requests_per_second = -1
    bad = dom.validate_create("a--b", "Team A", s, {"k": "v" * 64})
    assert set(bad) == {
        "name",
        "team",
        "spec.task",
        "spec.instance_count",
        "spec.canary.percent",
        "spec.canary.model.name",
        "spec.canary.sticky_key",
        "spec.cache_ttl",
        "spec.batching.max_batch_size",
        "spec.rate_limit.requests_per_second",
        "labels",
    }


def test_durations_out_of_protobufs_range_are_named_not_raised():
    """ToTimedelta overflows on them: a CreateDeployment answered INTERNAL before."""
    s = spec()
    s.batching.max_queue_delay.CopyFrom(duration_pb2.Duration(seconds=2**63 - 1))
    s.cache_ttl.CopyFrom(duration_pb2.Duration(seconds=-(2**63)))
    assert {"spec.batching.max_queue_delay", "spec.cache_ttl"} <= set(dom.validate_create("x", "", s, {}))


def test_model_is_required_and_versions_are_positive():
    assert "spec.model" in dom.validate_create("x", "", d.DeploymentSpec(), {})
    bad = dom.validate_create("x", "", d.DeploymentSpec(model=d.ModelRef(name="m", version=0)), {})
    assert "spec.model.version" in bad


def test_update_by_mask_changes_only_the_named_fields():
    current = spec(instance_count=2)
    current.cache_ttl.FromSeconds(30)
    new = d.DeploymentSpec(canary=d.Canary(model=d.ModelRef(name="m", version=2), percent=25))
    out = dom.apply_update(current, new, ["canary"])
    assert out.canary.percent == 25 and out.instance_count == 2 and out.cache_ttl.seconds == 30
    out = dom.apply_update(current, new, ["canary.percent"])
    assert out.canary.percent == 25 and not out.canary.HasField("model")
    assert dom.apply_update(current, new, []) == new  # no mask: the whole spec
    with pytest.raises(ValueError, match="nope"):
        dom.apply_update(current, new, ["nope"])


def test_served_reflects_the_status_not_the_spec():
    dep = d.Deployment(spec=spec(task=common_pb2.MODEL_TASK_EMBEDDING))
    dep.meta.id, dep.meta.team = "dep", "team-a"
    assert dom.served(dep) is None  # nothing loaded yet
    dep.spec.canary.CopyFrom(d.Canary(model=d.ModelRef(name="m", version=3), percent=20, sticky_key="x-user"))
    dep.status.state, dep.status.model_version, dep.status.canary_version = d.DEPLOYMENT_STATE_UPDATING, 1, 0
    served = dom.served(dep)
    assert served.versions == (1,) and served.canary_percent == 0  # the canary is not loaded yet
    dep.status.canary_version = 3
    served = dom.served(dep)
    assert served.versions == (1, 3) and served.canary_percent == 20 and served.sticky_key == "x-user"
    dep.status.state = d.DEPLOYMENT_STATE_DRAINING
    assert dom.served(dep).draining
    dep.status.state = d.DEPLOYMENT_STATE_FAILED
    assert dom.served(dep) is None


def test_canary_choice_is_sticky_and_proportional():
    assert bucket("t/d", "user-1") == bucket("t/d", "user-1")
    share = sum(use_canary("t/d", 30, f"user-{i}") for i in range(2000)) / 2000
    assert 0.25 < share < 0.35
    assert not use_canary("t/d", 0, "u") and use_canary("t/d", 100, "u")


def test_config_text_per_task():
    text = render_config(EntryConfig("team-a--gen", GENERATION, [2, 1], instance_count=2, parameters={"k": 'a"b'}))
    assert "max_batch_size: 0" in text and "decoupled: true" in text and "dynamic_batching" not in text
    assert "versions: [ 1, 2 ]" in text and "count: 2" in text and 'string_value: "a\\"b"' in text
    text = render_config(EntryConfig("team-a--cls", CLASSIFICATION, [1], gpu=True, preferred_batch_sizes=[4, 64]))
    assert "KIND_GPU" in text and "max_batch_size: 8" in text
    assert "preferred_batch_size: [ 4 ]" in text  # sizes above the maximum are dropped
