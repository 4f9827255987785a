"""The aggregates on `/metrics`, computed at scrape time from the current state (a custom collector,
so nothing is double-counted when the state is rebuilt from the streams)."""

from __future__ import annotations

import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from mlmesh.api.fabric.v1.node_pb2 import NODE_STATE_NOT_READY, NODE_STATE_READY
from mlmesh.telemetry.domain.aggregates import WAIT_BUCKETS


class AggregatesCollector(Collector):
    def __init__(self, ingest, engine, *, utilization_window_s: float = 300.0):
        self.ingest = ingest
        self.engine = engine
        self.utilization_window_s = utilization_window_s

    def collect(self):
        agg = self.ingest.agg
        now = time.time()
        hours = CounterMetricFamily("mlmesh_team_gpu_hours", "GPU-hours allocated to a team's jobs", labels=["team"])
        in_use = GaugeMetricFamily("mlmesh_team_gpus_in_use", "GPUs held by a team's running jobs", labels=["team"])
        util = GaugeMetricFamily(
            "mlmesh_team_gpu_utilization_ratio",
            "Mean SM utilization of a team's allocated GPUs over the last 5 minutes (0..1)",
            labels=["team"],
        )
        outcomes = CounterMetricFamily(
            "mlmesh_team_jobs",
            "Job outcomes since this process started (its replay included)",
            labels=["team", "outcome"],
        )
        waits = HistogramMetricFamily(
            "mlmesh_team_queue_wait_seconds", "Submit-to-admit wait of a team's jobs", labels=["team"]
        )
        for team, value in sorted(agg.gpu_hours_total(now).items()):
            hours.add_metric([team], value)
        for team in agg.teams():
            usage = agg.usage(team, self.utilization_window_s, now)
            in_use.add_metric([team], usage.gpus_in_use)
            util.add_metric([team], usage.gpu_utilization)
        for (team, outcome), n in sorted(agg.outcome_totals.items()):
            outcomes.add_metric([team, outcome], n)
        for team, hist in sorted(agg.wait_totals.items()):
            cumulative = [(str(float(b)), n) for b, n in zip(WAIT_BUCKETS, hist.buckets, strict=True)]
            cumulative.append(("+Inf", hist.count))
            waits.add_metric([team], cumulative, hist.total)
        yield from (hours, in_use, util, outcomes, waits)
        nodes = GaugeMetricFamily("mlmesh_node_ready", "1 while a node is Ready", labels=["node"])
        # Not Ready is not NotReady: a cordoned or draining node is healthy and must not page anyone.
        lost = GaugeMetricFamily(
            "mlmesh_node_not_ready", "1 while the fabric marks a node NotReady (lost heartbeats)", labels=["node"]
        )
        for node, (state, _reason, _since) in sorted(agg.nodes.items()):
            nodes.add_metric([node], 1.0 if state == NODE_STATE_READY else 0.0)
            lost.add_metric([node], 1.0 if state == NODE_STATE_NOT_READY else 0.0)
        yield nodes
        yield lost
        firing = GaugeMetricFamily("mlmesh_alerts_firing", "Alerts firing now", labels=["rule", "severity"])
        counts2: dict[tuple[str, str], int] = {}
        for a in self.engine.active.values():
            if a.state == "firing":
                counts2[(a.rule, a.severity)] = counts2.get((a.rule, a.severity), 0) + 1
        for rule in self.engine.rules:
            firing.add_metric([rule.name, rule.severity], counts2.get((rule.name, rule.severity), 0))
        yield firing
