"""Alarm hygiene: confirmation on fresh samples, cooldown, latch, severity."""

from __future__ import annotations

import math
from datetime import timedelta

from services.monitor.alarms import Alarm, AlarmPolicy, DriftCandidate, MeanRise, StaysAbove, Suppressed, severity
from tests.unit.monitor.streams import at


def candidate(statistic: float = 0.3) -> DriftCandidate:
    return DriftCandidate(
        kind="prediction",
        feature="label",
        detector="PSI",
        statistic=statistic,
        threshold=0.2,
        samples=1000,
        change_samples=0,
    )


def window_check() -> StaysAbove:
    return StaysAbove(alert=0.2, windows=1, window_size=1000)


def test_policy_confirms_then_cools_down_then_resets_on_promotion() -> None:
    policy = AlarmPolicy(model="m", cooldown=timedelta(minutes=10), version=1)
    assert policy.propose(candidate(0.32), window_check(), at(0), window_size=1000) is None
    assert policy.propose(candidate(), window_check(), at(1)) is None  # deduped while pending
    alarm = policy.observe("prediction", "label", 0.25, at(60))
    assert isinstance(alarm, Alarm)
    assert alarm.severity == "medium"  # max(candidate 0.32 / 0.2, confirmation 0.25 / 0.2) = 1.6
    assert alarm.change_samples == 1000 and alarm.samples == 2000
    assert policy.propose(candidate(), window_check(), at(120)) == Suppressed(
        "m", "prediction", "label", "PSI", "latched"
    )
    policy.unlatch("prediction", "label")  # a window's PSI came back below the alert
    assert policy.propose(candidate(), window_check(), at(120)) == Suppressed(
        "m", "prediction", "label", "PSI", "cooldown"
    )
    assert policy.propose(candidate(), window_check(), at(60 + 601)) is None  # cooldown over
    restored = AlarmPolicy.model_validate_json(policy.model_dump_json())
    assert restored == policy and restored.pending("prediction", "label")
    pending = restored.pending_of("prediction", "label")
    assert pending is not None and isinstance(pending.confirmation, StaysAbove), "the confirmation's kind survives"
    assert [(k, f) for k, f, _ in restored.pending_list()] == [("prediction", "label")]
    restored.reset(2)
    assert restored.version == 2 and not restored.pending("prediction", "label")
    assert not restored.cooling("prediction", "label", at(662))


def test_policy_rejects_a_candidate_the_fresh_window_does_not_confirm() -> None:
    policy = AlarmPolicy(model="m", cooldown=timedelta(minutes=10))
    policy.propose(candidate(), window_check(), at(0), window_size=1000)
    assert policy.observe("prediction", "label", 0.05, at(1)) == Suppressed(
        "m", "prediction", "label", "PSI", "unconfirmed"
    )
    assert not policy.cooling("prediction", "label", at(2))


def test_mean_rise_confirms_small_rises_patiently_and_rates_them_by_error_points() -> None:
    def run(before: float, after: float, n: int = 3000) -> tuple[bool | None, MeanRise]:
        """Errors at exactly the rate ``after``, evenly spread."""
        rise = MeanRise(reference=before, reference_n=5000, min_n=50, max_n=200, z=3.0)
        for i in range(n):
            decided = rise.observe(float(math.floor((i + 1) * after) > math.floor(i * after)))
            if decided is not None:
                return decided, rise
        return None, rise

    decided, rise = run(0.11, 0.16)  # 5 points: z ~ 2.2 at 200 samples, 3 at ~400
    assert decided is True and 200 < rise.seen <= 800 and severity(rise.ratio) == "low"
    decided, rise = run(0.11, 0.145)  # 3.5 points: z < 3 until 800, then the patient stage at z 3.5
    assert decided is True and 800 < rise.seen < 2000
    decided, rise = run(0.10, 0.30)
    assert decided is True and rise.seen <= 60 and severity(rise.ratio) == "high"
    decided, rise = run(0.11, 0.11)
    assert decided is False and rise.seen == 2000  # no rise: never confirmed, given up at the end
    decided, rise = run(0.11, 0.09)
    assert decided is False and rise.seen == 200  # clearly lower: rejected early
    assert MeanRise.model_validate_json(rise.model_dump_json()) == rise


def test_severity_bands() -> None:
    assert [severity(r) for r in (1.0, 1.49, 1.5, 2.99, 3.0, 10.0)] == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]
