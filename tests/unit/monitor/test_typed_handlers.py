"""The monitor's use-cases on a model with typed features and three classes (FileStore registry).

The card is written directly (the registry does not read the ONNX bytes back for the monitor):
its reference carries a numeric feature, a categorical and a boolean one, and the three classes'
prediction shares and probability histograms -- built here from the models, as the trainer will.
``PredictionsLogged`` rows are typed (a number, a category string, a flag or null).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from services.monitor.handlers import MonitorHandlers
from services.monitor.metrics import MonitorMetrics
from services.monitor.report import render_report
from shared.events import AnnotationSubmitted, DriftDetected, Event, FeatureValue, PredictionsLogged
from shared.reference import (
    CategoryReference,
    ExpectedError,
    FeatureReference,
    FeatureStats,
    PredictionReference,
    Reference,
    histogram,
    probability_histogram,
)
from shared.registry import InputSchema, Registry
from shared.spec import SpecCatalog, apply_spec
from shared.store import FileStore

SPEC = """
name: t
features:
  - {name: amount}
  - {name: colour, type: categorical}
  - {name: member, type: boolean, allow_missing: true}
label: {values: [low, mid, high]}
monitoring: {confirmation_samples: 200}
"""
CLASSES = ["low", "mid", "high"]
COLOURS = {"red": 0.5, "green": 0.3, "blue": 0.2}
MEMBER = {"true": 0.1, "false": 0.9}
T0 = datetime(2026, 7, 1, tzinfo=UTC)


@dataclass
class RecordingPublisher:
    events: list[Event] = field(default_factory=list)

    async def publish(self, event: Event, headers: Any = None) -> None:
        self.events.append(event)

    def drifts(self) -> list[DriftDetected]:
        return [e for e in self.events if isinstance(e, DriftDetected)]


def probabilities(predicted: list[int], rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """The predicted class gets 0.5-0.9, the other two share the rest."""
    top = rng.uniform(0.5, 0.9, size=len(predicted))
    p = np.repeat(((1 - top) / 2)[:, None], 3, axis=1)
    p[np.arange(len(predicted)), predicted] = top
    return p


def reference() -> Reference:
    rng = np.random.default_rng(0)
    amounts = rng.normal(100, 20, size=5000)
    predicted = rng.integers(0, 3, size=3000).tolist()
    proba = probabilities(predicted, rng)
    return Reference(
        features={"amount": FeatureReference(stats=FeatureStats.of(amounts), histogram=histogram(amounts))},
        predictions=PredictionReference(
            label_distribution={c: 1 / 3 for c in CLASSES},
            probability_histograms={c: probability_histogram(proba[:, k]) for k, c in enumerate(CLASSES)},
        ),
        expected_error=ExpectedError.of(0.9, 1000),
        categories={
            "colour": CategoryReference(shares=COLOURS, rows=5000),
            "member": CategoryReference(shares=MEMBER, missing=0.05, rows=5000),
        },
    )


def register_card(store: FileStore, model: str) -> int:
    schema = InputSchema(
        features=["amount", "colour", "member"],
        label_values=CLASSES,  # type: ignore[arg-type]
        types=["numeric", "categorical", "boolean"],
        layout="columns",
        categories={"colour": list(COLOURS)},
    )
    card = Registry(store).register_built(
        model,
        b"onnx",
        schema,
        reference(),
        "HistGradientBoostingClassifier",
        "test",
        window={"rows": 5000},
        training_rows=5000,
        holdout_rows=1000,
        metrics={"accuracy": 0.9},
    )
    return card.version


def setup(tmp_path: Any) -> tuple[FileStore, MonitorHandlers, RecordingPublisher, CollectorRegistry]:
    store = FileStore(tmp_path / "store")
    apply_spec(store, SPEC)
    Registry(store).set_alias("t", "production", register_card(store, "t"), "test", "first")
    publisher = RecordingPublisher()
    registry = CollectorRegistry()
    handlers = MonitorHandlers(
        Registry(store),
        SpecCatalog(store),
        store,
        publisher,  # type: ignore[arg-type]
        MonitorMetrics.create(registry),
        {},
    )
    return store, handlers, publisher, registry


def traffic(
    start: int,
    n: int,
    rng: np.random.Generator,
    colours: dict[str, float] = COLOURS,
    classes: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
    error: float = 0.1,
) -> tuple[PredictionsLogged, list[AnnotationSubmitted]]:
    """``n`` typed predictions (amount, colour, member -- missing 5 % of the time) and their labels,
    wrong ``error`` of the time."""
    names = list(colours)
    colour = rng.choice(len(names), size=n, p=list(colours.values()))
    member = rng.random(n)
    predicted = rng.choice(3, size=n, p=list(classes)).tolist()
    truth = [p if rng.random() >= error else (p + 1 + int(rng.integers(0, 2))) % 3 for p in predicted]
    rows: list[list[FeatureValue]] = [
        [float(rng.normal(100, 20)), names[colour[i]], None if member[i] < 0.05 else bool(member[i] < 0.145)]
        for i in range(n)
    ]
    at = [T0 + timedelta(seconds=start + i) for i in range(n)]
    ids = [f"p{start + i}" for i in range(n)]
    event = PredictionsLogged(
        model="t",
        version=1,
        variant="champion",
        feature_names=["amount", "colour", "member"],
        classes=CLASSES,
        inference_ids=ids,
        features=rows,
        labels=[CLASSES[p] for p in predicted],
        probabilities=probabilities(predicted, rng).tolist(),
        latency_ms=[1.0] * n,
        predicted_at=at,
    )
    labels = [
        AnnotationSubmitted(
            model="t",
            record_id=f"r{start + i}",
            features=dict(zip(event.feature_names, rows[i], strict=True)),
            label=CLASSES[truth[i]],
            inference_id=ids[i],
            occurred_at=at[i] + timedelta(seconds=20),
        )
        for i in range(n)
    ]
    return event, labels


async def run(handlers: MonitorHandlers, start: int, n: int, rng: np.random.Generator, **kwargs: Any) -> None:
    """In messages of 100 predictions, each followed by its labels."""
    for s in range(start, start + n, 100):
        event, labels = traffic(s, 100, rng, **kwargs)
        await handlers.on_predictions(event)
        for label in labels:
            await handlers.on_annotation(label)


async def test_typed_rows_feed_numeric_and_categorical_drift_and_the_report(tmp_path: Any) -> None:
    store, handlers, publisher, registry = setup(tmp_path)
    rng = np.random.default_rng(1)
    await run(handlers, 0, 4000, rng)
    assert publisher.drifts() == [], "a stable typed stream: no drift"
    watch = handlers.models["t"]
    assert sorted(watch.drift.categorical) == ["colour", "member"] and watch.drift.features == ["amount"]
    assert set(watch.recent_categories["member"]) == {"true", "false"} and len(watch.recent["amount"]) == 2000
    assert registry.get_sample_value("driftloop_monitor_psi", {"model": "t", "feature": "colour"}) is not None
    assert (
        registry.get_sample_value("driftloop_monitor_unseen_category_ratio", {"model": "t", "feature": "colour"}) == 0
    )

    # blue's share doubles, and a colour training never saw takes 5 % of the traffic
    shifted = {"red": 0.3, "green": 0.2, "blue": 0.4, "purple": 0.05}
    shifted = {k: v / sum(shifted.values()) for k, v in shifted.items()}
    await run(handlers, 4000, 3000, rng, colours=shifted)
    data = [d for d in publisher.drifts() if d.kind == "data"]
    assert sorted((d.feature, d.detector) for d in data) == [("colour", "PSI"), ("colour", "unseen")]
    assert all(d.model_version == 1 and d.statistic > d.threshold for d in data)
    assert [d for d in publisher.drifts() if d.kind != "data"] == [], "the predictions did not change"
    unseen = registry.get_sample_value("driftloop_monitor_unseen_categories_total", {"model": "t", "feature": "colour"})
    assert unseen is not None and 100 < unseen < 200
    assert registry.get_sample_value("driftloop_monitor_unseen_category_ratio", {"model": "t", "feature": "colour"})
    assert "purple" in watch.recent_categories["colour"]

    status = await handlers.status("t")
    assert status is not None
    assert status["drift"]["categorical"]["colour"]["buckets"] == ["red", "green", "blue"]
    assert {"kind": "data", "feature": "unseen:colour"} in status["drift"]["latched"]
    page = render_report(watch, status, T0 + timedelta(hours=3))
    assert 'aria-label="amount histogram"' in page
    assert 'aria-label="colour categories"' in page and 'aria-label="member categories"' in page
    assert ">unseen<" in page and "purple" not in page.split("What happened")[0].split("colour categories")[0]

    # the checkpoint carries the categorical window and latches to another replica
    assert await handlers.checkpoint() == 1
    again = MonitorHandlers(
        Registry(store),
        SpecCatalog(store),
        store,
        publisher,  # type: ignore[arg-type]
        MonitorMetrics.create(CollectorRegistry()),
        {},
    )
    restored = await again.watch_of("t")
    assert restored is not None and restored.drift.state() == watch.drift.state()
    assert list(restored.recent_categories["colour"]) == list(watch.recent_categories["colour"])


async def test_three_classes_prediction_and_concept_drift(tmp_path: Any) -> None:
    _, handlers, publisher, _ = setup(tmp_path)
    rng = np.random.default_rng(2)
    await run(handlers, 0, 4000, rng)
    assert publisher.drifts() == []
    watch = handlers.models["t"]
    assert watch.live.totals("t", 1, "champion").labelled == 4000
    assert 0.85 < watch.live.totals("t", 1, "champion").accuracy < 0.95

    await run(handlers, 4000, 2000, rng, classes=(0.15, 0.15, 0.7))  # "high" predicted far more often
    prediction = [d for d in publisher.drifts() if d.kind == "prediction"]
    assert prediction and prediction[0].feature == "label"
    assert {d.feature for d in prediction} <= {"label", "proba:low", "proba:mid", "proba:high"}

    await run(handlers, 6000, 3000, rng, classes=(0.15, 0.15, 0.7), error=0.45)  # wrong almost half the time
    concept = [d for d in publisher.drifts() if d.kind == "concept"]
    assert concept and concept[0].model_version == 1 and concept[0].change_started_at is not None
    assert (concept[0].change_started_at - T0).total_seconds() > 5000, "dated after the error rose"
    assert [d for d in publisher.drifts() if d.kind == "data"] == [], "the features did not change"
