"""Trainer decisions: triggers, coalescing, budget, split, metrics, gate, reference statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.trainer import core
from shared.errors import InvalidInput
from shared.reference import build_reference
from shared.spec import GateSpec, TriggerSpec

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SPEC = TriggerSpec(new_labels=1000, cooldown=timedelta(minutes=5), max_runs_per_hour=3)


def drift(i: int, at: datetime = T0) -> core.Trigger:
    return core.Trigger(kind="drift", event_id=f"d{i}", occurred_at=at, detail="concept drift")


def test_first_dataset_triggers_once() -> None:
    state = core.TrainerState()
    first = core.on_dataset(state, 1, 200, "e1", T0, SPEC, has_model=False)
    assert first is not None and first.kind == "first_data"
    assert core.on_dataset(state, 1, 200, "e1", T0, SPEC, has_model=False) is None  # redelivered
    assert core.on_dataset(state, 2, 400, "e2", T0, SPEC, has_model=False) is None  # first data already pending


def test_new_labels_threshold_counts_from_the_last_run() -> None:
    state = core.TrainerState(runs=1, rows_at_last_run=5000)
    assert core.on_dataset(state, 7, 5900, "e7", T0, SPEC, has_model=True) is None
    trigger = core.on_dataset(state, 8, 6000, "e8", T0, SPEC, has_model=True)
    assert trigger is not None and trigger.kind == "new_labels" and "1000 new labels" in trigger.detail


def test_burst_of_drift_events_during_a_run_coalesces_into_one_follow_up() -> None:
    state = core.TrainerState(latest_dataset_version=3)
    state.add(drift(0))
    assert core.decide(state, T0, SPEC).run
    covered = core.start_run(state, "run-1")
    assert [t.event_id for t in covered] == ["d0"]
    for i in range(1, 11):
        assert state.add(drift(i))
    assert not state.add(drift(5)), "a redelivered event is not queued twice"
    assert core.decide(state, T0, SPEC).reason == "a run is in progress"
    core.finish_run(state, T0 + timedelta(minutes=1), 1000)
    later = T0 + timedelta(minutes=7)
    assert core.decide(state, later, SPEC).run
    follow_up = core.start_run(state, "run-2")
    assert len(follow_up) == 10 and state.pending == []
    core.finish_run(state, later, 1000)
    assert not core.decide(state, later + timedelta(minutes=10), SPEC).run  # nothing pending: no third run


def test_cooldown_defers_and_keeps_the_trigger() -> None:
    state = core.TrainerState(latest_dataset_version=1)
    core.finish_run(state, T0, 100)
    state.add(drift(1))
    decision = core.decide(state, T0 + timedelta(minutes=2), SPEC)
    assert not decision.run and "cooldown" in decision.reason
    assert decision.retry_at == T0 + timedelta(minutes=5)
    assert len(state.pending) == 1
    assert core.decide(state, T0 + timedelta(minutes=5), SPEC).run


def test_hourly_budget() -> None:
    state = core.TrainerState(latest_dataset_version=1)
    for k in range(3):
        core.finish_run(state, T0 + timedelta(minutes=10 * k), 100)
    state.add(drift(1))
    decision = core.decide(state, T0 + timedelta(minutes=30), SPEC)
    assert not decision.run and "max_runs_per_hour=3" in decision.reason
    assert decision.retry_at == T0 + timedelta(hours=1)
    assert core.decide(state, T0 + timedelta(hours=1, minutes=1), SPEC).run


def test_schedule() -> None:
    spec = TriggerSpec(schedule=timedelta(hours=24))
    state = core.TrainerState(latest_dataset_version=2)
    assert core.on_schedule(state, T0, spec, last_run_at=T0 - timedelta(hours=1)) is None
    due = core.on_schedule(state, T0, spec, last_run_at=T0 - timedelta(hours=25))
    assert due is not None and due.kind == "schedule"
    assert core.on_schedule(state, T0, spec, last_run_at=None) is None  # one schedule trigger pending at a time


def test_describe_triggers_prefers_the_strongest_reason() -> None:
    new_labels = core.Trigger(kind="new_labels", event_id="n", occurred_at=T0)
    assert core.describe_triggers([new_labels, drift(1)]) == "drift"
    assert core.describe_triggers([new_labels]) == "new_labels"


def test_time_split_keeps_the_newest_rows_for_the_holdout() -> None:
    train, test = core.time_split(1000, 0.2)
    assert (train, test) == (slice(0, 800), slice(800, 1000))
    with pytest.raises(InvalidInput, match="too few to train"):
        core.time_split(25, 0.2)


def test_evaluate_and_gate() -> None:
    y = np.array(["a", "b", "a", "b"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    metrics = core.evaluate(y, np.array(["a", "b", "a", "a"]), proba, ["a", "b"])
    assert metrics["accuracy"] == 0.75 and metrics["log_loss_neg"] < 0
    spec = GateSpec(metric="accuracy", min=0.7, min_delta_vs_champion=-0.01)
    first = core.gate(spec, metrics, None)
    assert first.passed and "first version" in first.reasons[-1]
    worse = core.gate(spec, metrics, {"accuracy": 0.9})
    assert not worse.passed and "-0.1500 vs champion" in worse.reasons[-1]
    assert not core.gate(GateSpec(min=0.8), metrics, None).passed


def test_reference_histograms_cover_the_training_data() -> None:
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(size=2000), rng.integers(0, 3, size=2000).astype(float)])
    proba = rng.dirichlet([1, 1], size=300)
    ref = build_reference(X, ["x", "k"], np.array([0, 1] * 150), proba, [0, 1])
    hist = ref.features["x"].histogram
    assert len(hist.edges) == 11 and sum(hist.proportions) == pytest.approx(1.0)
    assert max(hist.proportions) < 0.2
    assert len(ref.features["k"].histogram.proportions) <= 3
    assert ref.predictions.label_distribution == {"0": 0.5, "1": 0.5}
    assert sum(ref.predictions.probability_histograms["1"].proportions) == pytest.approx(1.0)
