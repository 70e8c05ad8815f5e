"""Live accuracy and canary verdicts from joined outcomes. Pure: no I/O.

:class:`LiveAccuracy` counts errors per (model, version, variant) in tumbling windows of event
time; :class:`CanaryTrial` counts champion and canary over the same period and
:class:`CanaryJudge` decides once both have enough labels; :class:`ChampionWatch` watches a new
champion for a while after its promotion; :class:`ChangeWait` counts the labelled rows a
since-change retrain still waits for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from services.monitor.state import State
from shared.events import UtcDatetime, epoch, from_epoch
from shared.spec import PromoteAfter, RollbackOn


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


class SeriesState(State):
    """One (model, version, variant)'s running totals and kept windows ``(start, labelled, errors)``."""

    model: str
    version: int
    variant: str
    total: ErrorCounts
    points: list[tuple[float, int, int]]


class LiveAccuracyState(State):
    """Every series of :class:`LiveAccuracy`, as checkpointed."""

    window: timedelta
    max_points: int
    series: list[SeriesState] = []


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
                    points=[(s, c.labelled, c.errors) for s, c in sorted(self._series.get(key, {}).items())],
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
            live._series[key] = {s: ErrorCounts(n, e) for s, n, e in series.points}
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
        z = (delta - allowed) / _difference_se(canary, champion)
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
    The watch ends after ``horizon`` outcomes (default 10 x window).

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
    recent: list[int] = []
    """The new champion's last ``window`` outcomes, 1 for an error."""
    previous_recent: list[int] = []
    """The previous champion's last ``window`` outcomes on the same traffic (as a shadow)."""
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
    ) -> ChampionWatch:
        """A watch of ``version`` just promoted over ``previous_version``, by the spec's rules."""
        window = window or promote_after.labelled_samples
        return cls(
            version=version,
            previous_version=previous_version,
            error_increase=rollback_on.error_increase,
            window=window,
            horizon=horizon or 10 * window,
        )

    @property
    def error_rate(self) -> float:
        """The new champion's error over the recent window."""
        return sum(self.recent) / len(self.recent) if self.recent else 0.0

    @property
    def previous_error_rate(self) -> float | None:
        """The previous champion's error over its recent window on the same traffic (None before any)."""
        return sum(self.previous_recent) / len(self.previous_recent) if self.previous_recent else None

    def record_previous(self, version: int, correct: bool) -> None:
        """One labelled outcome of the previous champion, scoring the same traffic as a shadow."""
        if self.done or version != self.previous_version:
            return
        _push(self.previous_recent, 0 if correct else 1, self.window)

    def record(self, version: int, correct: bool) -> Verdict | None:
        """Count one outcome of the champion; a verdict at most once."""
        if self.done or version != self.version:
            return None
        self.seen += 1
        _push(self.recent, 0 if correct else 1, self.window)
        verdict = self._judge()
        if verdict is not None or self.seen >= self.horizon:
            self.done = True
        return verdict

    def _judge(self) -> Verdict | None:
        recent, previous = self.recent, self.previous_recent
        if len(recent) < self.window or len(previous) < self.window:
            return None
        new_errors = ErrorCounts(len(recent), sum(recent))
        old_errors = ErrorCounts(len(previous), sum(previous))
        delta = new_errors.error_rate - old_errors.error_rate
        z = (delta - self.error_increase) / _difference_se(new_errors, old_errors)
        if z < CANARY_Z:
            return None
        reason = (
            f"champion v{self.version} error {new_errors.describe()} vs v{self.previous_version} "
            f"{old_errors.describe()} over the same last {len(recent)} labelled predictions: delta {delta:+.3f} "
            f"> allowed {self.error_increase:+.3f} beyond noise (z {z:.2f} >= {CANARY_Z})"
        )
        return Verdict("rolled_back", self.version, self.previous_version, reason)


def _push(window: list[int], value: int, size: int) -> None:
    window.append(value)
    if len(window) > size:
        del window[0]


def _difference_se(a: ErrorCounts, b: ErrorCounts) -> float:
    """Standard error of the difference of two error rates, floored so a side without errors
    is not infinitely sure."""
    floor = 1.0 / (a.labelled + b.labelled)
    p1, p2 = a.error_rate, b.error_rate
    return math.sqrt(max(p1 * (1 - p1), floor) / a.labelled + max(p2 * (1 - p2), floor) / b.labelled)


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
