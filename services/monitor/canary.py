"""Live accuracy and canary verdicts from joined outcomes. Pure: no I/O.

:class:`LiveAccuracy` counts errors per (model, version, variant) in tumbling windows of event
time; :class:`CanaryTrial` counts champion and canary over the same period and
:class:`CanaryJudge` decides once both have enough labels; :class:`ChampionWatch` watches a new
champion for a while after its promotion; :class:`ChangeWait` counts the labelled rows a
since-change retrain still waits for.

Every count is a sum of losses (:class:`~services.monitor.outcome.Outcome`): 0 or 1 for a
classifier, so the sums are error counts and the means error rates; the absolute error for a
regressor, so the means are MAEs (and the squared sums give RMSEs). The judges compare means the
same way for both -- one-sided, beyond the sampling noise of the difference -- with the noise of a
rate for a classifier and each side's sample variance (Welch) for a regressor, whose allowed
deltas are relative to the baseline's MAE (``max_error_delta=0.1``: 10 % worse).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Literal

from services.monitor.outcome import Outcome
from services.monitor.state import State
from shared.events import UtcDatetime, epoch, from_epoch
from shared.spec import PromoteAfter, RollbackOn

Scored = bool | Outcome
"""What the counters take: a classifier's ``correct`` flag (True = right), or a scored
:class:`~services.monitor.outcome.Outcome` (its loss) of either task."""


def loss_of(outcome: Scored) -> float:
    """The loss an outcome adds: 0 / 1 for a flag (1 = wrong), the outcome's loss otherwise."""
    if isinstance(outcome, Outcome):
        return outcome.loss
    return 0 if outcome else 1


@dataclass(frozen=True)
class ErrorCounts:
    """Labelled predictions, the sum of their losses and the sum of the squared losses.

    For a classifier the loss is 0 or 1: ``errors`` counts the wrong predictions and
    :attr:`error_rate` is the error rate. For a regressor it is the absolute error:
    :attr:`error_rate` is the MAE and :attr:`rmse` the RMSE. ``squares`` left out means
    ``errors`` -- a 0/1 loss is its own square -- which is also how counts checkpointed before
    it existed read.

    >>> ErrorCounts(4, 2).squares, ErrorCounts().plus(Outcome(3.0, None)).plus(Outcome(1.0, None)).rmse
    (2, 2.23606797749979)
    """

    labelled: int = 0
    errors: float = 0
    squares: float | None = None

    def __post_init__(self) -> None:
        if self.squares is None:
            object.__setattr__(self, "squares", self.errors)

    @property
    def _square_sum(self) -> float:
        return self.errors if self.squares is None else self.squares

    @property
    def error_rate(self) -> float:
        """Mean loss: the error rate, or a regressor's MAE (0 when nothing is labelled)."""
        return self.errors / self.labelled if self.labelled else 0.0

    @property
    def accuracy(self) -> float:
        """1 - error rate (0 when nothing is labelled)."""
        return 1.0 - self.error_rate if self.labelled else 0.0

    @property
    def rmse(self) -> float:
        """Root of the mean squared loss (0 when nothing is labelled)."""
        return math.sqrt(max(self._square_sum, 0.0) / self.labelled) if self.labelled else 0.0

    @property
    def variance(self) -> float:
        """Sample variance of the losses (0 below two)."""
        n = self.labelled
        if n < 2:
            return 0.0
        return max(self._square_sum - n * self.error_rate**2, 0.0) / (n - 1)

    def plus(self, outcome: Scored) -> ErrorCounts:
        """These counts with one more outcome."""
        loss = loss_of(outcome)
        return ErrorCounts(self.labelled + 1, self.errors + loss, self._square_sum + loss * loss)

    def describe(self, regression: bool = False) -> str:
        """``0.081 (41/506)``: the rate with its figures, for verdict reasons; for a regressor
        ``MAE 3.21, RMSE 4.5 (n=506)``."""
        if regression:
            return f"MAE {self.error_rate:.4g}, RMSE {self.rmse:.4g} (n={self.labelled})"
        return f"{self.error_rate:.3f} ({self.errors:.0f}/{self.labelled})"


def counts_of(losses: list[float]) -> ErrorCounts:
    """The counts of a window of losses."""
    return ErrorCounts(len(losses), sum(losses), sum(v * v for v in losses))


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
        """Error rate in the window (a regressor's MAE)."""
        return self.counts.error_rate

    @property
    def mae(self) -> float:
        """A regressor's MAE in the window (its mean loss)."""
        return self.counts.error_rate

    @property
    def rmse(self) -> float:
        """A regressor's RMSE in the window."""
        return self.counts.rmse


SeriesKey = tuple[str, int, str]
"""(model, version, variant)."""


class SeriesState(State):
    """One (model, version, variant)'s running totals and kept windows ``(start, labelled, errors,
    squares)`` (``(start, labelled, errors)`` in checkpoints written before squared losses: 0/1
    losses, their own squares)."""

    model: str
    version: int
    variant: str
    total: ErrorCounts
    points: list[tuple[float, int, float, float] | tuple[float, int, float]]


class LiveAccuracyState(State):
    """Every series of :class:`LiveAccuracy`, as checkpointed."""

    window: timedelta
    max_points: int
    series: list[SeriesState] = []


class LiveAccuracy:
    """Tumbling-window accuracy (a regressor's MAE and RMSE) per (model, version, variant) from
    joined outcomes.

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

    def record(self, model: str, version: int, variant: str, correct: Scored, at: datetime) -> AccuracyPoint | None:
        """Count one outcome (a classifier's ``correct`` flag, or a scored outcome's loss);
        returns its window's point (None if the window was already dropped)."""
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

    def state(self) -> LiveAccuracyState:
        """Series and totals, as checkpointed."""
        return LiveAccuracyState(
            window=self.window,
            max_points=self.max_points,
            series=[
                SeriesState(
                    model=key[0],
                    version=key[1],
                    variant=key[2],
                    total=self._totals[key],
                    points=[
                        (s, c.labelled, c.errors, c._square_sum) for s, c in sorted(self._series.get(key, {}).items())
                    ],
                )
                for key in self._totals
            ],
        )

    @classmethod
    def from_state(cls, state: LiveAccuracyState) -> LiveAccuracy:
        """Series and totals back."""
        live = cls(state.window, state.max_points)
        for series in state.series:
            key = (series.model, series.version, series.variant)
            live._totals[key] = series.total
            live._series[key] = {point[0]: ErrorCounts(*point[1:]) for point in series.points}
        return live


# --- canary verdicts ------------------------------------------------------------------------------

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

    A regressor (``regression=True``) is judged the same way on its MAE: the allowed delta is
    ``max_error_delta`` x the champion's MAE, and SE comes from each side's sample variance of
    absolute errors (Welch) -- a canary's MAE over a few hundred labels is noisy, more so with
    heavy-tailed errors, and that noise is no evidence.

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

    def __init__(self, promote_after: PromoteAfter, rollback_on: RollbackOn, regression: bool = False) -> None:
        self.promote_after = promote_after
        self.rollback_on = rollback_on
        self.regression = regression

    def judge(
        self, champion: ErrorCounts, canary: ErrorCounts, *, champion_version: int | None, canary_version: int
    ) -> Verdict | None:
        """None while either side has fewer than ``labelled_samples``; else the verdict."""
        needed = self.promote_after.labelled_samples
        if canary.labelled < needed or champion.labelled < needed:
            return None
        delta = canary.error_rate - champion.error_rate
        champ = f"champion v{champion_version}" if champion_version is not None else "champion"
        if self.regression:
            return self._judge_mae(champion, canary, champ, champion_version, canary_version)
        allowed = self.promote_after.max_error_delta
        z = (delta - allowed) / _difference_se(canary, champion)
        worse = z >= CANARY_Z
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

    def _judge_mae(
        self, champion: ErrorCounts, canary: ErrorCounts, champ: str, champion_version: int | None, canary_version: int
    ) -> Verdict:
        delta = canary.error_rate - champion.error_rate
        relative = self.promote_after.max_error_delta
        allowed = relative * champion.error_rate
        z = _z(delta - allowed, _difference_se(canary, champion, regression=True))
        worse = z >= CANARY_Z
        scale = champion.error_rate
        bound = f"allowed {_amount(allowed, scale)} ({relative:+.1%} of the champion's MAE)"
        if worse:
            verdict = f"> {bound} beyond noise (z {z:.2f} >= {CANARY_Z})"
        elif delta > allowed:
            verdict = f"within noise of {bound} (z {z:.2f} < {CANARY_Z})"
        else:
            verdict = f"<= {bound}"
        reason = (
            f"canary v{canary_version} {canary.describe(regression=True)} vs {champ} "
            f"{champion.describe(regression=True)} on the same period: MAE delta {_amount(delta, scale)} {verdict}"
        )
        return Verdict("rolled_back" if worse else "promoted", canary_version, champion_version, reason)


class CanaryTrial(State):
    """The labelled outcomes of one canary run: champion and canary counted from ``started_at``.

    Only outcomes of the two versions, for predictions made at or after the start, are counted,
    so both sides cover the same period. ``decide`` returns a verdict once, then None.
    """

    champion_version: int | None
    canary_version: int
    started_at: UtcDatetime
    champion: ErrorCounts = ErrorCounts()
    canary: ErrorCounts = ErrorCounts()
    decided: Verdict | None = None

    def record(self, version: int, correct: Scored, predicted_at: datetime) -> None:
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


class ChampionWatch(State):
    """After a promotion: roll the new champion back only if the previous one is better *now*.

    A world that changes just after a promotion makes the new champion look worse than the
    error recorded for its predecessor -- but the predecessor would do as badly, and going back
    to it leaves the loop serving a stale model (the concept alarm, not a rollback, is the
    answer to a changed world). So the previous champion keeps scoring the same live traffic as
    a shadow while the watch runs (:meth:`record_previous` counts its labelled outcomes), and
    the watch rolls back only when, over the same recent ``window`` labelled predictions of
    each, the new champion's error exceeds the previous one's by more than
    ``rollback_on.error_increase`` beyond sampling noise (one-sided z >= 1.645, as the canary
    judge). Without the previous champion's outcomes there is no evidence, and no rollback.
    The watch ends after ``horizon`` outcomes (default 10 x window). For a regressor
    (``regression``) the windows hold absolute errors and the test is the canary judge's on MAE:
    allowed ``error_increase`` x the previous champion's MAE on the same traffic -- judged once
    per fresh window (every ``window`` outcomes), at the one-sided 5 % level split over the
    horizon's windows (:func:`watch_z`; z 2.58 for 10). A sliding window judged on every outcome
    looks thousands of times, and the MAE of a few hundred heavy-tailed errors is noisy enough,
    against an allowance of a few percent of it, that two equally good versions with independent
    errors had the new one rolled back in 18 of 40 seeded watches; judged this way, in 1.

    >>> w = ChampionWatch.start(2, 1, PromoteAfter(labelled_samples=4), RollbackOn(error_increase=0.0))
    >>> [w.record(2, False) for _ in range(4)] == [None] * 4  # no outcome of v1 yet: no evidence
    True
    >>> for _ in range(4):
    ...     w.record_previous(1, True)
    >>> w.record(2, False).action
    'rolled_back'
    """

    version: int
    previous_version: int | None
    error_increase: float
    window: int
    horizon: int
    seen: int = 0
    done: bool = False
    recent: list[float] = []
    """The new champion's last ``window`` losses (1 for a classifier's error, a regressor's
    absolute error)."""
    previous_recent: list[float] = []
    """The previous champion's last ``window`` losses on the same traffic (as a shadow)."""
    regression: bool = False
    """The model is a regressor: the windows are absolute errors, judged on MAE."""
    shadowed: bool = False
    """The monitor made the previous champion the shadow for this watch (and clears it after)."""

    @classmethod
    def start(
        cls,
        version: int,
        previous_version: int | None,
        promote_after: PromoteAfter,
        rollback_on: RollbackOn,
        window: int | None = None,
        horizon: int | None = None,
        regression: bool = False,
    ) -> ChampionWatch:
        """A watch of ``version`` just promoted over ``previous_version``, by the spec's rules."""
        window = window or promote_after.labelled_samples
        return cls(
            version=version,
            previous_version=previous_version,
            error_increase=rollback_on.error_increase,
            window=window,
            horizon=horizon or 10 * window,
            regression=regression,
        )

    @property
    def error_rate(self) -> float:
        """The new champion's error (a regressor's MAE) over the recent window."""
        return sum(self.recent) / len(self.recent) if self.recent else 0.0

    @property
    def previous_error_rate(self) -> float | None:
        """The previous champion's error over its recent window on the same traffic (None before any)."""
        return sum(self.previous_recent) / len(self.previous_recent) if self.previous_recent else None

    def record_previous(self, version: int, correct: Scored) -> None:
        """One labelled outcome of the previous champion, scoring the same traffic as a shadow."""
        if self.done or version != self.previous_version:
            return
        _push(self.previous_recent, loss_of(correct), self.window)

    def record(self, version: int, correct: Scored) -> Verdict | None:
        """Count one outcome of the champion; a verdict at most once."""
        if self.done or version != self.version:
            return None
        self.seen += 1
        _push(self.recent, loss_of(correct), self.window)
        verdict = self._judge()
        if verdict is not None or self.seen >= self.horizon:
            self.done = True
        return verdict

    def _judge(self) -> Verdict | None:
        recent, previous = self.recent, self.previous_recent
        if len(recent) < self.window or len(previous) < self.window:
            return None
        new_errors, old_errors = counts_of(recent), counts_of(previous)
        delta = new_errors.error_rate - old_errors.error_rate
        if self.regression:
            return self._judge_mae(new_errors, old_errors, delta)
        z = (delta - self.error_increase) / _difference_se(new_errors, old_errors)
        if z < CANARY_Z:
            return None
        reason = (
            f"champion v{self.version} error {new_errors.describe()} vs v{self.previous_version} "
            f"{old_errors.describe()} over the same last {len(recent)} labelled predictions: delta {delta:+.3f} "
            f"> allowed {self.error_increase:+.3f} beyond noise (z {z:.2f} >= {CANARY_Z})"
        )
        return Verdict("rolled_back", self.version, self.previous_version, reason)

    def _judge_mae(self, new_errors: ErrorCounts, old_errors: ErrorCounts, delta: float) -> Verdict | None:
        if self.seen % self.window:  # once per fresh window of the new champion
            return None
        allowed = self.error_increase * old_errors.error_rate
        z = _z(delta - allowed, _difference_se(new_errors, old_errors, regression=True))
        needed = watch_z(max(1, self.horizon // self.window))
        if z < needed:
            return None
        reason = (
            f"champion v{self.version} {new_errors.describe(regression=True)} vs v{self.previous_version} "
            f"{old_errors.describe(regression=True)} over the same last {new_errors.labelled} labelled predictions: "
            f"MAE delta {_amount(delta, old_errors.error_rate)} > allowed {_amount(allowed, old_errors.error_rate)} "
            f"({self.error_increase:+.1%} of "
            f"v{self.previous_version}'s MAE) beyond noise (z {z:.2f} >= {needed:.2f})"
        )
        return Verdict("rolled_back", self.version, self.previous_version, reason)


def _amount(value: float, scale: float) -> str:
    """A signed difference of MAEs to four significant digits of ``scale`` (the baseline MAE):
    ``+0.834`` beside an MAE of 7, ``+120`` beside one of 5,000, never ``-2.7e-15``.

    >>> _amount(0.8341, 7.1), _amount(-2.7e-15, 7.1), _amount(123.4, 5000.0)
    ('+0.834', '+0.000', '+123')
    """
    digits = max(0, 3 - math.floor(math.log10(scale))) if scale > 0 and math.isfinite(scale) else 3
    return f"{round(value, digits) + 0.0:+.{digits}f}"


def watch_z(looks: int) -> float:
    """The one-sided z a test looked at ``looks`` times must reach for the canary judge's 5 %
    overall (Bonferroni).

    >>> round(watch_z(1), 3), round(watch_z(10), 3)
    (1.645, 2.576)
    """
    tail = 1.0 - NormalDist().cdf(CANARY_Z)
    return NormalDist().inv_cdf(1.0 - tail / looks)


def _push(window: list[float], value: float, size: int) -> None:
    window.append(value)
    if len(window) > size:
        del window[0]


def _difference_se(a: ErrorCounts, b: ErrorCounts, regression: bool = False) -> float:
    """Standard error of the difference of two error rates, floored so a side without errors
    is not infinitely sure.

    For a regressor's MAEs, each side's sample variance of absolute errors (Welch), floored at
    the pooled mean squared error over all ``n`` samples -- as if one of them carried it all,
    the scale-aware counterpart of a rate's one error in ``n`` -- so a side whose errors are all
    alike is not infinitely sure either.
    """
    if regression:
        n = a.labelled + b.labelled
        floor = (a._square_sum + b._square_sum) / (n * n)
        return math.sqrt(max(a.variance, floor) / a.labelled + max(b.variance, floor) / b.labelled)
    floor = 1.0 / (a.labelled + b.labelled)
    p1, p2 = a.error_rate, b.error_rate
    return math.sqrt(max(p1 * (1 - p1), floor) / a.labelled + max(p2 * (1 - p2), floor) / b.labelled)


def _z(excess: float, se: float) -> float:
    """``excess / se``; 0 when there is no spread at all (every loss 0 on both sides: no excess)."""
    return excess / se if se > 0 else 0.0


class ChangeWait(State):
    """Labelled rows still needed after a change point before a since-change retrain can run
    (the ``waiting_rows`` gauge and the status page)."""

    min_rows: int
    rows_after_change: int | None = None

    def start(self, change_samples: int | None) -> None:
        """A concept drift was published; ``change_samples`` labelled rows are already past it."""
        self.rows_after_change = change_samples or 0

    def record_labelled(self, rows: int = 1) -> None:
        """More labelled rows arrived."""
        if self.rows_after_change is not None:
            self.rows_after_change += rows

    @property
    def waiting(self) -> bool:
        """A change point was published and a retrain waits on it."""
        return self.rows_after_change is not None

    @property
    def waiting_rows(self) -> int:
        """0 when nothing is waited for."""
        if self.rows_after_change is None:
            return 0
        return max(0, self.min_rows - self.rows_after_change)
