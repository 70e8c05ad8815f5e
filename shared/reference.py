"""Reference statistics: what normal looks like, written by the trainer, read by the monitor.

A model card carries one :class:`Reference`: per numeric feature, the training window's summary
and a histogram; per categorical or boolean feature, each category's share
(:func:`category_reference`); for the predictions on the holdout, the share of each class and a histogram of
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
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from shared.features import BOOLEAN, NUMERIC, category_key

HISTOGRAM_BINS = 10
"""Bins of every reference histogram (fewer when a feature has fewer distinct values)."""
MAX_REFERENCE_CATEGORIES = 50
"""Categories a :class:`CategoryReference` lists by name at most: the most frequent in training."""
OTHER_CATEGORIES = "__other__"
"""The key under which a :class:`CategoryReference` sums the shares of the categories beyond
:data:`MAX_REFERENCE_CATEGORIES` (present only when there are such categories)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureStats(BaseModel):
    """Mergeable summary of one feature: count, mean, M2 (for the variance), min, max.

    >>> a = FeatureStats.of([1.0, 2.0]); b = FeatureStats.of([3.0, 4.0])
    >>> merged = a.merge(b); (merged.count, merged.mean, round(merged.std, 4), merged.min, merged.max)
    (4, 2.5, 1.118, 1.0, 4.0)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Iterable[float] | NDArray[np.float64]) -> FeatureStats:
        """Statistics of a batch of finite values."""
        arr = values if isinstance(values, np.ndarray) else np.asarray(list(values), dtype=np.float64)
        if arr.size == 0:
            return cls()
        mean = float(arr.mean())
        return cls(
            count=int(arr.size),
            mean=mean,
            m2=float(((arr - mean) ** 2).sum()),
            min=float(arr.min()),
            max=float(arr.max()),
        )

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Combine two summaries (Chan et al.'s parallel variance)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        assert self.min is not None and other.min is not None and self.max is not None and other.max is not None
        return FeatureStats(
            count=n,
            mean=self.mean + delta * other.count / n,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / n,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return math.sqrt(self.m2 / self.count) if self.count else 0.0


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


class CategoryReference(_Frozen):
    """A categorical (or boolean) feature as the model saw it in training: each category's share.

    Keys are :func:`shared.features.category_key` texts (``"true"`` / ``"false"`` for a
    boolean, both always present). The monitor compares live shares with these (PSI, unseen
    categories counted apart); shares are of the non-missing values, ``missing`` the share of
    missing ones. Past the :data:`MAX_REFERENCE_CATEGORIES` most frequent, the rest are summed
    under :data:`OTHER_CATEGORIES` (a real category of that name would be merged into it).
    """

    shares: dict[str, float]
    missing: float = 0.0
    rows: int


class PredictionReference(_Frozen):
    """The model's predictions on its holdout: for a classifier the predicted classes and their
    probabilities; for a regressor the predicted values (``value_histogram``, the other two empty)."""

    label_distribution: dict[str, float]
    """Share of each predicted class."""
    probability_histograms: dict[str, ReferenceHistogram]
    """Per class, the histogram of its predicted probability."""
    value_histogram: ReferenceHistogram | None = None
    """A regressor's predicted values (quantile bins, as a numeric feature's)."""


class ExpectedError(_Frozen):
    """The error rate a version was measured at on its holdout, and how sure that measure is.

    The monitor holds every version's live error against it from the first labelled prediction
    the version serves, so a version that starts serving into an already-changed world (a
    rollback, a promotion just before a change), or whose detectors were just reset, is flagged
    as soon as it does clearly worse than it was trained to do.

    >>> e = ExpectedError.of(accuracy=0.9, rows=400)
    >>> round(e.rate, 3), e.rows, round(e.upper, 3)
    (0.1, 400, 0.127)

    For a regressor the monitor's error stream is 0/1 too: a prediction counts as a miss when its
    absolute error exceeds ``threshold``, the holdout's :data:`MISS_QUANTILE` quantile of absolute
    errors (:meth:`of_errors`), so ``rate`` is the holdout's share of misses (about 0.2). A
    Bernoulli stream is what DDM and HDDM assume and what ADWIN's bound is exact for, and a
    single huge error (regression errors are heavy-tailed) moves it by one miss, not by its
    size. A change that makes the model worse shows as more misses. ``mae`` and ``rmse`` are the
    holdout's, for the report and the status page beside the live ones.

    >>> r = ExpectedError.of_errors(np.arange(1.0, 101.0))
    >>> r.threshold, round(r.rate, 2), r.mae
    (80.2, 0.2, 50.5)
    """

    rate: float
    rows: int
    upper: float
    """One-sided 95 % (Wilson) upper bound of the rate, from ``rows`` holdout rows."""
    threshold: float | None = None
    """A regressor's miss threshold: absolute errors above it count as misses (None: a classifier)."""
    mae: float | None = None
    rmse: float | None = None
    """A regressor's holdout MAE and RMSE."""

    @classmethod
    def of_errors(cls, absolute_errors: NDArray[np.float64], quantile: float | None = None) -> ExpectedError:
        """A regressor's: misses above the ``quantile`` (default :data:`MISS_QUANTILE`) of the
        holdout's absolute errors."""
        errors = np.abs(np.asarray(absolute_errors, dtype=np.float64))
        errors = errors[np.isfinite(errors)]
        if errors.size == 0:
            return cls.of(accuracy=1.0, rows=0).model_copy(update={"threshold": 0.0, "mae": 0.0, "rmse": 0.0})
        threshold = float(np.quantile(errors, MISS_QUANTILE if quantile is None else quantile))
        rate = float(np.mean(errors > threshold))
        base = cls.of(accuracy=1.0 - rate, rows=int(errors.size))
        return base.model_copy(
            update={
                "threshold": threshold,
                "mae": float(np.mean(errors)),
                "rmse": float(np.sqrt(np.mean(errors * errors))),
            }
        )

    def miss(self, absolute_error: float) -> bool:
        """A regressor's prediction with this absolute error counts as a miss."""
        return self.threshold is not None and absolute_error > self.threshold

    @classmethod
    def of(cls, accuracy: float, rows: int) -> ExpectedError:
        """From the holdout's accuracy and size."""
        rate = min(max(1.0 - accuracy, 0.0), 1.0)
        n = max(rows, 1)
        z = 1.645
        centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
        spread = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return cls(rate=rate, rows=rows, upper=min(1.0, centre + spread))


MISS_QUANTILE = 0.8
"""The quantile of a regressor's holdout absolute errors above which a live error is a miss."""


class Reference(_Frozen):
    """What normal looks like, for the monitor's drift detectors."""

    features: dict[str, FeatureReference]
    """Numeric features (a categorical or boolean one is in ``categories`` instead)."""
    predictions: PredictionReference
    expected_error: ExpectedError | None = None
    """The version's holdout error (None on cards written before it was recorded)."""
    categories: dict[str, CategoryReference] = {}
    """Categorical and boolean features: category shares in training."""


# --- the binning rule --------------------------------------------------------------------------


def bin_of(edges: Sequence[float], value: float) -> int:
    """The bin of one value: inner edges, right side; values beyond the ends go to the end bins.

    >>> [bin_of([0.0, 1.0, 2.0], v) for v in (-5.0, 0.5, 1.0, 9.0)]
    [0, 0, 1, 1]
    """
    index = bisect_right(edges, value, 1, len(edges) - 1) - 1
    return min(max(index, 0), len(edges) - 2)


PSI_EPSILON = 1e-4
"""Share given to an empty bin, so that PSI stays finite."""


def psi_from_counts(expected: Sequence[float], counts: Sequence[int]) -> float:
    """PSI of observed bin ``counts`` against ``expected`` shares: ``sum((a - e) * ln(a / e))``.

    Empty bins on either side count as :data:`PSI_EPSILON`; no counts at all gives 0. (The
    monitor's drift windows and ingest's label-shift check both use it.)
    """
    total = sum(counts)
    if total == 0:
        return 0.0
    value = 0.0
    for e, c in zip(expected, counts, strict=True):
        actual = max(c / total, PSI_EPSILON)
        ref = max(e, PSI_EPSILON)
        value += (actual - ref) * math.log(actual / ref)
    return value


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
    y_pred: NDArray[Any] | None = None,
    proba: NDArray[Any] | None = None,
    classes: Sequence[Any] = (),
    expected_error: ExpectedError | None = None,
    *,
    predictions: PredictionReference | None = None,
) -> Reference:
    """What normal looks like: every feature of the training window, predictions and the error
    rate on the holdout.

    A classifier's predictions are given as ``y_pred``, ``proba`` and ``classes``
    (:func:`prediction_reference`); any other model's as the finished ``predictions`` (a
    regressor's :func:`regression_prediction_reference`), and then not the other three.
    """
    columns = {name: X[:, i] for i, name in enumerate(feature_names)}
    return build_typed_reference(
        columns,
        feature_names,
        [NUMERIC] * len(feature_names),
        y_pred,
        proba,
        classes,
        expected_error,
        predictions=predictions,
    )


def build_typed_reference(
    columns: Mapping[str, Sequence[Any] | NDArray[Any]],
    feature_names: Sequence[str],
    types: Sequence[str],
    y_pred: NDArray[Any] | None = None,
    proba: NDArray[Any] | None = None,
    classes: Sequence[Any] = (),
    expected_error: ExpectedError | None = None,
    *,
    predictions: PredictionReference | None = None,
) -> Reference:
    """:func:`build_reference` for features of any type, given one column per feature.

    Numeric features (float, NaN for missing) go to ``features`` as they always did;
    categorical and boolean ones to ``categories`` (:func:`category_reference`). The
    predictions are given as for :func:`build_reference`.
    """
    features: dict[str, FeatureReference] = {}
    categories: dict[str, CategoryReference] = {}
    for name, kind in zip(feature_names, types, strict=True):
        values = columns[name]
        if kind == NUMERIC:
            features[name] = numeric_reference(_float_values(values))
        else:
            categories[name] = category_reference(values, kind)
    return Reference(
        features=features,
        predictions=_predictions_of(y_pred, proba, classes, predictions),
        expected_error=expected_error,
        categories=categories,
    )


def _predictions_of(
    y_pred: NDArray[Any] | None,
    proba: NDArray[Any] | None,
    classes: Sequence[Any],
    predictions: PredictionReference | None,
) -> PredictionReference:
    """The prediction part of a reference: given whole, or a classifier's built from its outputs."""
    if predictions is not None:
        if y_pred is not None or proba is not None or len(classes):
            raise ValueError("give either a classifier's y_pred, proba and classes or predictions, not both")
        return predictions
    if y_pred is None or proba is None:
        raise ValueError("a reference needs the predictions: a classifier's y_pred and proba, or predictions")
    return prediction_reference(y_pred, proba, classes)


def numeric_reference(values: NDArray[np.float64]) -> FeatureReference:
    """A numeric feature's summary and histogram (missing and non-finite values left out)."""
    return FeatureReference(stats=FeatureStats.of(values[np.isfinite(values)]), histogram=histogram(values))


def category_reference(values: Iterable[Any], kind: str, limit: int = MAX_REFERENCE_CATEGORIES) -> CategoryReference:
    """Each category's share among the non-missing values, and the share of missing ones.

    Categories are :func:`shared.features.category_key` texts; a value that has none (None,
    NaN, a value of another type) is missing. A boolean feature always lists ``"true"`` and
    ``"false"``. Beyond the ``limit`` most frequent categories (ties broken by text), the
    rest are summed under :data:`OTHER_CATEGORIES`.

    >>> ref = category_reference(["a", "b", "a", None], "categorical")
    >>> ref.shares, round(ref.missing, 2), ref.rows
    ({'a': 0.6666666666666666, 'b': 0.3333333333333333}, 0.25, 4)
    >>> category_reference([True, True, None], "boolean").shares
    {'true': 1.0, 'false': 0.0}
    """
    counts: Counter[str] = Counter()
    rows = 0
    for value in values:
        rows += 1
        key = category_key(value, kind)
        if key is not None:
            counts[key] += 1
    present = sum(counts.values())
    if kind == BOOLEAN:
        counts.update({"true": 0, "false": 0})
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shares = {key: count / present if present else 0.0 for key, count in ranked[:limit]}
    rest = sum(count for _, count in ranked[limit:])
    if len(ranked) > limit:
        shares[OTHER_CATEGORIES] = shares.get(OTHER_CATEGORIES, 0.0) + (rest / present if present else 0.0)
    return CategoryReference(shares=shares, missing=(rows - present) / rows if rows else 0.0, rows=rows)


def prediction_reference(y_pred: NDArray[Any], proba: NDArray[Any], classes: Sequence[Any]) -> PredictionReference:
    """The share of each predicted class, and a histogram of each class's probability."""
    predicted = np.asarray([str(v) for v in y_pred])
    distribution = {str(c): float(np.mean(predicted == str(c))) if predicted.size else 0.0 for c in classes}
    probabilities = {
        str(c): probability_histogram(np.asarray(proba, dtype=np.float64)[:, k]) for k, c in enumerate(classes)
    }
    return PredictionReference(label_distribution=distribution, probability_histograms=probabilities)


def regression_prediction_reference(predicted: NDArray[Any]) -> PredictionReference:
    """A regressor's predictions on the holdout: the histogram of the predicted values."""
    values = np.asarray(predicted, dtype=np.float64).ravel()
    return PredictionReference(label_distribution={}, probability_histograms={}, value_histogram=histogram(values))


def _float_values(values: Sequence[Any] | NDArray[Any]) -> NDArray[np.float64]:
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return values.astype(np.float64, copy=False)
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
