"""A regressor through the monitor: outcomes, live MAE / RMSE, verdicts on MAE beyond noise, the
concept stream of misses, prediction drift on predicted values, and the handlers end to end.

Errors are seeded draws: a model whose absolute error is ``|N(0, sigma)|`` has MAE
``sigma * sqrt(2 / pi)`` (about 0.8 sigma); "errors doubling" doubles sigma. The cards of the
handler tests are written directly (as ``test_typed_handlers`` does): the registry does not read
the ONNX bytes back for the monitor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.monitor.canary import (
    CanaryJudge,
    CanaryTrial,
    ChampionWatch,
    ErrorCounts,
    LiveAccuracy,
    LiveAccuracyState,
    SeriesState,
    counts_of,
)
from services.monitor.drift import DriftSettings, ModelDrift
from services.monitor.handlers import MonitorHandlers
from services.monitor.join import JoinedPair
from services.monitor.metrics import MonitorMetrics
from services.monitor.outcome import Outcome, score
from services.monitor.psi import PREDICTED_VALUE
from services.monitor.report import render_report
from shared.events import AnnotationSubmitted, DeploymentChanged, DriftDetected, Event, PredictionsLogged, Target
from shared.reference import (
    CategoryReference,
    ExpectedError,
    FeatureReference,
    FeatureStats,
    Reference,
    histogram,
    regression_prediction_reference,
)
from shared.registry import InputSchema, Registry
from shared.spec import MonitoringSpec, PromoteAfter, RollbackOn, SpecCatalog, apply_spec
from shared.store import FileStore
from tests.unit.monitor.streams import at

T0 = datetime(2026, 8, 1, tzinfo=UTC)
SIGMA = 5.0
"""The served model's error spread in the stable world (MAE ~ 4)."""


def losses(n: int, sigma: float, seed: int) -> list[float]:
    return np.abs(np.random.default_rng(seed).normal(0.0, sigma, size=n)).tolist()


def scored(values: list[float]) -> list[Outcome]:
    return [Outcome(v, None) for v in values]


def counts(n: int, sigma: float, seed: int) -> ErrorCounts:
    return counts_of(losses(n, sigma, seed))


# --- outcomes ------------------------------------------------------------------------------------


def pair(predicted: Target, actual: Target) -> JoinedPair:
    return JoinedPair("i", 1, "champion", predicted, actual, T0, T0)


def test_a_pair_is_scored_by_the_task_and_what_is_no_number_is_not_scored() -> None:
    expected = ExpectedError.of_errors(np.array(losses(1000, SIGMA, 0)))
    assert expected.threshold is not None and 5.5 < expected.threshold < 7.5
    assert score(pair(1, 1), regression=False) == Outcome(0.0, False)
    assert score(pair("1", 0), regression=False) == Outcome(1.0, True)
    assert score(pair(102.5, 100), regression=True, expected=expected) == Outcome(2.5, False)
    assert score(pair(90, 100.0), regression=True, expected=expected) == Outcome(10.0, True)
    assert score(pair(90, 100), regression=True) == Outcome(10.0, None), "no threshold: no miss either way"
    assert score(pair(-3.0, 2), regression=True, low=0.0) == Outcome(5.0, None), "a prediction out of range counts"
    for predicted, actual in [("abc", 1.0), (1.0, "2"), (True, 1.0), (1.0, math.nan), (math.inf, 1.0), (1.0, -1.0)]:
        assert score(pair(predicted, actual), regression=True, expected=expected, low=0.0) is None
    assert score(pair(1e308, -1e308), regression=True) is None, "an infinite error is no loss to average"


# --- counts, live MAE and old checkpoints ----------------------------------------------------------


def test_live_accuracy_gives_mae_and_rmse_per_window_and_round_trips() -> None:
    live = LiveAccuracy(window=timedelta(minutes=1))
    for second, loss in [(0, 3.0), (30, 4.0), (70, 1.0)]:
        live.record("m", 1, "champion", Outcome(loss, False), at(second))
    first, second = live.series("m", 1, "champion")
    assert (first.mae, first.rmse) == (3.5, math.sqrt(12.5)) and (second.mae, second.rmse) == (1.0, 1.0)
    totals = live.totals("m", 1, "champion")
    assert (
        totals.labelled == 3
        and totals.error_rate == pytest.approx(8 / 3)
        and totals.rmse == pytest.approx(math.sqrt(26 / 3))
    )
    assert totals.describe(regression=True) == "MAE 2.667, RMSE 2.944 (n=3)"
    restored = LiveAccuracy.from_state(LiveAccuracyState.model_validate_json(live.state().model_dump_json()))
    assert restored.series("m", 1, "champion") == live.series("m", 1, "champion")


def test_checkpoints_written_before_squared_losses_read_as_zero_one_losses() -> None:
    old = '{"labelled": 10, "errors": 3}'
    trial = CanaryTrial.model_validate_json(
        f'{{"champion_version": 1, "canary_version": 2, "started_at": "2026-01-01T00:00:00Z", '
        f'"champion": {old}, "canary": {old}}}'
    )
    assert (
        trial.champion == ErrorCounts(10, 3) and trial.champion.squares == 3 and trial.champion.rmse == math.sqrt(0.3)
    )
    series = SeriesState.model_validate_json(
        f'{{"model": "m", "version": 1, "variant": "champion", "total": {old}, "points": [[0.0, 10, 3]]}}'
    )
    live = LiveAccuracy.from_state(LiveAccuracyState(window=timedelta(minutes=1), max_points=10, series=[series]))
    [point] = live.series("m", 1, "champion")
    assert point.counts == ErrorCounts(10, 3, 3) and point.accuracy == 0.7
    watch = ChampionWatch.model_validate_json(
        '{"version": 3, "previous_version": 2, "error_increase": 0.05, "window": 4, "horizon": 40, '
        '"seen": 3, "recent": [0, 1, 1], "previous_recent": [0, 0]}'
    )
    assert not watch.regression and watch.recent == [0, 1, 1] and watch.error_rate == pytest.approx(2 / 3)


# --- the canary judge on MAE -----------------------------------------------------------------------


def judge(max_error_delta: float = 0.0) -> CanaryJudge:
    return CanaryJudge(PromoteAfter(labelled_samples=500, max_error_delta=max_error_delta), RollbackOn(), True)


def test_a_clearly_worse_regression_canary_is_rolled_back_and_an_equal_one_promoted() -> None:
    champion = counts(500, 10.0, 1)
    worse = judge().judge(champion, counts(500, 13.0, 2), champion_version=1, canary_version=2)  # MAE +30 %
    assert worse is not None and worse.action == "rolled_back"
    assert "canary v2 MAE " in worse.reason and "RMSE" in worse.reason and "(n=500)" in worse.reason
    assert "allowed +0.000 (+0.0% of the champion's MAE) beyond noise" in worse.reason
    same = counts_of(sorted(losses(500, 10.0, 1)))  # the champion's errors exactly, on other rows
    equal = judge().judge(champion, same, champion_version=1, canary_version=2)
    assert equal is not None and equal.action == "promoted" and "MAE delta +0.000 <= allowed +0.000" in equal.reason
    assert judge().judge(champion, counts(499, 10.0, 4), champion_version=1, canary_version=2) is None
    # over 200 seeded trials: an equal canary is rolled back at about the test's 5 %, a 30 % worse one always
    actions = {
        sigma: [
            judge().judge(counts(500, 10.0, 2 * s), counts(500, sigma, 2 * s + 1), champion_version=1, canary_version=2)
            for s in range(200)
        ]
        for sigma in (10.0, 13.0)
    }
    equal_rolled = sum(v is not None and v.action == "rolled_back" for v in actions[10.0])
    assert equal_rolled <= 16, equal_rolled
    assert all(v is not None and v.action == "rolled_back" for v in actions[13.0])


def test_a_slightly_worse_regression_canary_within_noise_is_promoted() -> None:
    champion = counts(500, 10.0, 4)
    canary = counts_of([v * 1.03 for v in losses(500, 10.0, 4)])  # 3 % worse: inside the noise of 500 labels
    verdict = judge().judge(champion, canary, champion_version=1, canary_version=2)
    assert verdict is not None and verdict.action == "promoted"
    assert "within noise of allowed +0.000" in verdict.reason and "(z 0." in verdict.reason


def test_max_error_delta_is_relative_to_the_champions_mae() -> None:
    champion = counts_of(losses(2000, 10.0, 6))
    canary = counts_of([v * 1.15 for v in losses(2000, 10.0, 6)])  # the same errors, 15 % larger
    strict = judge(0.0).judge(champion, canary, champion_version=1, canary_version=2)
    assert strict is not None and strict.action == "rolled_back"
    lenient = judge(0.2).judge(champion, canary, champion_version=1, canary_version=2)  # 20 % of MAE ~8 allowed
    assert lenient is not None and lenient.action == "promoted" and "<= allowed +1.6" in lenient.reason


def test_a_side_without_spread_is_not_infinitely_sure() -> None:
    """A perfect champion against a canary with one error of 5 in 500: no evidence."""
    perfect = counts_of([0.0] * 500)
    canary = counts_of([0.0] * 499 + [5.0])
    verdict = judge().judge(perfect, canary, champion_version=1, canary_version=2)
    assert verdict is not None and verdict.action == "promoted"
    assert judge().judge(perfect, perfect, champion_version=1, canary_version=2).action == "promoted"  # type: ignore[union-attr]


# --- the champion watch on MAE ---------------------------------------------------------------------


def champion_watch(error_increase: float = 0.05) -> ChampionWatch:
    return ChampionWatch.start(
        3, 2, PromoteAfter(labelled_samples=300), RollbackOn(error_increase=error_increase), regression=True
    )


def test_champion_watch_rolls_back_in_mae_terms_only_when_the_previous_champion_is_better_now() -> None:
    watch = champion_watch()
    for outcome in scored(losses(300, 10.0, 7)):
        watch.record_previous(2, outcome)
    verdicts = [watch.record(3, o) for o in scored(losses(300, 14.0, 8))]  # 40 % worse on the same traffic
    [verdict] = [v for v in verdicts if v is not None]
    assert verdict.action == "rolled_back" and verdict.previous_version == 2
    assert "champion v3 MAE" in verdict.reason and "of v2's MAE" in verdict.reason and "same last 300" in verdict.reason
    restored = ChampionWatch.model_validate_json(watch.model_dump_json())
    assert restored == watch and restored.regression and restored.done

    together = champion_watch()  # the world changed: both versions twice as wrong on the same rows
    rng = np.random.default_rng(9)
    world = rng.normal(0.0, 20.0, size=3000)
    for row in world:
        together.record_previous(2, Outcome(abs(row + rng.normal(0.0, 4.0)), True))
        assert together.record(3, Outcome(abs(row + rng.normal(0.0, 4.0)), True)) is None
    assert together.done

    # two equally good versions with independent errors: judged once per window, at 5 % over the
    # whole watch, not at 5 % on each of its 2,700 looks
    rolled = 0
    for seed in range(40):
        equal = champion_watch()
        for new, old in zip(losses(3000, 10.0, 100 + seed), losses(3000, 10.0, 200 + seed), strict=True):
            equal.record_previous(2, Outcome(old, None))
            rolled += equal.record(3, Outcome(new, None)) is not None
    assert rolled <= 4, rolled

    slightly = champion_watch()  # 3 % worse, under the 5 % of the previous MAE allowed
    for new in losses(3000, 10.0, 11):
        slightly.record_previous(2, Outcome(new, False))
        assert slightly.record(3, Outcome(new * 1.03, False)) is None


# --- concept drift on misses -----------------------------------------------------------------------


def holdout_reference(seed: int = 0) -> Reference:
    """A regressor's reference: predicted values ~ N(300, 50), holdout errors ~ N(0, SIGMA)."""
    rng = np.random.default_rng(seed)
    predicted = rng.normal(300.0, 50.0, size=2000)
    errors = np.abs(rng.normal(0.0, SIGMA, size=1000))
    return Reference(
        features={},
        predictions=regression_prediction_reference(predicted),
        expected_error=ExpectedError.of_errors(errors),
    )


def run_misses(drift: ModelDrift, reference: Reference, sigmas: list[tuple[int, float]], seed: int) -> list[Any]:
    """Outcomes of the champion whose absolute errors are ``|N(0, sigma)|``, ``n`` per stage."""
    expected = reference.expected_error
    assert expected is not None
    rng = np.random.default_rng(seed)
    alarms: list[tuple[int, Any]] = []
    i = 0
    for n, sigma in sigmas:
        for error in np.abs(rng.normal(0.0, sigma, size=n)):
            alarms += [(i, a) for a in drift.observe_outcome(expected.miss(float(error)), at(i)).alarms]
            i += 1
    return alarms


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stable_regression_stream_raises_no_concept_alarm(seed: int) -> None:
    reference = holdout_reference(seed)
    drift = ModelDrift("m", 1, reference, MonitoringSpec(confirmation_samples=200))
    assert run_misses(drift, reference, [(20_000, SIGMA)], seed) == []


def test_errors_doubling_are_a_confirmed_concept_drift_dated_near_the_change() -> None:
    reference = holdout_reference(4)
    drift = ModelDrift("m", 1, reference, MonitoringSpec(confirmation_samples=200))
    alarms = run_misses(drift, reference, [(3000, SIGMA), (3000, 2 * SIGMA)], 4)
    assert alarms, "the miss rate went from ~0.2 to ~0.5"
    first, alarm = alarms[0]
    assert alarm.kind == "concept" and first < 3000 + 1000
    assert alarm.change_samples is not None and alarm.change_started_at is not None
    assert abs((alarm.change_started_at - at(3000)).total_seconds()) < 500, "dated near the change"


# --- prediction drift on predicted values ----------------------------------------------------------


def observe_values(drift: ModelDrift, values: np.ndarray[Any, Any], start: int) -> list[Any]:
    alarms: list[Any] = []
    for s in range(0, len(values), 100):
        chunk = values[s : s + 100].tolist()
        update = drift.observe_predictions(
            ["x"],
            [[0.0]] * len(chunk),
            chunk,
            np.empty((len(chunk), 0)),
            [],
            [at(start + s + k) for k in range(len(chunk))],
            version=1,
        )
        alarms += update.alarms
    return alarms


def test_shifted_predicted_values_are_a_confirmed_prediction_drift_and_stable_ones_are_not() -> None:
    reference = holdout_reference(5)
    settings = DriftSettings(prediction_window=500)
    drift = ModelDrift("m", 1, reference, MonitoringSpec(confirmation_samples=200), settings)
    rng = np.random.default_rng(6)
    assert observe_values(drift, rng.normal(300.0, 50.0, size=10_000), 0) == []
    shifted = observe_values(drift, rng.normal(340.0, 50.0, size=3000), 10_000)
    assert [(a.kind, a.feature) for a in shifted] == [("prediction", PREDICTED_VALUE)]
    assert drift.policy.latched("prediction", PREDICTED_VALUE)


# --- the handlers, end to end ----------------------------------------------------------------------

SPEC = """
name: price
features:
  - {name: size}
  - {name: area, type: categorical}
label: {type: regression, min: 0}
training: {window: {since_change: true}}
deployment: {strategy: canary, promote_after: {labelled_samples: 200}}
monitoring: {confirmation_samples: 200}
"""
AREAS = {"north": 0.5, "south": 0.3, "east": 0.2}


@dataclass
class RecordingPublisher:
    events: list[Event] = field(default_factory=list)

    async def publish(self, event: Event, headers: Any = None) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def price_reference(seed: int) -> Reference:
    rng = np.random.default_rng(seed)
    sizes = rng.normal(100.0, 20.0, size=3000)
    base = holdout_reference(seed)
    return base.model_copy(
        update={
            "features": {"size": FeatureReference(stats=FeatureStats.of(sizes), histogram=histogram(sizes))},
            "categories": {"area": CategoryReference(shares=AREAS, rows=3000)},
        }
    )


def register_regressor(store: FileStore, seed: int) -> int:
    schema = InputSchema(
        features=["size", "area"],
        label_values=[],
        types=["numeric", "categorical"],
        layout="columns",
        categories={"area": list(AREAS)},
        task="regression",
    )
    reference = price_reference(seed)
    assert reference.expected_error is not None
    card = Registry(store).register_built(
        "price",
        f"onnx {seed}".encode(),
        schema,
        reference,
        "HistGradientBoostingRegressor",
        "test",
        output_names=["prediction"],
        training_rows=3000,
        holdout_rows=1000,
        metrics={"mae": reference.expected_error.mae or 0.0},
    )
    return card.version


def handlers_on(store: FileStore, publisher: RecordingPublisher, registry: CollectorRegistry) -> MonitorHandlers:
    return MonitorHandlers(
        Registry(store),
        SpecCatalog(store),
        store,
        publisher,  # type: ignore[arg-type]
        MonitorMetrics.create(registry),
        {},
    )


def traffic(
    version: int, variant: str, start: int, n: int, rng: np.random.Generator, sigma: float = SIGMA, bias: float = 0.0
) -> tuple[PredictionsLogged, list[AnnotationSubmitted]]:
    """``n`` predicted prices ~ N(300, 50) and their ground truth: the prediction + ``bias`` + N(0, sigma)."""
    predicted = rng.normal(300.0, 50.0, size=n)
    actual = np.maximum(predicted + bias + rng.normal(0.0, sigma, size=n), 0.0)
    areas = rng.choice(list(AREAS), size=n, p=list(AREAS.values()))
    rows: list[list[Any]] = [[float(rng.normal(100.0, 20.0)), str(areas[i])] for i in range(n)]
    times = [T0 + timedelta(seconds=start + i) for i in range(n)]
    ids = [f"{variant}-{start + i}" for i in range(n)]
    event = PredictionsLogged(
        model="price",
        version=version,
        variant=variant,  # type: ignore[arg-type]
        feature_names=["size", "area"],
        classes=[],
        inference_ids=ids,
        features=rows,
        labels=[float(v) for v in predicted],
        probabilities=[[] for _ in range(n)],
        latency_ms=[1.0] * n,
        predicted_at=times,
    )
    labels = [
        AnnotationSubmitted(
            model="price",
            record_id=f"r-{ids[i]}",
            features=dict(zip(event.feature_names, rows[i], strict=True)),
            label=int(round(actual[i])) if i % 2 else float(actual[i]),  # a JSON integer arrives as an int
            inference_id=ids[i],
            occurred_at=times[i] + timedelta(seconds=30),
        )
        for i in range(n)
    ]
    return event, labels


async def run(handlers: MonitorHandlers, start: int, n: int, rng: np.random.Generator, **kwargs: Any) -> None:
    for s in range(start, start + n, 100):
        event, labels = traffic(1, "champion", s, 100, rng, **kwargs)
        await handlers.on_predictions(event)
        for label in labels:
            await handlers.on_annotation(label)


def setup(tmp_path: Any) -> tuple[FileStore, RecordingPublisher, CollectorRegistry, MonitorHandlers]:
    store = FileStore(tmp_path / "store")
    apply_spec(store, SPEC)
    Registry(store).set_alias("price", "production", register_regressor(store, 1), "test", "first")
    publisher, registry = RecordingPublisher(), CollectorRegistry()
    return store, publisher, registry, handlers_on(store, publisher, registry)


async def test_a_regressor_gets_live_mae_and_a_changed_relation_is_a_concept_drift(tmp_path: Any) -> None:
    _, publisher, registry, handlers = setup(tmp_path)
    rng = np.random.default_rng(7)
    await run(handlers, 0, 3000, rng)
    assert publisher.of(DriftDetected) == [], "a stable regressor: no drift of any kind"
    status = await handlers.status("price")
    assert status is not None and status["task"] == "regression"
    [live] = status["live"]
    assert live["labelled"] == 3000 and "accuracy" not in live
    assert 3.6 < live["mae"] < 4.4 and 4.5 < live["rmse"] < 5.5 and live["window_mae"] is not None
    assert live["expected_mae"] == pytest.approx(status["expected_error"]["mae"])
    labels = {"model": "price", "version": "1", "variant": "champion"}
    mae = registry.get_sample_value("driftloop_monitor_live_mae", labels)
    assert mae is not None and 1.0 < mae < 8.0 and registry.get_sample_value("driftloop_monitor_live_rmse", labels)
    assert registry.get_sample_value("driftloop_monitor_live_accuracy_ratio", labels) is None

    # labels that are no ground truth: text, and a price below the declared minimum
    event, labels_ = traffic(1, "champion", 3000, 2, rng)
    await handlers.on_predictions(event)
    for label, bad in zip(labels_, ["n/a", -5.0], strict=True):
        await handlers.on_annotation(label.model_copy(update={"label": bad}))
    status = await handlers.status("price")
    assert status is not None and status["join"]["unscored"] == 2 and status["live"][0]["labelled"] == 3000
    assert registry.get_sample_value("driftloop_monitor_unscored_outcomes_total", {"model": "price"}) == 2

    await run(handlers, 4000, 3000, rng, sigma=2 * SIGMA, bias=5.0)  # the relation changed: errors doubled
    concept = [d for d in publisher.of(DriftDetected) if d.kind == "concept"]
    assert concept and concept[0].model_version == 1 and concept[0].change_started_at is not None
    assert (concept[0].change_started_at - T0).total_seconds() > 3500, "dated after the change"
    assert [d for d in publisher.of(DriftDetected) if d.kind != "concept"] == [], "features, predictions: unchanged"
    watch = handlers.models["price"]
    assert watch.change_wait is not None and watch.change_wait.waiting, "a since-change retrain waits"

    page = render_report(watch, status, T0 + timedelta(hours=3))
    assert 'aria-label="MAE over time"' in page and "Live MAE" in page and "holdout MAE of v1" in page
    assert 'aria-label="predicted values histogram"' in page and "over the last 2000 predictions" in page
    assert "MAE " in page.split("<table>")[1].split("</table>")[0]


async def test_a_worse_regression_canary_is_rolled_back_and_an_equal_one_promoted(tmp_path: Any) -> None:
    store, publisher, _, handlers = setup(tmp_path)
    registry = Registry(store)
    rng = np.random.default_rng(8)
    for start, candidate_sigma, expected_action in ((0, 1.4 * SIGMA, "rolled_back"), (10_000, SIGMA, "promoted")):
        candidate = register_regressor(store, 2)
        registry.set_alias("price", "canary", candidate, "test", "canary")
        await handlers.on_deployment(
            DeploymentChanged(
                model="price",
                action="canary_started",
                version=candidate,
                previous_version=1,
                traffic=0.5,
                reason="gate passed",
                actor="test",
                occurred_at=T0 + timedelta(seconds=start),
            )
        )
        champion, champion_labels = traffic(1, "champion", start, 400, rng)
        canary, canary_labels = traffic(candidate, "canary", start, 400, rng, sigma=candidate_sigma)
        await handlers.on_predictions(champion)
        await handlers.on_predictions(canary)
        trial = handlers.models["price"].trial
        assert trial is not None
        for label in champion_labels + canary_labels:
            await handlers.on_annotation(label)
        verdicts = [e for e in publisher.of(DeploymentChanged) if e.version == candidate and e.actor == "monitor"]
        assert [v.action for v in verdicts] == [expected_action]
        assert "MAE" in verdicts[0].reason and "of the champion's MAE" in verdicts[0].reason
    watch = handlers.models["price"]
    assert registry.alias("price", "production") == candidate and watch.champion == candidate
    assert watch.watch is not None and watch.watch.regression, "the new champion is watched in MAE terms"
