"""The monitor's landing page from status dicts (pure), and the per-model overview the handlers
gather for it from a FileStore (a model watched here, one only checkpointed, one never seen)."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from services.monitor.handlers import MonitorHandlers
from services.monitor.landing import drift_state, live_figure, render_landing
from services.monitor.metrics import MonitorMetrics
from services.monitor.watch import state_key
from shared.registry import Registry
from shared.spec import SpecCatalog, apply_spec
from shared.store import FileStore
from tests.unit.monitor.test_report import SPEC as CREDIT_SPEC
from tests.unit.monitor.test_report import watch_with_history

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)

CLASSIFIER: dict[str, Any] = {
    "model": "credit",
    "task": "classification",
    "champion": 3,
    "canary": 4,
    "live": [
        {"version": 3, "variant": "champion", "labelled": 1500, "accuracy": 0.93125, "window_accuracy": 0.9},
        {"version": 4, "variant": "canary", "labelled": 120, "accuracy": 0.95, "window_accuracy": 0.95},
        {"version": 2, "variant": "champion", "labelled": 900, "accuracy": 0.71, "window_accuracy": 0.7},
    ],
    "join": {"hits": 1620, "misses": 3, "hit_rate": 0.998, "held": 40, "unscored": 0},
    "expected_error": {"rate": 0.06, "rows": 400, "upper": 0.08, "threshold": None},
    "canary_trial": {"champion": 3, "canary": 4, "canary_labelled": 120, "needed": 150},
    "drift": {
        "predictions": 5000,
        "labelled": 1620,
        "pending": [],
        "latched": [{"kind": "data", "feature": "income"}],
        "last": {
            "kind": "data",
            "feature": "income",
            "detector": "kswin",
            "severity": "high",
            "occurred_at": "2026-06-01T11:40:00Z",
        },
    },
    "events": [
        {"at": "2026-06-01T09:00:00Z", "kind": "promoted", "text": "v3: gate passed"},
        {"at": "2026-06-01T10:00:00Z", "kind": "retrain", "text": "v4 trained (drift), gate passed"},
        {"at": "2026-06-01T11:00:00Z", "kind": "canary_started", "text": "v4: canary at 10%"},
        {"at": "2026-06-01T11:40:00Z", "kind": "drift", "text": "data drift on income (kswin, high)"},
    ],
}

REGRESSOR: dict[str, Any] = {
    "model": "house-prices",
    "task": "regression",
    "champion": 1,
    "canary": None,
    "live": [
        {"version": 1, "variant": "champion", "labelled": 40, "mae": 2.04567, "rmse": 3.1, "expected_mae": 1.9},
    ],
    "join": {"hits": 40, "misses": 0, "hit_rate": 1.0, "held": 0, "unscored": 0},
    "expected_error": {"rate": 0.2, "rows": 400, "upper": 0.24, "threshold": 3.0},
    "canary_trial": None,
    "drift": {
        "predictions": 40,
        "labelled": 40,
        "pending": [{"kind": "concept", "feature": None, "detector": "adwin", "fresh_samples": 1234}],
        "latched": [],
        "last": None,
    },
    "events": [],
}


def row_of(page: str, model: str) -> str:
    """The HTML of one model's row."""
    found = re.search(rf'<tr id="model-{re.escape(model)}">(.*?)</tr>', page, re.S)
    assert found, f"no row for {model}"
    return found.group(1)


def test_each_model_has_its_versions_figures_drift_and_events() -> None:
    page = render_landing([CLASSIFIER, REGRESSOR], NOW)
    assert page.startswith("<!doctype html>") and "<script" not in page, "plain HTML, no script"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "@media (max-width: 760px)" in page, "the table becomes cards on a phone"
    assert "2 models" in page and "1 with a confirmed drift" in page and "1 canary on trial" in page

    credit = row_of(page, "credit")
    assert '<a class="name" href="/report/credit">credit</a>' in credit
    assert 'href="/v1/models/credit/status"' in credit
    assert ">v3<" in credit and "v4 <small>trial: 120 of 150 labelled</small>" in credit
    assert "accuracy 0.931 over 1,500 labelled" in credit and "holdout accuracy 0.940" in credit
    assert "canary</small> accuracy 0.950 over 120 labelled" in credit
    assert "0.710" not in credit, "a former champion's figures are not the live ones"
    assert '<span class="badge drift">drift confirmed</span>' in credit
    assert (
        "latched: data on income" in credit and "last: data on income drift by kswin, high, 2026-06-01 11:40" in credit
    )
    shown = re.findall(r"<li>(.*?)</li>", credit)
    assert len(shown) == 3 and "drift" in shown[0] and "canary started" in shown[1], "newest first, three of them"
    assert "v3: gate passed" not in credit

    house = row_of(page, "house-prices")
    assert "MAE 2.046 over 40 labelled" in house and "holdout MAE 1.9" in house
    assert '<span class="badge confirming">confirming a drift</span>' in house
    assert "concept (adwin, 1,234 fresh samples)" in house
    assert '<td data-label="Canary">none</td>' in house and "nothing yet" in house


def test_every_value_is_escaped_and_names_in_links_are_quoted() -> None:
    hostile = copy.deepcopy(CLASSIFIER)
    hostile["model"] = 'a<b>"&c'
    hostile["events"] = [{"at": "2026-06-01T11:40:00Z", "kind": "drift", "text": "<script>alert(1)</script>"}]
    hostile["drift"]["latched"] = [{"kind": "data", "feature": "<img src=x>"}]
    page = render_landing([hostile], NOW)
    assert "<script>" not in page and "<img" not in page and '<b>"&c' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "data on &lt;img src=x&gt;" in page
    assert 'href="/report/a%3Cb%3E%22%26c"' in page and "a&lt;b&gt;&quot;&amp;c</a>" in page


def test_a_model_without_traffic_says_what_is_missing() -> None:
    fresh: dict[str, Any] = {
        "model": "new",
        "task": "regression",
        "champion": None,
        "canary": None,
        "live": [],
        "expected_error": None,
        "canary_trial": None,
        "drift": {"predictions": 0, "labelled": 0, "pending": [], "latched": [], "last": None},
        "events": [],
    }
    row = row_of(render_landing([fresh], NOW), "new")
    assert '<td data-label="Champion">none</td>' in row
    assert "no labelled predictions yet: MAE appears once ground truth arrives" in row
    assert '<span class="badge quiet">no traffic yet</span>' in row


def test_no_models_says_how_to_add_one() -> None:
    page = render_landing([], NOW)
    assert "No models yet" in page and "<code>driftloop specs apply model.yaml</code>" in page
    assert "<table" not in page and "0 models" in page


def test_figures_and_drift_state_read_the_status_rows() -> None:
    assert live_figure({"accuracy": None, "labelled": 0}) == "accuracy n/a over 0 labelled"
    assert drift_state({"latched": [], "pending": [], "predictions": 10, "labelled": 0}) == ("stable", "stable")


def handlers_on(store: FileStore) -> MonitorHandlers:
    """Handlers over ``store``; nothing is published by reading."""
    return MonitorHandlers(
        Registry(store),
        SpecCatalog(store),
        store,
        None,  # type: ignore[arg-type]
        MonitorMetrics.create(CollectorRegistry()),
        {},
    )


async def test_overview_lists_every_spec_and_keeps_only_its_own_watches(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    apply_spec(store, CREDIT_SPEC)
    for name in ("elsewhere", "unseen"):
        apply_spec(store, CREDIT_SPEC.replace("name: credit", f"name: {name}"))
    other_replica = handlers_on(store)
    watch = await other_replica.watch_of("elsewhere")
    assert watch is not None
    watch.mark(NOW - timedelta(minutes=5), "retrain", "v1 trained (first data), gate passed")
    await other_replica.checkpoint()
    assert store.exists(state_key("elsewhere"))

    handlers = handlers_on(store)
    handlers.models["credit"] = watch_with_history()  # the model this replica watches
    statuses = await handlers.overview()
    assert [s["model"] for s in statuses] == ["credit", "elsewhere", "unseen"]
    credit, elsewhere, unseen = statuses
    assert credit["champion"] == 1 and credit["live"][0]["labelled"] == 600
    assert [e["text"] for e in elsewhere["events"]] == ["v1 trained (first data), gate passed"], "from its checkpoint"
    assert unseen["champion"] is None and unseen["events"] == []
    assert set(handlers.models) == {"credit"}, "watches read for the page are not kept (nor checkpointed)"
    assert await handlers.checkpoint(only_dirty=False) == 1

    page = render_landing(statuses, NOW)
    for name in ("credit", "elsewhere", "unseen"):
        assert f'href="/report/{name}"' in page
