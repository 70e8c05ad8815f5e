"""The monitor's pure core: PSI, drift watching with alarm hygiene, live accuracy, join, verdicts."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from river.datasets import synth

from services.monitor.core import (
    Alarm,
    AlarmPolicy,
    CanaryJudge,
    CanaryTrial,
    ChampionWatch,
    ChangeWait,
    DriftCandidate,
    DriftSettings,
    DriftUpdate,
    ErrorCounts,
    LiveAccuracy,
    MeanRise,
    ModelDrift,
    PredictionWindow,
    StaysAbove,
    Suppressed,
    WindowedPsi,
    bin_counts,
    chi_square,
    label_psi,
    psi,
    severity,
)
from shared.datasets import FeatureStats
from shared.events import DriftDetected
from shared.registry import FeatureReference, PredictionReference, Reference, ReferenceHistogram
from shared.spec import MonitoringSpec, PromoteAfter, RollbackOn

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def histogram(values: np.ndarray[Any, Any], bins: int = 10) -> ReferenceHistogram:
    """Quantile bins, as the trainer builds the reference."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
    counts = np.bincount(np.searchsorted(edges[1:-1], values, side="right"), minlength=edges.size - 1)
    return ReferenceHistogram(edges=[float(e) for e in edges], proportions=[float(c) / values.size for c in counts])


def reference_of(columns: dict[str, np.ndarray[Any, Any]], labels: dict[str, float]) -> Reference:
    features = {
        name: FeatureReference(stats=FeatureStats.of(values), histogram=histogram(values))
        for name, values in columns.items()
    }
    return Reference(
        features=features, predictions=PredictionReference(label_distribution=labels, probability_histograms={})
    )


def roundtrip(state: dict[str, Any]) -> Any:
    return json.loads(json.dumps(state, allow_nan=False))


# --- PSI -------------------------------------------------------------------------------------

UNIT = ReferenceHistogram(edges=[0.0, 1.0, 2.0, 3.0], proportions=[0.2, 0.5, 0.3])


def test_psi_is_zero_for_the_reference_distribution_and_matches_the_formula() -> None:
    values = [0.5] * 20 + [1.5] * 50 + [2.5] * 30
    assert psi(UNIT, values) == pytest.approx(0.0)
    shifted = [0.5] * 50 + [1.5] * 30 + [2.5] * 20
    expected = sum((a - e) * math.log(a / e) for a, e in [(0.5, 0.2), (0.3, 0.5), (0.2, 0.3)])
    assert psi(UNIT, shifted) == pytest.approx(expected)


def test_values_outside_the_edges_go_to_the_end_bins_and_missing_values_are_skipped() -> None:
    assert bin_counts(UNIT, [-100.0, 0.0, 1.0, 2.999, 3.0, 1e9, None, math.nan, math.inf]) == [2, 1, 3]


def test_empty_bins_keep_psi_finite() -> None:
    value = psi(UNIT, [2.5] * 100)
    assert math.isfinite(value) and value > 1.0
    assert psi(UNIT, []) == 0.0


def test_windowed_psi_yields_every_window_and_restarts() -> None:
    windowed = WindowedPsi({"x": UNIT}, window=10)
    results = [windowed.add({"x": 0.5}) for _ in range(25)]
    closed = [r for r in results if r is not None]
    assert len(closed) == 2 and all(r["x"] > 1.0 for r in closed)
    restored = WindowedPsi.from_state(roundtrip(windowed.to_state()), {"x": UNIT})
    assert [restored.add({"x": 1.5}) for _ in range(5)][-1] is not None


def test_prediction_drift_statistics() -> None:
    reference = {"good": 0.5, "bad": 0.5}
    assert label_psi(reference, {"good": 50, "bad": 50}) == pytest.approx(0.0)
    assert label_psi(reference, {"good": 90, "bad": 10}) > 0.5
    assert chi_square(reference, {"good": 90, "bad": 10}) == pytest.approx(64.0)
    proba = ReferenceHistogram(edges=[0.0, 0.5, 1.0], proportions=[0.5, 0.5])
    window = PredictionWindow(
        PredictionReference(label_distribution=reference, probability_histograms={"good": proba}), window=4
    )
    out = [window.add("good", {"good": 0.9}) for _ in range(4)]
    assert out[:3] == [None, None, None]
    assert out[3] is not None and set(out[3]) == {"label", "proba:good"} and out[3]["label"] > 1.0
    assert window.last_chi_square > 0


# --- concept drift on River's SEA --------------------------------------------------------------


def sea_reference(seed: int) -> Reference:
    rows = np.array([[x[0], x[1], x[2]] for x, _ in synth.SEA(variant=0, noise=0.1, seed=seed + 500).take(4000)])
    share = float(np.mean(rows[:, 0] + rows[:, 1] > 8))
    return reference_of({f"x{i}": rows[:, i] for i in range(3)}, {"True": share, "False": 1 - share})


def sea_stream(seed: int, stable: int, variant: int | None, after: int) -> Iterator[tuple[dict[str, float], bool]]:
    """Variant 0 for ``stable`` samples, then ``variant`` (a concept switch) for ``after`` samples.

    SEA's features only decide the label; their distribution never changes.
    """
    parts = [synth.SEA(variant=0, noise=0.1, seed=seed).take(stable)]
    if variant is not None:
        parts.append(synth.SEA(variant=variant, noise=0.1, seed=seed + 1000).take(after))
    for part in parts:
        for x, y in part:
            features: dict[Any, float] = x  # River keys SEA's features 0, 1, 2
            yield {f"x{k}": v for k, v in features.items()}, bool(y)


def run_sea(drift: ModelDrift, stream: Iterator[tuple[dict[str, float], bool]]) -> list[tuple[int, Alarm]]:
    """A fixed classifier (variant 0's concept) serves every row; its 0/1 errors are joined at once."""
    alarms: list[tuple[int, Alarm]] = []
    for i, (x, y) in enumerate(stream):
        predicted = x["x0"] + x["x1"] > 8
        for update in (
            drift.observe_prediction(x, str(predicted), {}, at(i)),
            drift.observe_outcome(predicted != y, at(i)),
        ):
            alarms.extend((i, a) for a in update.alarms)
    return alarms


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sea_stable_phase_is_silent_and_a_variant_switch_is_caught_within_500_samples(seed: int) -> None:
    drift = ModelDrift("sea", 1, sea_reference(seed), MonitoringSpec())
    alarms = run_sea(drift, sea_stream(seed, stable=5000, variant=3, after=1500))
    assert [i for i, _ in alarms if i < 5000] == []
    concept = [(i, a) for i, a in alarms if a.kind == "concept"]
    assert len(concept) == 1, "one switch, one alarm (the cooldown holds the rest)"
    i, alarm = concept[0]
    delay = i - 5000
    assert 0 < delay <= 500
    assert alarm.detector == "ADWIN" and alarm.model_version == 1 and alarm.samples > 5000
    # severity: the error rise as the confirming samples measured it (11 points, +-3 at ~100 samples)
    assert alarm.statistic > alarm.threshold and alarm.severity in ("low", "medium", "high")
    # The change point: the estimate of new-regime samples is close to the truth (the delay).
    assert alarm.change_samples is not None and abs(alarm.change_samples - delay) <= 120
    assert alarm.change_started_at is not None
    assert abs((alarm.change_started_at - at(5000)).total_seconds()) <= 120
    assert [a for _, a in alarms if a.kind != "concept"] == [], "SEA's features never change"
    assert drift.features == ["x0", "x1", "x2"] and drift.predictions == 6500


@pytest.mark.parametrize("detector", ["DDM", "HDDM_A"])
def test_other_concept_detectors_are_silent_on_stable_sea_and_catch_the_switch(detector: str) -> None:
    for seed in (0, 1):
        drift = ModelDrift("sea", 1, None, MonitoringSpec(concept_detector=detector))  # type: ignore[arg-type]
        alarms = run_sea(drift, sea_stream(seed, stable=5000, variant=3, after=2000))
        assert [i for i, _ in alarms if i < 5000] == []
        assert [i - 5000 for i, a in alarms if a.kind == "concept"][0] <= 1100


def test_hyperplane_stable_errors_raise_no_alarm() -> None:
    for seed in (0, 1):
        drift = ModelDrift("hyper", 1, None, MonitoringSpec())
        generator = synth.Hyperplane(seed=seed, n_features=10, n_drift_features=0, noise_percentage=0.05)
        for i, (x, y) in enumerate(generator.take(5000)):
            weights = generator._weights  # the generator's own, fixed plane: a perfect model + 5% noise
            predicted = int(sum(weights[j] * x[j] for j in range(10)) >= 0.5 * sum(weights))
            assert drift.observe_outcome(predicted != y, at(i)).alarms == []


def test_a_checkpointed_model_drift_publishes_the_same_alarms() -> None:
    spec = MonitoringSpec()
    reference = sea_reference(0)
    stream = list(sea_stream(0, stable=3000, variant=3, after=1200))
    expected = run_sea(ModelDrift("sea", 1, reference, spec), iter(stream))
    assert expected, "the switch is detected"
    alarm_at = expected[0][0]
    # Restart twice: once in the stable phase, once while the candidate awaits confirmation.
    restarts = {2000, alarm_at - 20}
    drift = ModelDrift("sea", 1, reference, spec)
    got: list[tuple[int, Alarm]] = []
    for i, (x, y) in enumerate(stream):
        if i in restarts:
            drift = ModelDrift.from_state(roundtrip(drift.to_state()), reference, spec)
        predicted = x["x0"] + x["x1"] > 8
        got.extend((i, a) for a in drift.observe_prediction(x, str(predicted), {}, at(i)).alarms)
        got.extend((i, a) for a in drift.observe_outcome(predicted != y, at(i)).alarms)
    assert got == expected


# --- data drift --------------------------------------------------------------------------------


def test_twenty_stable_features_raise_no_alarm_and_a_shifted_one_is_caught() -> None:
    rng = np.random.default_rng(7)
    names = [f"f{i:02d}" for i in range(20)]
    train = {n: rng.normal(size=5000) if i % 2 else rng.exponential(size=5000) for i, n in enumerate(names)}
    reference = reference_of(train, {"a": 0.5, "b": 0.5})
    drift = ModelDrift("wide", 1, reference, MonitoringSpec(), DriftSettings(psi_window=500))
    stable, shifted = 4000, 1000
    live = {
        n: rng.normal(size=stable + shifted) if i % 2 else rng.exponential(size=stable + shifted)
        for i, n in enumerate(names)
    }
    live["f03"][stable:] += 1.0  # one sigma
    alarms: list[tuple[int, Alarm]] = []
    psis: dict[str, float] = {}
    for i in range(stable + shifted):
        label = "a" if i % 2 else "b"  # the reference's class shares: no prediction drift
        update = drift.observe_prediction({n: float(live[n][i]) for n in names}, label, {}, at(i))
        alarms.extend((i, a) for a in update.alarms)
        if i < stable:
            psis.update(update.psi)
    assert [a for i, a in alarms if i < stable] == []
    assert max(psis[n] for n in names) < 0.1, "stable windows stay far below psi_alert"
    data = [(i - stable, a) for i, a in alarms if a.kind == "data"]
    assert [a.feature for _, a in data] == ["f03"]
    delay, alarm = data[0]
    assert delay <= 500 and alarm.severity in ("medium", "high")
    assert alarm.change_samples is not None and alarm.change_samples <= delay + 50
    event = alarm.to_event()
    assert isinstance(event, DriftDetected) and event.feature == "f03" and event.kind == "data"


def test_a_lasting_psi_difference_alarms_once_then_stays_latched() -> None:
    reference = reference_of({"x": np.linspace(0.0, 1.0, 1000)}, {"a": 0.5, "b": 0.5})
    spec = MonitoringSpec(data_detector="ADWIN", alarm_cooldown=timedelta(seconds=1))
    drift = ModelDrift("m", 1, reference, spec, DriftSettings(psi_window=200, prediction_window=200))
    rng = random.Random(1)
    alarms = []
    # Live traffic differs from training from the start (no change inside the stream): the
    # detector sees nothing, PSI sees it; one alarm, then latched despite a 1 s cooldown.
    for i in range(3000):
        update = drift.observe_prediction({"x": rng.uniform(0.5, 1.0)}, "a", {}, at(i))
        alarms.extend(update.alarms)
    assert [(a.kind, a.feature, a.detector) for a in alarms] == [
        ("data", "x", "PSI"),
        ("prediction", "label", "PSI"),
    ]
    assert drift.policy.latched("data", "x")
    assert drift.status()["latched"] == [{"kind": "data", "feature": "x"}, {"kind": "prediction", "feature": "label"}]


def test_the_batch_path_publishes_what_the_row_path_publishes() -> None:
    """observe_predictions over columns of any size == observe_prediction row by row: alarms,
    suppressions, shown statistics and the checkpoint, through data and prediction drift,
    missing values, a short time history and rows of another version."""
    rng = np.random.default_rng(3)
    names = ["f0", "f1", "f2", "f3", "f4"]
    train = {n: rng.normal(size=4000) for n in names}
    proba_ref = PredictionReference(
        label_distribution={"a": 0.5, "b": 0.5},
        probability_histograms={"a": histogram(rng.uniform(size=4000)), "b": histogram(rng.uniform(size=4000))},
    )
    reference = reference_of(train, {}).model_copy(update={"predictions": proba_ref})
    spec = MonitoringSpec(alarm_cooldown=timedelta(seconds=30))
    settings = DriftSettings(psi_window=300, prediction_window=250, time_history=400)
    n = 9000
    live = rng.normal(size=(n, 6))  # the sixth column has no reference
    live[2000:, 1] += 1.0  # abrupt data drift
    live[5000:, 3] += 0.6
    live[6000:7000, 1] -= 1.0  # back, then away again: unlatch and a second alarm
    live[rng.uniform(size=n) < 0.05, 2] = np.nan
    labels = ["a" if (i < 3000 and i % 2) or rng.uniform() < 0.2 else "b" for i in range(n)]
    p_a = rng.uniform(size=n)
    p_a[4000:] = rng.uniform(0.8, 1.0, size=n - 4000)  # prediction drift in the probabilities
    times = [at(i * 0.5) for i in range(n)]
    versions = [2 if 3500 <= i < 3800 else 1 for i in range(n)]
    columns = [*names, "extra"]

    def cell(i: int, j: int) -> float | None:
        value = float(live[i, j])
        return None if math.isnan(value) and i % 2 else value  # None and NaN both mean missing

    rows = ModelDrift("m", 1, reference, spec, settings)
    expected = DriftUpdate()
    for i in range(n):
        feats = {c: cell(i, j) for j, c in enumerate(columns) if c != "f4" or i % 7}
        got = rows.observe_prediction(
            feats, labels[i], {"a": float(p_a[i]), "b": 1 - float(p_a[i])}, times[i], versions[i]
        )
        expected.alarms += got.alarms
        expected.suppressed += got.suppressed
    kinds = {(a.kind, a.feature) for a in expected.alarms}
    assert {("data", "f1"), ("data", "f3"), ("prediction", "label")} <= kinds and expected.suppressed

    batched = ModelDrift("m", 1, reference, spec, settings)
    got_all = DriftUpdate()
    start, sizes = 0, iter([1, 299, 300, 301, 7, 1000, 613] * 10)
    while start < n:
        end = min(n, start + next(sizes))
        while len(set(versions[start:end])) > 1:
            end -= 1  # one version per batch, as in a PredictionsLogged message
        matrix = [[cell(i, j) for j in range(6)] for i in range(start, end)]
        for r, i in enumerate(range(start, end)):
            if not i % 7:
                matrix[r][4] = None  # f4 absent from that row
        got = batched.observe_predictions(
            columns,
            matrix,
            labels[start:end],
            [[float(p_a[i]), 1 - float(p_a[i])] for i in range(start, end)],
            ["a", "b"],
            times[start:end],
            version=versions[start],
        )
        got_all.alarms += got.alarms
        got_all.suppressed += got.suppressed
        start = end
    assert got_all.alarms == expected.alarms
    assert got_all.suppressed == expected.suppressed
    assert batched.to_state() == rows.to_state()
    assert batched.observe_predictions(columns, np.empty((0, 6)), [], np.empty((0, 2)), ["a", "b"], []).alarms == []


# --- alarm policy --------------------------------------------------------------------------------


def candidate(statistic: float = 0.3) -> DriftCandidate:
    return DriftCandidate("prediction", "label", "PSI", statistic, 0.2, 1000, 0)


def test_policy_confirms_then_cools_down_then_resets_on_promotion() -> None:
    policy = AlarmPolicy("m", timedelta(minutes=10), version=1)
    assert policy.propose(candidate(0.32), StaysAbove(0.2, 1, 1000), at(0), window_size=1000) is None
    assert policy.propose(candidate(), StaysAbove(0.2, 1, 1000), at(1)) is None  # deduped while pending
    alarm = policy.observe("prediction", "label", 0.25, at(60))
    assert isinstance(alarm, Alarm)
    assert alarm.severity == "medium"  # max(candidate 0.32 / 0.2, confirmation 0.25 / 0.2) = 1.6
    assert alarm.change_samples == 1000 and alarm.samples == 2000
    assert policy.propose(candidate(), StaysAbove(0.2, 1, 1000), at(120)) == Suppressed(
        "m", "prediction", "label", "PSI", "latched"
    )
    policy.unlatch("prediction", "label")  # a window's PSI came back below the alert
    assert policy.propose(candidate(), StaysAbove(0.2, 1, 1000), at(120)) == Suppressed(
        "m", "prediction", "label", "PSI", "cooldown"
    )
    assert policy.propose(candidate(), StaysAbove(0.2, 1, 1000), at(60 + 601)) is None  # cooldown over
    restored = AlarmPolicy.from_state(roundtrip(policy.to_state()))
    assert restored.pending("prediction", "label")
    restored.reset(2)
    assert restored.version == 2 and not restored.pending("prediction", "label")
    assert not restored.cooling("prediction", "label", at(662))


def test_policy_rejects_a_candidate_the_fresh_window_does_not_confirm() -> None:
    policy = AlarmPolicy("m", timedelta(minutes=10))
    policy.propose(candidate(), StaysAbove(0.2, 1, 1000), at(0), window_size=1000)
    assert policy.observe("prediction", "label", 0.05, at(1)) == Suppressed(
        "m", "prediction", "label", "PSI", "unconfirmed"
    )
    assert not policy.cooling("prediction", "label", at(2))


def test_mean_rise_confirms_small_rises_patiently_and_rates_them_by_error_points() -> None:
    def run(before: float, after: float, n: int = 3000) -> tuple[bool | None, MeanRise]:
        """Errors at exactly the rate ``after``, evenly spread."""
        rise = MeanRise(before, 5000, min_n=50, max_n=200, z=3.0)
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
    state = json.loads(json.dumps(rise.to_state()))
    assert MeanRise.from_state(state).to_state() == rise.to_state()


def test_severity_bands() -> None:
    assert [severity(r) for r in (1.0, 1.49, 1.5, 2.99, 3.0, 10.0)] == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]


def test_model_drift_reset_starts_over_for_the_new_version() -> None:
    drift = ModelDrift("sea", 1, sea_reference(0), MonitoringSpec())
    run_sea(drift, sea_stream(0, stable=3000, variant=3, after=800))
    assert drift.labelled == 3800
    drift.reset(2, sea_reference(1))
    assert drift.version == 2 and drift.labelled == 0 and drift.policy.version == 2
    assert json.dumps(drift.to_state(), allow_nan=False)


# --- live accuracy ------------------------------------------------------------------------------


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
    restored = LiveAccuracy.from_state(roundtrip(live.to_state()))
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
    restored = CanaryTrial.from_state(roundtrip(trial.to_state()))
    verdict = restored.decide(judge)
    assert verdict is not None and verdict.action == "promoted"
    assert restored.decide(judge) is None
    assert CanaryTrial.from_state(roundtrip(restored.to_state())).decided == verdict


def test_champion_watch_rolls_back_a_worse_new_champion_once() -> None:
    watch = ChampionWatch(3, 2, 0.10, PromoteAfter(labelled_samples=100), RollbackOn(error_increase=0.05))
    verdicts = [watch.record(3, i % 5 != 0) for i in range(99)]  # 20% errors, window not full yet
    assert set(verdicts) == {None}
    restored = ChampionWatch.from_state(roundtrip(watch.to_state()))
    verdict = restored.record(3, True)
    assert verdict is not None and verdict.action == "rolled_back" and verdict.previous_version == 2
    assert "0.200" in verdict.reason and "0.100" in verdict.reason
    assert restored.record(3, False) is None and restored.done


def test_champion_watch_keeps_a_good_champion_and_ends_at_its_horizon() -> None:
    watch = ChampionWatch(3, 2, 0.10, PromoteAfter(labelled_samples=50), RollbackOn(error_increase=0.05), horizon=200)
    assert all(watch.record(3, i % 10 != 0) is None for i in range(200))  # 10% errors: as before
    assert watch.done
    assert watch.record(2, False) is None  # other versions are not watched


def test_change_wait_counts_rows_after_the_change_point() -> None:
    wait = ChangeWait(min_rows_after_change=1000)
    assert wait.waiting_rows == 0
    wait.start(300)
    wait.record_labelled(200)
    assert wait.waiting_rows == 500
    wait.record_labelled(600)
    assert wait.waiting_rows == 0
    wait.clear()
    assert wait.waiting_rows == 0
