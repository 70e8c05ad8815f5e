"""Population stability over tumbling windows: feature values and predictions. Pure: no I/O.

PSI of observed bin counts against a reference's shares is ``sum((a - e) * ln(a / e))`` over the
bins (an empty bin on either side counts as :data:`PSI_EPSILON`). The bins are the model card's
(:mod:`shared.reference`, the trainer's rule); :class:`WindowedPsi` keeps per-feature counts of
the open window, :class:`PredictionWindow` the predicted classes and each class's probability --
or, for a regressor, the predicted values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from services.monitor.state import State
from shared.events import Target
from shared.reference import (
    PSI_EPSILON,
    PredictionReference,
    ReferenceHistogram,
    bin_counts,
    column_counts,
    psi_from_counts,
)

PREDICTED_LABEL = "label"
"""Prediction-drift stream of the predicted class distribution."""
PREDICTED_VALUE = "predicted_value"
"""Prediction-drift stream of a regressor's predicted values (PSI on the reference's bins)."""


def probability_stream(label: str) -> str:
    """Prediction-drift stream name of one class's predicted probability."""
    return f"proba:{label}"


def psi(reference: ReferenceHistogram, values: Iterable[float | None]) -> float:
    """Population stability index of ``values`` against the reference histogram.

    >>> ref = ReferenceHistogram(edges=[0.0, 1.0, 2.0], proportions=[0.5, 0.5])
    >>> psi(ref, [0.5, 1.5])
    0.0
    >>> round(psi(ref, [0.5] * 9 + [1.5]), 3)
    0.879
    """
    return psi_from_counts(reference.proportions, bin_counts(reference, values))


def label_psi(reference: Mapping[str, float], counts: Mapping[str, int]) -> float:
    """PSI of predicted-class counts against the reference class shares (classes as strings)."""
    classes = sorted(set(reference) | set(counts))
    return psi_from_counts([reference.get(c, 0.0) for c in classes], [counts.get(c, 0) for c in classes])


def chi_square(reference: Mapping[str, float], counts: Mapping[str, int]) -> float:
    """Pearson's chi-square of class counts against the reference shares (same epsilon rule)."""
    total = sum(counts.values())
    if total == 0:
        return 0.0
    statistic = 0.0
    for c in set(reference) | set(counts):
        expected = max(reference.get(c, 0.0), PSI_EPSILON) * total
        statistic += (counts.get(c, 0) - expected) ** 2 / expected
    return statistic


def _add_column_counts(
    counts: dict[str, list[int]],
    inner: Iterable[tuple[str, Sequence[float]]],
    columns: Mapping[str, NDArray[np.float64]],
) -> None:
    """Add each stream's column to its bin counts (a stream without a column adds nothing)."""
    for key, edges in inner:
        column = columns.get(key)
        if column is not None:
            added = column_counts(edges, len(counts[key]), column).tolist()
            counts[key] = [a + b for a, b in zip(counts[key], added, strict=True)]


def _fresh_counts(histograms: Mapping[str, ReferenceHistogram]) -> dict[str, list[int]]:
    return {name: [0] * len(h.proportions) for name, h in histograms.items()}


def _kept_counts(saved: Mapping[str, list[int]], histograms: Mapping[str, ReferenceHistogram]) -> dict[str, list[int]]:
    """Saved counts of the streams whose bins are unchanged; the others start empty."""
    counts = _fresh_counts(histograms)
    for name, values in saved.items():
        if name in counts and len(values) == len(counts[name]):
            counts[name] = list(values)
    return counts


class PsiWindowState(State):
    """The open window of :class:`WindowedPsi` (the references come from the model card)."""

    window: int
    rows: int = 0
    counts: dict[str, list[int]] = {}


class WindowedPsi:
    """Per-feature PSI over tumbling windows of ``window`` rows.

    The open window's counts are one integer array over every feature's bins, and a batch of
    rows is binned for all features at once: a value's bin is the number of the feature's inner
    edges at or below it (what :func:`~shared.reference.column_counts` searches for, one feature
    at a time; the edges are padded with +inf to a rectangle), and one ``bincount`` adds them
    up. Binning feature by feature cost about as much as the feature detectors at 300 features.
    :attr:`state` writes the counts out as the checkpoint holds them.

    >>> ref = ReferenceHistogram(edges=[0.0, 1.0, 2.0], proportions=[0.5, 0.5])
    >>> w = WindowedPsi({"x": ref}, window=4)
    >>> w.add_columns({"x": np.array([0.5, 1.5])}, rows=2) is None
    True
    >>> w.add_columns({"x": np.array([0.2, 1.9])}, rows=2)
    {'x': 0.0}
    """

    def __init__(
        self, references: Mapping[str, ReferenceHistogram], window: int = 1000, state: PsiWindowState | None = None
    ) -> None:
        """``state``: an open window to continue (features whose bins changed start empty)."""
        if window < 1:
            raise ValueError("window must be at least 1")
        self.references = dict(references)
        self._state = (
            PsiWindowState(window=window) if state is None else PsiWindowState(window=state.window, rows=state.rows)
        )
        self._names = list(self.references)
        inner = [ref.inner for ref in self.references.values()]
        if max((len(edges) for edges in inner), default=0) > np.iinfo(np.int16).max:
            raise ValueError("a reference histogram has too many bins")
        self._bins = [len(ref.proportions) for ref in self.references.values()]
        self._starts = np.concatenate([[0], np.cumsum(self._bins)]).astype(np.int64)
        width = max((len(edges) for edges in inner), default=0)
        self._edges = np.full((len(inner), width), np.inf)
        for j, edges in enumerate(inner):
            self._edges[j, : len(edges)] = edges
        self._counts = np.zeros(int(self._starts[-1]), dtype=np.int64)
        if state is not None:
            for j, counts in enumerate(_kept_counts(state.counts, self.references).values()):
                self._counts[self._starts[j] : self._starts[j + 1]] = counts

    @property
    def state(self) -> PsiWindowState:
        """The open window as checkpointed (its counts written out per feature)."""
        self._state.counts = {
            name: self._counts[self._starts[j] : self._starts[j + 1]].tolist() for j, name in enumerate(self._names)
        }
        return self._state

    @property
    def window(self) -> int:
        """Rows per window."""
        return self._state.window

    @property
    def remaining(self) -> int:
        """Rows until the open window closes (at least 1)."""
        return self._state.window - self._state.rows

    def add_columns(self, columns: Mapping[str, NDArray[np.float64]], rows: int) -> dict[str, float] | None:
        """Count ``rows`` rows at once, one float column per feature (NaN = missing; a feature
        without a column counts as missing). The rows must fit in the open window
        (``rows <= remaining``): the caller splits a batch where windows close."""
        if not 0 < rows <= self.remaining:
            raise ValueError(f"{rows} rows do not fit the {self.remaining} left in the window")
        present = [j for j, name in enumerate(self._names) if name in columns]
        if present:
            matrix = np.column_stack([columns[self._names[j]] for j in present])
            index = np.zeros(matrix.shape, dtype=np.int16)
            for edge in self._edges[present].T:  # one pass per edge rank over the whole batch
                index += matrix >= edge
            bins = index + self._starts[present]
            finite = np.isfinite(matrix)
            counted = bins.ravel() if finite.all() else bins[finite]
            self._counts += np.bincount(counted, minlength=self._counts.size)
        self._state.rows += rows
        if self._state.rows < self._state.window:
            return None
        return self._close()

    def _close(self) -> dict[str, float]:
        counts = self._counts
        result = {
            name: psi_from_counts(ref.proportions, counts[self._starts[j] : self._starts[j + 1]].tolist())
            for j, (name, ref) in enumerate(self.references.items())
        }
        self._state.rows = 0
        self._counts = np.zeros_like(counts)
        return result


class PredictionWindowState(State):
    """The open window of :class:`PredictionWindow`."""

    window: int
    rows: int = 0
    labels: dict[str, int] = {}
    proba: dict[str, list[int]] = {}
    chi_square: float = 0.0
    values: list[int] = []
    """A regressor's predicted values, counted in the reference's value bins."""


def predicted_numbers(labels: Sequence[Target]) -> NDArray[np.float64]:
    """A regressor's predictions as floats (anything that is not a finite number: NaN, not counted)."""
    return np.fromiter(
        (
            float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else math.nan
            for v in labels
        ),
        dtype=np.float64,
        count=len(labels),
    )


class PredictionWindow:
    """Prediction drift over tumbling windows: predicted classes and per-class probabilities, or a
    regressor's predicted values.

    When a window closes, :meth:`add_many` returns ``{"label": PSI of class shares, "proba:<c>": PSI of
    c's probability histogram}``; :attr:`last_chi_square` keeps the class counts' chi-square. With
    a reference ``value_histogram`` (a regressor) it returns ``{"predicted_value": PSI of the
    predicted values}``; the class streams are left out when the reference has no class shares.

    >>> from shared.reference import regression_prediction_reference
    >>> w = PredictionWindow(regression_prediction_reference(np.arange(100.0)), window=10)
    >>> {k: round(v, 3) for k, v in w.add_many([5.0, 15, 25, 35, 45, 55, 65, 75, 85, 95], {}).items()}
    {'predicted_value': 0.0}
    >>> {k: round(v, 3) for k, v in w.add_many([90.0] * 5 + [95] * 5, {}).items()}
    {'predicted_value': 8.283}
    """

    def __init__(
        self, reference: PredictionReference, window: int = 1000, state: PredictionWindowState | None = None
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.reference = reference
        histograms = reference.probability_histograms
        values = {PREDICTED_VALUE: reference.value_histogram} if reference.value_histogram is not None else {}
        self._values = values
        self.state = (
            PredictionWindowState(
                window=window, proba=_fresh_counts(histograms), values=_fresh_counts(values).get(PREDICTED_VALUE, [])
            )
            if state is None
            else state.model_copy(
                update={
                    "proba": _kept_counts(state.proba, histograms),
                    "values": _kept_counts({PREDICTED_VALUE: state.values}, values).get(PREDICTED_VALUE, []),
                }
            )
        )
        self._inner = [(c, h.inner) for c, h in histograms.items()]

    @property
    def window(self) -> int:
        """Predictions per window."""
        return self.state.window

    @property
    def last_chi_square(self) -> float:
        """The chi-square of the class counts of the last window that closed."""
        return self.state.chi_square

    @property
    def remaining(self) -> int:
        """Predictions until the open window closes (at least 1)."""
        return self.state.window - self.state.rows

    def add_many(
        self, labels: Sequence[Target], probabilities: Mapping[str, NDArray[np.float64]]
    ) -> dict[str, float] | None:
        """Count many predictions at once (``probabilities``: one column per class, NaN =
        missing; a regressor's ``labels`` are its predicted numbers). They must fit in the open
        window (``len(labels) <= remaining``)."""
        rows = len(labels)
        if not 0 < rows <= self.remaining:
            raise ValueError(f"{rows} predictions do not fit the {self.remaining} left in the window")
        state = self.state
        if self.reference.label_distribution:
            counted = state.labels
            for label in labels:
                key = str(label)
                counted[key] = counted.get(key, 0) + 1
        if self._values:
            counts = {PREDICTED_VALUE: state.values}
            _add_column_counts(
                counts, [(k, h.inner) for k, h in self._values.items()], {PREDICTED_VALUE: predicted_numbers(labels)}
            )
            state.values = counts[PREDICTED_VALUE]
        _add_column_counts(state.proba, self._inner, probabilities)
        state.rows += rows
        if state.rows < state.window:
            return None
        return self._close()

    def _close(self) -> dict[str, float]:
        state = self.state
        distribution = self.reference.label_distribution
        result: dict[str, float] = {}
        if distribution:  # a regressor has no class shares: no class stream, no chi-square
            result[PREDICTED_LABEL] = label_psi(distribution, state.labels)
            state.chi_square = chi_square(distribution, state.labels)
        for c, hist in self.reference.probability_histograms.items():
            if sum(state.proba[c]):
                result[probability_stream(c)] = psi_from_counts(hist.proportions, state.proba[c])
        for name, hist in self._values.items():
            if sum(state.values):
                result[name] = psi_from_counts(hist.proportions, state.values)
        state.rows, state.labels = 0, {}
        state.proba = _fresh_counts(self.reference.probability_histograms)
        state.values = _fresh_counts(self._values).get(PREDICTED_VALUE, [])
        return result
