"""Live accuracy, canary verdicts, the post-promotion watch and the since-change wait."""

from __future__ import annotations

from datetime import timedelta

from services.monitor.canary import (
    CanaryJudge,
    CanaryTrial,
    ChampionWatch,
    ChangeWait,
    ErrorCounts,
    LiveAccuracy,
    LiveAccuracyState,
)
from shared.spec import PromoteAfter, RollbackOn
from tests.unit.monitor.streams import at


def test_live_accuracy_tumbling_windows_late_outcomes_and_bounded_series() -> None:
    live = LiveAccuracy(window=timedelta(minutes=1), max_points=3)
    for second, correct in [(0, True), (10, False), (59, True), (60, True), (125, False)]:
        live.record("m", 1, "champion", correct, at(second))
    series = live.series("m", 1, "champion")
    assert [(p.start, p.counts) for p in series] == [
        (at(0), ErrorCounts(3, 1)),
        (at(60), ErrorCounts(1, 0)),
        (at(120), ErrorCounts(1, 1)),
    ]
    late = live.record("m", 1, "champion", True, at(30))  # late, window still kept
    assert late is not None and late.counts == ErrorCounts(4, 1)
    live.record("m", 1, "champion", True, at(200))  # a fourth window: the oldest goes
    assert live.record("m", 1, "champion", True, at(5)) is None
    latest = live.latest("m", 1, "champion")
    assert latest is not None and latest.start == at(180) and latest.accuracy == 1.0
    assert live.totals("m", 1, "champion") == ErrorCounts(8, 2)
    restored = LiveAccuracy.from_state(LiveAccuracyState.model_validate_json(live.state().model_dump_json()))
    assert restored.series("m", 1, "champion") == live.series("m", 1, "champion")
    assert restored.keys("m") == [("m", 1, "champion")]


# --- canary verdicts -----------------------------------------------------------------------------


def test_canary_judge_waits_then_promotes_or_rolls_back_with_figures() -> None:
    judge = CanaryJudge(PromoteAfter(labelled_samples=500, max_error_delta=0.0), RollbackOn())
    champion = ErrorCounts(4570, 430)
    assert judge.judge(champion, ErrorCounts(499, 20), champion_version=2, canary_version=3) is None
    better = judge.judge(champion, ErrorCounts(506, 41), champion_version=2, canary_version=3)
    assert better is not None and better.action == "promoted"
    assert better.version == 3 and better.previous_version == 2
    assert "0.081 (41/506)" in better.reason and "0.094 (430/4570)" in better.reason
    worse = judge.judge(champion, ErrorCounts(500, 60), champion_version=2, canary_version=3)
    assert worse is not None and worse.action == "rolled_back" and "0.120 (60/500)" in worse.reason
    assert "beyond noise (z 1.7" in worse.reason
    # half a point worse on 500 labels is noise, not evidence: the gate-passed canary goes on
    level = judge.judge(champion, ErrorCounts(500, 50), champion_version=2, canary_version=3)
    assert level is not None and level.action == "promoted" and "within noise of allowed +0.000" in level.reason


def test_canary_trial_counts_the_same_period_and_decides_once() -> None:
    trial = CanaryTrial(champion_version=1, canary_version=2, started_at=at(100))
    trial.record(1, False, at(50))  # before the canary started: not the same period
    for i in range(10):
        trial.record(1, i % 5 != 0, at(100 + i))  # champion: 2 errors in 10
        trial.record(2, True, at(100 + i))
    trial.record(3, False, at(120))  # another version
    assert trial.champion == ErrorCounts(10, 2) and trial.canary == ErrorCounts(10, 0)
    judge = CanaryJudge(PromoteAfter(labelled_samples=10), RollbackOn())
    restored = CanaryTrial.model_validate_json(trial.model_dump_json())
    verdict = restored.decide(judge)
    assert verdict is not None and verdict.action == "promoted"
    assert restored.decide(judge) is None
    assert CanaryTrial.model_validate_json(restored.model_dump_json()).decided == verdict


def test_champion_watch_rolls_back_a_champion_worse_than_its_predecessor_on_the_same_traffic() -> None:
    watch = ChampionWatch.start(3, 2, PromoteAfter(labelled_samples=100), RollbackOn(error_increase=0.05))
    for i in range(100):
        watch.record_previous(2, i % 10 != 0)  # the previous champion, as a shadow: 10% errors
    verdicts = [watch.record(3, i % 3 != 0) for i in range(99)]  # 33% errors, window not full yet
    assert set(verdicts) == {None}
    restored = ChampionWatch.model_validate_json(watch.model_dump_json())
    assert restored == watch and len(restored.recent) == 99 and restored.previous_error_rate == 0.1
    verdict = restored.record(3, False)
    assert verdict is not None and verdict.action == "rolled_back" and verdict.previous_version == 2
    assert (
        "0.340 (34/100)" in verdict.reason
        and "v2 0.100 (10/100)" in verdict.reason
        and "same last 100" in verdict.reason
    )
    assert restored.record(3, False) is None and restored.done


def test_a_world_that_changed_after_the_promotion_is_no_reason_to_roll_back() -> None:
    """Both versions degrade together on the same traffic: that is drift, for the concept alarm."""
    watch = ChampionWatch.start(3, 2, PromoteAfter(labelled_samples=100), RollbackOn(error_increase=0.05))
    for i in range(1000):
        watch.record_previous(2, i % 2 == 0)  # 50% errors: the old model is as wrong on the new concept
        assert watch.record(3, i % 2 == 1) is None  # 50% too, against 0.000 recorded for v2 before
    assert watch.done, "the watch ends at its horizon"


def test_without_the_previous_champions_outcomes_there_is_no_rollback() -> None:
    watch = ChampionWatch.start(3, 2, PromoteAfter(labelled_samples=50), RollbackOn(error_increase=0.05))
    assert all(watch.record(3, False) is None for _ in range(500)) and watch.done
    watch = ChampionWatch.start(3, 2, PromoteAfter(labelled_samples=50), RollbackOn(error_increase=0.05))
    for _ in range(50):
        watch.record_previous(7, True)  # another version's outcomes are not the previous champion's
    assert all(watch.record(3, False) is None for _ in range(100)) and watch.previous_recent == []


def test_champion_watch_keeps_a_good_champion_and_ends_at_its_horizon() -> None:
    watch = ChampionWatch.start(3, 2, PromoteAfter(labelled_samples=50), RollbackOn(error_increase=0.05), horizon=200)
    for i in range(50):
        watch.record_previous(2, i % 10 != 0)
    assert all(watch.record(3, i % 10 != 0) is None for i in range(200))  # 10% errors: as before
    assert len(watch.recent) == 50, "only the window is kept"
    assert watch.done
    assert watch.record(2, False) is None  # other versions are not watched


def test_change_wait_counts_rows_after_the_change_point() -> None:
    wait = ChangeWait(min_rows=1000)
    assert wait.waiting_rows == 0 and not wait.waiting
    wait.start(300)
    wait.record_labelled(200)
    assert wait.waiting_rows == 500
    wait.record_labelled(600)
    assert wait.waiting_rows == 0 and wait.waiting
