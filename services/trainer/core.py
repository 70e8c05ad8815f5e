"""The trainer's decisions, with no I/O: when to run, on which rows, how to judge, what to remember.

* Triggers (first data, every ``new_labels`` labels, ``schedule``, drift) accumulate in a
  :class:`TrainerState` that is persisted before the triggering message is committed, so a
  trigger survives a crash. Everything pending when a run starts is covered by that run;
  whatever arrives during it coalesces into exactly one follow-up run.
* ``cooldown`` and ``max_runs_per_hour`` defer a run; a deferred trigger stays pending (it is
  logged and counted, never dropped) and runs once the budget allows.
* The holdout is the newest ``holdout`` fraction of the window (time order), candidate and
  champion are scored on the same rows, and the gate compares them.
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

from shared.datasets import FeatureStats
from shared.errors import InvalidInput
from shared.events import GateVerdict, UtcDatetime
from shared.registry import FeatureReference, PredictionReference, Reference, ReferenceHistogram
from shared.spec import GateSpec, TriggerSpec

MIN_TRAIN_ROWS = 20
MIN_HOLDOUT_ROWS = 10
HISTOGRAM_BINS = 10

TriggerKind = Literal["first_data", "new_labels", "schedule", "drift", "manual"]


# --- triggers ------------------------------------------------------------------------------


class Trigger(BaseModel):
    """One reason to train."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: TriggerKind
    event_id: str
    occurred_at: UtcDatetime
    detail: str = ""


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
    recent = sorted(t for t in state.run_ended_at if now - t < timedelta(hours=1))
    if recent and now - recent[-1] < spec.cooldown:
        until = recent[-1] + spec.cooldown
        return Decision(False, f"cooldown {spec.cooldown} since the last run", until)
    if len(recent) >= spec.max_runs_per_hour:
        until = recent[-spec.max_runs_per_hour] + timedelta(hours=1)
        return Decision(False, f"max_runs_per_hour={spec.max_runs_per_hour} reached", until)
    return Decision(True)


def start_run(state: TrainerState, run_id: str) -> list[Trigger]:
    """Mark a run started: it covers everything pending now."""
    state.running = run_id
    state.running_covers = list(state.pending)
    state.running_dataset_version = state.latest_dataset_version
    state.pending = []
    return state.running_covers


def finish_run(state: TrainerState, now: datetime, dataset_rows: int | None) -> None:
    """Record a finished run (passed, rejected or failed alike)."""
    state.running = None
    state.running_covers = []
    state.running_dataset_version = None
    state.runs += 1
    if dataset_rows is not None:
        state.rows_at_last_run = dataset_rows
    state.run_ended_at = [t for t in state.run_ended_at if now - t < timedelta(hours=1)] + [now]


def describe_triggers(triggers: Sequence[Trigger]) -> str:
    """One word for a run's trigger: the strongest reason among those it covers."""
    order = ["manual", "drift", "first_data", "new_labels", "schedule"]
    kinds = {t.kind for t in triggers}
    return next((k for k in order if k in kinds), "manual")


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


def evaluate(
    y_true: NDArray[Any], y_pred: NDArray[Any], proba: NDArray[Any], classes: Sequence[Any]
) -> dict[str, float]:
    """Every gate metric on one holdout; all are "higher is better" (log loss is negated)."""
    true_text = np.asarray([str(v) for v in y_true])
    pred_text = np.asarray([str(v) for v in y_pred])
    labels = [str(c) for c in classes]
    clipped = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(accuracy_score(true_text, pred_text)),
        "balanced_accuracy": float(balanced_accuracy_score(true_text, pred_text)),
        "f1_macro": float(f1_score(true_text, pred_text, average="macro", labels=labels, zero_division=0)),
        "log_loss_neg": -float(log_loss(true_text, clipped, labels=labels)),
    }


def gate(spec: GateSpec, candidate: dict[str, float], champion: dict[str, float] | None) -> GateVerdict:
    """The spec's gate: an absolute minimum, and a minimum delta against the champion."""
    value = candidate[spec.metric]
    reasons = []
    passed = True
    if value >= spec.min:
        reasons.append(f"{spec.metric} {value:.4f} >= min {spec.min}")
    else:
        passed = False
        reasons.append(f"{spec.metric} {value:.4f} is below min {spec.min}")
    if champion is None:
        reasons.append("no champion: the first version goes to production")
    else:
        delta = value - champion[spec.metric]
        if delta >= spec.min_delta_vs_champion:
            reasons.append(
                f"{spec.metric} {delta:+.4f} vs champion ({champion[spec.metric]:.4f}) "
                f">= min delta {spec.min_delta_vs_champion:+}"
            )
        else:
            passed = False
            reasons.append(
                f"{spec.metric} {delta:+.4f} vs champion ({champion[spec.metric]:.4f}) "
                f"is below min delta {spec.min_delta_vs_champion:+}"
            )
    return GateVerdict(passed=passed, reasons=reasons)


# --- reference statistics for the monitor --------------------------------------------------


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
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, finite, side="right"), minlength=edges.size - 1)
    return ReferenceHistogram(edges=[float(e) for e in edges], proportions=[float(c) / finite.size for c in counts])


def reference(
    X: NDArray[np.float64],
    feature_names: Sequence[str],
    y_pred: NDArray[Any],
    proba: NDArray[Any],
    classes: Sequence[Any],
) -> Reference:
    """What normal looks like: every feature of the training window, and predictions on the holdout."""
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
        str(c): _probability_histogram(np.asarray(proba, dtype=np.float64)[:, k]) for k, c in enumerate(classes)
    }
    return Reference(
        features=features,
        predictions=PredictionReference(label_distribution=distribution, probability_histograms=probabilities),
    )


def _probability_histogram(values: NDArray[np.float64]) -> ReferenceHistogram:
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    counts = np.bincount(
        np.clip((values * HISTOGRAM_BINS).astype(int), 0, HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS
    )
    total = max(1, values.size)
    return ReferenceHistogram(edges=[float(e) for e in edges], proportions=[float(c) / total for c in counts])
