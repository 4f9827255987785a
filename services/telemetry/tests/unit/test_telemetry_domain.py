"""The telemetry's pure logic: aggregates, rule parsing, alert state machine, signals, quantiles."""

from __future__ import annotations

import math

import pytest

from mlmesh.common.errors import InvalidArgument
from mlmesh.telemetry.domain.aggregates import (
    ADMITTED,
    FAILED,
    PENDING,
    PREEMPTED,
    RUNNING,
    SUCCEEDED,
    Aggregates,
    Gpu,
    percentile,
    thin,
)
from mlmesh.telemetry.domain.alerting import FIRING, RESOLVED, evaluate
from mlmesh.telemetry.domain.rules import parse_rules
from mlmesh.telemetry.domain.signals import SIGNALS, bucket_delta, compute, histogram_quantile
from mlmesh.telemetry.settings import DEFAULT_RULES

H = 3600.0


def _run(agg: Aggregates, job: str, team: str, submit: float, admit: float, start: float, gpus: int, node="n1"):
    agg.apply_job_state(job_id=job, team=team, queue="q", to_state=PENDING, at=submit)
    agg.apply_job_state(job_id=job, team=team, queue="q", to_state=ADMITTED, at=admit)
    devices = tuple((node, f"gpu-{i}") for i in range(gpus))
    agg.apply_job_state(job_id=job, team=team, queue="q", to_state=RUNNING, at=start, devices=devices, gpus=gpus)


def test_gpu_hours_queue_wait_and_outcomes_per_team_and_cluster():
    agg = Aggregates()
    _run(agg, "a1", "alpha", submit=0, admit=60, start=70, gpus=4)
    _run(agg, "b1", "beta", submit=0, admit=10, start=10, gpus=2, node="n2")
    agg.apply_job_state(job_id="a1", team="alpha", queue="q", to_state=SUCCEEDED, at=70 + 2 * H)
    agg.apply_job_state(job_id="b1", team="beta", queue="q", to_state=FAILED, at=10 + H)
    now = 3 * H
    alpha = agg.usage("alpha", window_s=10 * H, now=now)
    assert alpha.gpu_hours == pytest.approx(8.0)
    assert alpha.queue_wait_p50_s == 60 and alpha.outcomes["succeeded"] == 1 and alpha.gpus_in_use == 0
    beta = agg.usage("beta", window_s=10 * H, now=now)
    assert beta.gpu_hours == pytest.approx(2.0) and beta.outcomes["failed"] == 1
    cluster = agg.usage(None, window_s=10 * H, now=now)
    assert cluster.gpu_hours == pytest.approx(10.0) and cluster.outcomes["failed"] == 1
    # A window clips the intervals: the last hour saw alpha's job only, 4 GPUs for 70 s.
    assert agg.usage("alpha", window_s=H, now=2 * H + 70).gpu_hours == pytest.approx(4.0)


def test_running_job_accrues_and_preemption_releases_its_gpus():
    agg = Aggregates()
    _run(agg, "j", "alpha", submit=0, admit=0, start=0, gpus=8)
    assert agg.usage("alpha", 10 * H, now=H / 2).gpus_in_use == 8
    assert agg.gpu_hours_total(now=H / 2)["alpha"] == pytest.approx(4.0)
    agg.apply_job_state(job_id="j", team="alpha", queue="q", to_state=PREEMPTED, at=H)
    usage = agg.usage("alpha", 10 * H, now=5 * H)
    assert usage.gpus_in_use == 0 and usage.gpu_hours == pytest.approx(8.0) and usage.outcomes["preempted"] == 1


def test_utilization_is_attributed_to_the_team_holding_the_device():
    agg = Aggregates()
    _run(agg, "j", "alpha", submit=0, admit=0, start=0, gpus=1)
    gpus = [
        Gpu("n1", "gpu-0", 0.8, 10, 100, 50.0, 200.0, seen_at=5),
        Gpu("n1", "gpu-1", 0.1, 10, 100, 50.0, 200.0, seen_at=5),  # idle, held by nobody
    ]
    agg.apply_heartbeat(node="n1", at=5, gpus=gpus)
    assert agg.usage("alpha", 60, now=10).gpu_utilization == pytest.approx(0.8)
    assert len(agg.live_gpus(now=10)) == 2 and agg.live_gpus(now=10 + 1000) == []


def test_series_keep_shape_when_thinned_and_filter_by_window():
    agg = Aggregates(max_points=100)
    for step in range(1, 1001):
        agg.apply_progress(job_id="j", team="t", at=float(step), step=step, values={"loss": 1.0 / step})
    points = agg.jobs["j"].series["loss"]
    assert len(points) <= 100 and points[0][1] == 1 and points[-1][1] == 1000
    window = agg.series("j", ["loss"], lo=900, hi=None, max_points=10)["loss"]
    assert 0 < len(window) <= 10 and all(p[0] >= 900 for p in window)


def test_percentile_and_thin():
    assert percentile([], 0.5) == 0.0
    assert percentile([1, 2, 3, 4], 0.5) == 2 and percentile([1, 2, 3, 4], 0.95) == 4
    assert thin(list(range(10)), 3) == [0, 4, 9] or thin(list(range(10)), 3) == [0, 5, 9]


def test_default_rules_parse_and_cover_the_issue_s_defaults():
    rules = parse_rules(DEFAULT_RULES.read_text(), set(SIGNALS))
    assert {r.metric for r in rules} == {
        "gpu_memory_used_ratio",
        "inference_p99_seconds",
        "node_not_ready",
        "job_failure_rate",
        "checkpoint_age_ratio",
    }
    gpu = next(r for r in rules if r.name == "gpu_memory_high")
    assert gpu.threshold == 0.9 and gpu.op == "gt" and gpu.for_s == 120


def test_bad_rules_name_every_field():
    text = """
rules:
  - name: Bad Name
    metric: nope
    op: "~"
    threshold: high
    for: soon
    colour: red
  - name: ok
    metric: node_not_ready
    threshold: 1
  - name: ok
    metric: node_not_ready
    threshold: 1
"""
    with pytest.raises(InvalidArgument) as err:
        parse_rules(text, set(SIGNALS))
    fields = {v.field for v in err.value.violations}
    assert {"rules[0].name", "rules[0].metric", "rules[0].op", "rules[0].threshold", "rules[0].for"} <= fields
    assert "rules[0].colour" in fields and "rules[2].name" in fields
    with pytest.raises(InvalidArgument):
        parse_rules("rules: [unclosed", set(SIGNALS))


def test_alert_pends_fires_once_and_resolves_once():
    rules = parse_rules(
        "rules: [{name: hot, metric: gpu_memory_used_ratio, op: '>', threshold: 0.9, for: 10s,"
        " summary: 'GPU {gpu} at {value:.0%}'}]",
        set(SIGNALS),
    )
    high = {"gpu_memory_used_ratio": [({"node": "n1", "gpu": "g0"}, 0.95)]}
    low = {"gpu_memory_used_ratio": [({"node": "n1", "gpu": "g0"}, 0.5)]}
    active, fired = evaluate(rules, high, {}, now=0)
    assert fired == [] and next(iter(active.values())).state == "pending"
    active, fired = evaluate(rules, high, active, now=5)
    assert fired == []
    active, fired = evaluate(rules, high, active, now=10)
    assert [t.state for t in fired] == [FIRING] and fired[0].summary == "GPU g0 at 95%"
    alert_id = fired[0].id
    active, again = evaluate(rules, high, active, now=20)
    assert again == []  # still firing: no second event
    active, resolved = evaluate(rules, low, active, now=30)
    assert [(t.state, t.id) for t in resolved] == [(RESOLVED, alert_id)] and active == {}
    active, quiet = evaluate(rules, low, active, now=40)
    assert quiet == []


def test_a_pending_alert_that_clears_never_fires_and_a_vanished_series_resolves():
    rules = parse_rules("rules: [{name: down, metric: node_not_ready, threshold: 1, op: '>='}]", set(SIGNALS))
    active, fired = evaluate(rules, {"node_not_ready": [({"node": "n1"}, 1.0)]}, {}, now=0)
    assert len(fired) == 1
    active, resolved = evaluate(rules, {"node_not_ready": []}, active, now=1)  # the node was removed
    assert [t.state for t in resolved] == [RESOLVED]
    slow = parse_rules("rules: [{name: slow, metric: node_not_ready, threshold: 1, for: 1m}]", set(SIGNALS))
    active, fired = evaluate(slow, {"node_not_ready": [({"node": "n1"}, 1.0)]}, {}, now=0)
    active, fired2 = evaluate(slow, {"node_not_ready": [({"node": "n1"}, 0.0)]}, active, now=30)
    assert fired == fired2 == [] and active == {}


def test_signals_from_aggregates():
    agg = Aggregates()
    _run(agg, "j", "alpha", submit=0, admit=0, start=0, gpus=1)
    agg.jobs["j"].checkpoint_interval_s = 100
    agg.apply_checkpoint(job_id="j", team="alpha", at=50, artifact_id="ck1")
    agg.apply_heartbeat(node="n1", at=200, gpus=[Gpu("n1", "gpu-0", 0.5, 95, 100, 0, 0, seen_at=200)])
    agg.apply_node_state(node="n1", state=2, reason="MissedHeartbeats", at=200)
    for i, state in enumerate([FAILED, FAILED, SUCCEEDED]):
        agg.apply_job_state(job_id=f"x{i}", team="beta", queue="q", to_state=state, at=190)
    samples = compute(agg, now=250, failure_window_s=3600, min_finished_jobs=3, inference_p99={"gw": 0.3})
    assert samples["gpu_memory_used_ratio"] == [({"node": "n1", "gpu": "gpu-0"}, 0.95)]
    assert samples["node_not_ready"] == [({"node": "n1"}, 1.0)]
    assert samples["job_failure_rate"] == [({"team": "beta"}, pytest.approx(2 / 3))]
    assert samples["checkpoint_age_ratio"] == [({"job": "j", "team": "alpha"}, pytest.approx(2.0))]
    assert samples["inference_p99_seconds"] == [({"target": "gw"}, 0.3)]


def test_histogram_quantile_matches_prometheus():
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * 0.9)
    assert math.isnan(histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]))
    assert histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 10.0)]) == 0.1
    # A scrape after a restart (counts went down) counts from zero, not negative.
    assert bucket_delta({0.1: 3.0, math.inf: 3.0}, {0.1: 10.0, math.inf: 12.0}) == [(0.1, 3.0), (math.inf, 3.0)]


def test_counters_for_metrics_never_drop_when_the_windows_are_pruned():
    agg = Aggregates(retention_s=H)
    _run(agg, "j", "alpha", submit=0, admit=10, start=10, gpus=2)
    agg.apply_job_state(job_id="j", team="alpha", queue="q", to_state=SUCCEEDED, at=10 + H)
    before = agg.gpu_hours_total(now=10 * H)["alpha"]
    agg.prune(now=10 * H)  # everything is older than the retention now
    assert agg.usage("alpha", 100 * H, now=10 * H).gpu_hours == 0.0
    assert agg.gpu_hours_total(now=10 * H)["alpha"] == pytest.approx(before) == pytest.approx(2.0)
    assert agg.outcome_totals == {("alpha", "succeeded"): 1}
    hist = agg.wait_totals["alpha"]
    assert (
        hist.count == 1 and hist.total == 10 and hist.buckets[0] == 0 and hist.buckets[1] == 0 and hist.buckets[2] == 1
    )


def test_two_running_jobs_of_one_team_each_close_their_own_interval():
    agg = Aggregates()
    _run(agg, "early", "alpha", submit=0, admit=0, start=0, gpus=2)
    _run(agg, "late", "alpha", submit=0, admit=0, start=H, gpus=2)
    agg.apply_job_state(job_id="early", team="alpha", queue="q", to_state=SUCCEEDED, at=2 * H)
    # early held 2 GPUs for 2 h; late is still running since 1 h ago.
    assert agg.closed_hours["alpha"] == pytest.approx(4.0)
    assert agg.gpu_hours_total(now=3 * H)["alpha"] == pytest.approx(4.0 + 4.0)
    assert agg.usage("alpha", 10 * H, now=3 * H).gpus_in_use == 2
