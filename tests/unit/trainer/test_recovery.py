"""The drift recovery schedule (``window.since_change``): wait, train on the new regime, retrain as it doubles."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta

from services.trainer import core
from shared.spec import TriggerSpec

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CHANGE = datetime(2026, 5, 1, 11, 30, tzinfo=UTC)
SPEC = TriggerSpec(new_labels=None, cooldown=timedelta(0), max_runs_per_hour=100)
LAST_ROWS = 10_000


def drift(event_id: str = "d1") -> core.Trigger:
    return core.Trigger(kind="drift", event_id=event_id, occurred_at=T0, detail="concept drift on x (ADWIN)")


def drifted(min_rows: int = 1000) -> core.TrainerState:
    state = core.TrainerState(latest_dataset_version=5, runs=1)
    assert core.on_drift(state, drift(), "concept", CHANGE, min_rows) is not None
    return state


def run_step(state: core.TrainerState, run_id: str, rows_used: int, passed: bool = True) -> list[core.Trigger]:
    """Start a run, finish it as a recovery step; returns the triggers it covered."""
    assert core.decide(state, T0, SPEC).run
    covers = core.start_run(state, run_id)
    core.finish_recovery_step(state, rows_used, passed, None, False, LAST_ROWS)
    core.finish_run(state, T0, 20_000)
    return covers


def test_the_drift_run_waits_for_min_rows_after_the_change_and_holds_every_trigger_back() -> None:
    state = drifted()
    assert state.recovery is not None and state.recovery.waiting_rows == 1000
    decision = core.decide(state, T0, SPEC)
    assert not decision.run and decision.retry_at is None
    assert (
        decision.reason
        == "waiting for 1000 more labelled rows after the change at 2026-05-01T11:30:00+00:00 (0 of 1000)"
    )

    assert core.on_rows_after_change(state, 6, 400, T0) is None
    state.add(core.Trigger(kind="new_labels", event_id="n1", occurred_at=T0))  # no mixed-window run meanwhile
    assert state.recovery.waiting_rows == 600
    assert "waiting for 600 more" in core.decide(state, T0, SPEC).reason
    assert core.on_rows_after_change(state, 5, 9999, T0) is None and state.recovery.rows_after == 400  # older version

    assert core.on_rows_after_change(state, 7, 1200, T0) is None, "step 1 is the drift's own pending run"
    assert state.recovery.waiting_rows == 0
    assert core.decide(state, T0, SPEC).run
    covers = core.start_run(state, "run-1")
    assert {t.kind for t in covers} == {"drift", "new_labels"}
    assert state.running_since == CHANGE and state.running_recovery == "d1"
    text = core.describe_run(covers, state.recovery, 1200)
    assert text == "drift (concept, change at 2026-05-01T11:30:00+00:00, 1200 rows after it)"


def test_the_wait_survives_a_restart() -> None:
    state = drifted()
    core.on_rows_after_change(state, 6, 300, T0)
    restored = core.TrainerState.model_validate_json(state.model_dump_json())
    assert restored == state
    assert restored.recovery is not None and restored.recovery.waiting_rows == 700
    assert not core.decide(restored, T0, SPEC).run
    core.on_rows_after_change(restored, 7, 1000, T0)
    assert core.decide(restored, T0, SPEC).run


def test_a_state_saved_before_recovery_existed_still_loads() -> None:
    old = '{"pending": [], "running": null, "latest_dataset_version": 3, "latest_dataset_rows": 10, "runs": 2}'
    state = core.TrainerState.model_validate_json(old)
    assert state.recovery is None and state.running_since is None
    state.add(drift())
    covers = core.start_run(state, "r")
    assert state.running_since is None, "no recovery: the plain last_rows window"
    assert core.describe_run(covers, None, None) == "drift"


def test_recovery_steps_run_each_time_the_post_change_rows_double() -> None:
    state = drifted()
    core.on_rows_after_change(state, 6, 1200, T0)
    run_step(state, "run-1", rows_used=1200)
    recovery = state.recovery
    assert recovery is not None and recovery.steps == 1 and recovery.next_rows == 2400 and recovery.active
    assert state.running_since is None and state.running_recovery is None

    assert core.on_rows_after_change(state, 7, 2000, T0) is None  # not doubled yet
    assert not core.decide(state, T0, SPEC).run
    step2 = core.on_rows_after_change(state, 8, 2500, T0)
    assert (
        step2 is not None
        and step2.kind == "recovery"
        and step2.detail == "recovery step 2 (2500 rows after the change)"
    )
    assert core.on_rows_after_change(state, 8, 2500, T0) is None, "a recount does not queue the step twice"

    covers = core.start_run(state, "run-2")
    assert state.running_since == CHANGE
    assert core.describe_run(covers, recovery, 2500) == "recovery step 2 (2500 rows after the change)"
    assert core.on_rows_after_change(state, 9, 6000, T0) is None, "no next step while this one runs"
    core.finish_recovery_step(state, 2500, True, None, False, LAST_ROWS)
    core.finish_run(state, T0, 20_000)
    assert recovery.steps == 2 and recovery.next_rows == 5000

    step3 = core.on_rows_after_change(state, 9, 6000, T0)  # the rows counted during the run make it due at once
    assert step3 is not None and step3.detail == "recovery step 3 (6000 rows after the change)"
    schedule = core.Trigger(kind="schedule", event_id="s", occurred_at=T0)
    assert core.describe_run([schedule], recovery, 6000) == "schedule; recovery step 3 (6000 rows after the change)"


def test_the_schedule_stops_when_the_gate_rejects_two_steps_in_a_row() -> None:
    state = drifted()
    core.on_rows_after_change(state, 6, 1000, T0)
    run_step(state, "run-1", rows_used=1000, passed=False)  # one rejection: go on with twice the rows
    recovery = state.recovery
    assert recovery is not None and recovery.active and recovery.rejected == 1 and recovery.next_rows == 2000
    assert core.on_rows_after_change(state, 7, 2000, T0) is not None
    run_step(state, "run-2", rows_used=2000)  # passed: the count starts again
    assert recovery.active and recovery.rejected == 0
    assert core.on_rows_after_change(state, 8, 4000, T0) is not None
    run_step(state, "run-3", rows_used=4000, passed=False)
    assert core.on_rows_after_change(state, 9, 8000, T0) is not None
    run_step(state, "run-4", rows_used=8000, passed=False)
    assert not recovery.active and recovery.steps == 4
    assert recovery.stopped == "step 4: the gate rejected 2 steps in a row (no improvement)"
    assert core.on_rows_after_change(state, 10, 100_000, T0) is None and state.pending == []
    state.add(core.Trigger(kind="new_labels", event_id="n", occurred_at=T0))
    core.start_run(state, "run-3")
    assert state.running_since is None, "after the schedule, runs use the plain window again"


def test_the_schedule_stops_when_the_window_reaches_last_rows() -> None:
    state = drifted(min_rows=3000)
    core.on_rows_after_change(state, 6, 3000, T0)
    run_step(state, "run-1", rows_used=3000)
    recovery = state.recovery
    assert recovery is not None and recovery.next_rows == 6000
    assert core.on_rows_after_change(state, 7, 6000, T0) is not None
    run_step(state, "run-2", rows_used=6000)
    assert recovery.next_rows == LAST_ROWS, "the next point is capped at last_rows"
    assert core.on_rows_after_change(state, 8, 11_000, T0) is not None
    run_step(state, "run-3", rows_used=LAST_ROWS)
    assert recovery.stopped == f"step 3: the window reached last_rows ({LAST_ROWS})"


def test_failures_retry_a_transient_step_and_end_the_schedule_otherwise() -> None:
    state = drifted()
    core.on_rows_after_change(state, 6, 1000, T0)
    core.start_run(state, "run-1")
    core.finish_recovery_step(state, 0, False, "store down", True, LAST_ROWS)
    assert state.recovery is not None and state.recovery.active and state.recovery.steps == 0
    core.finish_recovery_step(state, 0, False, "single label", False, LAST_ROWS)
    assert state.recovery.stopped == "step 1 failed: single label"


def test_a_new_drift_restarts_the_schedule_and_a_redelivered_one_does_not() -> None:
    state = drifted()
    core.on_rows_after_change(state, 6, 1000, T0)
    run_step(state, "run-1", rows_used=1000)
    assert core.on_drift(state, drift("d1"), "concept", CHANGE, 1000) is None, "redelivered: no restart"
    assert state.recovery is not None and state.recovery.steps == 1

    later = CHANGE + timedelta(hours=2)
    assert core.on_drift(state, drift("d2"), "data", later, 1000) is not None
    assert state.recovery.event_id == "d2" and state.recovery.steps == 0 and state.recovery.waiting_rows == 1000
    assert state.recovery.change_at == later and not core.decide(state, T0, SPEC).run


def test_a_run_of_a_replaced_recovery_does_not_advance_the_new_one() -> None:
    state = drifted()
    core.on_rows_after_change(state, 6, 1000, T0)
    core.start_run(state, "run-1")
    core.on_drift(state, drift("d2"), "concept", CHANGE + timedelta(hours=1), 500)  # arrives during the run
    core.finish_recovery_step(state, 1000, False, None, False, LAST_ROWS)
    core.finish_run(state, T0, 20_000)
    assert state.recovery is not None and state.recovery.event_id == "d2"
    assert state.recovery.active and state.recovery.steps == 0 and state.recovery.waiting_rows == 500


def test_cooldown_and_budget_still_apply_to_recovery_steps() -> None:
    spec = TriggerSpec(new_labels=None, cooldown=timedelta(minutes=5), max_runs_per_hour=6)
    state = drifted()
    core.on_rows_after_change(state, 6, 1000, T0)
    core.start_run(state, "run-1")
    core.finish_recovery_step(state, 1000, True, None, False, LAST_ROWS)
    core.finish_run(state, T0, 20_000)
    assert core.on_rows_after_change(state, 7, 2000, T0) is not None
    decision = core.decide(state, T0 + timedelta(minutes=1), spec)
    assert not decision.run and "cooldown" in decision.reason
    assert core.decide(state, T0 + timedelta(minutes=5), spec).run


def test_stop_recovery_releases_a_waiting_run() -> None:
    state = drifted()
    core.stop_recovery(state, "training.window.since_change was turned off")
    assert state.recovery is not None and not state.recovery.active and state.recovery.waiting_rows == 0
    assert core.decide(state, T0, SPEC).run
    core.start_run(state, "run-1")
    assert state.running_since is None


def test_core_doctests_pass() -> None:
    assert doctest.testmod(core).failed == 0
