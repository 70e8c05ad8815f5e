"""Categorical and boolean features: category PSI, unseen categories, their alarms and checkpoints."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pytest

from services.monitor.alarms import Alarm, AlarmPolicy, CategoryPsiAbove, DriftCandidate, UnseenAbove
from services.monitor.categorical import (
    MISSING,
    RARE_BUCKET,
    UNSEEN,
    CategoryBuckets,
    CategoryWindow,
    CategoryWindowState,
    category_of,
    category_psi,
    chi_square_quantile,
    chi_square_tail,
    unseen_stream,
)
from services.monitor.category_drift import SHARE_Z
from services.monitor.drift import DriftSettings, DriftUpdate, ModelDrift, ModelDriftState
from shared.events import FeatureValue
from shared.reference import OTHER_CATEGORIES, CategoryReference, PredictionReference, Reference
from shared.spec import MonitoringSpec
from tests.unit.monitor.streams import at, reference_of

THREE = {"a": 0.5, "b": 0.3, "c": 0.2}
TAIL = dict(
    zip(
        [f"c{i:02d}" for i in range(12)],
        [0.35, 0.2, 0.12, 0.09, 0.07, 0.05, 0.04, 0.03, 0.025, 0.015, 0.007, 0.003],
        strict=True,
    )
)
FLAG = {"true": 0.1, "false": 0.9}
LABELS = {"a": 0.5, "b": 0.5}


def categorical_reference(features: dict[str, dict[str, float]], rows: int = 5000) -> Reference:
    """A reference of categorical features only (exact shares from ``rows`` training rows)."""
    return Reference(
        features={},
        predictions=PredictionReference(label_distribution=LABELS, probability_histograms={}),
        categories={name: CategoryReference(shares=shares, rows=rows) for name, shares in features.items()},
    )


def draw(shares: dict[str, float], n: int, rng: np.random.Generator, boolean: bool = False) -> list[FeatureValue]:
    keys = list(shares)
    picked = rng.choice(len(keys), size=n, p=np.array(list(shares.values())) / sum(shares.values()))
    return [(keys[i] == "true") if boolean else keys[i] for i in picked]


def doubled(shares: dict[str, float], key: str) -> dict[str, float]:
    p = shares[key]
    rest = (1 - 2 * p) / (1 - p)
    return {k: 2 * p if k == key else s * rest for k, s in shares.items()}


def feed(
    drift: ModelDrift, columns: dict[str, Sequence[FeatureValue]], start: int = 0, batch: int = 100
) -> list[tuple[int, Alarm]]:
    """Typed rows in messages of ``batch``; alarms with the index of the message's last row."""
    names = list(columns)
    n = len(next(iter(columns.values())))
    alarms: list[tuple[int, Alarm]] = []
    for s in range(0, n, batch):
        e = min(n, s + batch)
        rows = [[columns[name][i] for name in names] for i in range(s, e)]
        update = drift.observe_predictions(
            names,
            rows,
            ["a" if i % 2 else "b" for i in range(s, e)],
            np.empty((e - s, 0)),
            [],
            [at(start + i) for i in range(s, e)],
        )
        alarms += [(start + e - 1, a) for a in update.alarms]
    return alarms


# --- the statistic -------------------------------------------------------------------------------


def test_chi_square_tail_and_quantile_match_the_tables() -> None:
    assert chi_square_tail(3.841458820694124, 1) == pytest.approx(0.05, abs=1e-9)
    assert chi_square_tail(18.307038053275146, 10) == pytest.approx(0.05, abs=1e-9)
    assert chi_square_quantile(1, 1e-3) == pytest.approx(10.8276, abs=1e-3)
    assert chi_square_quantile(10, 1e-3) == pytest.approx(29.5883, abs=1e-3)
    assert chi_square_quantile(30, 0.01) == pytest.approx(50.8922, abs=1e-3)


def test_category_psi_against_a_reference() -> None:
    buckets = CategoryBuckets.of(CategoryReference(shares=THREE, rows=1000))
    assert buckets.names == ("a", "b", "c") and buckets.df == 2
    assert buckets.psi([500, 300, 200]) == pytest.approx(0.0)
    live = [0.375, 0.225, 0.4]  # c doubled, the others shrunk in proportion
    expected = sum((a - e) * math.log(a / e) for a, e in zip(live, THREE.values(), strict=True))
    assert buckets.psi([375, 225, 400]) == pytest.approx(expected) == pytest.approx(0.1962, abs=1e-4)
    # an empty bucket counts as half a value, not as a collapse to a fixed tiny share
    assert category_psi([0.5, 0.5], [100, 0]) == pytest.approx(
        (1.0 - 0.5) * math.log(2.0) + (0.005 - 0.5) * math.log(0.01)
    )
    assert buckets.psi([0, 0, 0]) == 0.0


def test_rare_categories_are_pooled_and_unknown_keys_are_categories() -> None:
    tail = CategoryBuckets.of(CategoryReference(shares=TAIL, rows=5000))
    assert tail.names[-1] == RARE_BUCKET and len(tail.names) == 11, "the two categories under 1 % share one bucket"
    assert tail.expected[-1] == pytest.approx(0.01) and sum(tail.expected) == pytest.approx(1.0)
    assert tail.index["c10"] == tail.index["c11"] == 10
    small = CategoryBuckets.of(CategoryReference(shares={"x": 0.6, "y": 0.395, "z": 0.005}, rows=5000))
    assert small.names == ("x", "y (rare)") and small.index["z"] == 1, "a pool under 1 % joins the smallest bucket"
    other = CategoryBuckets.of(CategoryReference(shares={"a": 0.7, "other": 0.3}, rows=100))
    assert other.names == ("a", "other") and other.code("other") == 1 and other.code("b") == UNSEEN
    # Good-Turing: 3 categories seen once in 1,000 non-missing rows -> 0.3 % of values expected unseen
    once = {f"r{i}": 0.001 for i in range(3)} | {"common": 0.997}
    assert CategoryBuckets.of(CategoryReference(shares=once, rows=1250, missing=0.2)).unseen_expected == pytest.approx(
        0.003
    )
    assert CategoryBuckets.of(CategoryReference(shares={}, rows=0)).df == 0


def test_live_values_are_read_as_the_shared_convention_says() -> None:
    assert [category_of(v, False) for v in ("a", 3, 3.0, "", None, math.nan, 2.5)] == [
        "a",
        "3",
        "3",
        None,
        None,
        None,
        "2.5",
    ]
    assert [category_of(v, True) for v in (True, False, 1.0, 0, None)] == ["true", "false", "true", "false", None]
    flag = CategoryBuckets.of(CategoryReference(shares=FLAG, rows=100))
    assert flag.boolean and list(flag.codes([True, False, None, 1.0, "maybe"])) == [
        flag.index["true"],
        flag.index["false"],
        MISSING,
        flag.index["true"],
        UNSEEN,
    ]


def test_the_category_window_closes_and_survives_a_checkpoint() -> None:
    buckets = {"x": CategoryBuckets.of(CategoryReference(shares=THREE, rows=100))}
    window = CategoryWindow(buckets, window=10)
    assert window.add({"x": buckets["x"].codes(["a", "b", None, "zz"])}, rows=4) is None
    saved = CategoryWindowState.model_validate_json(window.state.model_dump_json())
    restored = CategoryWindow(buckets, 10, saved)
    closed = restored.add({"x": buckets["x"].codes(["a"] * 6)}, rows=6)
    assert closed is not None
    result = closed["x"]
    assert (result.known, result.unseen, result.present) == (8, 1, 9) and result.unseen_rate == pytest.approx(1 / 9)
    assert restored.remaining == 10 and restored.state.counts == {"x": [0, 0, 0]}
    rebucketed = CategoryWindow({"x": CategoryBuckets.of(CategoryReference(shares=FLAG, rows=10))}, 10, saved)
    assert rebucketed.state.counts == {"x": [0, 0]} and rebucketed.state.unseen == {}, "changed buckets start empty"
    with pytest.raises(ValueError, match="do not fit"):
        restored.add({}, rows=11)


# --- confirmations -------------------------------------------------------------------------------


def test_category_confirmation_looks_every_step_and_gives_up_after_its_looks() -> None:
    def confirmation() -> CategoryPsiAbove:
        return CategoryPsiAbove(
            expected=[0.5, 0.3, 0.2], step=100, looks=3, quantile=chi_square_quantile(2, 0.003), floor=0.02
        )

    strong = confirmation()
    decisions = [strong.observe(2.0) for _ in range(100)]  # everything in the 20 % bucket
    assert decisions[:99] == [None] * 99 and decisions[99] is True and strong.ratio > 10
    stable = confirmation()
    pattern = [0.0] * 5 + [1.0] * 3 + [2.0] * 2
    decisions = [stable.observe(pattern[i % 10]) for i in range(300)]
    assert decisions[-1] is False and set(decisions[:-1]) == {None}
    again = CategoryPsiAbove.model_validate_json(stable.model_dump_json())
    assert again == stable
    unseen = UnseenAbove(expected=0.0, step=100, looks=2, z=3.0, rise=0.01)
    assert [unseen.observe(1.0 if i % 10 == 0 else 0.0) for i in range(100)][-1] is True, (
        "10 % against none in training"
    )
    quiet = UnseenAbove(expected=0.0, step=100, looks=2, z=3.0, rise=0.01)
    assert [quiet.observe(1.0 if i == 50 else 0.0) for i in range(200)][-1] is False


def test_the_unseen_signal_is_a_cause_apart_from_the_features_psi() -> None:
    policy = AlarmPolicy(model="m", cooldown=timedelta(minutes=10))

    def candidate(stream: str | None) -> DriftCandidate:
        return DriftCandidate(
            kind="data",
            feature="colour",
            detector="unseen" if stream else "PSI",
            statistic=0.1,
            threshold=0.02,
            samples=1000,
            change_samples=0,
            stream=stream,
        )

    unseen = UnseenAbove(expected=0.0, step=1, looks=1, z=0.0, rise=0.01)
    assert policy.propose(candidate(unseen_stream("colour")), unseen, at(0)) is None
    assert policy.pending("data", "unseen:colour") and not policy.pending("data", "colour")
    psi = CategoryPsiAbove(expected=[0.5, 0.5], step=1, looks=1, quantile=1.0, floor=0.02)
    assert policy.propose(candidate(None), psi, at(0)) is None and policy.pending("data", "colour")
    alarm = policy.observe("data", "unseen:colour", 1.0, at(1))
    assert isinstance(alarm, Alarm) and alarm.feature == "colour" and alarm.detector == "unseen"
    assert alarm.to_event().feature == "colour" and policy.latched("data", "unseen:colour")
    assert not policy.latched("data", "colour") and policy.pending("data", "colour")


# --- the watch: stable streams, doubled shares, unseen categories, booleans ----------------------


@pytest.mark.parametrize(("shares", "boolean"), [(THREE, False), (TAIL, False), (FLAG, True)])
def test_a_stable_stream_raises_no_categorical_alarm(shares: dict[str, float], boolean: bool) -> None:
    rng = np.random.default_rng(3)
    training = Counter(str(v).lower() for v in draw(shares, 5000, rng, boolean))
    reference = categorical_reference({"x": {k: c / 5000 for k, c in training.items()}})
    drift = ModelDrift("m", 1, reference, MonitoringSpec(alarm_cooldown=timedelta(seconds=1)))
    live = draw(shares, 40_000, rng, boolean)
    live = [None if i % 50 == 0 else v for i, v in enumerate(live)]  # some missing values
    assert feed(drift, {"x": live}) == []
    assert drift.categorical["x"].boolean is boolean


@pytest.mark.parametrize(
    ("shares", "key", "boolean"), [(THREE, "c", False), (TAIL, "c03", False), (FLAG, "true", True)]
)
def test_a_doubled_share_is_confirmed_within_2000_samples_once(
    shares: dict[str, float], key: str, boolean: bool
) -> None:
    rng = np.random.default_rng(5)
    drift = ModelDrift("m", 1, categorical_reference({"x": shares}), MonitoringSpec())
    change = 5300  # 30 % into a PSI window
    live = draw(shares, change, rng, boolean) + draw(doubled(shares, key), 6000, rng, boolean)
    alarms = feed(drift, {"x": live})
    assert [i for i, _ in alarms if i < change] == []
    assert len(alarms) == 1, "a lasting change alarms once (latched)"
    i, alarm = alarms[0]
    assert 0 < i - change <= 2000
    event = alarm.to_event()
    assert (event.kind, event.feature, event.detector) == ("data", "x", "PSI")
    assert event.statistic > event.threshold and event.change_samples and event.change_started_at is not None
    assert drift.policy.latched("data", "x")
    assert feed(drift, {"x": draw(shares, 3000, rng, boolean)}, start=20_000) == []
    assert not drift.policy.latched("data", "x"), "back to normal: unlatched"


def test_an_unseen_category_is_its_own_signal() -> None:
    rng = np.random.default_rng(8)
    drift = ModelDrift("m", 1, categorical_reference({"x": THREE}), MonitoringSpec())
    stable = draw(THREE, 5000, rng)
    later = draw(THREE, 4000, rng)
    changed = ["brand-new" if u < 0.05 else v for u, v in zip(rng.random(4000), later, strict=True)]
    alarms = feed(drift, {"x": stable + changed})
    assert [(a.feature, a.detector) for _, a in alarms] == [("x", "unseen")], "known shares unchanged: no PSI alarm"
    i, alarm = alarms[0]
    assert 5000 < i <= 7000 and alarm.statistic > alarm.threshold >= 0.01
    assert drift.policy.latched("data", unseen_stream("x")) and not drift.policy.latched("data", "x")
    assert drift.status()["latched"] == [{"kind": "data", "feature": "unseen:x"}]
    rows: list[list[FeatureValue]] = [["brand-new"], ["a"], [None]]
    update = drift.observe_predictions(["x"], rows, ["a", "b", "a"], np.empty((3, 0)), [], [at(9001)] * 3)
    assert update.unseen_values == {"x": 1}


def test_training_that_kept_meeting_new_categories_sets_the_unseen_baseline() -> None:
    """A long tail: a 5,000-row sample leaves many categories unseen; live traffic keeps meeting them
    at about the Good-Turing rate, which is no drift."""
    rng = np.random.default_rng(9)
    weights = 1.0 / np.arange(1, 301) ** 1.1
    shares = dict(zip([f"z{i}" for i in range(300)], (weights / weights.sum()).tolist(), strict=True))
    training = Counter(str(v) for v in draw(shares, 5000, rng))
    reference = categorical_reference({"x": {k: c / 5000 for k, c in training.items()}})
    drift = ModelDrift("m", 1, reference, MonitoringSpec(alarm_cooldown=timedelta(seconds=1)))
    assert 0.002 < drift.categorical["x"].unseen_expected < 0.02
    unseen: list[float] = []
    for s in range(0, 30_000, 1000):
        live = draw(shares, 1000, rng)
        update = drift.observe_predictions(
            ["x"], [[v] for v in live], ["a", "b"] * 500, np.empty((1000, 0)), [], [at(s + i) for i in range(1000)]
        )
        assert update.alarms == []
        unseen.append(update.unseen["x"])
    assert 0.0 < float(np.mean(unseen)) < 0.02


def test_booleans_count_as_two_categories_in_any_spelling() -> None:
    drift = ModelDrift("m", 1, categorical_reference({"member": FLAG}), MonitoringSpec(), DriftSettings(psi_window=10))
    rows: list[list[FeatureValue]] = [
        [True],
        [False],
        [None],
        [1.0],
        [0.0],
        [False],
        [False],
        [False],
        [False],
        [False],
    ]
    update = drift.observe_predictions(["member"], rows, ["a"] * 10, np.empty((10, 0)), [], [at(i) for i in range(10)])
    assert update.unseen_values == {"member": 0} and update.unseen == {"member": 0.0}
    # 2 true of 9 present against 10 %
    assert update.psi["member"] == pytest.approx(category_psi([0.9, 0.1], [7, 2]))


def test_numeric_and_categorical_features_side_by_side() -> None:
    """A numeric feature drifts, a categorical one does not (and the other way round): each alarm
    names its feature; rows carry numbers, strings, booleans and nulls."""
    rng = np.random.default_rng(4)
    numeric = reference_of({"amount": rng.normal(size=5000)}, LABELS)
    reference = numeric.model_copy(update={"categories": {"colour": CategoryReference(shares=THREE, rows=5000)}})
    drift = ModelDrift("m", 1, reference, MonitoringSpec())
    n = 8000
    amount: list[FeatureValue] = rng.normal(size=n).tolist()
    amount[4000:] = (rng.normal(size=n - 4000) + 1.5).tolist()
    colour = draw(THREE, 4000, rng) + draw(THREE, 4000, rng)
    alarms = feed(drift, {"amount": amount, "colour": colour})
    assert {(a.feature, a.kind) for _, a in alarms} == {("amount", "data")}
    drift = ModelDrift("m", 1, reference, MonitoringSpec())
    colour = draw(THREE, 4000, rng) + draw(doubled(THREE, "c"), 4000, rng)
    alarms = feed(drift, {"amount": rng.normal(size=n).tolist(), "colour": colour})
    assert {(a.feature, a.detector) for _, a in alarms} == {("colour", "PSI")}
    assert drift.features == ["amount"] and list(drift.categorical) == ["colour"]


def test_any_batch_size_publishes_what_one_row_at_a_time_publishes() -> None:
    rng = np.random.default_rng(12)
    reference = categorical_reference({"x": THREE, "flag": FLAG})
    spec = MonitoringSpec(alarm_cooldown=timedelta(seconds=30))
    settings = DriftSettings(psi_window=400)
    n = 6000
    x = draw(THREE, 2000, rng) + draw(doubled(THREE, "c"), 2000, rng) + draw(THREE, 2000, rng)
    flag = draw(FLAG, 3000, rng, True) + [
        "x" if u < 0.1 else v for u, v in zip(rng.random(3000), draw(FLAG, 3000, rng, True), strict=True)
    ]
    x = [None if u < 0.05 else v for u, v in zip(rng.random(n), x, strict=True)]
    rows = ModelDrift("m", 1, reference, spec, settings)
    expected = DriftUpdate()
    for i in range(n):
        got = rows.observe_predictions(
            ["x", "flag"], [[x[i], flag[i]]], ["a" if i % 2 else "b"], np.empty((1, 0)), [], [at(i)]
        )
        expected.alarms += got.alarms
        expected.suppressed += got.suppressed
    assert {(a.feature, a.detector) for a in expected.alarms} == {("x", "PSI"), ("flag", "unseen")}
    batched = ModelDrift("m", 1, reference, spec, settings)
    got_all = DriftUpdate()
    start, sizes = 0, iter([1, 399, 400, 401, 7, 1000, 613] * 10)
    while start < n:
        end = min(n, start + next(sizes))
        got = batched.observe_predictions(
            ["flag", "x"],
            [[flag[i], x[i]] for i in range(start, end)],
            ["a" if i % 2 else "b" for i in range(start, end)],
            np.empty((end - start, 0)),
            [],
            [at(i) for i in range(start, end)],
        )
        got_all.alarms += got.alarms
        got_all.suppressed += got.suppressed
        start = end
    assert got_all.alarms == expected.alarms and got_all.suppressed == expected.suppressed
    assert batched.state() == rows.state()


def test_a_checkpoint_mid_confirmation_publishes_the_same_alarms() -> None:
    rng = np.random.default_rng(13)
    reference = categorical_reference({"x": THREE})
    spec = MonitoringSpec()
    live = draw(THREE, 3000, rng) + draw(doubled(THREE, "c"), 3000, rng)
    expected = feed(ModelDrift("m", 1, reference, spec), {"x": live}, batch=50)
    assert len(expected) == 1
    drift = ModelDrift("m", 1, reference, spec)
    got: list[tuple[int, Alarm]] = []
    pending_seen = False
    for s in range(0, len(live), 50):
        if drift.policy.pending("data", "x"):
            pending_seen = True
            state = ModelDriftState.model_validate_json(drift.state().model_dump_json())
            assert state.categories is not None
            drift = ModelDrift.from_state(state, reference, spec)
        got += feed(drift, {"x": live[s : s + 50]}, start=s, batch=50)
    assert pending_seen and got == expected


def test_an_older_checkpoint_without_categorical_state_carries_on() -> None:
    """A checkpoint of a numeric watch (no ``categories`` field) restored against a reference that
    now has a categorical feature: its window starts empty, its hops close with the numeric window."""
    rng = np.random.default_rng(14)
    numeric = reference_of({"amount": rng.normal(size=2000)}, LABELS)
    drift = ModelDrift("m", 1, numeric, MonitoringSpec())
    feed(drift, {"amount": rng.normal(size=300).tolist()})
    raw = drift.state().model_dump(mode="json")
    del raw["categories"]
    state = ModelDriftState.model_validate(raw)
    assert state.categories is None
    typed = numeric.model_copy(update={"categories": {"colour": CategoryReference(shares=THREE, rows=5000)}})
    restored = ModelDrift.from_state(state, typed, MonitoringSpec())
    assert restored.categorical["colour"] and restored.state().categories is not None
    assert restored.state().categories.rows == 300  # type: ignore[union-attr]
    rows: list[list[FeatureValue]] = [[0.1, "a"]] * 200
    update = restored.observe_predictions(
        ["amount", "colour"], rows, ["a", "b"] * 100, np.empty((200, 0)), [], [at(300 + i) for i in range(200)]
    )
    assert set(update.psi) == {"colour"} and update.psi["colour"] > 1.0, "the first hop closed at row 500"
    assert restored.policy.pending("data", "colour"), "all 'a': a candidate"
    update = restored.observe_predictions(
        ["amount", "colour"], rows * 3, ["a", "b"] * 300, np.empty((600, 0)), [], [at(500 + i) for i in range(600)]
    )
    assert {"amount", "colour"} <= set(update.psi), "both windows closed at row 1,000"
    assert [(a.feature, a.detector) for a in update.alarms] == [("colour", "PSI")]


def test_a_numeric_reference_with_text_in_an_unwatched_column_is_not_an_error() -> None:
    """A card without categorical references (written before them) serving typed rows: numeric
    drift goes on as before, the text column is ignored."""
    rng = np.random.default_rng(15)
    drift = ModelDrift("m", 1, reference_of({"amount": rng.normal(size=2000)}, LABELS), MonitoringSpec())
    rows: list[list[FeatureValue]] = [[float(v), "red", True] for v in rng.normal(size=1000)]
    update = drift.observe_predictions(
        ["amount", "colour", "member"], rows, ["a", "b"] * 500, np.empty((1000, 0)), [], [at(i) for i in range(1000)]
    )
    assert set(update.psi) >= {"amount"} and update.unseen_values == {} and drift.categorical == {}


def test_a_reference_that_sums_its_tail_under_other_stays_quiet_on_its_own_distribution() -> None:
    """The trainer names the 50 most frequent categories and sums the rest under
    ``OTHER_CATEGORIES``: live values of that tail are not named, so they count in the "other"
    bucket and against its share -- no PSI or unseen alarm on a stable stream; a new category
    flooding in is still seen."""
    rng = np.random.default_rng(16)
    weights = 1.0 / np.arange(1, 121) ** 0.8
    truth = dict(zip([f"k{i:03d}" for i in range(120)], (weights / weights.sum()).tolist(), strict=True))
    training = Counter(str(v) for v in draw(truth, 5000, rng)).most_common()
    named = {k: c / 5000 for k, c in training[:50]}
    shares = named | {OTHER_CATEGORIES: sum(c for _, c in training[50:]) / 5000}
    reference = categorical_reference({"x": shares})
    buckets = CategoryBuckets.of(reference.categories["x"])
    assert buckets.unseen_bucket is not None and buckets.names[buckets.unseen_bucket] == OTHER_CATEGORIES
    assert buckets.unseen_expected == pytest.approx(shares[OTHER_CATEGORIES], abs=0.01)
    drift = ModelDrift("m", 1, reference, MonitoringSpec(alarm_cooldown=timedelta(seconds=1)))
    assert feed(drift, {"x": draw(truth, 30_000, rng)}) == []
    flooded = ["new" if u < 0.2 else v for u, v in zip(rng.random(4000), draw(truth, 4000, rng), strict=True)]
    alarms = feed(drift, {"x": flooded}, start=30_000)
    # the other bucket grew too: its share (share z) crosses a window before the PSI over 50 buckets does
    assert {a.detector for _, a in alarms} == {"unseen", SHARE_Z}, "the other bucket grew too"


def test_a_flag_training_never_saw_set_is_unseen() -> None:
    """A boolean reference lists both flags, one at share 0 when training never met it."""
    rng = np.random.default_rng(17)
    drift = ModelDrift("m", 1, categorical_reference({"flag": {"true": 1.0, "false": 0.0}}), MonitoringSpec())
    assert drift.categorical["flag"].df == 0 and drift.categorical["flag"].boolean
    live: list[FeatureValue] = [True] * 3000 + [bool(u < 0.7) for u in rng.random(3000)]
    alarms = feed(drift, {"flag": live})
    assert [(a.feature, a.detector) for _, a in alarms] == [("flag", "unseen")]
    assert 3000 < alarms[0][0] <= 5000
