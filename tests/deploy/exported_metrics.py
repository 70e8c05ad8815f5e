"""The Prometheus series the services export, read from their own metrics modules.

Each ``services/<name>/metrics.py`` builds its metrics with ``<Name>Metrics.create(registry)``;
building them on a fresh registry yields every metric's type and label names without running
anything. While the monitor's module does not exist yet, its metrics come from the list agreed
for it (MONITOR_AGREED).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

SERVICES = ("inference", "ingest", "monitor", "trainer")

# name (as prometheus_client spells it: a Counter without its _total), type, labels
MONITOR_AGREED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("driftloop_monitor_live_accuracy_ratio", "gauge", ("model", "version", "variant")),
    ("driftloop_monitor_error_rate_ratio", "gauge", ("model", "version", "variant")),
    ("driftloop_monitor_labelled_predictions", "counter", ()),
    ("driftloop_monitor_predictions", "counter", ("model", "variant")),
    ("driftloop_monitor_drift_statistic", "gauge", ("model", "kind", "feature")),
    ("driftloop_monitor_psi", "gauge", ("model", "feature")),
    ("driftloop_monitor_drift_detections", "counter", ("model", "kind", "severity")),
    ("driftloop_monitor_suppressed_alarms", "counter", ()),
    ("driftloop_monitor_label_lag_seconds", "histogram", ()),
    ("driftloop_monitor_join_hits", "counter", ()),
    ("driftloop_monitor_join_misses", "counter", ()),
    ("driftloop_monitor_canary_verdicts", "counter", ("model", "action")),
)

# The series a metric family exposes, by type (``_created`` samples are left out: not queried).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "info": ("_info",),
    "enum": ("",),
}


@dataclass(frozen=True)
class Metric:
    """One metric family: its name as prometheus_client keeps it, its type and label names."""

    service: str
    name: str
    type: str
    labels: frozenset[str]
    labels_known: bool = True

    def series(self) -> dict[str, frozenset[str]]:
        """Every series name this family exposes, with the labels each carries."""
        out = {}
        for suffix in SUFFIXES[self.type]:
            extra = {"le"} if suffix == "_bucket" else {"quantile"} if self.type == "summary" and not suffix else set()
            out[self.name + suffix] = self.labels | extra
        return out


def _metric_objects(value: Any, depth: int = 0) -> Iterator[MetricWrapperBase]:
    """Metric objects held by a metrics container (dataclass fields, dicts, lists)."""
    if isinstance(value, MetricWrapperBase):
        yield value
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            yield from _metric_objects(item, depth + 1)
    elif depth < 3 and isinstance(value, list | tuple):
        for item in value:
            yield from _metric_objects(item, depth + 1)
    elif depth < 3 and hasattr(value, "__dict__") and not isinstance(value, type):
        for item in vars(value).values():
            yield from _metric_objects(item, depth + 1)


def metrics_of(service: str) -> list[Metric]:
    """The metrics ``services/<service>/metrics.py`` registers (the agreed list for a monitor without one)."""
    module_name = f"services.{service}.metrics"
    if importlib.util.find_spec(module_name) is None:
        if service == "monitor":
            return [Metric(service, n, t, frozenset(labels)) for n, t, labels in MONITOR_AGREED]
        raise AssertionError(f"{module_name} does not exist")
    module = importlib.import_module(module_name)
    factories = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and value.__module__ == module.__name__ and callable(getattr(value, "create", None))
    ]
    assert factories, f"{module_name} has no class with create(registry)"
    found: list[Metric] = []
    for factory in factories:
        registry = CollectorRegistry()
        holder = factory.create(registry)
        labels = {obj._name: frozenset(obj._labelnames) for obj in _metric_objects(holder)}
        for family in registry.collect():
            known = family.name in labels
            found.append(Metric(service, family.name, family.type, labels.get(family.name, frozenset()), known))
    assert found, f"{module_name} registered no metric"
    return found


def exported_series() -> dict[str, Metric]:
    """Every series name all services export, mapped to its family."""
    series: dict[str, Metric] = {}
    for service in SERVICES:
        for metric in metrics_of(service):
            for name in metric.series():
                series[name] = metric
    return series
