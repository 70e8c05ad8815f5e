"""Alarm hygiene: drift candidates, their confirmation on fresh samples, cooldown and latch.
Pure: no I/O.

Why a stable stream does not raise alarms -- a drift is published only after three filters:

1. **A candidate** comes from a River detector (:mod:`services.monitor.detectors`) or from a
   tumbling-window PSI above ``psi_alert`` (:mod:`services.monitor.drift` proposes them; for a
   categorical feature, :mod:`services.monitor.category_drift`: a window's category PSI, largest
   per-bucket share z or unseen-category rate above its own alert). Data
   detectors use a small ADWIN delta (1e-4), so candidates on stable features are already rare.
2. **Confirmation on fresh samples.** River resets a detector after it fires, so "keeps
   signalling" cannot be observed directly; instead the candidate's claim is tested on samples
   that arrive *after* it, which are independent of the fluctuation that may have caused it:

   * concept (0/1 errors, :class:`MeanRise`): the error rate of the fresh samples must exceed
     the detector's pre-change error rate by ``z_confirm`` (3) standard errors, checked from
     ``confirmation_samples / 4`` fresh samples on and given up after ``confirmation_samples``
     (a strong change confirms early, a fluke is rejected);
   * data (feature values, :class:`PsiAbove`) and prediction windows (:class:`StaysAbove`):
     the PSI of the fresh samples against the training reference must exceed ``psi_alert`` --
     over ``max(confirmation_samples, 200)`` values for a feature (fewer would let PSI's own
     sampling noise, about ``bins / n``, reach the threshold), and over the next whole window
     for window-sourced candidates;
   * categorical features (:class:`CategoryPsiAbove`, :class:`UnseenAbove`): the category PSI of
     the fresh values, or the share of the bucket the window named (moved the same way), or their
     unseen-category rate, must exceed its alert for that many values -- an alert set by the
     sampling noise (:mod:`services.monitor.categorical`), looked at every
     ``max(confirmation_samples, 200)`` values for up to a window.

   A fluke passes step 1 with small probability and step 2 with a small one again; a real
   change passes step 2 almost surely because the fresh samples come from the new regime.
3. **Cooldown and latch** (:class:`AlarmPolicy`). Not again for the same ``(kind, feature)``
   (a feature's unseen categories are a cause of their own) within ``alarm_cooldown``. After a
   data or prediction alarm the cause is latched until a window's PSI falls back below the
   alert (or a new version resets the policy): its confirmation tests against the training
   reference, which a drifted stream keeps failing, so a later candidate (a detector's fluke in
   the new regime) would be "confirmed" by the old news. A lasting difference alarms once.
   :meth:`AlarmPolicy.reset` (a new version promoted) clears everything.

Severity: ``r = max(statistic / threshold of the detector, the confirmation's own ratio)``;
``r < 1.5`` low, ``< 3`` medium, else high. A concept confirmation's ratio is the rise of the
error rate in units of :data:`ERROR_RISE_UNIT` (5 points): below 7.5 points low, below 15 medium.

Candidates, confirmations and the policy are each their own checkpoint (a
:class:`~services.monitor.state.State`); :class:`Alarm`, :class:`Suppressed` and
:class:`DriftUpdate` are what an observation hands the handlers, never saved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, cast

from pydantic import ConfigDict, Field

from services.monitor.categorical import category_psi, psi_alert, share_z, unseen_alert
from services.monitor.state import State
from shared.events import DriftDetected, epoch
from shared.reference import ReferenceHistogram, bin_of, psi_from_counts

DriftKind = Literal["data", "prediction", "concept"]
Severity = Literal["low", "medium", "high"]
SuppressReason = Literal["unconfirmed", "cooldown", "latched"]

ERROR_RISE_UNIT = 0.05
"""Rise of the error rate that counts as ratio 1 in a concept alarm's severity."""

MIN_PSI_SAMPLES = 200
"""Fewest values a PSI confirmation rests on: below this, sampling noise alone nears 0.1."""


def severity(ratio: float) -> Severity:
    """How far past its threshold the evidence is: < 1.5 low, < 3 medium, else high."""
    if ratio < 1.5:
        return "low"
    if ratio < 3.0:
        return "medium"
    return "high"


class DriftCandidate(State):
    """An unconfirmed drift: what a detector or a PSI window claimed, with its evidence."""

    model_config = ConfigDict(frozen=True)

    kind: DriftKind
    feature: str | None
    detector: str
    statistic: float
    threshold: float
    samples: int
    change_samples: int | None
    stream: str | None = None
    """The policy's cause when it is not ``feature``: a second signal of one feature (its unseen
    categories, :func:`services.monitor.categorical.unseen_stream`), confirmed, cooled down and
    latched apart from the feature's PSI; the alarm still names the feature."""

    @property
    def cause(self) -> str | None:
        """What the policy keys this candidate by (with ``kind``)."""
        return self.stream if self.stream is not None else self.feature

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


@dataclass
class DriftUpdate:
    """What one observation of a model's drift watch (:class:`~services.monitor.drift.ModelDrift`)
    produced: alarms to publish, suppressions to count, and the statistics to show
    (``statistics[(kind, feature)]`` from detectors, ``psi[stream]`` when a window closed -- a
    categorical feature's is its category PSI; prediction streams are ``label`` and
    ``proba:<class>``; ``unseen[feature]``, a closed window's unseen-category rate, and
    ``unseen_values[feature]``, the unseen values of the observed rows)."""

    alarms: list[Alarm] = field(default_factory=list)
    suppressed: list[Suppressed] = field(default_factory=list)
    statistics: dict[tuple[DriftKind, str | None], float] = field(default_factory=dict)
    psi: dict[str, float] = field(default_factory=dict)
    chi_square: float | None = None
    unseen: dict[str, float] = field(default_factory=dict)
    unseen_values: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Alarm | Suppressed | None) -> None:
        if isinstance(outcome, Alarm):
            self.alarms.append(outcome)
        elif isinstance(outcome, Suppressed):
            self.suppressed.append(outcome)


# --- confirmations ---------------------------------------------------------------------------


class MeanRise(State):
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

    kind: Literal["mean_rise"] = "mean_rise"
    reference: float
    reference_n: int
    min_n: int
    max_n: int
    z: float
    z_reject: float = 0.0
    extend: int = 4
    z_patient: float = 3.5
    patience: int = 10
    seen: int = 0
    total: float = 0.0
    ratio: float = 0.0

    def model_post_init(self, context: Any, /) -> None:
        self.reference_n = max(self.reference_n, 1)
        self.patience = max(self.patience, self.extend)

    def observe(self, value: float) -> bool | None:
        """One fresh sample: True confirmed, False rejected, None not decided yet."""
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


class PsiAbove(State):
    """Data: the PSI of the next ``n`` values against the reference histogram exceeds ``alert``."""

    kind: Literal["psi_above"] = "psi_above"
    reference: ReferenceHistogram
    n: int
    alert: float
    counts: list[int] = []
    seen: int = 0
    ratio: float = 0.0

    def model_post_init(self, context: Any, /) -> None:
        if not self.counts:
            self.counts = [0] * len(self.reference.proportions)

    def observe(self, value: float) -> bool | None:
        """One fresh value: True confirmed, False rejected, None not decided yet."""
        if not math.isfinite(value):
            return None
        self.counts[bin_of(self.reference.edges, value)] += 1
        self.seen += 1
        if self.seen < self.n:
            return None
        value_psi = psi_from_counts(self.reference.proportions, self.counts)
        self.ratio = value_psi / self.alert
        return value_psi > self.alert


class CategoryPsiAbove(State):
    """Categories: the fresh values' category shares differ from the reference -- their PSI
    exceeds its noise-calibrated alert, or the share of the bucket the candidate's window saw
    move most has moved on the same way.

    Sequential, because the noise of a category PSI is ``df / n`` (a 12-category feature's PSI of
    200 stable values averages 0.05): it looks every ``step`` fresh values, up to ``looks`` times,
    and confirms as soon as the PSI exceeds ``max(floor, quantile / seen)`` -- ``quantile`` being
    the chi-square quantile of ``alpha / looks`` (Bonferroni: all looks together confirm a stable
    stream with probability ``alpha`` at most) and ``noise`` added to ``1 / seen`` the reference's
    own sampling noise (:func:`services.monitor.categorical.psi_alert`) -- or as soon as the
    :func:`~services.monitor.categorical.share_z` of ``bucket``, in the direction the window saw,
    exceeds ``z`` (the normal quantile of ``alpha / looks``: one named bucket and side, so only
    the looks divide its allowance; the fresh values are independent of the window that named
    it). The PSI sees a change spread over many buckets; the share z a change of one small
    bucket, which the PSI dilutes over its degrees of freedom. A strong change confirms on the
    first look, a smaller one within a window. ``value`` is a bucket index
    (:meth:`services.monitor.categorical.CategoryBuckets.code`; unseen values are not fed).
    """

    kind: Literal["category_psi_above"] = "category_psi_above"
    expected: list[float]
    step: int
    looks: int
    quantile: float
    floor: float
    reference_rows: float = 0.0
    bucket: int | None = None
    """The bucket whose share the window saw move most (None: the PSI alone, as before share z)."""
    rise: bool = True
    """The window saw that share rise (False: fall); the fresh values must move it the same way."""
    z: float = math.inf
    """The share z of ``bucket`` that confirms at a look."""
    counts: list[int] = []
    seen: int = 0
    ratio: float = 0.0

    def model_post_init(self, context: Any, /) -> None:
        if not self.counts:
            self.counts = [0] * len(self.expected)

    def observe(self, value: float) -> bool | None:
        """One fresh value's bucket: True confirmed, False rejected, None not decided yet."""
        self.counts[int(value)] += 1
        self.seen += 1
        if self.seen % self.step:
            return None
        alert = psi_alert(self.quantile, self.seen, self.floor, self.reference_rows)
        statistic = category_psi(self.expected, self.counts)
        self.ratio = statistic / alert
        confirmed = statistic > alert
        if self.bucket is not None:
            z = share_z(self.counts[self.bucket], self.seen, self.expected[self.bucket], self.reference_rows)
            moved = z if self.rise else -z
            self.ratio = max(self.ratio, moved / self.z)
            confirmed = confirmed or moved > self.z
        if confirmed:
            return True
        return False if self.seen >= self.step * self.looks else None


class UnseenAbove(State):
    """Unseen categories: the fresh values' unseen rate is well above the expected one
    (:func:`services.monitor.categorical.unseen_alert`), looked at every ``step`` values up to
    ``looks`` times. ``value`` is 1 for an unseen category, 0 for a known one."""

    kind: Literal["unseen_above"] = "unseen_above"
    expected: float
    step: int
    looks: int
    z: float
    rise: float
    unseen: int = 0
    seen: int = 0
    ratio: float = 0.0

    def observe(self, value: float) -> bool | None:
        """One fresh value: True confirmed, False rejected, None not decided yet."""
        self.seen += 1
        self.unseen += 1 if value > 0.5 else 0
        if self.seen % self.step:
            return None
        alert = unseen_alert(self.expected, self.seen, self.z, self.rise)
        rate = self.unseen / self.seen
        self.ratio = rate / alert
        if rate > alert:
            return True
        return False if self.seen >= self.step * self.looks else None


class StaysAbove(State):
    """Windows: the next ``windows`` window statistics all stay above ``alert``."""

    kind: Literal["stays_above"] = "stays_above"
    alert: float
    windows: int
    window_size: int
    seen: int = 0
    ratio: float = math.inf

    def observe(self, value: float) -> bool | None:
        """One window's statistic: True confirmed, False rejected, None not decided yet."""
        self.seen += 1
        self.ratio = min(self.ratio, value / self.alert)
        if value <= self.alert:
            return False
        return True if self.seen >= self.windows else None


Confirmation = Annotated[MeanRise | PsiAbove | StaysAbove | CategoryPsiAbove | UnseenAbove, Field(discriminator="kind")]
"""Evidence gathered on fresh samples after a candidate; ``ratio`` is its strength, for severity."""


class Pending(State):
    """A candidate under confirmation."""

    candidate: DriftCandidate
    confirmation: Confirmation
    window_size: int = 1
    """Samples one confirmation observation stands for (1, or a window's rows)."""


def _key(kind: str, feature: str | None) -> str:
    return f"{kind}|{feature or ''}"


def _unkey(key: str) -> tuple[DriftKind, str | None]:
    kind, _, feature = key.partition("|")
    return cast(DriftKind, kind), feature or None


# --- the policy ------------------------------------------------------------------------------


class AlarmPolicy(State):
    """Confirmation, cooldown, latch and severity for one model's drift candidates.

    ``propose`` opens a confirmation for a candidate (or suppresses it at once when its cause
    is cooling down); ``observe`` feeds the fresh samples of that cause and returns the
    :class:`Alarm` or :class:`Suppressed` when the confirmation decides. While a candidate is
    pending, further candidates for the same cause are dropped (dedupe). Times are event times.
    """

    model: str
    cooldown: timedelta
    version: int | None = None
    confirming: dict[str, Pending] = {}
    """Candidates under confirmation, by cause (``kind|feature``)."""
    last_alarm: dict[str, float] = {}
    """Epoch seconds of each cause's last published alarm."""
    latched_causes: set[str] = set()

    @property
    def has_pending(self) -> bool:
        """Any candidate awaits confirmation (a cheap check for the hot path)."""
        return bool(self.confirming)

    def pending(self, kind: DriftKind, feature: str | None) -> bool:
        """A candidate for this cause awaits confirmation."""
        return _key(kind, feature) in self.confirming

    def pending_of(self, kind: DriftKind, feature: str | None) -> Pending | None:
        """The candidate under confirmation for this cause, if any."""
        return self.confirming.get(_key(kind, feature))

    def pending_list(self) -> list[tuple[DriftKind, str | None, Pending]]:
        """Every candidate under confirmation, with its cause."""
        return [(*_unkey(key), p) for key, p in self.confirming.items()]

    def latched(self, kind: DriftKind, feature: str | None) -> bool:
        """A data/prediction alarm for this cause was published and its PSI has not come back down."""
        return _key(kind, feature) in self.latched_causes

    def latched_list(self) -> list[tuple[DriftKind, str | None]]:
        """Every latched cause, sorted."""
        return [_unkey(key) for key in sorted(self.latched_causes)]

    def unlatch(self, kind: DriftKind, feature: str | None) -> None:
        """The cause's window statistic fell back below its alert."""
        self.latched_causes.discard(_key(kind, feature))

    def cooling(self, kind: DriftKind, feature: str | None, at: datetime) -> bool:
        """An alarm for this cause was published less than ``cooldown`` ago."""
        last = self.last_alarm.get(_key(kind, feature))
        return last is not None and epoch(at) - last < self.cooldown.total_seconds()

    def propose(
        self, candidate: DriftCandidate, confirmation: Confirmation, at: datetime, window_size: int = 1
    ) -> Suppressed | None:
        """Start confirming ``candidate``; a latched or cooling cause is suppressed, a pending one ignored."""
        key = _key(candidate.kind, candidate.cause)
        if key in self.confirming:
            return None
        if key in self.latched_causes:
            return Suppressed(self.model, candidate.kind, candidate.feature, candidate.detector, "latched")
        if self.cooling(candidate.kind, candidate.cause, at):
            return Suppressed(self.model, candidate.kind, candidate.feature, candidate.detector, "cooldown")
        self.confirming[key] = Pending(candidate=candidate, confirmation=confirmation, window_size=window_size)
        return None

    def observe(
        self, kind: DriftKind, feature: str | None, value: float, at: datetime, started_at: datetime | None = None
    ) -> Alarm | Suppressed | None:
        """Feed one fresh sample (or window statistic) of a cause under confirmation (``feature``:
        the cause, i.e. the candidate's ``stream`` when it has one).

        ``started_at`` is the time of the first sample in the new regime, when the caller can
        tell it (see :class:`services.monitor.drift.ModelDrift`); it is copied into the alarm.
        """
        key = _key(kind, feature)
        pending = self.confirming.get(key)
        if pending is None:
            return None
        decided = pending.confirmation.observe(value)
        if decided is None:
            return None
        del self.confirming[key]
        c = pending.candidate
        if not decided:
            return Suppressed(self.model, c.kind, c.feature, c.detector, "unconfirmed")
        if self.cooling(kind, feature, at):  # pragma: no cover - propose() already refused these
            return Suppressed(self.model, c.kind, c.feature, c.detector, "cooldown")
        self.last_alarm[key] = epoch(at)
        if c.kind in ("data", "prediction"):
            # Confirmed against the training reference: while the stream stays different from it,
            # any later confirmation would only repeat "still different from training".
            self.latched_causes.add(key)
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

    def withdraw(self, kind: DriftKind, feature: str | None) -> Pending | None:
        """Drop the candidate under confirmation for this cause (a better one replaces it)."""
        return self.confirming.pop(_key(kind, feature), None)

    def reset(self, version: int | None) -> None:
        """A new version was promoted: forget pending candidates, cooldowns and latches."""
        self.version = version
        self.confirming.clear()
        self.last_alarm.clear()
        self.latched_causes.clear()
