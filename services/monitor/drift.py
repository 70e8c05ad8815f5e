"""One model's drift watch: every drift stream behind one alarm policy. Pure: no I/O.

Data drift: a River detector per numeric feature and windowed PSI against the model card's
reference; per categorical or boolean feature, windowed category statistics and the
unseen-category rate (:mod:`services.monitor.category_drift`; the statistics themselves in
:mod:`services.monitor.categorical`); prediction drift: windows of predicted classes and
probabilities, or of a regressor's predicted values; concept drift: a detector on the champion's
joined 0/1 error stream, and that stream held against the version's expected (holdout) error. A
regressor's error stream is 0/1 too: its misses, absolute errors beyond the holdout's threshold
(:func:`services.monitor.outcome.score`), whose holdout share is the expected error -- so every
detector and confirmation here applies to it unchanged. Each proposes candidates to the
model's :class:`~services.monitor.alarms.AlarmPolicy`, which confirms them on fresh samples (see
:mod:`services.monitor.alarms` for why a stable stream stays quiet). A concept candidate is
confirmed against the detector's own pre-change error rate; in the detector's burn-in (too few
pre-change samples, after a start, a reset or its own last drift) against the expected error
instead, or suppressed when the version has none.
The watch dates each confirmed change (``change_started_at``) from a bounded history of sample
times (:mod:`services.monitor.sample_times`). Its tuning beyond the spec is
:class:`~services.monitor.drift_settings.DriftSettings`; what an observation produced, a
:class:`~services.monitor.alarms.DriftUpdate`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.monitor.adwin import update_features
from services.monitor.alarms import (
    ERROR_RISE_UNIT,
    MIN_PSI_SAMPLES,
    AlarmPolicy,
    Confirmation,
    DriftCandidate,
    DriftKind,
    DriftUpdate,
    MeanRise,
    PsiAbove,
    StaysAbove,
    Suppressed,
)
from services.monitor.categorical import UNSEEN, CategoryBuckets, CategoryWindowState
from services.monitor.category_drift import CategoryDrift, Outcome
from services.monitor.detectors import concept_detector, data_detector, detector_from_state
from services.monitor.drift_settings import DriftSettings
from services.monitor.psi import PredictionWindow, PredictionWindowState, PsiWindowState, WindowedPsi
from services.monitor.sample_times import SampleTimes
from services.monitor.signals import Detector, DriftSignal
from services.monitor.state import State
from shared.events import FeatureValue, Target, epoch
from shared.reference import ExpectedError, Reference
from shared.spec import MonitoringSpec

__all__ = ["EXPECTED_ERROR", "DriftSettings", "DriftUpdate", "ModelDrift", "ModelDriftState"]

EXPECTED_ERROR = "expected_error"
"""The detector name of candidates from the watch against the version's expected error."""


class ModelDriftState(State):
    """A model's drift watch as checkpointed. River detector internals stay in the detectors'
    own JSON (:mod:`services.monitor.detectors`), held here as they are."""

    model: str
    version: int | None
    policy: AlarmPolicy
    data: dict[str, dict[str, Any]]
    concept: dict[str, Any]
    psi: PsiWindowState
    predictions_window: PredictionWindowState | None
    prediction_times: list[float]
    outcome_times: list[float]
    labelled: int
    predictions: int
    recent_errors: list[int] = []
    """The last ``expected_window`` outcomes (1 = wrong), for the watch against the expected error."""
    expected_hold: int = 0
    """No candidate against the expected error before this many outcomes (one window after the last)."""
    categories: CategoryWindowState | None = None
    """The open window of the categorical features (None: the model has none, or an older checkpoint)."""


class ModelDrift:
    """Every drift stream of one model: feature detectors + windowed PSI (data), the categorical
    features' :class:`~services.monitor.category_drift.CategoryDrift` (data), prediction windows
    (prediction), the error-stream detector (concept), behind one :class:`AlarmPolicy`.

    Feed every batch of logged predictions to :meth:`observe_predictions` (data drift uses all
    variants; prediction drift only rows of the current ``version``) and the champion's joined outcomes to
    :meth:`observe_outcome`. Call :meth:`reset` when a new version is promoted: its detectors
    start a burn-in, during which a concept candidate is confirmed against the card's expected
    error rather than lost. Without a reference (no model card yet) only concept drift is watched.
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
        self.policy = AlarmPolicy(model=model, cooldown=monitoring.alarm_cooldown, version=version)
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
        self._categories = CategoryDrift(self._category_buckets(reference), self.settings, self.monitoring)
        self._predictions = (
            PredictionWindow(reference.predictions, self.settings.prediction_window) if reference else None
        )
        self._prediction_times = SampleTimes(self.settings.time_history)
        self._outcome_times = SampleTimes(self.settings.time_history)
        self._expected = reference.expected_error if reference else None
        self._recent_errors: deque[int] = deque(maxlen=self.settings.expected_window)
        self._recent_sum = 0
        self._expected_hold = 0
        self.labelled = 0
        self.predictions = 0

    def _category_buckets(self, reference: Reference | None) -> dict[str, CategoryBuckets]:
        """PSI buckets of the reference's categorical features (a numeric reference wins a name)."""
        categories = reference.categories if reference else {}
        return {
            name: CategoryBuckets.of(c, self.settings.category_rare_share)
            for name, c in categories.items()
            if name not in self._histograms
        }

    @property
    def features(self) -> list[str]:
        """Numeric features with a reference, in reference order."""
        return list(self._histograms)

    @property
    def categorical(self) -> dict[str, CategoryBuckets]:
        """Categorical and boolean features with a reference, and their PSI buckets."""
        return dict(self._categories.buckets)

    def reset(self, version: int | None, reference: Reference | None) -> None:
        """A new version is champion: fresh detectors against its reference, alarms cleared."""
        self.policy.reset(version)
        self._build(version, reference)

    # -- data and prediction drift --

    def observe_predictions(
        self,
        feature_names: Sequence[str],
        features: ArrayLike | Sequence[Sequence[FeatureValue]],
        labels: Sequence[Target],
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
            ``rows x len(feature_names)`` values, typed as
            :attr:`~shared.events.PredictionsLogged.features` (numbers, category strings,
            booleans); ``None``, NaN and infinities are missing (and ``""`` for a category).
        labels, times
            The predicted label (a regressor's predicted number) and the event time of each row.
        probabilities
            ``rows x len(classes)`` predicted probabilities (``rows x 0`` when there are none, as
            for a regressor, whose ``classes`` are empty).
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
        columns, codes = self._columns(features, n, feature_names)
        for name, column in codes.items():
            update.unseen_values[name] = int(np.count_nonzero(column == UNSEEN))
        categories = self._categories
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
            if categories.remaining is not None:
                end = min(end, start + categories.remaining)
            if counted and self._predictions is not None:
                end = min(end, start + self._predictions.remaining)
            self._observe_features(columns, start, end, epochs, times, update, codes)
            at = times[end - 1]
            self._close_windows(
                self._psi.add_columns({name: c[start:end] for name, c in columns.items()}, end - start),
                None,
                at,
                update,
            )
            if categories.buckets:
                categories.add(codes, start, end, self.policy, at, update)
            if counted and self._predictions is not None:
                closed = self._predictions.add_many(labels[start:end], {c: v[start:end] for c, v in proba.items()})
                self._close_windows(None, closed, at, update)
            start = end
        return update

    def _columns(
        self, features: ArrayLike | Sequence[Sequence[FeatureValue]], n: int, feature_names: Sequence[str]
    ) -> tuple[dict[str, NDArray[np.float64]], dict[str, NDArray[np.int64]]]:
        """The float column of each numeric reference feature, and the coded column
        (:meth:`CategoryBuckets.codes`) of each categorical one."""
        width = len(feature_names)
        index = {name: i for i, name in enumerate(feature_names)}
        buckets = self._categories.buckets
        if not buckets:
            try:
                matrix = np.asarray(features, dtype=np.float64).reshape(n, width)
            except (TypeError, ValueError):  # categories in columns this reference does not watch
                pass
            else:
                return {name: matrix[:, index[name]] for name in self._data if name in index}, {}
        table = np.asarray(features, dtype=object).reshape(n, width)
        columns = {name: _numbers(table[:, index[name]]) for name in self._data if name in index}
        codes = {name: b.codes(table[:, index[name]]) for name, b in buckets.items() if name in index}
        return columns, codes

    def _observe_features(
        self,
        columns: Mapping[str, NDArray[np.float64]],
        start: int,
        end: int,
        epochs: Sequence[float],
        times: Sequence[datetime],
        update: DriftUpdate,
        codes: Mapping[str, NDArray[np.int64]] | None = None,
    ) -> None:
        """Rows ``start:end`` (no window closes before ``end - 1``) through the feature detectors,
        column by column; the rare policy steps (a pending confirmation, a drift) row by row.
        Categorical features have no detector: only their pending confirmations see the rows."""
        policy = self.policy
        newer = epochs[start:end]
        outcomes: list[Outcome] = []
        batches = update_features(self._data, columns, start, end)
        for order, (name, detector) in enumerate(self._data.items()):
            found = batches.get(name)
            if found is None:
                continue
            batch, values, rows = found
            if batch.last is not None:
                update.statistics[("data", name)] = batch.last.statistic
            drifts = dict(batch.drifts)
            if not drifts and not policy.pending("data", name):
                continue
            last_drift = max(drifts, default=-1)
            for k, value in enumerate(values.tolist()):
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
        if codes and policy.has_pending:
            self._categories.confirm(
                codes, start, end, policy, self._prediction_times, newer, times, outcomes, len(self._data)
            )
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
        self, kind: DriftKind, feature: str | None, times: SampleTimes, newer: Sequence[float] = ()
    ) -> datetime | None:
        """Time of the first new-regime sample if the pending candidate confirms on this observation."""
        return times.change_started(self.policy.pending_of(kind, feature), newer)

    def _propose_data(self, name: str, detector: str, signal: DriftSignal, at: datetime, update: DriftUpdate) -> None:
        candidate = _candidate("data", name, detector, signal)
        n = max(self.monitoring.confirmation_samples, MIN_PSI_SAMPLES)
        confirmation = PsiAbove(reference=self._histograms[name], n=n, alert=self.monitoring.psi_alert)
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
        candidate = DriftCandidate(
            kind=kind,
            feature=stream,
            detector="PSI",
            statistic=value,
            threshold=alert,
            samples=window,
            change_samples=0,
        )
        if kind == "prediction":
            confirmation: Confirmation = StaysAbove(alert=alert, windows=1, window_size=window)
            update.add(self.policy.propose(candidate, confirmation, at, window_size=window))
        else:
            n = max(self.monitoring.confirmation_samples, MIN_PSI_SAMPLES)
            confirmation = PsiAbove(reference=self._histograms[stream], n=n, alert=alert)
            update.add(self.policy.propose(candidate, confirmation, at))

    # -- concept drift --

    def observe_outcome(self, error: bool, at: datetime) -> DriftUpdate:
        """One joined outcome of the champion: True when its prediction was wrong (a regressor's
        miss: its absolute error beyond the expected error's threshold).

        Feeds a pending concept confirmation, the concept detector and the watch against the
        expected error (:meth:`_hold_against_expected`). When the detector fires, its candidate
        is confirmed on fresh outcomes against its pre-change error rate -- or, in burn-in (fewer
        than ``min_reference_samples`` pre-change outcomes, as after every :meth:`reset`),
        against the expected error exactly as that watch confirms, so a change soon after a
        promotion is dated by the detector and not only found later by the watch. Without an
        expected error a burn-in candidate is suppressed (``unconfirmed``).
        """
        update = DriftUpdate()
        value = 1.0 if error else 0.0
        self.labelled += 1
        self._outcome_times.add(at)
        if self.policy.pending("concept", None):
            started = self._started("concept", None, self._outcome_times)
            update.add(self.policy.observe("concept", None, value, at, started))
        signal = self._concept.update(value)
        update.statistics[("concept", None)] = signal.statistic
        self._hold_against_expected(error, at, update)
        if signal.drifted:
            candidate = _candidate("concept", None, self._concept.name, signal)
            confirmation = self._concept_confirmation(signal)
            if confirmation is None:
                update.suppressed.append(Suppressed(self.model, "concept", None, candidate.detector, "unconfirmed"))
                return update
            pending = self.policy.pending_of("concept", None)
            if pending is not None and pending.candidate.detector == EXPECTED_ERROR:
                # The detector saw the change happen: its change point (and, after burn-in, its
                # baseline) is the better evidence, and dropping its candidate would lose the change
                # (it starts over empty).
                self.policy.withdraw("concept", None)
            update.add(self.policy.propose(candidate, confirmation, at))
        return update

    def _hold_against_expected(self, error: bool, at: datetime, update: DriftUpdate) -> None:
        """The absolute reference: the recent error against what this version was trained to do.

        Detectors learn "normal" from the stream itself, so a version that starts serving into an
        already-changed world -- a rollback, a promotion just before a change -- or whose
        detectors were just reset takes the high error as its normal and is never flagged. This
        test does not learn: once the last ``expected_window`` outcomes exceed the card's
        expected error by ``z_expected`` standard errors, and its 95 % upper bound by at least
        :data:`ERROR_RISE_UNIT`, it proposes a concept candidate, confirmed like any other on
        fresh samples -- against the expected rate plus half a unit, the test counting the
        holdout's own sampling noise (``expected.rows``), so neither a fluke window nor a holdout
        a little optimistic raises an alarm -- and under the same cooldown -- a model left
        serving a changed world keeps saying so, once per cooldown, until a retrain replaces it.
        """
        recent = self._recent_errors
        if len(recent) == recent.maxlen:
            self._recent_sum -= recent[0]
        recent.append(1 if error else 0)
        self._recent_sum += 1 if error else 0
        expected = self._expected
        if expected is None or len(recent) < self.settings.expected_window or self.labelled < self._expected_hold:
            return
        policy = self.policy
        if policy.pending("concept", None) or policy.cooling("concept", None, at):
            return
        n = len(recent)
        live = self._recent_sum / n
        if live - expected.upper < ERROR_RISE_UNIT:  # clearly worse than the holdout's bound, not a wobble
            return
        floor = 1.0 / (n + expected.rows + 2)
        pooled = min(max((live * n + expected.rate * expected.rows) / (n + expected.rows), floor), 1.0 - floor)
        z = (live - expected.rate) / math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / max(expected.rows, 1)))
        if z < self.settings.z_expected:
            return
        self._expected_hold = self.labelled + self.settings.expected_window
        candidate = DriftCandidate(
            kind="concept",
            feature=None,
            detector=EXPECTED_ERROR,
            statistic=live,
            threshold=expected.upper,
            samples=self.labelled,
            change_samples=n,
        )
        update.add(policy.propose(candidate, self._rise_over_expected(expected), at))

    def _concept_confirmation(self, signal: DriftSignal) -> MeanRise | None:
        """How the concept detector's candidate is confirmed: against its pre-change rate, or in
        burn-in against the expected error (None: suppressed, there is no baseline to test)."""
        if signal.reference_mean is not None and signal.reference_samples >= self.settings.min_reference_samples:
            return self._mean_rise(signal.reference_mean, signal.reference_samples)
        # Burn-in: a pre-change rate from a few hundred samples is not a baseline -- the detector
        # picked the split where it looked lowest, and a fresh test cannot undo that -- and the
        # detector restarts on the new rate as normal. The card's expected error needs no burn-in.
        # A signal carries no post-change rate, so the confirmation alone decides: a stable stream
        # or a fall in error fails it, as it fails the watch's own candidates.
        return None if self._expected is None else self._rise_over_expected(self._expected)

    def _rise_over_expected(self, expected: ExpectedError) -> MeanRise:
        """Fresh errors above the holdout's rate by half a unit, beyond the noise of both samples:
        a small miss is no drift. (Against the 95 % bound instead, the holdout's noise counts
        twice, and a rise from 0.12 to 0.20 on an 800-row holdout is still unconfirmed after
        2,000 fresh errors.)"""
        return self._mean_rise(min(1.0, expected.rate + ERROR_RISE_UNIT / 2), expected.rows)

    def _mean_rise(self, reference: float, reference_n: int) -> MeanRise:
        """A concept confirmation: fresh errors against ``reference`` (a rate from ``reference_n``
        samples), with the spec's confirmation samples and the watch's settings."""
        c = self.monitoring.confirmation_samples
        settings = self.settings
        return MeanRise(
            reference=reference,
            reference_n=reference_n,
            min_n=max(1, math.ceil(c * settings.min_confirmation_fraction)),
            max_n=c,
            z=settings.z_confirm,
            z_reject=settings.z_reject,
            extend=settings.confirmation_extend,
            z_patient=settings.z_patient,
            patience=settings.confirmation_patience,
        )

    # -- status and checkpoints --

    def status(self) -> dict[str, Any]:
        """JSON for ``GET /v1/models/{m}/status``: what is pending, latched, and how much was seen."""
        status: dict[str, Any] = {
            "version": self.version,
            "predictions": self.predictions,
            "labelled": self.labelled,
            "pending": [
                {"kind": k, "feature": f, "detector": p.candidate.detector, "fresh_samples": p.confirmation.seen}
                for k, f, p in self.policy.pending_list()
            ],
            "latched": [{"kind": k, "feature": f} for k, f in self.policy.latched_list()],
            "detectors": {"data": self.monitoring.data_detector, "concept": self.monitoring.concept_detector},
        }
        if self._categories.buckets:
            status["categorical"] = self._categories.status()
        return status

    def state(self) -> ModelDriftState:
        """Everything but the reference (it is in the model card) and the spec."""
        return ModelDriftState(
            model=self.model,
            version=self.version,
            policy=self.policy,
            data={name: d.to_state() for name, d in self._data.items()},
            concept=self._concept.to_state(),
            psi=self._psi.state,
            predictions_window=None if self._predictions is None else self._predictions.state,
            prediction_times=self._prediction_times.values(),
            outcome_times=self._outcome_times.values(),
            labelled=self.labelled,
            predictions=self.predictions,
            recent_errors=list(self._recent_errors),
            expected_hold=self._expected_hold,
            categories=self._categories.state,
        )

    @classmethod
    def from_state(
        cls,
        state: ModelDriftState,
        reference: Reference | None,
        monitoring: MonitoringSpec,
        settings: DriftSettings | None = None,
    ) -> ModelDrift:
        """Continue from ``state`` against the card's ``reference`` and the current spec.

        A detector whose state is incompatible (another River version, or the spec now names
        another detector) starts fresh instead -- losing a window is better than not monitoring.
        """
        drift = cls(state.model, state.version, reference, monitoring, settings)
        drift.policy = state.policy.model_copy(update={"cooldown": monitoring.alarm_cooldown}, deep=True)
        for name, detector_state in state.data.items():
            if name in drift._data and detector_state.get("type") == drift._data[name].name:
                drift._data[name] = _restore_or(detector_state, drift._data[name])
        if state.concept.get("type") == drift._concept.name:
            drift._concept = _restore_or(state.concept, drift._concept)
        drift._psi = WindowedPsi(drift._histograms, drift.settings.psi_window, state.psi)
        drift._categories = CategoryDrift.restore(
            drift._categories.buckets, drift.settings, monitoring, state.categories, drift._psi.state
        )
        if drift._predictions is not None and state.predictions_window is not None:
            drift._predictions = PredictionWindow(
                drift._predictions.reference, drift.settings.prediction_window, state.predictions_window
            )
        drift._prediction_times.extend(state.prediction_times)
        drift._outcome_times.extend(state.outcome_times)
        drift.labelled = state.labelled
        drift.predictions = state.predictions
        drift._recent_errors.extend(state.recent_errors)
        drift._recent_sum = sum(drift._recent_errors)
        drift._expected_hold = state.expected_hold
        return drift


def _candidate(kind: DriftKind, feature: str | None, detector: str, signal: DriftSignal) -> DriftCandidate:
    return DriftCandidate(
        kind=kind,
        feature=feature,
        detector=detector,
        statistic=signal.statistic,
        threshold=signal.threshold,
        samples=signal.samples,
        change_samples=signal.change_samples,
    )


def _numbers(column: NDArray[np.object_]) -> NDArray[np.float64]:
    """A numeric feature's values as floats; missing, and anything that is not a number, as NaN."""
    return np.fromiter(
        (
            float(v) if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) else math.nan
            for v in column
        ),
        dtype=np.float64,
        count=len(column),
    )


def _restore_or(state: dict[str, Any], fresh: Detector) -> Detector:
    try:
        return detector_from_state(state)
    except ValueError:
        return fresh
