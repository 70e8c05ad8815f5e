"""The alerting rules: valid for promtool, firing when they should, reading metrics that exist.

deploy/prometheus/alerts.yml is what docker-compose's Prometheus loads; deploy/k8s/prometheus-rules.yaml
carries the same groups for the Prometheus Operator. Both go through `promtool check rules`
(Debian's ``prometheus`` package); `promtool test rules` feeds synthetic series to every alert
and compares the alerts and their rendered annotations with what an operator should get; and
every metric an expression reads, with every label it matches or groups on, must be one the
services really export (tests/deploy/exported_metrics.py, as for the Grafana dashboard).
"""

from __future__ import annotations

import re
import subprocess
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from shared.events import DeploymentChanged, DriftDetected
from tests.deploy.deployment import COMPOSE_FILE, DEPLOY, K8S_DIR, PROMETHEUS_CONFIG, SERVICE_PORTS, require_tool
from tests.deploy.exported_metrics import Metric, exported_series

ALERTS_FILE = DEPLOY / "prometheus" / "alerts.yml"
RULE_RESOURCE = K8S_DIR / "prometheus-rules.yaml"

# Series Prometheus makes itself for every target, and the labels its scrape adds to every series.
PROMETHEUS_SERIES = {"up": frozenset({"job", "instance"})}
TARGET_LABELS = frozenset({"job", "instance"})

SELECTOR = re.compile(r"\b(driftloop_[A-Za-z0-9_:]+|up)\b\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TEMPLATE_LABEL = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
TEMPLATE_VALUE = re.compile(r"\{\{\s*\$value\b[^}]*\}\}")

# Label values the rules match on, from where the services take them.
KNOWN_VALUES: dict[tuple[str, str], set[str]] = {
    ("driftloop_monitor_canary_verdicts_total", "action"): set(
        typing.get_args(DeploymentChanged.model_fields["action"].annotation)
    ),
    ("driftloop_monitor_drift_detections_total", "severity"): set(
        typing.get_args(DriftDetected.model_fields["severity"].annotation)
    ),
    ("up", "job"): set(SERVICE_PORTS),
}

# The operator's schema for a PrometheusRule (openAPIV3Schema of the CRD
# prometheusrules.monitoring.coreos.com, prometheus-operator v0.82.2), transcribed with
# additionalProperties: false: the API server silently prunes fields its schema does not know, so a
# misspelt `annotation:` or `expression:` would vanish on apply instead of failing.
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": STRING_MAP,
                "annotations": STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "labels": STRING_MAP,
                            "limit": {"type": "integer"},
                            # the CRD's ^(?i)(abort|warn)?$ with the flag first, as Python's re wants it
                            "partial_response_strategy": {"type": "string", "pattern": r"(?i)^(abort|warn)?$"},
                            "query_offset": {"type": "string", "pattern": DURATION},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                        "for": {"type": "string", "pattern": DURATION},
                                        "keep_firing_for": {"type": "string", "minLength": 1, "pattern": DURATION},
                                        "labels": STRING_MAP,
                                        "annotations": STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    data: dict[str, Any] = yaml.safe_load(ALERTS_FILE.read_text())
    assert set(data) == {"groups"}, "a rules file holds only `groups`"
    result: list[dict[str, Any]] = data["groups"]
    return result


@pytest.fixture(scope="module")
def rule_resource() -> dict[str, Any]:
    resource: dict[str, Any] = yaml.safe_load(RULE_RESOURCE.read_text())
    return resource


@pytest.fixture(scope="module")
def series() -> dict[str, Metric]:
    return exported_series()


def alerts(groups: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for group in groups:
        yield from group["rules"]


def selectors(expr: str) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, operator, value)]) of every series selector in ``expr``."""
    for match in SELECTOR.finditer(expr):
        yield match.group(1), MATCHER.findall(match.group(2) or "")


def labels_of(name: str, series: dict[str, Metric]) -> frozenset[str]:
    """The labels a stored series of ``name`` carries: its own and the scrape's."""
    if name in PROMETHEUS_SERIES:
        return PROMETHEUS_SERIES[name]
    return series[name].series()[name] | TARGET_LABELS


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


# --- the files -------------------------------------------------------------------------------


def test_promtool_accepts_the_rules_file(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", str(ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_rules_of_the_prometheus_rule(
    promtool: str, rule_resource: dict[str, Any], tmp_path: Path
) -> None:
    extracted = tmp_path / "prometheus-rules.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule_resource["spec"]["groups"]}, sort_keys=False))
    result = run_promtool(promtool, "check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_loads_the_rules_file(promtool: str) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == [ALERTS_FILE.name]  # beside prometheus.yml, as mounted in compose
    result = run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout, result.stdout


def test_compose_mounts_the_rules_file_beside_the_config() -> None:
    prometheus = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["prometheus"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus["volumes"]


def test_the_prometheus_rule_carries_the_same_groups(
    groups: list[dict[str, Any]], rule_resource: dict[str, Any]
) -> None:
    assert rule_resource["spec"]["groups"] == groups, "edit deploy/prometheus/alerts.yml and the PrometheusRule alike"


def test_the_prometheus_rule_matches_the_operator_schema(rule_resource: dict[str, Any]) -> None:
    jsonschema.validate(rule_resource, PROMETHEUS_RULE_SCHEMA)
    assert rule_resource["metadata"]["namespace"] == "driftloop"
    names = [group["name"] for group in rule_resource["spec"]["groups"]]
    assert len(names) == len(set(names)), "group names are the list's map key in the CRD"


def test_the_schema_rejects_a_misspelt_rule(rule_resource: dict[str, Any]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(rule_resource))
    rule = broken["spec"]["groups"][0]["rules"][0]
    rule["annotation"] = rule.pop("annotations")
    with pytest.raises(jsonschema.ValidationError, match="annotation"):
        jsonschema.validate(broken, PROMETHEUS_RULE_SCHEMA)
    broken["spec"]["groups"][0]["rules"][0] = {"alert": "X", "expr": "up", "for": "five minutes"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, PROMETHEUS_RULE_SCHEMA)


def test_the_prometheus_rule_stays_out_of_the_kustomization() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert RULE_RESOURCE.name not in kustomization["resources"], (
        "a PrometheusRule needs the operator's CRD: in the kustomization, `kubectl apply -k` fails without it"
    )


# --- what the rules say ----------------------------------------------------------------------


def test_every_alert_is_complete(groups: list[dict[str, Any]]) -> None:
    problems = []
    for rule in alerts(groups):
        name = rule.get("alert")
        if not name:
            problems.append(f"not an alert: {rule.get('record')}")
            continue
        if "for" not in rule:
            problems.append(f"{name}: no `for:`")
        if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
            problems.append(f"{name}: severity must be critical or warning")
        missing = {"summary", "description", "metric"} - set(rule.get("annotations", {}))
        if missing:
            problems.append(f"{name}: no {sorted(missing)} annotation")
    assert not problems, "\n".join(problems)


def test_every_alert_reads_metrics_the_services_export(groups: list[dict[str, Any]], series: dict[str, Metric]) -> None:
    problems = []
    for rule in alerts(groups):
        for name, _ in selectors(rule["expr"]):
            if name not in series and name not in PROMETHEUS_SERIES:
                problems.append(f"{rule['alert']}: {name} is not exported by any service")
    assert not problems, "\n".join(problems)


def test_every_alert_names_the_metrics_it_reads(groups: list[dict[str, Any]]) -> None:
    for rule in alerts(groups):
        read = {name for name, _ in selectors(rule["expr"])}
        assert read, f"{rule['alert']} reads no metric"
        named = {part.strip() for part in rule["annotations"]["metric"].split(",")}
        assert named == read, f"{rule['alert']}: annotation names {sorted(named)}, expression reads {sorted(read)}"


def test_every_label_an_alert_uses_exists_on_its_series(
    groups: list[dict[str, Any]], series: dict[str, Metric]
) -> None:
    problems = []
    for rule in alerts(groups):
        expr, where = rule["expr"], rule["alert"]
        used = [(name, matchers) for name, matchers in selectors(expr) if name in series or name in PROMETHEUS_SERIES]
        available: set[str] = set()
        for name, matchers in used:
            own = labels_of(name, series)
            available |= own
            for label, operator, value in matchers:
                if label not in own:
                    problems.append(f"{where}: {name} has no label {label!r}")
                known = KNOWN_VALUES.get((name, label))
                if known is not None:
                    values = value.split("|") if operator in ("=~", "!~") else [value]
                    problems += [f"{where}: {name}{{{label}}} is never {v!r}" for v in values if v not in known]
        for group in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                if label not in available:
                    problems.append(f"{where}: groups or matches on {label!r}, which none of its series has")
    assert not problems, "\n".join(problems)


def test_model_alerts_say_where_to_look(groups: list[dict[str, Any]]) -> None:
    for rule in alerts(groups):
        description = rule["annotations"]["description"]
        if "$labels.model" in rule["annotations"]["summary"]:
            assert "`driftloop " in description, f"{rule['alert']}: no driftloop command to run"
            assert "{{ $labels.model }}" in description, f"{rule['alert']}: does not say which model"


def test_every_situation_of_the_issue_has_an_alert(groups: list[dict[str, Any]]) -> None:
    names = {rule["alert"] for rule in alerts(groups)}
    situations = {
        "a confirmed drift": "DriftloopDriftConfirmed",
        "a canary rolled back": "DriftloopCanaryRolledBack",
        "a retrain failing": "DriftloopRetrainFailing",
        "a retrain waiting too long": "DriftloopRetrainWaiting",
        "consumer lag": "DriftloopMonitorFallingBehind",
        "dead letters": "DriftloopDeadLetters",
        "an unhealthy service": "DriftloopServiceDown",
        "the prediction journal filling": "DriftloopPredictionJournalFilling",
    }
    missing = {what: name for what, name in situations.items() if name not in names}
    assert not missing, f"no alert for {missing}"


# --- promtool test rules: the alerts fire when they should, and only then ----------------------


@dataclass(frozen=True)
class Expect:
    """At ``at``, the alert ``alert`` is firing with exactly these label sets (none: not firing)."""

    at: str
    alert: str
    firing: tuple[dict[str, str], ...] = ()
    value: str = ""  # how the annotations render {{ $value }}, for alerts that show it


@dataclass(frozen=True)
class Scenario:
    name: str
    input: dict[str, str]  # series -> promtool values notation
    expect: tuple[Expect, ...]
    interval: str = "1m"


def scraped(name: str, service: str, instance: str | None = None, **labels: str) -> str:
    """A series as Prometheus stores it from ``service``'s one replica (or the replica ``instance``)."""
    target = {"job": service, "instance": instance or f"{service}:{SERVICE_PORTS[service]}"}
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in {**labels, **target}.items()) + "}"


DRIFTS = "driftloop_monitor_drift_detections_total"
VERDICTS = "driftloop_monitor_canary_verdicts_total"
RUNS = "driftloop_trainer_runs_total"
PENDING = "driftloop_trainer_pending_triggers"
WAITING = "driftloop_trainer_waiting_rows"
SENT = "driftloop_inference_prediction_log_sent"
CONSUMED = "driftloop_monitor_predictions_total"
ALL_UP = {scraped("up", s): "1x600" for s in SERVICE_PORTS}

SCENARIOS = (
    Scenario(
        "a high-severity drift pages, a lower one warns, both clear after the window",
        {
            scraped(DRIFTS, "monitor", model="credit", kind="data", severity="high"): "0 0 0 1x40",
            scraped(DRIFTS, "monitor", model="credit", kind="concept", severity="low"): "0x5 1x40",
        },
        (
            Expect("4m", "DriftloopDriftConfirmed", ({"model": "credit", "kind": "data", "severity": "critical"},)),
            Expect(
                "6m",
                "DriftloopDriftConfirmed",
                (
                    {"model": "credit", "kind": "data", "severity": "critical"},
                    {"model": "credit", "kind": "concept", "severity": "warning"},
                ),
            ),
            Expect("30m", "DriftloopDriftConfirmed"),
        ),
    ),
    Scenario(
        "the first drift after a restart (a new series) fires too",
        {scraped(DRIFTS, "monitor", model="credit", kind="data", severity="medium"): "_x10 1x30"},
        (
            Expect("12m", "DriftloopDriftConfirmed", ({"model": "credit", "kind": "data", "severity": "warning"},)),
            Expect("30m", "DriftloopDriftConfirmed"),
        ),
    ),
    Scenario(
        "a rollback fires, its first one included; a promotion does not",
        {
            scraped(VERDICTS, "monitor", model="credit", action="rolled_back"): "_x2 1x40",
            scraped(VERDICTS, "monitor", model="fraud", action="promoted"): "_x2 1x40",
        },
        (
            Expect("5m", "DriftloopCanaryRolledBack", ({"model": "credit", "severity": "warning"},)),
            Expect("25m", "DriftloopCanaryRolledBack"),
        ),
    ),
    Scenario(
        "a failed run warns; a rejected one is the gate doing its job",
        {
            scraped(RUNS, "trainer", model="credit", outcome="failed"): "_x3 1x100",
            scraped(RUNS, "trainer", model="fraud", outcome="rejected"): "0 1 2x100",
        },
        (
            Expect("5m", "DriftloopRetrainFailed", ({"model": "credit", "severity": "warning"},)),
            Expect("70m", "DriftloopRetrainFailed"),
        ),
    ),
    Scenario(
        "runs that keep failing page, unless one completes",
        {
            scraped(RUNS, "trainer", model="credit", outcome="failed"): "0+1x20",
            scraped(RUNS, "trainer", model="fraud", outcome="failed"): "0+1x20",
            scraped(RUNS, "trainer", model="fraud", outcome="passed"): "0 0 0 1x20",
        },
        (
            Expect("20m", "DriftloopRetrainFailing"),  # two failures in six hours are not yet a pattern
            Expect("60m", "DriftloopRetrainFailing", ({"model": "credit", "severity": "critical"},), value="6"),
        ),
        interval="10m",  # a run every ten minutes: sparse samples do for a rule without `for`
    ),
    Scenario(
        "triggers pending an hour with no run warn; runs, or a wait for labels, do not",
        {
            scraped(PENDING, "trainer", model="credit"): "1x200",
            scraped(WAITING, "trainer", model="credit"): "0x200",
            scraped(PENDING, "trainer", model="fraud"): "2x200",
            scraped(RUNS, "trainer", model="fraud", outcome="passed"): "0+1x200",
            scraped(PENDING, "trainer", model="churn"): "1x200",
            scraped(WAITING, "trainer", model="churn"): "800x200",
        },
        (
            Expect("50m", "DriftloopRetrainWaiting"),
            Expect("70m", "DriftloopRetrainWaiting", ({"model": "credit", "severity": "warning"},), value="1"),
        ),
    ),
    Scenario(
        "a drift run waiting six hours for labels after the change warns",
        {
            scraped(WAITING, "trainer", model="churn"): "800x400",
            scraped(WAITING, "trainer", model="credit"): "0x400",
        },
        (
            Expect("5h", "DriftloopRetrainWaitingForLabels"),
            Expect("6h10m", "DriftloopRetrainWaitingForLabels", ({"model": "churn", "severity": "warning"},), "800"),
        ),
    ),
    Scenario(
        "the monitor consuming a tenth of what inference publishes is lag building up",
        {
            scraped(SENT, "inference"): "0+600x60",
            scraped(CONSUMED, "monitor", model="credit", variant="champion"): "0+60x60",
        },
        (
            Expect("10m", "DriftloopMonitorFallingBehind"),  # pending: not yet for 15 minutes
            Expect("30m", "DriftloopMonitorFallingBehind", ({"severity": "warning"},), value="90%"),
        ),
    ),
    Scenario(
        "a monitor that keeps up does not fire",
        {
            scraped(SENT, "inference"): "0+600x60",
            scraped(CONSUMED, "monitor", model="credit", variant="champion"): "0+590x60",
        },
        (Expect("30m", "DriftloopMonitorFallingBehind"),),
    ),
    Scenario(
        "a monitor that has consumed nothing at all fires",
        {scraped(SENT, "inference"): "0+600x60"},
        (Expect("30m", "DriftloopMonitorFallingBehind", ({"severity": "warning"},), value="100%"),),
    ),
    Scenario(
        "a monitor retrying for ten minutes warns; a past burst does not",
        {
            scraped("driftloop_monitor_handler_retries_total", "monitor", topic="predictions"): "0+3x30",
            scraped("driftloop_monitor_handler_retries_total", "monitor", topic="annotations"): "0 5 9x30",
        },
        (
            Expect("8m", "DriftloopMonitorRetrying"),  # pending: not yet for 10 minutes
            Expect("20m", "DriftloopMonitorRetrying", ({"topic": "predictions", "severity": "warning"},)),
        ),
    ),
    Scenario(
        "dead letters warn, then clear",
        {scraped("driftloop_ingest_dead_letters_total", "ingest"): "0 0 0 2x30"},
        (
            Expect("5m", "DriftloopDeadLetters", ({"job": "ingest", "severity": "warning"},), value="2"),
            Expect("20m", "DriftloopDeadLetters"),
        ),
    ),
    Scenario(
        "a rejection alarm held for fifteen minutes warns",
        {
            scraped("driftloop_ingest_rejection_alarm", "ingest", model="credit"): "1x30",
            scraped("driftloop_ingest_rejection_alarm", "ingest", model="fraud"): "0x30",
        },
        (
            Expect("10m", "DriftloopIngestRejecting"),
            Expect("20m", "DriftloopIngestRejecting", ({"model": "credit", "severity": "warning"},)),
        ),
    ),
    Scenario(
        "spilling to the journal for fifteen minutes warns; losing predictions pages",
        {
            scraped("driftloop_inference_prediction_log_spilled", "inference"): "0+100x30",
            scraped("driftloop_inference_prediction_log_lost", "inference"): "0 0 5x40",
        },
        (
            Expect("10m", "DriftloopPredictionJournalFilling"),
            Expect(
                "20m",
                "DriftloopPredictionJournalFilling",
                ({"job": "inference", "instance": "inference:8000", "severity": "warning"},),
            ),
            Expect(
                "3m",
                "DriftloopPredictionsLost",
                ({"job": "inference", "instance": "inference:8000", "severity": "critical"},),
                value="5",
            ),
            Expect("15m", "DriftloopPredictionsLost"),
        ),
    ),
    Scenario(
        "a version inference cannot load warns",
        {scraped("driftloop_inference_model_load_failures_total", "inference", model="credit"): "_x4 1x30"},
        (
            Expect("6m", "DriftloopModelLoadFailed", ({"model": "credit", "severity": "warning"},)),
            Expect("30m", "DriftloopModelLoadFailed"),
        ),
    ),
    Scenario(
        "every service up: nothing fires",
        ALL_UP,
        (Expect("10m", "DriftloopServiceDown"), Expect("10m", "DriftloopReplicaDown")),
    ),
    Scenario(
        "a service without a target, or whose one target fails, pages",
        {
            scraped("up", "inference"): "1x20",
            scraped("up", "ingest"): "1x20",
            scraped("up", "trainer"): "1 1 0x20",
        },
        (
            Expect("4m", "DriftloopServiceDown"),  # not for 5 minutes yet
            Expect(
                "10m",
                "DriftloopServiceDown",
                (
                    {"service": "monitor", "severity": "critical"},
                    {"service": "trainer", "severity": "critical"},
                ),
            ),
            Expect("10m", "DriftloopReplicaDown"),  # no replica answers: that is the page above
        ),
    ),
    Scenario(
        "one replica of several down warns",
        {**ALL_UP, scraped("up", "inference", instance="10.0.0.7:8000"): "1 1 0x20"},
        (
            Expect(
                "15m",
                "DriftloopReplicaDown",
                ({"job": "inference", "instance": "10.0.0.7:8000", "severity": "warning"},),
            ),
            Expect("15m", "DriftloopServiceDown"),
        ),
    ),
)


def render(template: str, labels: dict[str, str], value: str) -> str:
    """An annotation as Prometheus renders it, for the templates the rules use."""
    text = TEMPLATE_LABEL.sub(lambda m: labels[m.group(1)], template)
    if TEMPLATE_VALUE.search(text):
        assert value, f"the scenario must say how {{{{ $value }}}} renders in: {template[:60]}"
        text = TEMPLATE_VALUE.sub(value, text)
    assert "{{" not in text, f"a template the test does not render: {text}"
    return text


def expected_alert(rules: list[dict[str, Any]], name: str, labels: dict[str, str], value: str) -> dict[str, Any]:
    """What promtool should report for one firing alert: labels and rendered annotations."""
    (rule,) = [r for r in rules if r["alert"] == name and r["labels"].items() <= labels.items()]
    annotations = {key: render(text, labels, value) for key, text in rule["annotations"].items()}
    return {"exp_labels": labels, "exp_annotations": annotations}


def promtool_test(scenario: Scenario, groups: list[dict[str, Any]]) -> dict[str, Any]:
    rules = list(alerts(groups))
    return {
        "rule_files": [str(ALERTS_FILE)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": scenario.interval,
                "input_series": [{"series": s, "values": v} for s, v in scenario.input.items()],
                "alert_rule_test": [
                    {
                        "eval_time": e.at,
                        "alertname": e.alert,
                        "exp_alerts": [expected_alert(rules, e.alert, labels, e.value) for labels in e.firing],
                    }
                    for e in scenario.expect
                ],
            }
        ],
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_promtool_unit_test(promtool: str, groups: list[dict[str, Any]], scenario: Scenario, tmp_path: Path) -> None:
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(promtool_test(scenario, groups), sort_keys=False, width=1000))
    result = run_promtool(promtool, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_exercised() -> None:
    names = {rule["alert"] for rule in alerts(yaml.safe_load(ALERTS_FILE.read_text())["groups"])}
    fired = {e.alert for s in SCENARIOS for e in s.expect if e.firing}
    silent = {e.alert for s in SCENARIOS for e in s.expect if not e.firing}
    assert names <= fired, f"no scenario makes {sorted(names - fired)} fire"
    assert names <= silent, f"no scenario shows {sorted(names - silent)} staying quiet"
