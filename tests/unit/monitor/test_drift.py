"""One model's drift watch: concept drift on River's streams, data and prediction drift, checkpoints."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import numpy as np
import pytest
from river.datasets import synth

from services.monitor.alarms import Alarm
from services.monitor.drift import DriftSettings, DriftUpdate, ModelDrift, ModelDriftState
from shared.events import DriftDetected
from shared.reference import PredictionReference, Reference
from shared.spec import MonitoringSpec
from tests.unit.monitor.streams import at, histogram, observe_row, reference_of, run_sea, sea_reference, sea_stream


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
            drift = ModelDrift.from_state(
                ModelDriftState.model_validate_json(drift.state().model_dump_json()), reference, spec
            )
        predicted = x["x0"] + x["x1"] > 8
        got.extend((i, a) for a in observe_row(drift, x, str(predicted), {}, at(i)).alarms)
        got.extend((i, a) for a in drift.observe_outcome(predicted != y, at(i)).alarms)
    assert got == expected


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
        update = observe_row(drift, {n: float(live[n][i]) for n in names}, label, {}, at(i))
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
        update = observe_row(drift, {"x": rng.uniform(0.5, 1.0)}, "a", {}, at(i))
        alarms.extend(update.alarms)
    assert [(a.kind, a.feature, a.detector) for a in alarms] == [
        ("data", "x", "PSI"),
        ("prediction", "label", "PSI"),
    ]
    assert drift.policy.latched("data", "x")
    assert drift.status()["latched"] == [{"kind": "data", "feature": "x"}, {"kind": "prediction", "feature": "label"}]


def test_any_batch_size_publishes_what_one_row_at_a_time_publishes() -> None:
    """observe_predictions over columns of any size == one row per call: alarms, suppressions,
    shown statistics and the checkpoint, through data and prediction drift, missing values, a
    short time history and rows of another version."""
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
        got = observe_row(rows, feats, labels[i], {"a": float(p_a[i]), "b": 1 - float(p_a[i])}, times[i], versions[i])
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
    assert batched.state() == rows.state()
    assert batched.observe_predictions(columns, np.empty((0, 6)), [], np.empty((0, 2)), ["a", "b"], []).alarms == []


def test_model_drift_reset_starts_over_for_the_new_version() -> None:
    drift = ModelDrift("sea", 1, sea_reference(0), MonitoringSpec())
    run_sea(drift, sea_stream(0, stable=3000, variant=3, after=800))
    assert drift.labelled == 3800
    drift.reset(2, sea_reference(1))
    assert drift.version == 2 and drift.labelled == 0 and drift.policy.version == 2
    assert ModelDriftState.model_validate_json(drift.state().model_dump_json()) == drift.state()


# --- the absolute reference: the version's expected error ------------------------------------------


def expecting(rate: float, rows: int) -> Reference:
    """A reference with nothing but the expected (holdout) error."""
    from shared.reference import ExpectedError

    return reference_of({}, {}).model_copy(update={"expected_error": ExpectedError.of(1 - rate, rows)})


def outcomes(drift: ModelDrift, rate: float, n: int, start: int, seed: int) -> list[tuple[int, Alarm]]:
    rng = random.Random(seed)
    alarms: list[tuple[int, Alarm]] = []
    for i in range(start, start + n):
        alarms += [(i, a) for a in drift.observe_outcome(rng.random() < rate, at(i)).alarms]
    return alarms


def test_a_version_serving_an_already_changed_world_is_flagged_against_its_expected_error() -> None:
    """No change inside the stream -- the world changed before this version served -- so the
    detectors see a stationary (high) error; the expected error from the card does not move."""
    spec = MonitoringSpec(alarm_cooldown=timedelta(minutes=10))
    drift = ModelDrift("m", 1, expecting(0.05, 500), spec)
    alarms = outcomes(drift, 0.40, 3000, 0, seed=1)
    first_at, first = alarms[0]
    assert first.detector == "expected_error" and first.kind == "concept" and first.model_version == 1
    assert first_at < 200 + 100, "one window, then a short confirmation on fresh samples"
    assert first.change_samples is not None and first.change_samples >= 200
    assert first.severity == "high" and first.statistic > first.threshold
    assert [i for i, _ in alarms[1:]] and alarms[1][0] - first_at >= 600, "again only after the cooldown"
    # a reset (a promotion or rollback) keeps the absolute reference: the next version is judged too
    drift.reset(2, expecting(0.05, 500))
    again = outcomes(drift, 0.40, 400, 3000, seed=2)
    assert again and again[0][1].model_version == 2 and again[0][0] - 3000 < 300


@pytest.mark.parametrize(("expected", "live"), [(0.10, 0.10), (0.10, 0.13), (0.02, 0.05), (0.30, 0.33), (0.0, 0.03)])
def test_errors_near_the_expected_rate_never_alarm(expected: float, live: float) -> None:
    """A holdout a little optimistic is not a drift: 50,000 outcomes, no alarm."""
    drift = ModelDrift("m", 1, expecting(expected, 300), MonitoringSpec(alarm_cooldown=timedelta(seconds=1)))
    assert outcomes(drift, live, 50_000, 0, seed=3) == []


def test_the_expected_error_watch_survives_a_checkpoint() -> None:
    spec = MonitoringSpec()
    drift = ModelDrift("m", 1, expecting(0.05, 500), spec)
    outcomes(drift, 0.05, 150, 0, seed=4)
    state = ModelDriftState.model_validate_json(drift.state().model_dump_json())
    assert len(state.recent_errors) == 150
    restored = ModelDrift.from_state(state, expecting(0.05, 500), spec)
    assert outcomes(restored, 0.5, 500, 150, seed=5) == outcomes(drift, 0.5, 500, 150, seed=5)


# --- burn-in: the concept detector's candidates right after a reset ---------------------------------


def change_after_reset(
    seed: int, reference: Reference, settings: DriftSettings | None = None
) -> tuple[int, Alarm] | None:
    """A new version (a reset), 300 outcomes at its expected 10 % error, then 25 % for 1,000:
    how many outcomes after the change the first alarm came, and the alarm (None: no alarm)."""
    drift = ModelDrift("m", 1, expecting(0.10, 1000), MonitoringSpec(), settings)
    drift.reset(2, reference)
    assert outcomes(drift, 0.10, 300, 0, seed) == []
    after = outcomes(drift, 0.25, 1000, 300, seed + 100)
    return (after[0][0] - 300, after[0][1]) if after else None


def near_the_change(alarm: Alarm, delay: int) -> bool:
    """The alarm's new-regime samples against the truth (``delay + 1``): an under-estimate only
    shortens the trainer's since-change window, an over-estimate would mix old rows into it."""
    return alarm.change_samples is not None and -120 <= alarm.change_samples - (delay + 1) <= 30


def test_a_change_in_burn_in_is_confirmed_by_the_detector_against_the_expected_error() -> None:
    """ADWIN fires with a pre-change baseline of ~300 outcomes, below ``min_reference_samples``:
    its candidate is confirmed against the card's expected error, with ADWIN's change point.
    The watch against the expected error is kept out (its window never fills) to see that alone."""
    watch_off = DriftSettings(expected_window=100_000)
    caught = [change_after_reset(seed, expecting(0.10, 1000), watch_off) for seed in range(10)]
    found = [c for c in caught if c is not None]
    assert len(found) >= 9 and len([d for d, _ in found if d <= 600]) >= 7
    for delay, alarm in found:
        assert alarm.detector == "ADWIN" and alarm.kind == "concept" and alarm.model_version == 2
        assert near_the_change(alarm, delay)
    # without an expected error the burn-in candidate is suppressed, and ADWIN restarts on the new rate
    assert [change_after_reset(seed, reference_of({}, {})) for seed in range(10)] == [None] * 10


def test_a_change_soon_after_a_reset_is_caught_within_600_outcomes() -> None:
    """Both ways to catch it: the watch against the expected error or, when it fires first, ADWIN."""
    caught = [change_after_reset(seed, expecting(0.10, 1000)) for seed in range(20)]
    found = [c for c in caught if c is not None]
    assert len(found) == 20 and max(d for d, _ in found) <= 600
    by_detector = [(d, a) for d, a in found if a.detector == "ADWIN"]
    assert len(by_detector) >= 3, "ADWIN's candidate replaces the watch's when it fires before the watch confirms"
    assert all(near_the_change(alarm, delay) for delay, alarm in by_detector)


@pytest.mark.parametrize(
    ("detector", "rate", "rows"),
    [("ADWIN", 0.10, 1000), ("ADWIN", 0.02, 300), ("DDM", 0.02, 300), ("DDM", 0.10, 1000), ("HDDM_W", 0.30, 300)],
)
def test_a_stable_stream_right_after_a_reset_never_alarms(detector: str, rate: float, rows: int) -> None:
    """Live error equal to the expected error: whatever the detector proposes in burn-in (DDM and
    HDDM_W do, on stable errors) fails its confirmation against the expected error."""
    spec = MonitoringSpec(concept_detector=detector, alarm_cooldown=timedelta(seconds=1))  # type: ignore[arg-type]
    proposed = 0
    for seed in range(3):
        drift = ModelDrift("m", 1, expecting(rate, rows), spec)
        outcomes(drift, rate, 1000, 0, seed + 10)
        drift.reset(2, expecting(rate, rows))
        rng = random.Random(seed)
        for i in range(20_000):
            assert drift.observe_outcome(rng.random() < rate, at(1000 + i)).alarms == []
            pending = drift.policy.pending_of("concept", None)
            proposed += pending is not None and pending.candidate.detector == detector
    if detector != "ADWIN":  # ADWIN (delta 0.02) proposes nothing on these stable streams
        assert proposed, "burn-in candidates were proposed, and every one was rejected"
