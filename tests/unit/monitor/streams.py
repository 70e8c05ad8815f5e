"""What the monitor's unit tests feed it: times, references, River's SEA stream, one-row batches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from river.datasets import synth

from services.monitor.alarms import Alarm
from services.monitor.drift import DriftUpdate, ModelDrift
from shared.events import Label
from shared.reference import FeatureReference, FeatureStats, PredictionReference, Reference, ReferenceHistogram

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def histogram(values: np.ndarray[Any, Any], bins: int = 10) -> ReferenceHistogram:
    """Quantile bins, as the trainer builds the reference."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
    counts = np.bincount(np.searchsorted(edges[1:-1], values, side="right"), minlength=edges.size - 1)
    return ReferenceHistogram(edges=[float(e) for e in edges], proportions=[float(c) / values.size for c in counts])


def reference_of(columns: dict[str, np.ndarray[Any, Any]], labels: dict[str, float]) -> Reference:
    features = {
        name: FeatureReference(stats=FeatureStats.of(values), histogram=histogram(values))
        for name, values in columns.items()
    }
    return Reference(
        features=features, predictions=PredictionReference(label_distribution=labels, probability_histograms={})
    )


def observe_row(
    drift: ModelDrift,
    features: Mapping[str, float | None],
    label: Label,
    probabilities: Mapping[str, float],
    when: datetime,
    version: int | None = None,
) -> DriftUpdate:
    """One logged prediction, as a message of one row."""
    names = list(features)
    classes = list(probabilities)
    return drift.observe_predictions(
        names,
        np.array([[np.nan if features[n] is None else features[n] for n in names]], dtype=np.float64),
        [label],
        [[probabilities[c] for c in classes]] if classes else np.empty((1, 0)),
        classes,
        [when],
        version=version,
    )


def sea_reference(seed: int) -> Reference:
    rows = np.array([[x[0], x[1], x[2]] for x, _ in synth.SEA(variant=0, noise=0.1, seed=seed + 500).take(4000)])
    share = float(np.mean(rows[:, 0] + rows[:, 1] > 8))
    return reference_of({f"x{i}": rows[:, i] for i in range(3)}, {"True": share, "False": 1 - share})


def sea_stream(seed: int, stable: int, variant: int | None, after: int) -> Iterator[tuple[dict[str, float], bool]]:
    """Variant 0 for ``stable`` samples, then ``variant`` (a concept switch) for ``after`` samples.

    SEA's features only decide the label; their distribution never changes.
    """
    parts = [synth.SEA(variant=0, noise=0.1, seed=seed).take(stable)]
    if variant is not None:
        parts.append(synth.SEA(variant=variant, noise=0.1, seed=seed + 1000).take(after))
    for part in parts:
        for x, y in part:
            features: dict[Any, float] = x  # River keys SEA's features 0, 1, 2
            yield {f"x{k}": v for k, v in features.items()}, bool(y)


def run_sea(drift: ModelDrift, stream: Iterator[tuple[dict[str, float], bool]]) -> list[tuple[int, Alarm]]:
    """A fixed classifier (variant 0's concept) serves every row; its 0/1 errors are joined at once."""
    alarms: list[tuple[int, Alarm]] = []
    for i, (x, y) in enumerate(stream):
        predicted = x["x0"] + x["x1"] > 8
        for update in (
            observe_row(drift, x, str(predicted), {}, at(i)),
            drift.observe_outcome(predicted != y, at(i)),
        ):
            alarms.extend((i, a) for a in update.alarms)
    return alarms
