"""One bucket's share: the share z beside the category PSI, its confirmation, alarms and checkpoints."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from services.monitor.alarms import CategoryPsiAbove
from services.monitor.categorical import CategoryBuckets, chi_square_quantile, share_z, share_z_alert
from services.monitor.category_drift import SHARE_Z
from services.monitor.drift import DriftSettings, ModelDrift, ModelDriftState
from shared.reference import CategoryReference
from shared.spec import MonitoringSpec
from tests.unit.monitor.streams import at
from tests.unit.monitor.test_categorical import TAIL, categorical_reference, doubled, draw, feed

TAIL_2 = TAIL | {"c08": 0.02, "c09": 0.02}
"""The long tail with two categories of 2 %."""


def test_share_z_is_the_standardised_share_difference() -> None:
    # 100 of 1,000 against 5 %, the reference counted from 5,000 values
    expected = (0.1 - 0.05) / math.sqrt(0.05 * 0.95 * (1 / 1000 + 1 / 5000))
    assert share_z(100, 1000, 0.05, 5000) == pytest.approx(expected)
    assert share_z(30, 1000, 0.05) < 0 and share_z(5, 0, 0.05) == 0.0 and share_z(5, 10, 1.0) == 0.0
    # Bonferroni: 22 one-sided tests (both sides of 11 buckets) share 1e-3
    assert share_z_alert(1e-3, 22) == pytest.approx(3.9141, abs=1e-3)
    assert share_z_alert(1e-3, 1) == pytest.approx(math.sqrt(chi_square_quantile(1, 2e-3)), abs=1e-6)
    buckets = CategoryBuckets.of(CategoryReference(shares=TAIL, rows=5000))
    counts = [round(1000 * s) for s in buckets.expected]
    counts[buckets.index["c05"]] += 50
    counts[0] -= 50
    bucket, z = buckets.largest_share_z(counts)
    assert buckets.names[bucket] == "c05" and z == pytest.approx(share_z(100, 1000, 0.05, 5000))


def test_the_confirmation_confirms_by_the_named_bucket_the_way_the_window_saw_it() -> None:
    expected = CategoryBuckets.of(CategoryReference(shares=TAIL, rows=5000)).expected

    def confirmation(rise: bool = True, bucket: int | None = 5) -> CategoryPsiAbove:
        return CategoryPsiAbove(
            expected=list(expected),
            step=200,
            looks=5,
            quantile=chi_square_quantile(len(expected) - 1, 1e-2 / 5),
            floor=0.02,
            reference_rows=5000,
            bucket=bucket,
            rise=rise,
            z=share_z_alert(1e-2, 5),
        )

    # 200 values, 11 % in the 5 % bucket (12 from the largest): z 3.8 over its 2.9, a PSI of 0.06 under its 0.14
    counts = [round(200 * e) for e in expected]
    counts[5] += 12
    counts[0] -= 12
    values = np.repeat(np.arange(len(expected)), counts).astype(float).tolist()
    named, fell, psi_only = confirmation(), confirmation(rise=False), confirmation(bucket=None)
    assert [named.observe(v) for v in values][-1] is True and named.ratio > 1
    assert [fell.observe(v) for v in values][-1] is None, "a rise does not confirm a fall"
    assert [psi_only.observe(v) for v in values][-1] is None, "the PSI alone needs more values"
    again = CategoryPsiAbove.model_validate_json(named.model_dump_json())
    assert again == named
    saved = {"expected": [0.5, 0.5], "step": 1, "looks": 1, "quantile": 1.0, "floor": 0.0}
    old = CategoryPsiAbove.model_validate(saved)
    assert old.bucket is None and old.z == math.inf, "a confirmation saved before share z tests the PSI alone"


def test_a_stable_long_tail_stays_quiet() -> None:
    """Training shares counted from 5,000 sampled rows, as the trainer's reference is, and 2 % buckets."""
    rng = np.random.default_rng(21)
    training = Counter(str(v) for v in draw(TAIL_2, 5000, rng))
    reference = categorical_reference({"x": {k: c / 5000 for k, c in training.items()}})
    drift = ModelDrift("m", 1, reference, MonitoringSpec())
    alarms, pending_batches = 0, 0
    live = draw(TAIL_2, 60_000, rng)
    for s in range(0, len(live), 500):
        rows = [[v] for v in live[s : s + 500]]
        update = drift.observe_predictions(
            ["x"], rows, ["a", "b"] * 250, np.empty((500, 0)), [], [at(s + i) for i in range(500)]
        )
        alarms += len(update.alarms)
        pending_batches += drift.policy.pending("data", "x")
    assert alarms == 0 and pending_batches == 0, "not even a candidate (the bound is 0.24 in 120 windows)"


def test_a_doubled_five_percent_share_is_confirmed_within_2000_samples_once() -> None:
    rng = np.random.default_rng(7)
    change = 5300  # 30 % into a window
    live = draw(TAIL, change, rng) + draw(doubled(TAIL, "c05"), 6000, rng)
    reference = categorical_reference({"x": TAIL})
    drift = ModelDrift("m", 1, reference, MonitoringSpec())
    alarms = feed(drift, {"x": live})
    assert len(alarms) == 1, "a lasting change alarms once (latched while either statistic is over)"
    i, alarm = alarms[0]
    assert 0 < i - change <= 2000
    event = alarm.to_event()
    assert (event.kind, event.feature, event.detector) == ("data", "x", SHARE_Z)
    assert event.statistic > event.threshold > 3.5, "z values: the window's largest share z and its alert"
    assert event.change_started_at is not None and drift.policy.latched("data", "x")
    assert feed(drift, {"x": draw(TAIL, 3000, rng)}, start=20_000) == []
    assert not drift.policy.latched("data", "x"), "back to normal: unlatched"
    psi_alone = ModelDrift("m", 1, reference, MonitoringSpec(), DriftSettings(category_share_z=False))
    first, _ = feed(psi_alone, {"x": live})[0]
    assert first - change > 2000, "the PSI alone dilutes the one bucket's change over its 10 degrees of freedom"


def test_a_share_z_candidate_survives_a_checkpoint() -> None:
    rng = np.random.default_rng(7)
    reference = categorical_reference({"x": TAIL})
    spec = MonitoringSpec()
    live = draw(TAIL, 5300, rng) + draw(doubled(TAIL, "c05"), 3000, rng)
    expected = feed(ModelDrift("m", 1, reference, spec), {"x": live}, batch=50)
    drift = ModelDrift("m", 1, reference, spec)
    got, restored = [], False
    for s in range(0, len(live), 50):
        pending = drift.policy.pending_of("data", "x")
        if pending is not None and pending.candidate.detector == SHARE_Z:
            state = ModelDriftState.model_validate_json(drift.state().model_dump_json())
            drift, restored = ModelDrift.from_state(state, reference, spec), True
        got += feed(drift, {"x": live[s : s + 50]}, start=s, batch=50)
    assert restored and got == expected and [a.detector for _, a in got] == [SHARE_Z]
