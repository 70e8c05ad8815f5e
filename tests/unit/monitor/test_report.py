"""The monitor's status and HTML report from a model's state (no broker, no store): the accuracy
plot and timeline, and each feature against its reference (histograms, category bars)."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from services.monitor.canary import LiveAccuracy
from services.monitor.drift import ModelDrift
from services.monitor.handlers import MonitorHandlers
from services.monitor.join import Join
from services.monitor.metrics import MonitorMetrics
from services.monitor.report import render_report
from services.monitor.watch import ModelWatch
from shared.reference import CategoryReference, PredictionReference, Reference
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


STATUS = {
    "champion": 1,
    "canary": None,
    "join": {"hits": 0, "misses": 0, "hit_rate": 0.0, "held": 0},
    "live": [],
    "drift": {"last": None},
    "events": [],
}


def test_categorical_features_are_drawn_as_bars_of_reference_and_live_shares() -> None:
    spec = parse_spec(SPEC)
    shares = {f"c{i:02d}": 0.9 / 14 for i in range(14)} | {"<b>": 0.1}
    reference = Reference(
        features={},
        predictions=PredictionReference(label_distribution={"good": 0.5, "bad": 0.5}, probability_histograms={}),
        categories={
            "city": CategoryReference(shares=shares, rows=2000),
            "member": CategoryReference(shares={"true": 0.25, "false": 0.75}, rows=2000),
        },
    )
    watch = watch_with_history()
    watch.drift = ModelDrift("credit", 1, reference, spec.monitoring)
    watch.recent_categories = {
        "city": deque(["<b>"] * 50 + ["c00"] * 30 + ["c13"] * 10 + ["somewhere new"] * 10),
        "member": deque(["true"] * 50 + ["false"] * 50),
    }
    page = render_report(watch, {**STATUS, "champion": 1}, T0)
    city = page.split('aria-label="city categories"')[1].split("</svg>")[0]
    assert city.count("<rect") == 2 * (12 + 2), "12 categories, the other ones, the unseen: reference and live each"
    assert "&lt;b&gt;" in city and "<b>" not in city, "category names are escaped"
    assert "<title>unseen: 10.0%</title>" in city and "<title>&lt;b&gt;: 50.0%</title>" in city
    assert "unseen categories 10.0%" in page
    member = page.split('aria-label="member categories"')[1].split("</svg>")[0]
    assert member.count("<rect") == 4
    assert "<title>true: 25.0%</title>" in member and "<title>true: 50.0%</title>" in member
    empty = watch_with_history()
    empty.drift = ModelDrift("credit", 1, reference, spec.monitoring)
    assert render_report(empty, {**STATUS, "champion": 1}, T0).count("no live values yet") == 2
