"""The Grafana dashboards and Prometheus rule files are well formed and read only metrics that exist."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
PROMETHEUS = REPO / "deploy" / "prometheus"


def _load_tool():
    spec = importlib.util.spec_from_file_location("observability_refs", REPO / "tools" / "observability_refs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


refs = _load_tool()

# What the services export (name as written in the code -> its labels). Counters keep `_total`,
# histograms are named by family. `service` is one of scheduler, fabric, fabric-agent, storage, trainer,
# gateway, telemetry.
CATALOGUE: dict[str, set[str]] = {
    # every service (mlmesh.common.telemetry, mlmesh.common.events)
    "mlmesh_rpc_requests_total": {"service", "method", "code"},
    "mlmesh_rpc_duration_seconds": {"service", "method"},
    "mlmesh_events_published_total": {"source", "type", "outcome"},
    "mlmesh_events_consumed_total": {"consumer", "type", "outcome"},
    # gateway
    "mlmesh_http_requests_total": {"service", "route", "method", "code"},
    "mlmesh_http_request_duration_seconds": {"service", "route"},
    "mlmesh_gateway_cache_requests_total": {"result"},
    "mlmesh_gateway_cache_errors_total": set(),
    "mlmesh_gateway_rate_limited_total": {"team"},
    "mlmesh_gateway_first_token_seconds": {"front"},
    "mlmesh_gateway_stream_responses_total": {"front"},
    # scheduler
    "mlmesh_scheduler_queue_depth": {"queue", "team"},
    "mlmesh_scheduler_jobs": {"state"},
    "mlmesh_scheduler_oldest_pending_seconds": {"queue"},
    # trainer
    "mlmesh_training_step": {"team", "job_id"},
    "mlmesh_training_loss": {"team", "job_id"},
    "mlmesh_training_tokens_per_second": {"team", "job_id"},
    "mlmesh_training_samples_per_second": {"team", "job_id"},
    "mlmesh_training_mfu_ratio": {"team", "job_id"},
    "mlmesh_training_eta_seconds": {"team", "job_id"},
    "mlmesh_trainer_restarts_total": {"failure_class"},
    "mlmesh_trainer_runs_finished_total": {"state"},
    # node agent
    "mlmesh_gpu_utilization_ratio": {"node", "gpu"},
    "mlmesh_gpu_memory_used_bytes": {"node", "gpu"},
    "mlmesh_gpu_memory_total_bytes": {"node", "gpu"},
    "mlmesh_gpu_temperature_celsius": {"node", "gpu"},
    "mlmesh_gpu_power_watts": {"node", "gpu"},
    "mlmesh_node_cpu_utilization_ratio": {"node"},
    "mlmesh_node_memory_used_bytes": {"node"},
    # telemetry
    "mlmesh_team_gpu_hours_total": {"team"},
    "mlmesh_team_gpus_in_use": {"team"},
    "mlmesh_team_gpu_utilization_ratio": {"team"},
    "mlmesh_team_jobs_total": {"team", "outcome"},
    "mlmesh_team_queue_wait_seconds": {"team"},
    "mlmesh_node_ready": {"node"},
    "mlmesh_node_not_ready": {"node"},
    "mlmesh_alerts_firing": {"rule", "severity"},
    "mlmesh_telemetry_events_ingested_total": {"stream", "type"},
}
HISTOGRAMS = {
    "mlmesh_rpc_duration_seconds",
    "mlmesh_http_request_duration_seconds",
    "mlmesh_gateway_first_token_seconds",
    "mlmesh_team_queue_wait_seconds",
}
# Labels Prometheus attaches to every series from deploy/prometheus/prometheus.yml.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "component", "kubernetes_node"}
SERVICES = {"scheduler", "fabric", "fabric-agent", "storage", "trainer", "gateway", "telemetry"}

DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))
RULE_FILES = [PROMETHEUS / "recording_rules.yaml", PROMETHEUS / "alert_rules.yaml"]
DURATION = re.compile(r"^((\d+)(y|w|d|h|m|s|ms))+$")


def _panels(panels):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


@pytest.fixture(scope="module")
def referenced() -> dict[str, set[str]]:
    return refs.referenced_metrics(REPO)


# --- dashboards ----------------------------------------------------------------------------------


def test_the_four_dashboards_exist():
    assert {p.name for p in DASHBOARD_FILES} == {"cluster.json", "teams.json", "jobs.json", "inference.json"}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Path):
    board = json.loads(path.read_text())
    assert board["schemaVersion"] >= 38
    assert board["uid"] and len(board["uid"]) <= 40
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${datasource}"
            assert v["query"]["query"].startswith("label_values(")
    panels = list(_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert isinstance(target.get("expr"), str) and target["expr"].strip(), panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
            assert target["expr"].count("{") == target["expr"].count("}"), panel["title"]


def test_dashboard_uids_are_unique():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARD_FILES]
    assert len(uids) == len(set(uids))


# --- rule files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_file_has_the_prometheus_structure(path: Path):
    doc = yaml.safe_load(path.read_text())
    assert set(doc) == {"groups"}
    names = [g["name"] for g in doc["groups"]]
    assert len(names) == len(set(names)), "group names must be unique in a file"
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        if "interval" in group:
            assert DURATION.match(group["interval"])
        assert group["rules"]
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "record" in rule:
                assert set(rule) <= {"record", "expr", "labels"}
                assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["record"])
            else:
                assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
                assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", rule["alert"])
                assert rule["labels"]["severity"] in {"info", "warning", "critical"}
                assert rule["annotations"]["summary"]
                if "for" in rule:
                    assert DURATION.match(rule["for"]), rule["for"]


def test_alerts_mirror_the_telemetry_defaults():
    rules = {r["alert"]: r for g in yaml.safe_load(RULE_FILES[1].read_text())["groups"] for r in g["rules"]}
    assert rules["MlmeshGpuMemoryHigh"]["for"] == "2m" and "> 0.9" in rules["MlmeshGpuMemoryHigh"]["expr"]
    assert rules["MlmeshInferenceP99High"]["for"] == "5m" and "> 0.2" in rules["MlmeshInferenceP99High"]["expr"]
    node = rules["MlmeshNodeNotReady"]
    assert node["for"] == "1m" and "mlmesh_node_not_ready) == 1" in node["expr"]
    assert "[1h]" in rules["MlmeshJobFailureRateHigh"]["expr"] and "> 0.5" in rules["MlmeshJobFailureRateHigh"]["expr"]
    assert "up{" in rules["MlmeshMetricsTargetDown"]["expr"] and "== 0" in rules["MlmeshMetricsTargetDown"]["expr"]


def test_recording_rules_used_are_defined():
    recorded = refs.recorded_names(REPO)
    for file, exprs in refs.expressions(REPO).items():
        for expr in exprs:
            for used in re.findall(r"mlmesh:[a-zA-Z0-9_:]+", expr):
                assert used in recorded, f"{file}: {used} is not recorded by any rule"


def test_prometheus_config_scrapes_pods_by_annotation_and_loads_the_rules():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert set(config["rule_files"]) == {"recording_rules.yaml", "alert_rules.yaml"}
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    pods = jobs["mlmesh-pods"]
    assert pods["kubernetes_sd_configs"][0]["role"] == "pod"
    sources = {tuple(r.get("source_labels", [])) for r in pods["relabel_configs"]}
    assert ("__meta_kubernetes_pod_annotation_prometheus_io_scrape",) in sources
    assert ("__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port") in sources
    targets = {r.get("target_label") for j in jobs.values() for r in j["relabel_configs"]} - {None}
    assert targets <= TARGET_LABELS | {"__address__", "__metrics_path__"}
    assert "node" not in targets  # reserved for the mlmesh node id


# --- the metrics referenced ----------------------------------------------------------------------


def test_every_file_is_covered(referenced):
    expected = {str(p.relative_to(REPO)) for p in DASHBOARD_FILES + RULE_FILES}
    assert set(referenced) == expected
    assert all(referenced.values())


def test_every_referenced_metric_exists(referenced):
    for file, names in referenced.items():
        assert names <= set(CATALOGUE), f"{file} reads unknown metrics: {sorted(names - set(CATALOGUE))}"


def test_every_exported_metric_is_shown_somewhere(referenced):
    shown = set().union(*referenced.values())
    assert set(CATALOGUE) - shown == set()


def test_selectors_match_only_exported_labels():
    for file, exprs in refs.expressions(REPO).items():
        for expr in exprs:
            for metric, labels in refs.label_matchers(expr):
                allowed = CATALOGUE[metric] | TARGET_LABELS | ({"le"} if metric in HISTOGRAMS else set())
                assert labels <= allowed, f"{file}: {metric} has no label {sorted(labels - allowed)}"


def test_service_label_values_exist():
    for file, exprs in refs.expressions(REPO).items():
        for expr in exprs:
            for value in re.findall(r'service="([^"]*)"', expr):
                assert value in SERVICES, f"{file}: no service {value!r}"


# --- tools/observability_refs.py -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("mlmesh_node_ready == 0", {"mlmesh_node_ready"}),
        (
            'histogram_quantile(0.99, sum by (le) (rate(mlmesh_rpc_duration_seconds_bucket{service="gateway"}[5m])))',
            {"mlmesh_rpc_duration_seconds"},
        ),
        (
            "rate(mlmesh_team_queue_wait_seconds_sum[5m]) / rate(mlmesh_team_queue_wait_seconds_count[5m])",
            {"mlmesh_team_queue_wait_seconds"},
        ),
        ("sum(rate(mlmesh_rpc_requests_total[5m]))", {"mlmesh_rpc_requests_total"}),
        ("mlmesh:gateway_cache_hit:ratio_rate5m > 0.5", set()),
        ("mlmesh:gpu_memory_used:ratio{node=~'mlmesh_x_bucket'}", set()),
        ('up{job="mlmesh_pods"} # mlmesh_in_a_comment', set()),
        ('{__name__="mlmesh_training_loss"}', {"mlmesh_training_loss"}),
        ('label_values(mlmesh_training_step{team=~"$team"}, job_id)', {"mlmesh_training_step"}),
    ],
)
def test_names_in(expr, names):
    assert refs.names_in(expr) == names


def test_referenced_metrics_on_a_tree(tmp_path: Path):
    (tmp_path / "deploy/grafana/dashboards").mkdir(parents=True)
    (tmp_path / "deploy/prometheus").mkdir(parents=True)
    board = {
        "templating": {"list": [{"name": "n", "type": "query", "query": {"query": "label_values(mlmesh_a, x)"}}]},
        "panels": [
            {"type": "row", "panels": [{"targets": [{"expr": "rate(mlmesh_b_total[5m])"}]}]},
            {"targets": [{"expr": "histogram_quantile(0.5, rate(mlmesh_c_seconds_bucket[5m])) + mlmesh_rec"}]},
        ],
    }
    (tmp_path / "deploy/grafana/dashboards/x.json").write_text(json.dumps(board))
    rules = {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {"record": "mlmesh_rec", "expr": "sum(mlmesh_d_count)"},
                    {"record": "mlmesh:e:sum", "expr": "sum(mlmesh_e)"},
                    {"alert": "A", "expr": "mlmesh:e:sum > 1 and mlmesh_rec > 0"},
                ],
            }
        ]
    }
    (tmp_path / "deploy/prometheus/x_rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "deploy/prometheus/prometheus.yml").write_text("rule_files: [x_rules.yaml]\n")
    assert refs.referenced_metrics(tmp_path) == {
        "deploy/grafana/dashboards/x.json": {"mlmesh_a", "mlmesh_b_total", "mlmesh_c_seconds"},
        "deploy/prometheus/x_rules.yaml": {"mlmesh_d", "mlmesh_e"},
    }


def _parsed_families() -> set[str]:
    """Family names as Prometheus' text parser yields them for the kinds of metrics mlmesh exports."""
    registry = CollectorRegistry()
    Counter("mlmesh_rpc_requests_total", "c", ["code"], registry=registry).labels("OK").inc()
    Histogram("mlmesh_rpc_duration_seconds", "h", registry=registry).observe(0.1)
    Gauge("mlmesh_node_ready", "g", registry=registry).set(1)

    class Custom:
        def collect(self):
            family = CounterMetricFamily("mlmesh_team_jobs", "c", labels=["team"])
            family.add_metric(["a"], 1)
            yield family

    registry.register(Custom())
    return {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}


def test_family_name_maps_to_the_parsed_families():
    families = _parsed_families()
    assert families >= {"mlmesh_rpc_requests", "mlmesh_rpc_duration_seconds", "mlmesh_node_ready", "mlmesh_team_jobs"}
    assert refs.family_name("mlmesh_rpc_requests_total", families) == "mlmesh_rpc_requests"
    assert refs.family_name("mlmesh_team_jobs_total", families) == "mlmesh_team_jobs"
    assert refs.family_name("mlmesh_rpc_duration_seconds", families) == "mlmesh_rpc_duration_seconds"
    assert refs.family_name("mlmesh_rpc_duration_seconds_bucket", families) == "mlmesh_rpc_duration_seconds"
    assert refs.family_name("mlmesh_rpc_duration_seconds_count", families) == "mlmesh_rpc_duration_seconds"
    assert refs.family_name("mlmesh_node_ready", families) == "mlmesh_node_ready"
    assert refs.family_name("mlmesh_nope_total", families) is None


def test_every_referenced_metric_maps_to_a_family(referenced):
    families = {n.removesuffix("_total") for n in CATALOGUE}  # the parser's names for the catalogue
    for names in referenced.values():
        for name in names:
            assert refs.family_name(name, families) is not None, name
