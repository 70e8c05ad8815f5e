"""The monitor's status and HTML report from a model's state (no broker, no store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from services.monitor.canary import LiveAccuracy
from services.monitor.drift import ModelDrift
from services.monitor.handlers import MonitorHandlers
from services.monitor.join import Join
from services.monitor.metrics import MonitorMetrics
from services.monitor.report import render_report
from services.monitor.watch import ModelWatch
from shared.spec import parse_spec

SPEC = """
name: credit
features: [{name: income}, {name: age}]
label: {values: [good, bad]}
"""
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def watch_with_history() -> ModelWatch:
    spec = parse_spec(SPEC)
    table: dict[str, dict[str, object]] = {}
    watch = ModelWatch(
        model="credit",
        spec=spec,
        champion=1,
        canary=None,
        drift=ModelDrift("credit", 1, None, spec.monitoring),
        join=Join(table, timedelta(hours=1), namespace="credit/"),  # type: ignore[arg-type]
        shadow_join=Join(table, timedelta(hours=1), namespace="credit/shadow/"),  # type: ignore[arg-type]
        live=LiveAccuracy(timedelta(seconds=30)),
    )
    for i in range(600):
        at = T0 + timedelta(seconds=i)
        watch.live.record("credit", 1, "champion", i % 10 != 0 if i < 300 else i % 3 != 0, at)
    watch.mark(T0 + timedelta(seconds=320), "drift", "concept drift (ADWIN, high) <script>")
    watch.mark(T0 + timedelta(seconds=400), "promoted", "v2 promoted by monitor")
    return watch


async def test_status_and_report_say_what_happened() -> None:
    handlers = MonitorHandlers(
        None,  # type: ignore[arg-type]  # the watch is already loaded: no registry, catalog or store read
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        MonitorMetrics.create(CollectorRegistry()),
        {},
    )
    watch = watch_with_history()
    handlers.models["credit"] = watch
    status = await handlers.status("credit")
    assert status is not None and status["champion"] == 1
    [live] = status["live"]
    assert live["labelled"] == 600 and abs(live["accuracy"] - (270 + 200) / 600) < 1e-9
    assert [e["kind"] for e in status["events"]] == ["drift", "promoted"]

    page = render_report(watch, status, T0 + timedelta(hours=1))
    assert page.startswith("<!doctype html>") and page.count("<svg") == 1, "accuracy plot; no reference: no histograms"
    assert "No reference statistics" in page and "v1 champion" in page
    assert "&lt;script&gt;" in page and "<script>" not in page, "event texts are escaped"
