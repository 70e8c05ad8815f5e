"""Reference statistics: what normal looks like, written by the trainer, read by the monitor.

A model card carries one :class:`Reference`: per feature, the training window's summary and a
histogram; for the predictions on the holdout, the share of each class and a histogram of
each class's probability. The trainer builds it (:func:`build_reference`); the monitor bins
live values with the same rule (:func:`bin_of`, :func:`column_counts`) to compute PSI against
it. Both sides import this module, so the rule is written once.

Binning: a value ``v`` falls in bin ``i`` when ``edges[i] <= v < edges[i + 1]`` for the inner
edges; values below the first or above the last edge go to the end bins; missing and
non-finite values are not counted.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from shared.datasets import FeatureStats

HISTOGRAM_BINS = 10
"""Bins of every reference histogram (fewer when a feature has fewer distinct values)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceHistogram(_Frozen):
    """Bin edges and the share of values in each bin (``len(edges) == len(proportions) + 1``)."""

    edges: list[float]
    proportions: list[float]

    @property
    def inner(self) -> list[float]:
        """The edges :func:`column_counts` searches (all but the two ends)."""
        return list(self.edges[1:-1])


class FeatureReference(_Frozen):
    """A feature as the model saw it in training."""

    stats: FeatureStats
    histogram: ReferenceHistogram


class PredictionReference(_Frozen):
    """The model's predictions on its holdout."""

    label_distribution: dict[str, float]
    """Share of each predicted class."""
    probability_histograms: dict[str, ReferenceHistogram]
    """Per class, the histogram of its predicted probability."""


class ExpectedError(_Frozen):
    """The error rate a version was measured at on its holdout, and how sure that measure is.

    The monitor holds every version's live error against it from the first labelled prediction
    the version serves, so a version that starts serving into an already-changed world (a
    rollback, a promotion just before a change), or whose detectors were just reset, is flagged
    as soon as it does clearly worse than it was trained to do.

    >>> e = ExpectedError.of(accuracy=0.9, rows=400)
    >>> round(e.rate, 3), e.rows, round(e.upper, 3)
    (0.1, 400, 0.128)
    """

    rate: float
    rows: int
    upper: float
    """One-sided 95 % (Wilson) upper bound of the rate, from ``rows`` holdout rows."""

    @classmethod
    def of(cls, accuracy: float, rows: int) -> ExpectedError:
        """From the holdout's accuracy and size."""
        rate = min(max(1.0 - accuracy, 0.0), 1.0)
        n = max(rows, 1)
        z = 1.645
        centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
        spread = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return cls(rate=rate, rows=rows, upper=min(1.0, centre + spread))


class Reference(_Frozen):
    """What normal looks like, for the monitor's drift detectors."""

    features: dict[str, FeatureReference]
    predictions: PredictionReference
    expected_error: ExpectedError | None = None
    """The version's holdout error (None on cards written before it was recorded)."""


# --- the binning rule --------------------------------------------------------------------------


def bin_of(edges: Sequence[float], value: float) -> int:
    """The bin of one value: inner edges, right side; values beyond the ends go to the end bins.

    >>> [bin_of([0.0, 1.0, 2.0], v) for v in (-5.0, 0.5, 1.0, 9.0)]
    [0, 0, 1, 1]
    """
    index = bisect_right(edges, value, 1, len(edges) - 1) - 1
    return min(max(index, 0), len(edges) - 2)


def column_counts(
    inner: Sequence[float] | NDArray[np.float64], bins: int, column: NDArray[np.float64]
) -> NDArray[np.int64]:
    """Bin counts of a column's finite values (NaN = missing): :func:`bin_of`, vectorised."""
    finite = column[np.isfinite(column)]
    return np.bincount(np.searchsorted(np.asarray(inner, dtype=np.float64), finite, side="right"), minlength=bins)


def bin_counts(reference: ReferenceHistogram, values: Iterable[float | None]) -> list[int]:
    """How many of ``values`` fall in each reference bin (missing and non-finite values skipped)."""
    counts = [0] * len(reference.proportions)
    edges = reference.edges
    for value in values:
        if value is None or not math.isfinite(value):
            continue
        counts[bin_of(edges, value)] += 1
    return counts


# --- building a reference (the trainer) ----------------------------------------------------------


def histogram(values: NDArray[np.float64], bins: int = HISTOGRAM_BINS) -> ReferenceHistogram:
    """Quantile bins of ``values`` and the share of values in each (the monitor's PSI baseline).

    Edges are unique, so a feature with few distinct values gets fewer bins.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ReferenceHistogram(edges=[0.0, 1.0], proportions=[0.0])
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size < 2:
        edges = np.array([edges[0], edges[0] + 1.0])
    return _shares(edges, finite)


def probability_histogram(values: NDArray[np.float64]) -> ReferenceHistogram:
    """Equal-width bins over [0, 1] of a class's predicted probability."""
    return _shares(np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1), values[np.isfinite(values)])


def _shares(edges: NDArray[np.float64], finite: NDArray[np.float64]) -> ReferenceHistogram:
    counts = column_counts(edges[1:-1], edges.size - 1, finite)
    total = max(1, finite.size)
    return ReferenceHistogram(edges=[float(e) for e in edges], proportions=[float(c) / total for c in counts])


def build_reference(
    X: NDArray[np.float64],
    feature_names: Sequence[str],
    y_pred: NDArray[Any],
    proba: NDArray[Any],
    classes: Sequence[Any],
    expected_error: ExpectedError | None = None,
) -> Reference:
    """What normal looks like: every feature of the training window, predictions and the error
    rate on the holdout."""
    features = {
        name: FeatureReference(
            stats=FeatureStats.of(X[:, i][np.isfinite(X[:, i])]),
            histogram=histogram(X[:, i]),
        )
        for i, name in enumerate(feature_names)
    }
    predicted = np.asarray([str(v) for v in y_pred])
    distribution = {str(c): float(np.mean(predicted == str(c))) if predicted.size else 0.0 for c in classes}
    probabilities = {
        str(c): probability_histogram(np.asarray(proba, dtype=np.float64)[:, k]) for k, c in enumerate(classes)
    }
    return Reference(
        features=features,
        predictions=PredictionReference(label_distribution=distribution, probability_histograms=probabilities),
        expected_error=expected_error,
    )
