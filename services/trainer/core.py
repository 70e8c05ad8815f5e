"""The trainer's decisions, with no I/O: when to run, on which rows, how to judge, what to remember.

* Triggers (first data, every ``new_labels`` labels, ``schedule``, drift) accumulate in a
  :class:`TrainerState` that is persisted before the triggering message is committed, so a
  trigger survives a crash. Everything pending when a run starts is covered by that run;
  whatever arrives during it coalesces into exactly one follow-up run.
* ``cooldown`` and ``max_runs_per_hour`` defer a run; a deferred trigger stays pending (it is
  logged and counted, never dropped) and runs once the budget allows.
* With ``training.window.since_change``, a drift starts a :class:`Recovery`: the drift's run
  waits until ``min_rows_after_change`` labelled rows exist at or after the change point,
  trains on those rows only, and the trainer retrains each time the post-change rows double
  (recovery steps), until the gate rejects two steps in a row or the window reaches
  ``last_rows``.
  A new drift restarts the schedule.
* The holdout is the newest ``holdout`` fraction of the window (time order), candidate and
  champion are scored on the same rows, and the gate compares them.
* A world can change back (A -> B -> A). On a run that trains on the new regime alone, earlier
  versions are scored on the same holdout too, and one that clearly beats the fresh fit is
  registered again as the candidate (:func:`choose_reuse`): a model of the returning regime
  trained on all its data, in place of a fit on a few hundred rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

from shared.errors import InvalidInput
from shared.events import GateVerdict, UtcDatetime
from shared.features import TaskKind
from shared.spec import LOWER_IS_BETTER, GateSpec, TriggerSpec, improvement

MIN_TRAIN_ROWS = 20
MIN_HOLDOUT_ROWS = 10

TriggerKind = Literal["first_data", "new_labels", "schedule", "drift", "recovery", "manual"]


# --- triggers ------------------------------------------------------------------------------


class Trigger(BaseModel):
    """One reason to train."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: TriggerKind
    event_id: str
    occurred_at: UtcDatetime
    detail: str = ""


REJECTED_STEPS_TO_STOP = 2
"""Recovery steps in a row whose candidates the gate rejects before the schedule ends."""


class Recovery(BaseModel):
    """A drift's recovery schedule (``window.since_change``): wait, train on the new regime, repeat as it grows.

    Step 1 is the drift's own run: it waits until ``next_rows`` (``min_rows_after_change``)
    labelled rows exist at or after ``change_at``. Each later step runs when the post-change
    rows reach twice the rows the previous step trained on (capped at ``last_rows``). The
    schedule stops (``stopped`` says why) when the gate rejects :data:`REJECTED_STEPS_TO_STOP`
    steps in a row or a step trained on a full ``last_rows`` window. One rejection does not
    stop it: the holdout of a small window is noisy, and twice the rows often do beat the
    champion.
    """

    model_config = ConfigDict(extra="forbid")

    event_id: str
    """The drift event that started the schedule."""
    kind: str
    """The drift's kind (data / prediction / concept)."""
    change_at: UtcDatetime
    """Where the new regime begins: rows recorded at or after this time belong to it."""
    steps: int = 0
    """Runs completed on the new regime."""
    next_rows: int
    """Post-change rows the next step waits for."""
    rows_after: int = 0
    """Post-change rows in dataset version ``rows_version`` (the newest counted)."""
    rows_version: int | None = None
    rows_used: int = 0
    """Post-change rows the last step trained on (its whole window, holdout included)."""
    rejected: int = 0
    """Steps in a row whose candidate the gate rejected."""
    stopped: str | None = None
    """Why the schedule ended; None while it runs."""

    @property
    def active(self) -> bool:
        """True until the schedule stops."""
        return self.stopped is None

    @property
    def waiting_rows(self) -> int:
        """Labelled rows the drift's run still waits for (0 once it may run, and after step 1)."""
        if not self.active or self.steps > 0:
            return 0
        return max(0, self.next_rows - self.rows_after)

    @property
    def step_due(self) -> bool:
        """True when enough post-change rows exist for the next step."""
        return self.active and self.rows_after >= self.next_rows


class TrainerState(BaseModel):
    """What the trainer remembers about one model between messages and across restarts."""

    model_config = ConfigDict(extra="forbid")

    pending: list[Trigger] = Field(default_factory=list)
    running: str | None = None
    """Run id of a run that started and has not been recorded as finished (a crash leaves it set)."""
    running_covers: list[Trigger] = Field(default_factory=list)
    running_dataset_version: int | None = None
    latest_dataset_version: int | None = None
    latest_dataset_rows: int = 0
    rows_at_last_run: int = 0
    run_ended_at: list[UtcDatetime] = Field(default_factory=list)
    """End times of recent runs (the last hour is enough for the budget)."""
    runs: int = 0
    suppressed: int = 0
    recovery: Recovery | None = None
    """The current (or last) drift recovery schedule, when ``since_change`` is on."""
    running_since: UtcDatetime | None = None
    """Change point of the running run's window (it trains on rows at or after it), if any."""
    running_recovery: str | None = None
    """Drift event id of the recovery the running run is a step of."""
    running_drift: str | None = None
    """Drift event id of the newest recovery when the running run started (a newer one makes it stale)."""

    def add(self, trigger: Trigger) -> bool:
        """Queue a trigger unless the same event is already queued or running; True when added."""
        seen = {t.event_id for t in self.pending} | {t.event_id for t in self.running_covers}
        if trigger.event_id in seen:
            return False
        self.pending.append(trigger)
        return True


def on_dataset(
    state: TrainerState, version: int, rows_total: int, event_id: str, at: datetime, spec: TriggerSpec, has_model: bool
) -> Trigger | None:
    """A new dataset version arrived: first data, or enough new labels since the last run?"""
    if state.latest_dataset_version is not None and version <= state.latest_dataset_version:
        return None  # redelivered or out of order: already counted
    state.latest_dataset_version = version
    state.latest_dataset_rows = rows_total
    if not has_model and state.runs == 0 and not state.pending and state.running is None:
        trigger = Trigger(kind="first_data", event_id=event_id, occurred_at=at, detail=f"dataset v{version}")
    elif spec.new_labels is not None and rows_total - state.rows_at_last_run >= spec.new_labels:
        new = rows_total - state.rows_at_last_run
        trigger = Trigger(kind="new_labels", event_id=event_id, occurred_at=at, detail=f"{new} new labels")
    else:
        return None
    return trigger if state.add(trigger) else None


def on_schedule(state: TrainerState, now: datetime, spec: TriggerSpec, last_run_at: datetime | None) -> Trigger | None:
    """A scheduled run is due when ``schedule`` has passed since the last run (or since data arrived)."""
    if spec.schedule is None or state.latest_dataset_version is None:
        return None
    if last_run_at is not None and now - last_run_at < spec.schedule:
        return None
    if any(t.kind == "schedule" for t in state.pending):
        return None
    trigger = Trigger(kind="schedule", event_id=f"schedule-{now.isoformat()}", occurred_at=now, detail="schedule")
    return trigger if state.add(trigger) else None


def on_drift(state: TrainerState, trigger: Trigger, kind: str, change_at: datetime, min_rows: int) -> Trigger | None:
    """A drift under ``since_change``: (re)start the recovery schedule and queue the drift's run.

    The run stays pending until the post-change rows reach ``min_rows`` (:func:`decide`
    holds every run back meanwhile, so nothing trains on a mixed window). A redelivered
    drift changes nothing.
    """
    if state.recovery is not None and state.recovery.event_id == trigger.event_id:
        return None
    if not state.add(trigger):
        return None
    state.recovery = Recovery(event_id=trigger.event_id, kind=kind, change_at=change_at, next_rows=min_rows)
    return trigger


def on_rows_after_change(state: TrainerState, version: int, rows_after: int, at: datetime) -> Trigger | None:
    """The post-change rows were counted in dataset ``version``: queue the next recovery step when due.

    Step 1 is the drift's own (already pending) run, so only steps 2, 3, ... queue a trigger here.
    """
    recovery = state.recovery
    if recovery is None or not recovery.active:
        return None
    if recovery.rows_version is not None and version < recovery.rows_version:
        return None  # an older version than the one already counted
    recovery.rows_version, recovery.rows_after = version, rows_after
    if recovery.steps == 0 or not recovery.step_due or state.running_recovery == recovery.event_id:
        return None
    step = recovery.steps + 1
    trigger = Trigger(
        kind="recovery",
        event_id=f"recovery-{recovery.event_id}-{step}",
        occurred_at=at,
        detail=f"recovery step {step} ({rows_after} rows after the change)",
    )
    return trigger if state.add(trigger) else None


def stop_recovery(state: TrainerState, reason: str) -> None:
    """End the recovery schedule (a pending drift run then runs on the plain window)."""
    if state.recovery is not None and state.recovery.active:
        state.recovery.stopped = reason


def waiting_reason(recovery: Recovery) -> str:
    """Why the drift's run has not started yet."""
    return (
        f"waiting for {recovery.waiting_rows} more labelled rows after the change at "
        f"{recovery.change_at.isoformat(timespec='seconds')} ({recovery.rows_after} of {recovery.next_rows})"
    )


@dataclass(frozen=True)
class Decision:
    """Whether to start a run now, and if not, why and until when."""

    run: bool
    reason: str = ""
    retry_at: datetime | None = None


def decide(state: TrainerState, now: datetime, spec: TriggerSpec) -> Decision:
    """Start a run if something is pending and the retraining budget allows it."""
    if state.running is not None:
        return Decision(False, "a run is in progress")
    if not state.pending:
        return Decision(False, "nothing pending")
    if state.latest_dataset_version is None:
        return Decision(False, "no dataset yet")
    if state.recovery is not None and state.recovery.waiting_rows > 0:
        return Decision(False, waiting_reason(state.recovery))
    recent = sorted(t for t in state.run_ended_at if now - t < timedelta(hours=1))
    if recent and now - recent[-1] < spec.cooldown:
        until = recent[-1] + spec.cooldown
        return Decision(False, f"cooldown {spec.cooldown} since the last run", until)
    if len(recent) >= spec.max_runs_per_hour:
        until = recent[-spec.max_runs_per_hour] + timedelta(hours=1)
        return Decision(False, f"max_runs_per_hour={spec.max_runs_per_hour} reached", until)
    return Decision(True)


def start_run(state: TrainerState, run_id: str) -> list[Trigger]:
    """Mark a run started: it covers everything pending now.

    While a recovery schedule runs, every run is one of its steps and trains on the new
    regime only (``running_since``), whatever triggered it.
    """
    state.running = run_id
    state.running_covers = list(state.pending)
    state.running_dataset_version = state.latest_dataset_version
    state.pending = []
    recovery = state.recovery
    state.running_drift = recovery.event_id if recovery is not None else None
    if recovery is not None and recovery.active and recovery.waiting_rows == 0:
        state.running_since = recovery.change_at
        state.running_recovery = recovery.event_id
    else:
        state.running_since = state.running_recovery = None
    return state.running_covers


def superseded_by(recovery: Recovery | None, drift_at_start: str | None) -> str | None:
    """Why a run that just finished is out of date, or None (``drift_at_start``: ``running_drift``).

    A drift that started a new recovery while the run trained means its window mixes the old
    regime with the new one: its candidate must not be rolled out (the new drift's own run, on
    the rows after the new change point, follows).

    >>> at = datetime.fromisoformat("2026-05-01T12:00:00+00:00")
    >>> r = Recovery(event_id="d2", kind="concept", change_at=at, next_rows=600)
    >>> superseded_by(r, "d1")
    'a concept drift (change at 2026-05-01T12:00:00+00:00) arrived during the run'
    >>> superseded_by(r, "d2") is None
    True
    """
    if recovery is None or not recovery.active or recovery.event_id == drift_at_start:
        return None
    change = recovery.change_at.isoformat(timespec="seconds")
    return f"a {recovery.kind} drift (change at {change}) arrived during the run"


def finish_recovery_step(
    state: TrainerState, rows_used: int, passed: bool, error: str | None, transient: bool, last_rows: int
) -> None:
    """Advance (or stop) the recovery schedule after one of its steps ran; call before :func:`finish_run`.

    A step sets the next doubling point; :data:`REJECTED_STEPS_TO_STOP` rejected candidates
    in a row (the gate found no improvement) or a full ``last_rows`` window end the schedule. A run that failed
    transiently is retried as the same step; any other failure ends the schedule.
    A run of a recovery that a newer drift has replaced changes nothing.
    """
    recovery = state.recovery
    if recovery is None or not recovery.active or recovery.event_id != state.running_recovery:
        return
    step = recovery.steps + 1
    if error is not None:
        if not transient:
            recovery.stopped = f"step {step} failed: {error}"
        return
    recovery.steps = step
    recovery.rows_used = rows_used
    recovery.rejected = 0 if passed else recovery.rejected + 1
    if recovery.rejected >= REJECTED_STEPS_TO_STOP:
        recovery.stopped = f"step {step}: the gate rejected {recovery.rejected} steps in a row (no improvement)"
    elif rows_used >= last_rows:
        recovery.stopped = f"step {step}: the window reached last_rows ({last_rows})"
    else:
        recovery.next_rows = min(2 * rows_used, last_rows)


def finish_run(state: TrainerState, now: datetime, dataset_rows: int | None) -> None:
    """Record a finished run (passed, rejected or failed alike)."""
    state.running = None
    state.running_covers = []
    state.running_dataset_version = None
    state.running_since = None
    state.running_recovery = None
    state.running_drift = None
    state.runs += 1
    if dataset_rows is not None:
        state.rows_at_last_run = dataset_rows
    state.run_ended_at = [t for t in state.run_ended_at if now - t < timedelta(hours=1)] + [now]


def describe_triggers(triggers: Sequence[Trigger]) -> str:
    """One word for a run's trigger: the strongest reason among those it covers."""
    order = ["manual", "drift", "recovery", "first_data", "new_labels", "schedule"]
    kinds = {t.kind for t in triggers}
    return next((k for k in order if k in kinds), "manual")


def describe_run(triggers: Sequence[Trigger], recovery: Recovery | None, rows_after: int | None) -> str:
    """A run's trigger as ``TrainingCompleted.trigger`` tells it: why it ran, and on which rows.

    >>> at = datetime.fromisoformat("2026-05-01T12:00:00+00:00")
    >>> r = Recovery(event_id="d1", kind="concept", change_at=at, next_rows=1000)
    >>> drift = Trigger(kind="drift", event_id="d1", occurred_at=at)
    >>> describe_run([drift], r, 1200)
    'drift (concept, change at 2026-05-01T12:00:00+00:00, 1200 rows after it)'
    >>> r.steps = 1
    >>> describe_run([Trigger(kind="recovery", event_id="x", occurred_at=at)], r, 4800)
    'recovery step 2 (4800 rows after the change)'
    """
    word = describe_triggers(triggers)
    if recovery is None or rows_after is None:
        return word
    if word == "drift" and recovery.steps == 0:
        change = recovery.change_at.isoformat(timespec="seconds")
        return f"drift ({recovery.kind}, change at {change}, {rows_after} rows after it)"
    step = f"recovery step {recovery.steps + 1} ({rows_after} rows after the change)"
    return step if word == "recovery" else f"{word}; {step}"


# --- splitting, scoring, gating ------------------------------------------------------------


def time_split(n_rows: int, holdout: float) -> tuple[slice, slice]:
    """Train on the older rows, test on the newest ``holdout`` fraction.

    >>> time_split(100, 0.2)
    (slice(0, 80, None), slice(80, 100, None))
    """
    n_test = max(MIN_HOLDOUT_ROWS, int(round(n_rows * holdout)))
    n_train = n_rows - n_test
    if n_train < MIN_TRAIN_ROWS:
        raise InvalidInput(
            f"{n_rows} rows are too few to train: need at least {MIN_TRAIN_ROWS + MIN_HOLDOUT_ROWS} "
            f"({MIN_TRAIN_ROWS} to train, {MIN_HOLDOUT_ROWS} to test)"
        )
    return slice(0, n_train), slice(n_train, n_rows)


def regression_targets(labels: NDArray[Any]) -> NDArray[np.float64]:
    """A regression window's labels as float64, whether a dataset stores them as numbers or as
    their text; :class:`InvalidInput` when one is not a finite number (ingest admits none, so
    such a row is a damaged dataset, and a model must not be scored on it).

    >>> regression_targets(np.array(["1.5", "2"])).tolist()
    [1.5, 2.0]
    """
    try:
        targets = np.asarray(labels, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        bad = next(v for v in np.asarray(labels, dtype=object).reshape(-1) if not _is_number(v))
        raise InvalidInput(
            f"the window holds a label that is not a number ({bad!r}); a regression needs numbers"
        ) from None
    finite = np.isfinite(targets)
    if not finite.all():
        raise InvalidInput(
            f"the window holds {int((~finite).sum())} non-finite labels (first {targets[~finite][0]!r}); "
            "a regression needs finite numbers"
        )
    return targets


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def check_training_targets(y_train: NDArray[Any], regression: bool) -> None:
    """Refuse a training window a model cannot learn from (:class:`InvalidInput`).

    A classifier needs two classes. A regressor needs two distinct targets: fitted on one
    value it predicts that value whatever the features, its holdout errors would be all zero
    when the holdout is constant too (a stuck feed writing one default value looks exactly like
    this), so the gate would take it for a perfect model, and its expected error would make
    every later nonzero error a miss.

    >>> try:
    ...     check_training_targets(np.array([2.0, 2.0, 2.0]), regression=True)
    ... except InvalidInput as err:
    ...     print(err.message.split(":")[0])
    the training rows hold a single target value (2.0)
    """
    if regression:
        values = np.asarray(y_train, dtype=np.float64)
        if values.size and float(values.min()) == float(values.max()):
            raise InvalidInput(
                f"the training rows hold a single target value ({float(values[0])!r}): a model fit on them "
                "predicts it whatever the features; wait for varied labels"
            )
        return
    if len({str(v) for v in y_train}) < 2:
        raise InvalidInput(f"the training rows hold a single label ({y_train[0]!r}); need at least two classes")


def evaluate(
    y_true: NDArray[Any], y_pred: NDArray[Any], proba: NDArray[Any], classes: Sequence[Any]
) -> dict[str, float]:
    """A classifier's gate metrics on one holdout; all are "higher is better" (log loss is negated).

    Binary and multiclass alike (``proba`` has a column per class, in ``classes`` order). A
    holdout class the model does not know (it was absent from its training rows, which with
    three or more classes happens) counts against it: probability 0 and an F1 of 0.
    """
    true_text = np.asarray([str(v) for v in y_true])
    pred_text = np.asarray([str(v) for v in y_pred])
    labels = [str(c) for c in classes]
    probabilities = np.asarray(proba, dtype=np.float64)
    unknown = sorted(set(true_text.tolist()) - set(labels))
    if unknown:
        labels += unknown
        probabilities = np.hstack([probabilities, np.zeros((len(true_text), len(unknown)))])
    clipped = np.clip(probabilities, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(accuracy_score(true_text, pred_text)),
        "balanced_accuracy": float(balanced_accuracy_score(true_text, pred_text)),
        "f1_macro": float(f1_score(true_text, pred_text, average="macro", labels=labels, zero_division=0)),
        "log_loss_neg": -float(log_loss(true_text, clipped, labels=labels)),
    }


def evaluate_regression(y_true: NDArray[Any], y_pred: NDArray[Any]) -> dict[str, float]:
    """A regressor's gate metrics on one holdout: ``mae`` and ``rmse`` (lower is better), ``r2``.

    Every value is finite, as metrics travel in JSON events. ``r2`` of a constant holdout
    (no variance to explain) is 1.0 when every prediction is exact and 0.0 otherwise, as
    scikit-learn's ``r2_score`` defines it, rather than the NaN or minus infinity of the
    formula. Raises ``ValueError`` for an empty holdout or a non-finite value (the runner
    rejects non-finite targets and predictions before scoring).

    >>> m = evaluate_regression(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    >>> m["mae"], m["rmse"], round(m["r2"], 6)
    (0.5, 1.0, 0.2)
    >>> evaluate_regression(np.array([5.0, 5.0]), np.array([5.0, 6.0]))["r2"]
    0.0
    """
    truth = np.asarray(y_true, dtype=np.float64).reshape(-1)
    predicted = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if truth.shape != predicted.shape or truth.size == 0:
        raise ValueError(f"need as many predictions as targets, at least one: {truth.size} and {predicted.size}")
    if not (np.all(np.isfinite(truth)) and np.all(np.isfinite(predicted))):
        raise ValueError("targets and predictions must be finite numbers")
    errors = predicted - truth
    squared = float(np.sum(errors * errors))
    spread = float(np.sum((truth - truth.mean()) ** 2))
    r2 = 1.0 - squared / spread if spread > 0 else (1.0 if squared == 0 else 0.0)
    return {
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(squared / truth.size)),
        "r2": float(r2),
    }


def evaluate_task(
    task: TaskKind, y_true: NDArray[Any], y_pred: NDArray[Any], proba: NDArray[Any], classes: Sequence[Any]
) -> dict[str, float]:
    """The gate metrics of a model of ``task`` on one holdout: :func:`evaluate` of a classifier's
    labels and probabilities, :func:`evaluate_regression` of a regressor's predictions."""
    if task == "regression":
        return evaluate_regression(y_true, y_pred)
    return evaluate(y_true, y_pred, proba, classes)


REUSE_MARGIN = 0.01
"""How much better (in the gate's metric, on the same holdout) an earlier version must score than
the fresh fit to be reused: choosing the best of several on one small holdout favours luck."""
REUSE_LOOKBACK = 8
"""Earlier versions (distinct graphs, newest first) scored for reuse on a since-change run."""


def choose_reuse(
    fresh: dict[str, float], earlier: Sequence[tuple[int, dict[str, float]]], metric: str, margin: float
) -> int | None:
    """The earlier version to register again instead of the fresh fit, if any.

    ``earlier`` holds ``(version, metrics)`` of earlier versions scored on the fresh fit's
    holdout; the best by ``metric`` is reused when it beats the fresh fit by at least
    ``margin`` (and by :data:`REUSE_MARGIN`). Ties go to the newest version.

    >>> choose_reuse({"accuracy": 0.80}, [(3, {"accuracy": 0.84}), (1, {"accuracy": 0.88})], "accuracy", 0.005)
    1
    >>> choose_reuse({"accuracy": 0.80}, [(3, {"accuracy": 0.805})], "accuracy", 0.005) is None
    True
    """
    if not earlier:
        return None
    version, metrics = max(earlier, key=lambda vm: (improvement(metric, vm[1][metric], fresh[metric]), vm[0]))
    better = improvement(metric, metrics[metric], fresh[metric])
    return version if better >= max(margin, _reuse_margin(metric, fresh[metric])) else None


def _reuse_margin(metric: str, fresh: float) -> float:
    """:data:`REUSE_MARGIN` in the metric's units: points of a score, or a share of an error
    (a regressor's MAE or RMSE has the target's units, so 1 % of the fresh fit's error)."""
    return REUSE_MARGIN * abs(fresh) if metric in LOWER_IS_BETTER else REUSE_MARGIN


def gate(spec: GateSpec, candidate: dict[str, float], champion: dict[str, float] | None) -> GateVerdict:
    """The spec's gate: an absolute bound (``min`` of a higher-is-better metric, ``max`` of a
    lower-is-better one), and a minimum improvement over the champion in the metric's good
    direction.

    >>> gate(GateSpec(metric="mae", max=5.0), {"mae": 4.0}, {"mae": 4.5}).passed
    True
    >>> gate(GateSpec(metric="mae"), {"mae": 4.6}, {"mae": 4.5}).reasons[-1]
    'mae 4.6000 vs champion 4.5000: -0.1000 better, below min delta +0.0'
    """
    metric = spec.metric
    value = candidate[metric]
    reasons = []
    passed = True
    bound = spec.bound()
    if bound is not None:
        side, limit = bound
        within = value >= limit if side == "min" else value <= limit
        passed = within
        if side == "min":
            reasons.append(
                f"{metric} {value:.4f} >= min {limit}" if within else f"{metric} {value:.4f} is below min {limit}"
            )
        else:
            reasons.append(
                f"{metric} {value:.4f} <= max {limit}" if within else f"{metric} {value:.4f} is above max {limit}"
            )
    if champion is None:
        reasons.append("no champion: the first version goes to production")
        return GateVerdict(passed=passed, reasons=reasons)
    baseline = champion[metric]
    better = improvement(metric, value, baseline)
    if metric in LOWER_IS_BETTER:
        said = f"{metric} {value:.4f} vs champion {baseline:.4f}: {better:+.4f} better"
    else:
        said = f"{metric} {better:+.4f} vs champion ({baseline:.4f})"
    if better >= spec.min_delta_vs_champion:
        reasons.append(f"{said} >= min delta {spec.min_delta_vs_champion:+}")
    else:
        passed = False
        reasons.append(
            f"{said}, below min delta {spec.min_delta_vs_champion:+}"
            if metric in LOWER_IS_BETTER
            else f"{said} is below min delta {spec.min_delta_vs_champion:+}"
        )
    return GateVerdict(passed=passed, reasons=reasons)
