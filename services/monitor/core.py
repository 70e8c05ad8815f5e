"""The monitor's pure logic: PSI, drift watching with alarm hygiene, live accuracy and canary
verdicts (the join of predictions with ground truth is in :mod:`services.monitor.join`). No I/O
-- the faust app feeds it plain values and checkpoints every state object through
``to_state()`` / ``from_state()`` (JSON).

Alarm hygiene -- why a stable stream does not raise alarms
----------------------------------------------------------
A drift is published only after three filters (see :class:`AlarmPolicy` and :class:`ModelDrift`):

1. **A candidate** comes from a River detector (:mod:`services.monitor.detectors`) or from a
   tumbling-window PSI above ``psi_alert``. Data detectors use a small ADWIN delta (1e-4), so
   candidates on stable features are already rare.
2. **Confirmation on fresh samples.** River resets a detector after it fires, so "keeps
   signalling" cannot be observed directly; instead the candidate's claim is tested on samples
   that arrive *after* it, which are independent of the fluctuation that may have caused it:

   * concept (0/1 errors): the error rate of the fresh samples must exceed the detector's
     pre-change error rate by ``z_confirm`` (3) standard errors, checked from
     ``confirmation_samples / 4`` fresh samples on and given up after ``confirmation_samples``
     (a strong change confirms early, a fluke is rejected);
   * data (feature values) and prediction windows: the PSI of the fresh samples against the
     training reference must exceed ``psi_alert`` -- over ``max(confirmation_samples, 200)``
     values for a feature (fewer would let PSI's own sampling noise, about ``bins / n``, reach
     the threshold), and over the next whole window for window-sourced candidates.

   A fluke passes step 1 with small probability and step 2 with a small one again; a real
   change passes step 2 almost surely because the fresh samples come from the new regime.
3. **Cooldown and latch.** Not again for the same ``(kind, feature)`` within ``alarm_cooldown``.
   After a data or prediction alarm the cause is latched until a window's PSI falls back below
   the alert (or a new version resets the policy): its confirmation tests against the training
   reference, which a drifted stream keeps failing, so a later candidate (a detector's fluke in
   the new regime) would be "confirmed" by the old news. A lasting difference alarms once.
   :meth:`AlarmPolicy.reset` (a new version promoted) clears everything.

Severity: ``r = max(statistic / threshold of the detector, the confirmation's own ratio)``;
``r < 1.5`` low, ``< 3`` medium, else high. A concept confirmation's ratio is the rise of the
error rate in units of :data:`ERROR_RISE_UNIT` (5 points): below 7.5 points low, below 15 medium.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.monitor.detectors import (
    Detector,
    DriftSignal,
    concept_detector,
    data_detector,
    detector_from_state,
    update_many,
)
from shared.events import DriftDetected, Label
from shared.registry import PredictionReference, Reference, ReferenceHistogram
from shared.spec import MonitoringSpec, PromoteAfter, RollbackOn

__all__ = [
    "PSI_EPSILON",
    "AccuracyPoint",
    "Alarm",
    "AlarmPolicy",
    "CanaryJudge",
    "CanaryTrial",
    "ChampionWatch",
    "ChangeWait",
    "Confirmation",
    "DriftCandidate",
    "DriftSettings",
    "DriftUpdate",
    "ErrorCounts",
    "LiveAccuracy",
    "MeanRise",
    "ModelDrift",
    "PredictionWindow",
    "PsiAbove",
    "StaysAbove",
    "Suppressed",
    "Verdict",
    "WindowedPsi",
    "bin_counts",
    "chi_square",
    "epoch",
    "from_epoch",
    "label_psi",
    "psi",
    "psi_from_counts",
    "severity",
]

DriftKind = Literal["data", "prediction", "concept"]
Severity = Literal["low", "medium", "high"]
SuppressReason = Literal["unconfirmed", "cooldown", "latched"]

PSI_EPSILON = 1e-4
"""Share given to an empty bin (reference or current), so PSI stays finite."""

ERROR_RISE_UNIT = 0.05
"""Rise of the error rate that counts as ratio 1 in a concept alarm's severity."""

MIN_PSI_SAMPLES = 200
"""Fewest values a PSI confirmation rests on: below this, sampling noise alone nears 0.1."""


def epoch(at: datetime) -> float:
    """Seconds since 1970 of a timezone-aware time (naive times are refused)."""
    if at.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return at.timestamp()


def from_epoch(seconds: float) -> datetime:
    """The UTC time of :func:`epoch` seconds."""
    return datetime.fromtimestamp(seconds, UTC)


# --- PSI -------------------------------------------------------------------------------------


def _bin(edges: Sequence[float], value: float) -> int:
    """The trainer's binning: inner edges, right side; values beyond the ends go to the end bins."""
    index = bisect_right(edges, value, 1, len(edges) - 1) - 1
    return min(max(index, 0), len(edges) - 2)


def _inner_edges(reference: ReferenceHistogram) -> list[float]:
    """The edges :func:`_bin` searches: ``bisect_right(inner, v)`` is ``_bin(edges, v)``."""
    return list(reference.edges[1:-1])


def _column_counts(inner: Sequence[float], bins: int, column: NDArray[np.float64]) -> NDArray[np.int64]:
    """Bin counts of a column's finite values (NaN = missing), vectorised :func:`_bin`."""
    finite = column[np.isfinite(column)]
    return np.bincount(np.searchsorted(np.asarray(inner, dtype=np.float64), finite, side="right"), minlength=bins)


def _add_column_counts(
    counts: dict[str, list[int]],
    inner: Iterable[tuple[str, Sequence[float]]],
    columns: Mapping[str, NDArray[np.float64]],
) -> None:
    """Add each stream's column to its bin counts (a stream without a column adds nothing)."""
    for key, edges in inner:
        column = columns.get(key)
        if column is not None:
            added = _column_counts(edges, len(counts[key]), column).tolist()
            counts[key] = [a + b for a, b in zip(counts[key], added, strict=True)]


def bin_counts(reference: ReferenceHistogram, values: Iterable[float | None]) -> list[int]:
    """How many of ``values`` fall in each reference bin (missing and non-finite values skipped)."""
    counts = [0] * len(reference.proportions)
    edges = reference.edges
    for value in values:
        if value is None or not math.isfinite(value):
            continue
        counts[_bin(edges, value)] += 1
    return counts


def psi_from_counts(expected: Sequence[float], counts: Sequence[int]) -> float:
    """PSI of observed bin ``counts`` against ``expected`` shares: ``sum((a - e) * ln(a / e))``.

    Empty bins on either side count as :data:`PSI_EPSILON`; no counts at all gives 0.
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


class WindowedPsi:
    """Per-feature PSI over tumbling windows of ``window`` rows.

    >>> ref = ReferenceHistogram(edges=[0.0, 1.0, 2.0], proportions=[0.5, 0.5])
    >>> w = WindowedPsi({"x": ref}, window=2)
    >>> w.add({"x": 0.5}) is None
    True
    >>> w.add({"x": 1.5})
    {'x': 0.0}
    """

    def __init__(self, references: Mapping[str, ReferenceHistogram], window: int = 1000) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.references = dict(references)
        self.window = window
        self._rows = 0
        self._counts = {name: [0] * len(ref.proportions) for name, ref in self.references.items()}
        self._inner = [(name, _inner_edges(ref)) for name, ref in self.references.items()]

    @property
    def remaining(self) -> int:
        """Rows until the open window closes (at least 1)."""
        return self.window - self._rows

    def add(self, features: Mapping[str, float | None]) -> dict[str, float] | None:
        """Count one row; returns every feature's PSI when the row closes a window, else None."""
        counts = self._counts
        for name, inner in self._inner:
            value = features.get(name)
            if value is not None and math.isfinite(value):
                counts[name][bisect_right(inner, value)] += 1
        self._rows += 1
        if self._rows < self.window:
            return None
        return self._close()

    def add_columns(self, columns: Mapping[str, NDArray[np.float64]], rows: int) -> dict[str, float] | None:
        """Count ``rows`` rows at once, one float column per feature (NaN = missing; a feature
        without a column counts as missing). The rows must fit in the open window
        (``rows <= remaining``): the caller splits a batch where windows close."""
        if not 0 < rows <= self.remaining:
            raise ValueError(f"{rows} rows do not fit the {self.remaining} left in the window")
        _add_column_counts(self._counts, self._inner, columns)
        self._rows += rows
        if self._rows < self.window:
            return None
        return self._close()

    def _close(self) -> dict[str, float]:
        result = {name: psi_from_counts(ref.proportions, self._counts[name]) for name, ref in self.references.items()}
        self._rows = 0
        self._counts = {name: [0] * len(ref.proportions) for name, ref in self.references.items()}
        return result

    def to_state(self) -> dict[str, Any]:
        """The open window's counts (the references come from the model card)."""
        return {"window": self.window, "rows": self._rows, "counts": {k: list(v) for k, v in self._counts.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], references: Mapping[str, ReferenceHistogram]) -> WindowedPsi:
        """Restore the open window; features whose bins changed start empty."""
        windowed = cls(references, int(state["window"]))
        windowed._rows = int(state["rows"])
        for name, counts in state["counts"].items():
            if name in windowed._counts and len(counts) == len(windowed._counts[name]):
                windowed._counts[name] = [int(c) for c in counts]
        return windowed


PREDICTED_LABEL = "label"
"""Prediction-drift stream of the predicted class distribution."""


def probability_stream(label: str) -> str:
    """Prediction-drift stream name of one class's predicted probability."""
    return f"proba:{label}"


class PredictionWindow:
    """Prediction drift over tumbling windows: predicted classes and per-class probabilities.

    When a window closes, :meth:`add` returns ``{"label": PSI of class shares, "proba:<c>": PSI of
    c's probability histogram}``; :attr:`last_chi_square` keeps the class counts' chi-square.
    """

    def __init__(self, reference: PredictionReference, window: int = 1000) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.reference = reference
        self.window = window
        self.last_chi_square = 0.0
        self._rows = 0
        self._labels: dict[str, int] = {}
        self._proba = {c: [0] * len(h.proportions) for c, h in reference.probability_histograms.items()}
        self._inner = [(c, _inner_edges(h)) for c, h in reference.probability_histograms.items()]

    @property
    def remaining(self) -> int:
        """Predictions until the open window closes (at least 1)."""
        return self.window - self._rows

    def add(self, label: Label, probabilities: Mapping[str, float]) -> dict[str, float] | None:
        """Count one prediction; returns the window's PSIs when it closes, else None."""
        key = str(label)
        self._labels[key] = self._labels.get(key, 0) + 1
        for c, inner in self._inner:
            p = probabilities.get(c)
            if p is not None and math.isfinite(p):
                self._proba[c][bisect_right(inner, p)] += 1
        self._rows += 1
        if self._rows < self.window:
            return None
        return self._close()

    def add_many(
        self, labels: Sequence[Label], probabilities: Mapping[str, NDArray[np.float64]]
    ) -> dict[str, float] | None:
        """Count many predictions at once (``probabilities``: one column per class, NaN =
        missing). They must fit in the open window (``len(labels) <= remaining``)."""
        rows = len(labels)
        if not 0 < rows <= self.remaining:
            raise ValueError(f"{rows} predictions do not fit the {self.remaining} left in the window")
        counted = self._labels
        for label in labels:
            key = str(label)
            counted[key] = counted.get(key, 0) + 1
        _add_column_counts(self._proba, self._inner, probabilities)
        self._rows += rows
        if self._rows < self.window:
            return None
        return self._close()

    def _close(self) -> dict[str, float]:
        result = {PREDICTED_LABEL: label_psi(self.reference.label_distribution, self._labels)}
        for c, hist in self.reference.probability_histograms.items():
            if sum(self._proba[c]):
                result[probability_stream(c)] = psi_from_counts(hist.proportions, self._proba[c])
        self.last_chi_square = chi_square(self.reference.label_distribution, self._labels)
        self._rows, self._labels = 0, {}
        self._proba = {c: [0] * len(h.proportions) for c, h in self.reference.probability_histograms.items()}
        return result

    def to_state(self) -> dict[str, Any]:
        """The open window's counts."""
        return {
            "window": self.window,
            "rows": self._rows,
            "labels": dict(self._labels),
            "proba": {k: list(v) for k, v in self._proba.items()},
            "chi_square": self.last_chi_square,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], reference: PredictionReference) -> PredictionWindow:
        """Restore the open window against ``reference``."""
        window = cls(reference, int(state["window"]))
        window._rows = int(state["rows"])
        window._labels = {str(k): int(v) for k, v in state["labels"].items()}
        for c, counts in state["proba"].items():
            if c in window._proba and len(counts) == len(window._proba[c]):
                window._proba[c] = [int(v) for v in counts]
        window.last_chi_square = float(state["chi_square"])
        return window


# --- alarms ----------------------------------------------------------------------------------


def severity(ratio: float) -> Severity:
    """How far past its threshold the evidence is: < 1.5 low, < 3 medium, else high."""
    if ratio < 1.5:
        return "low"
    if ratio < 3.0:
        return "medium"
    return "high"


@dataclass(frozen=True)
class DriftCandidate:
    """An unconfirmed drift: what a detector or a PSI window claimed, with its evidence."""

    kind: DriftKind
    feature: str | None
    detector: str
    statistic: float
    threshold: float
    samples: int
    change_samples: int | None

    @property
    def ratio(self) -> float:
        """Statistic over threshold (0 when the threshold is not finite)."""
        if not math.isfinite(self.threshold) or self.threshold <= 0:
            return 0.0
        return self.statistic / self.threshold


@dataclass(frozen=True)
class Alarm:
    """A confirmed drift, ready to publish as :class:`~shared.events.DriftDetected`.

    ``change_samples`` counts the stream's samples in the new regime at publication time (the
    detector's estimate plus the fresh samples that confirmed it): labelled samples for concept
    drift, predictions for data and prediction drift.
    """

    model: str
    model_version: int | None
    kind: DriftKind
    feature: str | None
    detector: str
    statistic: float
    threshold: float
    samples: int
    severity: Severity
    change_samples: int | None
    change_started_at: datetime | None

    def to_event(self) -> DriftDetected:
        """The event the monitor publishes on ``drift``."""
        return DriftDetected(
            model=self.model,
            model_version=self.model_version,
            kind=self.kind,
            feature=self.feature,
            detector=self.detector,
            statistic=self.statistic if math.isfinite(self.statistic) else 0.0,
            threshold=self.threshold if math.isfinite(self.threshold) else 0.0,
            samples=self.samples,
            severity=self.severity,
            change_samples=self.change_samples,
            change_started_at=self.change_started_at,
        )


@dataclass(frozen=True)
class Suppressed:
    """A candidate that was not published, and why (for ``suppressed_alarms_total``)."""

    model: str
    kind: DriftKind
    feature: str | None
    detector: str
    reason: SuppressReason


class Confirmation:
    """Evidence gathered on fresh samples after a candidate (base of :class:`MeanRise`,
    :class:`PsiAbove`, :class:`StaysAbove`). ``ratio`` is its strength, for severity."""

    kind = ""
    ratio = 0.0
    seen = 0

    def observe(self, value: float) -> bool | None:
        """One fresh sample: True confirmed, False rejected, None not decided yet."""
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        """JSON state (``kind`` says which class restores it)."""
        raise NotImplementedError


class MeanRise(Confirmation):
    """Concept: the fresh error rate exceeds the pre-change rate by ``z`` standard errors.

    Sequential, because a rejected real change is lost (the detector restarted empty and has
    no old regime left to contrast with). From ``min_n`` fresh samples on it confirms as soon as
    ``z`` is reached, up to ``extend`` x ``max_n`` samples; it rejects at ``max_n`` only if the
    fresh rate is clearly *not* above the reference (``z < z_reject``). Otherwise it turns
    patient: a small rise (a few points of error) shows as z ~ 2 over ``max_n`` samples, so the
    test keeps accumulating up to ``patience`` x ``max_n`` samples and confirms at the stricter
    ``z_patient``, which pays for the extra looks at the data; it rejects at the end.
    ``ratio`` is the rise in units of :data:`ERROR_RISE_UNIT`, so severity says how much worse
    the model got, not how early it was confirmed.
    """

    kind = "mean_rise"

    def __init__(
        self,
        reference: float,
        reference_n: int,
        min_n: int,
        max_n: int,
        z: float,
        z_reject: float = 0.0,
        extend: int = 4,
        z_patient: float = 3.5,
        patience: int = 10,
    ) -> None:
        self.reference, self.reference_n = reference, max(reference_n, 1)
        self.min_n, self.max_n, self.z = min_n, max_n, z
        self.z_reject, self.extend = z_reject, extend
        self.z_patient, self.patience = z_patient, max(patience, extend)
        self.seen, self.total, self.ratio = 0, 0.0, 0.0

    def observe(self, value: float) -> bool | None:
        self.seen += 1
        self.total += value
        if self.seen < self.min_n:
            return None
        # Two-proportion z-test, pooled rate under "no change" (a low reference alone would
        # understate the variance), floored so a zero-error past is not infinitely sure.
        floor = 1.0 / (self.reference_n + self.seen + 2)
        pooled = (self.reference * self.reference_n + self.total) / (self.reference_n + self.seen)
        p = min(max(pooled, floor), 1.0 - floor)
        effect = self.total / self.seen - self.reference
        z = effect / math.sqrt(p * (1.0 - p) * (1.0 / self.seen + 1.0 / self.reference_n))
        self.ratio = max(effect, 0.0) / ERROR_RISE_UNIT
        if z >= self.z_patient or (z >= self.z and self.seen <= self.extend * self.max_n):
            return True
        if self.seen >= self.patience * self.max_n or (self.seen == self.max_n and z < self.z_reject):
            return False
        return None

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reference": self.reference,
            "reference_n": self.reference_n,
            "min_n": self.min_n,
            "max_n": self.max_n,
            "z": self.z,
            "z_reject": self.z_reject,
            "extend": self.extend,
            "z_patient": self.z_patient,
            "patience": self.patience,
            "seen": self.seen,
            "total": self.total,
            "ratio": self.ratio,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MeanRise:
        c = cls(
            float(state["reference"]),
            int(state["reference_n"]),
            int(state["min_n"]),
            int(state["max_n"]),
            float(state["z"]),
            float(state["z_reject"]),
            int(state["extend"]),
            float(state.get("z_patient", state["z"])),  # checkpoints from before the patient stage
            int(state.get("patience", state["extend"])),
        )
        c.seen, c.total, c.ratio = int(state["seen"]), float(state["total"]), float(state["ratio"])
        return c


class PsiAbove(Confirmation):
    """Data: the PSI of the next ``n`` values against the reference histogram exceeds ``alert``."""

    kind = "psi_above"

    def __init__(self, reference: ReferenceHistogram, n: int, alert: float) -> None:
        self.reference, self.n, self.alert = reference, n, alert
        self.counts = [0] * len(reference.proportions)
        self.seen, self.ratio = 0, 0.0

    def observe(self, value: float) -> bool | None:
        if not math.isfinite(value):
            return None
        self.counts[_bin(self.reference.edges, value)] += 1
        self.seen += 1
        if self.seen < self.n:
            return None
        value_psi = psi_from_counts(self.reference.proportions, self.counts)
        self.ratio = value_psi / self.alert
        return value_psi > self.alert

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reference": self.reference.model_dump(),
            "n": self.n,
            "alert": self.alert,
            "counts": list(self.counts),
            "seen": self.seen,
            "ratio": self.ratio,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PsiAbove:
        c = cls(ReferenceHistogram.model_validate(state["reference"]), int(state["n"]), float(state["alert"]))
        c.counts, c.seen, c.ratio = [int(v) for v in state["counts"]], int(state["seen"]), float(state["ratio"])
        return c


class StaysAbove(Confirmation):
    """Windows: the next ``windows`` window statistics all stay above ``alert``."""

    kind = "stays_above"

    def __init__(self, alert: float, windows: int, window_size: int) -> None:
        self.alert, self.windows, self.window_size = alert, windows, window_size
        self.seen, self.ratio = 0, math.inf

    def observe(self, value: float) -> bool | None:
        self.seen += 1
        self.ratio = min(self.ratio, value / self.alert)
        if value <= self.alert:
            return False
        return True if self.seen >= self.windows else None

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "alert": self.alert,
            "windows": self.windows,
            "window_size": self.window_size,
            "seen": self.seen,
            "ratio": _json_float(self.ratio),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> StaysAbove:
        c = cls(float(state["alert"]), int(state["windows"]), int(state["window_size"]))
        c.seen, c.ratio = int(state["seen"]), _float(state["ratio"])
        return c


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else repr(value)


def _float(value: float | str) -> float:
    return float(value)


def _confirmation_from(state: Mapping[str, Any]) -> Confirmation:
    kinds: dict[str, Any] = {"mean_rise": MeanRise, "psi_above": PsiAbove, "stays_above": StaysAbove}
    return cast(Confirmation, kinds[state["kind"]].from_state(state))


@dataclass
class _Pending:
    candidate: DriftCandidate
    confirmation: Confirmation
    window_size: int
    """Samples one confirmation observation stands for (1, or a window's rows)."""


def _key(kind: str, feature: str | None) -> str:
    return f"{kind}|{feature or ''}"


def _unkey(key: str) -> tuple[DriftKind, str | None]:
    kind, _, feature = key.partition("|")
    return cast(DriftKind, kind), feature or None


class AlarmPolicy:
    """Confirmation, cooldown, latch and severity for one model's drift candidates.

    ``propose`` opens a confirmation for a candidate (or suppresses it at once when its cause
    is cooling down); ``observe`` feeds the fresh samples of that cause and returns the
    :class:`Alarm` or :class:`Suppressed` when the confirmation decides. While a candidate is
    pending, further candidates for the same cause are dropped (dedupe). Times are event times.
    """

    def __init__(self, model: str, cooldown: timedelta, version: int | None = None) -> None:
        self.model = model
        self.cooldown = cooldown
        self.version = version
        self._pending: dict[str, _Pending] = {}
        self._last_alarm: dict[str, float] = {}
        self._latched: set[str] = set()

    @property
    def has_pending(self) -> bool:
        """Any candidate awaits confirmation (a cheap check for the hot path)."""
        return bool(self._pending)

    def pending(self, kind: DriftKind, feature: str | None) -> bool:
        """A candidate for this cause awaits confirmation."""
        return _key(kind, feature) in self._pending

    def latched(self, kind: DriftKind, feature: str | None) -> bool:
        """A data/prediction alarm for this cause was published and its PSI has not come back down."""
        return _key(kind, feature) in self._latched

    def unlatch(self, kind: DriftKind, feature: str | None) -> None:
        """The cause's window statistic fell back below its alert."""
        self._latched.discard(_key(kind, feature))

    def cooling(self, kind: DriftKind, feature: str | None, at: datetime) -> bool:
        """An alarm for this cause was published less than ``cooldown`` ago."""
        last = self._last_alarm.get(_key(kind, feature))
        return last is not None and epoch(at) - last < self.cooldown.total_seconds()

    def propose(
        self, candidate: DriftCandidate, confirmation: Confirmation, at: datetime, window_size: int = 1
    ) -> Suppressed | None:
        """Start confirming ``candidate``; a latched or cooling cause is suppressed, a pending one ignored."""
        key = _key(candidate.kind, candidate.feature)
        if key in self._pending:
            return None
        if key in self._latched:
            return Suppressed(self.model, candidate.kind, candidate.feature, candidate.detector, "latched")
        if self.cooling(candidate.kind, candidate.feature, at):
            return Suppressed(self.model, candidate.kind, candidate.feature, candidate.detector, "cooldown")
        self._pending[key] = _Pending(candidate, confirmation, window_size)
        return None

    def observe(
        self, kind: DriftKind, feature: str | None, value: float, at: datetime, started_at: datetime | None = None
    ) -> Alarm | Suppressed | None:
        """Feed one fresh sample (or window statistic) of a cause under confirmation.

        ``started_at`` is the time of the first sample in the new regime, when the caller can
        tell it (see :meth:`ModelDrift`); it is copied into the alarm.
        """
        key = _key(kind, feature)
        pending = self._pending.get(key)
        if pending is None:
            return None
        decided = pending.confirmation.observe(value)
        if decided is None:
            return None
        del self._pending[key]
        c = pending.candidate
        if not decided:
            return Suppressed(self.model, c.kind, c.feature, c.detector, "unconfirmed")
        if self.cooling(kind, feature, at):  # pragma: no cover - propose() already refused these
            return Suppressed(self.model, c.kind, c.feature, c.detector, "cooldown")
        self._last_alarm[key] = epoch(at)
        if c.kind in ("data", "prediction"):
            # Confirmed against the training reference: while the stream stays different from it,
            # any later confirmation would only repeat "still different from training".
            self._latched.add(key)
        fresh = pending.confirmation.seen * pending.window_size
        change = None if c.change_samples is None else c.change_samples + fresh
        return Alarm(
            model=self.model,
            model_version=self.version,
            kind=c.kind,
            feature=c.feature,
            detector=c.detector,
            statistic=c.statistic,
            threshold=c.threshold,
            samples=c.samples + fresh,
            severity=severity(max(c.ratio, pending.confirmation.ratio)),
            change_samples=change,
            change_started_at=started_at,
        )

    def reset(self, version: int | None) -> None:
        """A new version was promoted: forget pending candidates, cooldowns and latches."""
        self.version = version
        self._pending.clear()
        self._last_alarm.clear()
        self._latched.clear()

    def to_state(self) -> dict[str, Any]:
        """Pending confirmations, last alarm times (epoch seconds) and latches."""
        return {
            "model": self.model,
            "version": self.version,
            "cooldown_s": self.cooldown.total_seconds(),
            "pending": {
                k: {
                    "candidate": _candidate_state(p.candidate),
                    "confirmation": p.confirmation.to_state(),
                    "window_size": p.window_size,
                }
                for k, p in self._pending.items()
            },
            "last_alarm": dict(self._last_alarm),
            "latched": sorted(self._latched),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], cooldown: timedelta | None = None) -> AlarmPolicy:
        """Restore; ``cooldown`` overrides the stored one (the spec may have changed)."""
        policy = cls(
            str(state["model"]),
            cooldown if cooldown is not None else timedelta(seconds=float(state["cooldown_s"])),
            state["version"],
        )
        for key, p in state["pending"].items():
            policy._pending[key] = _Pending(
                _candidate_from(p["candidate"]), _confirmation_from(p["confirmation"]), int(p["window_size"])
            )
        policy._last_alarm = {k: float(v) for k, v in state["last_alarm"].items()}
        policy._latched = set(state["latched"])
        return policy


def _candidate_state(c: DriftCandidate) -> dict[str, Any]:
    return {
        "kind": c.kind,
        "feature": c.feature,
        "detector": c.detector,
        "statistic": _json_float(c.statistic),
        "threshold": _json_float(c.threshold),
        "samples": c.samples,
        "change_samples": c.change_samples,
    }


def _candidate_from(state: Mapping[str, Any]) -> DriftCandidate:
    return DriftCandidate(
        kind=state["kind"],
        feature=state["feature"],
        detector=state["detector"],
        statistic=_float(state["statistic"]),
        threshold=_float(state["threshold"]),
        samples=int(state["samples"]),
        change_samples=state["change_samples"],
    )


# --- one model's drift watch -----------------------------------------------------------------


@dataclass(frozen=True)
class DriftSettings:
    """Tuning that is not in the spec (the spec's ``monitoring`` section holds the rest)."""

    psi_window: int = 1000
    """Rows per tumbling window of feature PSI."""
    prediction_window: int = 1000
    """Predictions per tumbling window of prediction drift."""
    z_confirm: float = 3.0
    """Standard errors by which fresh errors must exceed the pre-change rate (concept)."""
    min_confirmation_fraction: float = 0.25
    """Share of ``confirmation_samples`` a concept confirmation waits for before it may decide."""
    min_reference_samples: int = 500
    """A concept candidate needs this many pre-change samples (burn-in after a start or reset)."""
    z_reject: float = 0.0
    """Below this z after ``confirmation_samples`` fresh errors, a concept candidate is rejected."""
    confirmation_extend: int = 4
    """A concept confirmation confirms at ``z_confirm`` within this many x ``confirmation_samples``."""
    z_patient: float = 3.5
    """After that, an undecided concept confirmation needs this z (it looked at the data more often)."""
    confirmation_patience: int = 10
    """An undecided concept confirmation gives up after this many x ``confirmation_samples``."""
    time_history: int = 16384
    """Sample times kept per stream to date a change point (``change_started_at``)."""


@dataclass
class DriftUpdate:
    """What one observation produced: alarms to publish, suppressions to count, and the
    statistics to show (``statistics[(kind, feature)]`` from detectors, ``psi[stream]`` when a
    window closed; prediction streams are ``label`` and ``proba:<class>``)."""

    alarms: list[Alarm] = field(default_factory=list)
    suppressed: list[Suppressed] = field(default_factory=list)
    statistics: dict[tuple[DriftKind, str | None], float] = field(default_factory=dict)
    psi: dict[str, float] = field(default_factory=dict)
    chi_square: float | None = None

    def add(self, outcome: Alarm | Suppressed | None) -> None:
        if isinstance(outcome, Alarm):
            self.alarms.append(outcome)
        elif isinstance(outcome, Suppressed):
            self.suppressed.append(outcome)


class _Times:
    """A bounded history of sample times, to date "the n-th most recent sample"."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._times: deque[float] = deque(maxlen=size)

    def add(self, at: datetime) -> None:
        self._times.append(epoch(at))

    def extend(self, epochs: Iterable[float]) -> None:
        """Add many sample times (epoch seconds), oldest first."""
        self._times.extend(epochs)

    def ago(self, samples: int | None, newer: Sequence[float] = ()) -> datetime | None:
        """Time of the sample ``samples`` back (1 = the latest); the oldest kept if further.

        ``newer``: epoch times of samples not added yet, as if they had been (a batch that
        is being observed sample by sample).
        """
        if samples is None:
            return None
        kept = min(self._size, len(self._times) + len(newer))
        if kept == 0:
            return None
        back = min(max(samples, 1), kept)
        if back <= len(newer):
            return from_epoch(newer[-back])
        return from_epoch(self._times[len(newer) - back])

    def to_state(self) -> list[float]:
        return list(self._times)

    def restore(self, values: Iterable[float]) -> None:
        self._times.extend(float(v) for v in values)


class ModelDrift:
    """Every drift stream of one model: feature detectors + windowed PSI (data), prediction
    windows (prediction), the error-stream detector (concept), behind one :class:`AlarmPolicy`.

    Feed every prediction to :meth:`observe_prediction` (data drift uses all variants; prediction
    drift only rows of the current ``version``) and the champion's joined outcomes to
    :meth:`observe_outcome`. Call :meth:`reset` when a new version is promoted. Without a
    reference (no model card yet) only concept drift is watched.
    """

    def __init__(
        self,
        model: str,
        version: int | None,
        reference: Reference | None,
        monitoring: MonitoringSpec,
        settings: DriftSettings | None = None,
    ) -> None:
        self.model = model
        self.monitoring = monitoring
        self.settings = settings or DriftSettings()
        self.policy = AlarmPolicy(model, monitoring.alarm_cooldown, version)
        self._build(version, reference)

    def _build(self, version: int | None, reference: Reference | None) -> None:
        self.version = version
        self.reference = reference
        features = reference.features if reference else {}
        self._histograms = {name: f.histogram for name, f in features.items()}
        self._statistic_keys: dict[str, tuple[DriftKind, str | None]] = {name: ("data", name) for name in features}
        self._data: dict[str, Detector] = {
            name: data_detector(self.monitoring.data_detector) for name in self._histograms
        }
        self._concept: Detector = concept_detector(self.monitoring.concept_detector)
        self._psi = WindowedPsi(self._histograms, self.settings.psi_window)
        self._predictions = (
            PredictionWindow(reference.predictions, self.settings.prediction_window) if reference else None
        )
        self._prediction_times = _Times(self.settings.time_history)
        self._outcome_times = _Times(self.settings.time_history)
        self.labelled = 0
        self.predictions = 0

    @property
    def features(self) -> list[str]:
        """Features with a reference, in reference order."""
        return list(self._histograms)

    def reset(self, version: int | None, reference: Reference | None) -> None:
        """A new version is champion: fresh detectors against its reference, alarms cleared."""
        self.policy.reset(version)
        self._build(version, reference)

    # -- data and prediction drift --

    def observe_prediction(
        self,
        features: Mapping[str, float | None],
        label: Label,
        probabilities: Mapping[str, float],
        at: datetime,
        version: int | None = None,
    ) -> DriftUpdate:
        """One logged prediction (``version``: the version that answered, None = current)."""
        update = DriftUpdate()
        self.predictions += 1
        self._prediction_times.add(at)
        policy = self.policy
        # Only a feature's own steps change its pending state: "none pending" holds for the row.
        any_pending = policy.has_pending
        statistics = update.statistics
        keys = self._statistic_keys
        isfinite = math.isfinite
        for name, detector in self._data.items():
            value = features.get(name)
            if value is None or not isfinite(value):
                continue
            if any_pending and policy.pending("data", name):
                started = self._started("data", name, self._prediction_times)
                update.add(policy.observe("data", name, value, at, started))
            signal = detector.update(value)
            statistics[keys[name]] = signal.statistic
            if signal.drifted:
                self._propose_data(name, detector.name, signal, at, update)
        self._close_windows(self._psi.add(features), None, at, update)
        if self._predictions is not None and (version is None or version == self.version):
            self._close_windows(None, self._predictions.add(label, probabilities), at, update)
        return update

    def observe_predictions(
        self,
        feature_names: Sequence[str],
        features: ArrayLike,
        labels: Sequence[Label],
        probabilities: ArrayLike,
        classes: Sequence[str],
        times: Sequence[datetime],
        version: int | None = None,
    ) -> DriftUpdate:
        """Many logged predictions in columns, as :class:`~shared.events.PredictionsLogged` holds
        them: the same alarms, suppressions, PSIs and checkpoint as :meth:`observe_prediction`
        row by row, several times faster.

        Parameters
        ----------
        feature_names
            Column names of ``features``; reference features without a column count as missing.
        features
            ``rows x len(feature_names)`` values; ``None``, NaN and infinities are missing.
        labels, times
            The predicted label and the event time of each row.
        probabilities
            ``rows x len(classes)`` predicted probabilities (``rows x 0`` when there are none).
        version
            The version that answered every row (None = current); prediction drift counts only
            the current version's rows, data drift all of them.

        The returned update holds every alarm and suppression in row order, each statistic's
        last value, and the PSIs of every window that closed (the last one per stream).
        """
        n = len(times)
        update = DriftUpdate()
        if n == 0:
            return update
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} rows")
        matrix = np.asarray(features, dtype=np.float64).reshape(n, len(feature_names))
        index = {name: i for i, name in enumerate(feature_names)}
        columns = {name: matrix[:, index[name]] for name in self._data if name in index}
        counted = self._predictions is not None and (version is None or version == self.version)
        proba: dict[str, NDArray[np.float64]] = {}
        if counted and classes:
            p = np.asarray(probabilities, dtype=np.float64).reshape(n, len(classes))
            proba = {str(c): p[:, k] for k, c in enumerate(classes)}
        epochs = [epoch(t) for t in times]
        self.predictions += n
        start = 0
        while start < n:
            end = start + min(n - start, self._psi.remaining)
            if counted and self._predictions is not None:
                end = min(end, start + self._predictions.remaining)
            self._observe_features(columns, start, end, epochs, times, update)
            at = times[end - 1]
            self._close_windows(
                self._psi.add_columns({name: c[start:end] for name, c in columns.items()}, end - start),
                None,
                at,
                update,
            )
            if counted and self._predictions is not None:
                closed = self._predictions.add_many(labels[start:end], {c: v[start:end] for c, v in proba.items()})
                self._close_windows(None, closed, at, update)
            start = end
        return update

    def _observe_features(
        self,
        columns: Mapping[str, NDArray[np.float64]],
        start: int,
        end: int,
        epochs: Sequence[float],
        times: Sequence[datetime],
        update: DriftUpdate,
    ) -> None:
        """Rows ``start:end`` (no window closes before ``end - 1``) through the feature detectors,
        column by column; the rare policy steps (a pending confirmation, a drift) row by row."""
        policy = self.policy
        newer = epochs[start:end]
        outcomes: list[tuple[int, int, int, Alarm | Suppressed]] = []
        for order, (name, detector) in enumerate(self._data.items()):
            column = columns.get(name)
            if column is None:
                continue
            segment = column[start:end]
            finite = np.isfinite(segment)
            if finite.all():
                rows: list[int] | None = None
                values: list[float] = segment.tolist()
            else:
                rows = np.flatnonzero(finite).tolist()
                values = segment[finite].tolist()
            batch = update_many(detector, values)
            if batch.last is not None:
                update.statistics[("data", name)] = batch.last.statistic
            drifts = dict(batch.drifts)
            if not drifts and not policy.pending("data", name):
                continue
            last_drift = max(drifts, default=-1)
            for k, value in enumerate(values):
                pending = policy.pending("data", name)
                if not pending and k > last_drift:
                    break
                row = k if rows is None else rows[k]
                at = times[start + row]
                if pending:
                    started = self._started("data", name, self._prediction_times, newer[: row + 1])
                    outcome = policy.observe("data", name, value, at, started)
                    if outcome is not None:
                        outcomes.append((row, order, 0, outcome))
                signal = drifts.get(k)
                if signal is not None:
                    proposed = DriftUpdate()
                    self._propose_data(name, detector.name, signal, at, proposed)
                    outcomes.extend((row, order, 1, o) for o in proposed.suppressed)
        self._prediction_times.extend(newer)
        for *_, outcome in sorted(outcomes, key=lambda o: o[:3]):
            update.add(outcome)

    def _close_windows(
        self,
        data: dict[str, float] | None,
        prediction: dict[str, float] | None,
        at: datetime,
        update: DriftUpdate,
    ) -> None:
        """PSIs of windows that just closed: shown, unlatched or proposed as candidates."""
        if data is not None:
            update.psi.update(data)
            for name, value in data.items():
                self._window_psi("data", name, value, self.settings.psi_window, at, update)
        if prediction is not None and self._predictions is not None:
            update.psi.update(prediction)
            update.chi_square = self._predictions.last_chi_square
            for stream, value in prediction.items():
                self._window_psi("prediction", stream, value, self.settings.prediction_window, at, update)

    def _started(
        self, kind: DriftKind, feature: str | None, times: _Times, newer: Sequence[float] = ()
    ) -> datetime | None:
        """Time of the first new-regime sample if the pending candidate confirms on this observation."""
        pending = self.policy._pending.get(_key(kind, feature))
        if pending is None:
            return None
        change = pending.candidate.change_samples or 0
        return times.ago(change + (pending.confirmation.seen + 1) * pending.window_size, newer)

    def _propose_data(self, name: str, detector: str, signal: DriftSignal, at: datetime, update: DriftUpdate) -> None:
        candidate = DriftCandidate(
            "data", name, detector, signal.statistic, signal.threshold, signal.samples, signal.change_samples
        )
        n = max(self.monitoring.confirmation_samples, MIN_PSI_SAMPLES)
        confirmation = PsiAbove(self._histograms[name], n, self.monitoring.psi_alert)
        update.add(self.policy.propose(candidate, confirmation, at))

    def _window_psi(
        self, kind: DriftKind, stream: str, value: float, window: int, at: datetime, update: DriftUpdate
    ) -> None:
        alert = self.monitoring.psi_alert
        if value <= alert:
            self.policy.unlatch(kind, stream)
        if kind == "prediction" and self.policy.pending(kind, stream):
            started = self._started(kind, stream, self._prediction_times)
            update.add(self.policy.observe(kind, stream, value, at, started))
            return
        if value <= alert or self.policy.latched(kind, stream) or self.policy.pending(kind, stream):
            return
        # A window says "somewhere in here"; only the confirming samples are surely new-regime.
        candidate = DriftCandidate(kind, stream, "PSI", value, alert, window, 0)
        if kind == "prediction":
            confirmation: Confirmation = StaysAbove(alert, 1, window)
            update.add(self.policy.propose(candidate, confirmation, at, window_size=window))
        else:
            n = max(self.monitoring.confirmation_samples, MIN_PSI_SAMPLES)
            update.add(self.policy.propose(candidate, PsiAbove(self._histograms[stream], n, alert), at))

    # -- concept drift --

    def observe_outcome(self, error: bool, at: datetime) -> DriftUpdate:
        """One joined outcome of the champion: True when its prediction was wrong."""
        update = DriftUpdate()
        value = 1.0 if error else 0.0
        self.labelled += 1
        self._outcome_times.add(at)
        if self.policy.pending("concept", None):
            started = self._started("concept", None, self._outcome_times)
            update.add(self.policy.observe("concept", None, value, at, started))
        signal = self._concept.update(value)
        update.statistics[("concept", None)] = signal.statistic
        if signal.drifted:
            candidate = DriftCandidate(
                "concept",
                None,
                self._concept.name,
                signal.statistic,
                signal.threshold,
                signal.samples,
                signal.change_samples,
            )
            if signal.reference_mean is None or signal.reference_samples < self.settings.min_reference_samples:
                # Burn-in: a pre-change rate from a few hundred samples is not a baseline -- the
                # detector picked the split where it looked lowest, and a fresh test cannot undo that.
                update.suppressed.append(Suppressed(self.model, "concept", None, candidate.detector, "unconfirmed"))
                return update
            c = self.monitoring.confirmation_samples
            confirmation = MeanRise(
                signal.reference_mean,
                signal.reference_samples,
                max(1, math.ceil(c * self.settings.min_confirmation_fraction)),
                c,
                self.settings.z_confirm,
                self.settings.z_reject,
                self.settings.confirmation_extend,
                self.settings.z_patient,
                self.settings.confirmation_patience,
            )
            update.add(self.policy.propose(candidate, confirmation, at))
        return update

    # -- status and checkpoints --

    def status(self) -> dict[str, Any]:
        """JSON for ``GET /v1/models/{m}/status``: what is pending, latched, and how much was seen."""
        return {
            "version": self.version,
            "predictions": self.predictions,
            "labelled": self.labelled,
            "pending": [
                {"kind": k, "feature": f, "detector": p.candidate.detector, "fresh_samples": p.confirmation.seen}
                for (k, f), p in ((_unkey(key), p) for key, p in self.policy._pending.items())
            ],
            "latched": [{"kind": k, "feature": f} for k, f in (_unkey(key) for key in sorted(self.policy._latched))],
            "detectors": {"data": self.monitoring.data_detector, "concept": self.monitoring.concept_detector},
        }

    def to_state(self) -> dict[str, Any]:
        """Everything but the reference (it is in the model card) and the spec."""
        return {
            "model": self.model,
            "version": self.version,
            "policy": self.policy.to_state(),
            "data": {name: d.to_state() for name, d in self._data.items()},
            "concept": self._concept.to_state(),
            "psi": self._psi.to_state(),
            "predictions_window": None if self._predictions is None else self._predictions.to_state(),
            "prediction_times": self._prediction_times.to_state(),
            "outcome_times": self._outcome_times.to_state(),
            "labelled": self.labelled,
            "predictions": self.predictions,
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        reference: Reference | None,
        monitoring: MonitoringSpec,
        settings: DriftSettings | None = None,
    ) -> ModelDrift:
        """Restore against the card's ``reference`` and the current spec.

        A detector whose state is incompatible (another River version, or the spec now names
        another detector) starts fresh instead -- losing a window is better than not monitoring.
        """
        drift = cls(str(state["model"]), state["version"], reference, monitoring, settings)
        drift.policy = AlarmPolicy.from_state(state["policy"], monitoring.alarm_cooldown)
        for name, detector_state in state["data"].items():
            if name in drift._data and detector_state.get("type") == drift._data[name].name:
                drift._data[name] = _restore_or(detector_state, drift._data[name])
        if state["concept"].get("type") == drift._concept.name:
            drift._concept = _restore_or(state["concept"], drift._concept)
        drift._psi = WindowedPsi.from_state(state["psi"], drift._histograms)
        if drift._predictions is not None and state["predictions_window"] is not None:
            drift._predictions = PredictionWindow.from_state(state["predictions_window"], drift._predictions.reference)
        drift._prediction_times.restore(state["prediction_times"])
        drift._outcome_times.restore(state["outcome_times"])
        drift.labelled = int(state["labelled"])
        drift.predictions = int(state["predictions"])
        return drift


def _restore_or(state: dict[str, Any], fresh: Detector) -> Detector:
    try:
        return detector_from_state(state)
    except ValueError:
        return fresh


# --- live accuracy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCounts:
    """Labelled predictions and how many were wrong."""

    labelled: int = 0
    errors: int = 0

    @property
    def error_rate(self) -> float:
        """Errors over labelled (0 when nothing is labelled)."""
        return self.errors / self.labelled if self.labelled else 0.0

    @property
    def accuracy(self) -> float:
        """1 - error rate (0 when nothing is labelled)."""
        return 1.0 - self.error_rate if self.labelled else 0.0

    def plus(self, correct: bool) -> ErrorCounts:
        """These counts with one more outcome."""
        return ErrorCounts(self.labelled + 1, self.errors + (0 if correct else 1))

    def describe(self) -> str:
        """``0.081 (41/506)``: the rate with its figures, for verdict reasons."""
        return f"{self.error_rate:.3f} ({self.errors}/{self.labelled})"


@dataclass(frozen=True)
class AccuracyPoint:
    """One tumbling window of one (model, version, variant)."""

    start: datetime
    counts: ErrorCounts

    @property
    def accuracy(self) -> float:
        """Accuracy in the window."""
        return self.counts.accuracy

    @property
    def error_rate(self) -> float:
        """Error rate in the window."""
        return self.counts.error_rate


SeriesKey = tuple[str, int, str]
"""(model, version, variant)."""


class LiveAccuracy:
    """Tumbling-window accuracy per (model, version, variant) from joined outcomes.

    Windows are aligned to multiples of ``window`` in event time (pass the prediction's time,
    so a window shows how the model did on what it served then). A late outcome updates its
    window if that window is still kept; only the newest ``max_points`` windows are kept per
    series (the report plot), plus running totals.
    """

    def __init__(self, window: timedelta = timedelta(minutes=1), max_points: int = 1440) -> None:
        if window.total_seconds() <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self.max_points = max_points
        self._series: dict[SeriesKey, dict[float, ErrorCounts]] = {}
        self._totals: dict[SeriesKey, ErrorCounts] = {}

    def record(self, model: str, version: int, variant: str, correct: bool, at: datetime) -> AccuracyPoint | None:
        """Count one outcome; returns its window's point (None if the window was already dropped)."""
        key = (model, version, variant)
        self._totals[key] = self._totals.get(key, ErrorCounts()).plus(correct)
        size = self.window.total_seconds()
        start = math.floor(epoch(at) / size) * size
        series = self._series.setdefault(key, {})
        if start not in series and len(series) >= self.max_points and start < min(series):
            return None
        counts = series.get(start, ErrorCounts()).plus(correct)
        series[start] = counts
        while len(series) > self.max_points:
            del series[min(series)]
        return AccuracyPoint(from_epoch(start), counts)

    def series(self, model: str, version: int, variant: str) -> list[AccuracyPoint]:
        """The kept windows, oldest first."""
        points = self._series.get((model, version, variant), {})
        return [AccuracyPoint(from_epoch(s), points[s]) for s in sorted(points)]

    def latest(self, model: str, version: int, variant: str) -> AccuracyPoint | None:
        """The newest window."""
        points = self._series.get((model, version, variant))
        if not points:
            return None
        start = max(points)
        return AccuracyPoint(from_epoch(start), points[start])

    def totals(self, model: str, version: int, variant: str) -> ErrorCounts:
        """Every outcome counted for the series."""
        return self._totals.get((model, version, variant), ErrorCounts())

    def keys(self, model: str | None = None) -> list[SeriesKey]:
        """Series with data (of one model, when given)."""
        return sorted(k for k in self._totals if model is None or k[0] == model)

    def to_state(self) -> dict[str, Any]:
        """Series and totals as JSON lists."""
        return {
            "window_s": self.window.total_seconds(),
            "max_points": self.max_points,
            "series": [
                {
                    "key": list(key),
                    "total": [self._totals[key].labelled, self._totals[key].errors],
                    "points": [[s, c.labelled, c.errors] for s, c in sorted(self._series.get(key, {}).items())],
                }
                for key in self._totals
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LiveAccuracy:
        """Restore series and totals."""
        live = cls(timedelta(seconds=float(state["window_s"])), int(state["max_points"]))
        for item in state["series"]:
            model, version, variant = item["key"]
            key = (str(model), int(version), str(variant))
            live._totals[key] = ErrorCounts(int(item["total"][0]), int(item["total"][1]))
            live._series[key] = {float(s): ErrorCounts(int(n), int(e)) for s, n, e in item["points"]}
        return live


# --- canary verdicts -------------------------------------------------------------------------

VerdictAction = Literal["promoted", "rolled_back"]


@dataclass(frozen=True)
class Verdict:
    """A decision to publish as ``DeploymentChanged`` (``version`` is the one judged)."""

    action: VerdictAction
    version: int
    previous_version: int | None
    reason: str


CANARY_Z = 1.645
"""One-sided 95%: how sure the judge must be that a canary is worse before it rolls it back."""


class CanaryJudge:
    """Canary against champion over the same period, by the spec's ``promote_after``.

    Waits until both have ``labelled_samples`` labelled predictions, then rolls the canary back
    when its error rate exceeds the champion's by more than ``max_error_delta`` *beyond sampling
    noise* -- ``(delta - max_error_delta) / SE >= 1.645``, SE the standard error of the
    difference of the two rates -- and promotes it otherwise. On a few hundred labels each, a
    point comparison is a coin toss between two near-equal models (a candidate that already
    passed the gate on the holdout); a clearly worse canary is still rolled back, and a
    promoted one is watched against ``rollback_on`` afterwards.

    >>> judge = CanaryJudge(PromoteAfter(labelled_samples=100, max_error_delta=0.0), RollbackOn())
    >>> judge.judge(ErrorCounts(900, 90), ErrorCounts(99, 5), champion_version=1, canary_version=2) is None
    True
    >>> judge.judge(ErrorCounts(900, 90), ErrorCounts(100, 5), champion_version=1, canary_version=2).action
    'promoted'
    >>> judge.judge(ErrorCounts(900, 90), ErrorCounts(100, 12), champion_version=1, canary_version=2).action
    'promoted'
    >>> judge.judge(ErrorCounts(900, 90), ErrorCounts(100, 25), champion_version=1, canary_version=2).action
    'rolled_back'
    """

    def __init__(self, promote_after: PromoteAfter, rollback_on: RollbackOn) -> None:
        self.promote_after = promote_after
        self.rollback_on = rollback_on

    def judge(
        self, champion: ErrorCounts, canary: ErrorCounts, *, champion_version: int | None, canary_version: int
    ) -> Verdict | None:
        """None while either side has fewer than ``labelled_samples``; else the verdict."""
        needed = self.promote_after.labelled_samples
        if canary.labelled < needed or champion.labelled < needed:
            return None
        delta = canary.error_rate - champion.error_rate
        allowed = self.promote_after.max_error_delta
        p1, p2 = canary.error_rate, champion.error_rate
        floor = 1.0 / (canary.labelled + champion.labelled)  # no zero variance when a side made no error
        se = math.sqrt(max(p1 * (1 - p1), floor) / canary.labelled + max(p2 * (1 - p2), floor) / champion.labelled)
        z = (delta - allowed) / se
        worse = z >= CANARY_Z
        champ = f"champion v{champion_version}" if champion_version is not None else "champion"
        if worse:
            verdict = f"> allowed {allowed:+.3f} beyond noise (z {z:.2f} >= {CANARY_Z})"
        elif delta > allowed:
            verdict = f"within noise of allowed {allowed:+.3f} (z {z:.2f} < {CANARY_Z})"
        else:
            verdict = f"<= allowed {allowed:+.3f}"
        reason = (
            f"canary v{canary_version} error {canary.describe()} vs {champ} {champion.describe()} "
            f"on the same period: delta {delta:+.3f} {verdict}"
        )
        return Verdict("rolled_back" if worse else "promoted", canary_version, champion_version, reason)


class CanaryTrial:
    """The labelled outcomes of one canary run: champion and canary counted from ``started_at``.

    Only outcomes of the two versions, for predictions made at or after the start, are counted,
    so both sides cover the same period. ``decide`` returns a verdict once, then None.
    """

    def __init__(self, champion_version: int | None, canary_version: int, started_at: datetime) -> None:
        self.champion_version = champion_version
        self.canary_version = canary_version
        self.started_at = started_at
        self.champion = ErrorCounts()
        self.canary = ErrorCounts()
        self.decided: Verdict | None = None

    def record(self, version: int, correct: bool, predicted_at: datetime) -> None:
        """Count one joined outcome (ignored if it is of another version or before the start)."""
        if predicted_at < self.started_at:
            return
        if version == self.canary_version:
            self.canary = self.canary.plus(correct)
        elif version == self.champion_version:
            self.champion = self.champion.plus(correct)

    def decide(self, judge: CanaryJudge) -> Verdict | None:
        """The verdict the first time there is one."""
        if self.decided is not None:
            return None
        verdict = judge.judge(
            self.champion, self.canary, champion_version=self.champion_version, canary_version=self.canary_version
        )
        self.decided = verdict
        return verdict

    def to_state(self) -> dict[str, Any]:
        """Versions, start (epoch seconds), counts and the verdict if any."""
        return {
            "champion_version": self.champion_version,
            "canary_version": self.canary_version,
            "started_at": epoch(self.started_at),
            "champion": [self.champion.labelled, self.champion.errors],
            "canary": [self.canary.labelled, self.canary.errors],
            "decided": None
            if self.decided is None
            else {
                "action": self.decided.action,
                "version": self.decided.version,
                "previous_version": self.decided.previous_version,
                "reason": self.decided.reason,
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CanaryTrial:
        """Restore a trial."""
        trial = cls(state["champion_version"], int(state["canary_version"]), from_epoch(float(state["started_at"])))
        trial.champion = ErrorCounts(*(int(v) for v in state["champion"]))
        trial.canary = ErrorCounts(*(int(v) for v in state["canary"]))
        decided = state["decided"]
        if decided is not None:
            trial.decided = Verdict(
                decided["action"], int(decided["version"]), decided["previous_version"], str(decided["reason"])
            )
        return trial


class ChampionWatch:
    """After a promotion: roll the new champion back if its error rises too far.

    The new champion's error over its most recent ``window`` labelled outcomes (default
    ``promote_after.labelled_samples``) is compared with the previous champion's recorded error
    (from the canary trial); once ``window`` outcomes exist, an increase beyond
    ``rollback_on.error_increase`` returns ``rolled_back``. The watch ends after ``horizon``
    outcomes (default 10 x window): later degradation is drift, for the concept detector and a
    retrain, not a reason to go back to a model that drift hits as hard.
    """

    def __init__(
        self,
        version: int,
        previous_version: int | None,
        previous_error: float,
        promote_after: PromoteAfter,
        rollback_on: RollbackOn,
        window: int | None = None,
        horizon: int | None = None,
    ) -> None:
        self.version = version
        self.previous_version = previous_version
        self.previous_error = previous_error
        self.error_increase = rollback_on.error_increase
        self.window = window or promote_after.labelled_samples
        self.horizon = horizon or 10 * self.window
        self.seen = 0
        self.done = False
        self._recent: deque[int] = deque(maxlen=self.window)

    @property
    def error_rate(self) -> float:
        """Error over the recent window."""
        return sum(self._recent) / len(self._recent) if self._recent else 0.0

    def record(self, version: int, correct: bool) -> Verdict | None:
        """Count one outcome of the champion; a verdict at most once."""
        if self.done or version != self.version:
            return None
        self.seen += 1
        self._recent.append(0 if correct else 1)
        if len(self._recent) >= self.window:
            increase = self.error_rate - self.previous_error
            if increase > self.error_increase:
                self.done = True
                errors = sum(self._recent)
                reason = (
                    f"champion v{self.version} error {self.error_rate:.3f} ({errors}/{len(self._recent)}) "
                    f"over its last {len(self._recent)} labelled predictions vs {self.previous_error:.3f} recorded for "
                    f"v{self.previous_version}: increase {increase:+.3f} > allowed {self.error_increase:.3f}"
                )
                return Verdict("rolled_back", self.version, self.previous_version, reason)
        if self.seen >= self.horizon:
            self.done = True
        return None

    def to_state(self) -> dict[str, Any]:
        """Versions, figures and the recent window as a ``0``/``1`` string."""
        return {
            "version": self.version,
            "previous_version": self.previous_version,
            "previous_error": self.previous_error,
            "error_increase": self.error_increase,
            "window": self.window,
            "horizon": self.horizon,
            "seen": self.seen,
            "done": self.done,
            "recent": "".join(str(v) for v in self._recent),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ChampionWatch:
        """Restore a watch."""
        watch = cls(
            int(state["version"]),
            state["previous_version"],
            float(state["previous_error"]),
            PromoteAfter(labelled_samples=int(state["window"])),
            RollbackOn(error_increase=float(state["error_increase"])),
            window=int(state["window"]),
            horizon=int(state["horizon"]),
        )
        watch.seen, watch.done = int(state["seen"]), bool(state["done"])
        watch._recent.extend(int(c) for c in state["recent"])
        return watch


class ChangeWait:
    """Labelled rows still needed after a change point before a since-change retrain can run
    (the ``waiting_rows`` gauge and the status page)."""

    def __init__(self, min_rows_after_change: int) -> None:
        self.min_rows = min_rows_after_change
        self.rows_after_change: int | None = None

    def start(self, change_samples: int | None) -> None:
        """A concept drift was published; ``change_samples`` labelled rows are already past it."""
        self.rows_after_change = change_samples or 0

    def record_labelled(self, rows: int = 1) -> None:
        """More labelled rows arrived."""
        if self.rows_after_change is not None:
            self.rows_after_change += rows

    @property
    def waiting_rows(self) -> int:
        """0 when nothing is waited for."""
        if self.rows_after_change is None:
            return 0
        return max(0, self.min_rows - self.rows_after_change)

    def clear(self) -> None:
        """The retrain happened (or a new version was promoted)."""
        self.rows_after_change = None
