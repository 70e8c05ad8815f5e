"""The Grafana dashboard and provisioning: every query names series the services really export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.deployment import COMPOSE_FILE, DASHBOARD, DEPLOY
from tests.deploy.exported_metrics import Metric, exported_series

METRIC = re.compile(r"\b(driftloop_[A-Za-z0-9_:]+)\b\s*(\{[^}]*\})?")
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# What the dashboard must show (issue 7): a series for each of these.
REQUIRED_SERIES = {
    "request rate": "driftloop_inference_requests_total",
    "latency": "driftloop_inference_request_seconds_bucket",
    "live accuracy": "driftloop_monitor_live_accuracy_ratio",
    "drift statistics": "driftloop_monitor_drift_statistic",
    "PSI": "driftloop_monitor_psi",
    "drift detections": "driftloop_monitor_drift_detections_total",
    "serving versions": "driftloop_inference_serving_version",
    "rollouts": "driftloop_monitor_canary_verdicts_total",
    "prediction-log health": "driftloop_inference_prediction_log_lost",
    "ingest accepted": "driftloop_ingest_accepted_records_total",
    "ingest rejected": "driftloop_ingest_rejected_records_total",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


@pytest.fixture(scope="module")
def series() -> dict[str, Metric]:
    return exported_series()


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, PromQL, legend) of every panel target, template variable and annotation."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target.get("expr", ""), target.get("legendFormat", "")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            yield f"variable ${variable['name']}", query["query"] if isinstance(query, dict) else query, ""
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"], annotation.get("textFormat", "")


def labels_of(expr: str, series: dict[str, Metric]) -> set[str]:
    labels: set[str] = set()
    for match in METRIC.finditer(expr):
        metric = series.get(match.group(1))
        if metric is not None:
            labels |= metric.series()[match.group(1)]
    return labels


def test_dashboard_is_valid_json_with_data_panels(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    data_panels = [p for p in all_panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(data_panels) >= 10
    for panel in data_panels:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r} has an empty query"


def test_every_query_names_an_exported_series(dashboard: dict[str, Any], series: dict[str, Metric]) -> None:
    problems = []
    for where, expr, _ in queries(dashboard):
        names = [m.group(1) for m in METRIC.finditer(expr)]
        if not names:
            problems.append(f"{where}: names no driftloop metric: {expr}")
        for name in names:
            if name not in series:
                problems.append(f"{where}: {name} is not exported by any service")
    assert not problems, "\n".join(problems)


def test_every_label_a_query_uses_exists_on_its_series(dashboard: dict[str, Any], series: dict[str, Metric]) -> None:
    problems = []
    for where, expr, legend in queries(dashboard):
        available = labels_of(expr, series)
        if any(not series[m.group(1)].labels_known for m in METRIC.finditer(expr) if m.group(1) in series):
            continue  # labels of this metric could not be read: names are checked above
        for match in METRIC.finditer(expr):
            if match.group(1) not in series:
                continue  # reported by test_every_query_names_an_exported_series
            own = series[match.group(1)].series()[match.group(1)]
            for label in MATCHER_LABEL.findall(match.group(2) or ""):
                if label not in own:
                    problems.append(f"{where}: {match.group(1)} has no label {label!r}")
        for group in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                if label not in available:
                    problems.append(f"{where}: groups by {label!r}, which none of its series has")
        for label in LEGEND_LABEL.findall(legend):
            if label not in available:
                problems.append(f"{where}: legend uses {{{{{label}}}}}, which none of its series has")
    assert not problems, "\n".join(problems)


def test_dashboard_shows_what_the_loop_needs(dashboard: dict[str, Any]) -> None:
    used = {m.group(1) for _, expr, _ in queries(dashboard) for m in METRIC.finditer(expr)}
    missing = {what: name for what, name in REQUIRED_SERIES.items() if name not in used}
    assert not missing, f"the dashboard shows nothing for {missing}"


def test_latency_panels_are_quantiles_over_buckets(dashboard: dict[str, Any]) -> None:
    for where, expr, _ in queries(dashboard):
        if "_bucket" in expr:
            assert "histogram_quantile(" in expr, f"{where}: buckets outside histogram_quantile: {expr}"
            assert re.search(r"\bby\s*\([^)]*\ble\b", expr), f"{where}: quantile not grouped by le: {expr}"


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"panel {panel['title']!r} is wider than the grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]!r} and {panel['title']!r} overlap"
                cells[(x, y)] = panel["title"]


def test_panels_use_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["current"]["value"] == source["uid"]
    for panel in all_panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{variable['name']}}}"}, panel["title"]


def test_compose_mounts_the_provisioning_where_the_provider_looks() -> None:
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/driftloop.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == path
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{path}/{DASHBOARD.name}"
