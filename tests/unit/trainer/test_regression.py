"""Regression in the trainer: regressors on the allow-list, ONNX parity, metrics, gate, reuse, cards.

A house price from a few features (numeric, and a typed variant with a categorical, a boolean
and missing values) goes through the runner against a real FileStore: the card says
``task="regression"``, answers ``prediction``, carries mae / rmse / r2, the holdout's miss
threshold (its errors' 80th percentile) and the histogram of predicted values; the gate takes
"lower is better" for MAE; a since-change run registers an earlier regressor again when it has
clearly lower MAE on the new holdout. Labels are written as the datasets of every other trainer
test are (``write_version`` without a task), so the runner must read them whether the dataset
layer stores them as text or as float64.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from sklearn.datasets import load_diabetes, make_regression

from services.trainer import core
from services.trainer.estimators import (
    NEEDS_SCALING,
    build_estimator,
    build_typed_estimator,
    empty_features,
    one_hot_categories,
)
from services.trainer.export import REGRESSION_RTOL, TypedColumns, check_parity, to_onnx
from services.trainer.runner import RunResult, predict_onnx, train
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.errors import InvalidInput
from shared.features import REGRESSION_OUTPUTS
from shared.reference import MISS_QUANTILE, build_reference, regression_prediction_reference
from shared.registry import PRODUCTION, Registry
from shared.spec import REGRESSORS, GateSpec, ModelSpec
from shared.store import FileStore

SMALL: dict[str, dict[str, Any]] = {
    "Ridge": {},
    "SGDRegressor": {},
    "RandomForestRegressor": {"n_estimators": 15},
    "ExtraTreesRegressor": {"n_estimators": 15},
    "GradientBoostingRegressor": {"n_estimators": 30},
    "HistGradientBoostingRegressor": {"max_iter": 40},
}
T0 = datetime(2026, 6, 1, tzinfo=UTC)
CITIES = {"oslo": 600.0, "rome": 300.0, "lima": -200.0, "kyiv": 0.0}
TYPED_NAMES = ["area", "age", "city", "garden"]
TYPED_TYPES = ["numeric", "numeric", "categorical", "boolean"]
NUMERIC_NAMES = ["area", "age", "rooms"]


def prices(n: int, seed: int, regime: str = "A", typed: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Houses and their prices (around 2,500), with steps and curves a linear model cannot fit;
    with ``typed``, the city and a garden (worth more on a larger plot) count too. Regime B
    prices the same houses differently: the area now lowers the price and the age raises it."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(40, 200, n)
    age = rng.uniform(0, 60, n)
    rooms = np.round(area / 30 + rng.normal(0, 0.5, n))
    city = np.array(list(rng.choice(list(CITIES), n)), dtype=object)
    garden = np.array([bool(v) for v in rng.random(n) < 0.4], dtype=object)
    has_garden = garden == True  # noqa: E712 (an object array of True / False)
    if regime == "A":
        price = 1000 + 12 * area - 5 * age - 400 * (age > 30) + 0.05 * (area - 120) ** 2
        effect = np.array([CITIES[c] for c in city]) + np.where(has_garden, 3 * area, 0.0)
    else:
        price = 4000 - 8 * area + 15 * age + 500 * (area > 150)
        effect = -0.5 * np.array([CITIES[c] for c in city])
    price = price + (effect if typed else 0.0) + rng.normal(0, 30, n)
    return {"area": area, "age": age, "rooms": rooms, "city": city, "garden": garden}, price


def with_gaps(columns: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """About 10 % missing in age, city and garden (the typed spec allows it)."""
    rng = np.random.default_rng(seed + 1000)
    out = dict(columns)
    age = columns["age"].copy()
    age[rng.random(len(age)) < 0.1] = np.nan
    out["age"] = age
    for name in ("city", "garden"):
        values = columns[name].copy()
        values[rng.random(len(values)) < 0.1] = None
        out[name] = values
    return out


def regression_spec(estimator: str = "HistGradientBoostingRegressor", typed: bool = False, **extra: Any) -> ModelSpec:
    if typed:
        features: list[dict[str, Any]] = [
            {"name": "area", "min": 0},
            {"name": "age", "allow_missing": True},
            {"name": "city", "type": "categorical", "allow_missing": True},
            {"name": "garden", "type": "boolean", "allow_missing": True},
        ]
    else:
        features = [{"name": n} for n in NUMERIC_NAMES]
    data: dict[str, Any] = {
        "name": "houses",
        "features": features,
        "label": {"type": "regression", "min": 0},
        "training": {"estimator": estimator, "params": SMALL[estimator], **extra.pop("training", {})},
        **extra,
    }
    return ModelSpec.model_validate(data)


def write(store: FileStore, spec: ModelSpec, n: int, seed: int, regime: str = "A", start: int = 0) -> int:
    """A new dataset version of ``n`` houses, recorded one second apart from ``T0 + start`` seconds."""
    columns, price = prices(n, seed, regime, typed=spec.typed)
    if spec.typed:
        columns = with_gaps(columns, seed)
    repo = DatasetRepository(store)
    records = []
    for i in range(n):
        values: list[Any] = []
        for name, kind in zip(spec.feature_names, spec.feature_types, strict=True):
            value = columns[name][i]
            if kind == "numeric":
                value = None if math.isnan(value) else float(value)
            values.append(value)
        at = T0 + timedelta(seconds=start + i)
        records.append(AcceptedRecord(f"{seed}-{i}", at, float(price[i]), 1.0, None, None, tuple(values)))
    manifest = repo.write_version(
        spec.name,
        spec.schema_hash(),
        spec.feature_names,
        [],
        records,
        repo.latest_version(spec.name),
        feature_types=spec.feature_types,
    )
    assert manifest is not None
    return manifest.version


def run(store: FileStore, spec: ModelSpec, version: int, run_id: str, since: datetime | None = None) -> RunResult:
    return train(spec, DatasetRepository(store), Registry(store), version, run_id, "manual", None, since=since)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


# --- a run end to end --------------------------------------------------------------------------


def test_a_numeric_regression_run_registers_a_regressor_card(store: FileStore) -> None:
    spec = regression_spec()
    result = run(store, spec, write(store, spec, 600, seed=0), "r1")
    assert result.error is None and result.card is not None, result.error
    card = result.card
    assert set(card.metrics) == {"mae", "rmse", "r2"}
    assert card.metrics["r2"] > 0.9 and 0 < card.metrics["mae"] <= card.metrics["rmse"] < 150
    json.dumps(card.metrics, allow_nan=False)  # metrics travel in JSON events
    schema = card.input_schema
    assert schema.task == "regression" and schema.label_values == [] and schema.layout == "matrix"
    assert card.output_names == ["prediction"] == list(REGRESSION_OUTPUTS)
    assert result.gate.passed and any("no champion" in r for r in result.gate.reasons)

    expected = card.reference.expected_error
    assert expected is not None and expected.threshold is not None and expected.rows == card.holdout_rows == 120
    assert expected.rate == pytest.approx(1 - MISS_QUANTILE, abs=0.01)
    assert expected.mae == pytest.approx(card.metrics["mae"]) and expected.rmse == pytest.approx(card.metrics["rmse"])
    predictions = card.reference.predictions
    assert predictions.label_distribution == {} and predictions.probability_histograms == {}
    assert predictions.value_histogram is not None and sum(predictions.value_histogram.proportions) == pytest.approx(1)
    assert 1000 < predictions.value_histogram.edges[0] < predictions.value_histogram.edges[-1] < 4500
    assert set(card.reference.features) == set(NUMERIC_NAMES)

    # the registered graph answers one `prediction`, and the card's metrics are its answers on the holdout
    blob = Registry(store).load_onnx("houses", card.version)
    assert [o.name for o in onnx.load_from_string(blob).graph.output] == ["prediction"]
    data = DatasetRepository(store).load("houses", card.dataset_version)
    holdout = slice(len(data.y) - card.holdout_rows, len(data.y))
    values, proba = predict_onnx(blob, data.X[holdout])
    assert values.dtype == np.float64 and values.shape == (120,) and proba.shape == (120, 0)
    y_test = np.asarray(data.y[holdout], dtype=np.float64)
    assert core.evaluate_regression(y_test, values) == pytest.approx(card.metrics)
    assert expected.threshold == pytest.approx(float(np.quantile(np.abs(y_test - values), MISS_QUANTILE)))


def test_a_typed_regression_run_with_categories_booleans_and_missing_values(store: FileStore) -> None:
    spec = regression_spec("RandomForestRegressor", typed=True)
    result = run(store, spec, write(store, spec, 500, seed=1), "r1")
    assert result.error is None and result.card is not None, result.error
    card = result.card
    schema = card.input_schema
    assert schema.task == "regression" and schema.layout == "columns" and schema.types == TYPED_TYPES
    assert schema.categories == {"city": sorted(CITIES)} and schema.label_values == []
    assert card.output_names == ["prediction"] and card.metrics["r2"] > 0.8
    assert set(card.reference.features) == {"area", "age"} and set(card.reference.categories) == {"city", "garden"}
    assert card.reference.predictions.value_histogram is not None
    graph = onnx.load_from_string(Registry(store).load_onnx("houses", card.version)).graph
    assert [i.name for i in graph.input] == TYPED_NAMES
    assert [o.name for o in graph.output] == ["prediction"]
    assert graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


# --- the gate: lower MAE is better ---------------------------------------------------------------


def test_the_gate_rejects_a_worse_regressor_and_passes_a_better_one(store: FileStore) -> None:
    registry = Registry(store)
    good = regression_spec("HistGradientBoostingRegressor", typed=True)
    first = run(store, good, write(store, good, 600, seed=2), "good")
    assert first.card is not None and first.passed, first.error
    registry.set_alias("houses", PRODUCTION, first.card.version, "test", "first")

    # a linear model of the same data on the same holdout: a higher MAE than the champion's
    worse = run(store, regression_spec("Ridge", typed=True), first.card.dataset_version, "worse")
    assert worse.card is not None and worse.error is None, worse.error
    assert worse.champion_version == first.card.version and worse.champion_metrics is not None
    assert worse.metrics["mae"] > worse.champion_metrics["mae"]
    assert not worse.passed and "below min delta" in worse.gate.reasons[-1]

    # with the linear model serving, a boosted fit is the better one
    registry.set_alias("houses", PRODUCTION, worse.card.version, "test", "the linear one")
    better = run(store, good, first.card.dataset_version, "better")
    assert better.card is not None and better.passed, better.gate.reasons
    assert better.metrics["mae"] < (better.champion_metrics or {})["mae"]
    assert "better >= min delta" in better.gate.reasons[-1]


def test_gate_max_bounds_the_mae(store: FileStore) -> None:
    spec = regression_spec(gate={"metric": "mae", "max": 1.0})
    result = run(store, spec, write(store, spec, 300, seed=3), "r1")
    assert result.card is not None and not result.passed
    assert result.gate.reasons[0].startswith("mae ") and "is above max 1.0" in result.gate.reasons[0]
    loose = regression_spec(gate={"metric": "rmse", "max": 500.0})
    assert run(store, loose, 1, "r2").passed


def test_gate_and_reuse_rules_in_the_metrics_direction() -> None:
    assert core.gate(GateSpec(metric="mae", max=100.0), {"mae": 90.0}, {"mae": 95.0}).passed
    assert not core.gate(GateSpec(metric="mae", min_delta_vs_champion=10.0), {"mae": 90.0}, {"mae": 95.0}).passed
    assert core.gate(GateSpec(metric="r2", min=0.5), {"r2": 0.8}, {"r2": 0.7}).passed
    assert not core.gate(GateSpec(metric="r2"), {"r2": 0.6}, {"r2": 0.7}).passed
    earlier = [(1, {"mae": 80.0}), (2, {"mae": 99.5})]
    assert core.choose_reuse({"mae": 100.0}, earlier, "mae", 0.0) == 1  # the lowest MAE
    assert core.choose_reuse({"mae": 100.0}, [(2, {"mae": 99.5})], "mae", 0.0) is None  # within 1 % of the fresh fit


# --- since-change reuse ----------------------------------------------------------------------------


def test_a_price_regime_that_comes_back_gets_the_regressor_that_learnt_it(store: FileStore) -> None:
    spec = regression_spec(training={"window": {"since_change": True}})
    registry = Registry(store)
    assert run(store, spec, write(store, spec, 1500, seed=4, regime="A"), "a").passed
    b = run(
        store, spec, write(store, spec, 1500, seed=5, regime="B", start=1500), "b", since=T0 + timedelta(seconds=1500)
    )
    assert b.passed and b.card is not None and b.card.reused_from is None, "v1 knows nothing of regime B"
    registry.set_alias("houses", PRODUCTION, b.card.version, "test", "B")
    version = write(store, spec, 60, seed=6, regime="A", start=3000)

    result = run(store, spec, version, "a-again", since=T0 + timedelta(seconds=3000))

    assert result.passed and result.card is not None, result.gate.reasons
    card = result.card
    assert card.reused_from == 1 and registry.load_onnx("houses", card.version) == registry.load_onnx("houses", 1)
    assert card.window["rows"] == 60 and card.holdout_rows == 12
    assert result.gate.reasons[0].startswith("reused v1's graph: mae ")
    assert card.metrics["mae"] < (card.champion_metrics or {})["mae"]
    assert card.input_schema.task == "regression" and card.output_names == ["prediction"]
    expected = card.reference.expected_error
    assert expected is not None and expected.rows == 12 and expected.mae == pytest.approx(card.metrics["mae"])


# --- what a run refuses, and a champion of the other task --------------------------------------------


def test_a_champion_that_classifies_is_not_judged_against_a_regressor(store: FileStore) -> None:
    registry = Registry(store)
    classify = ModelSpec.model_validate(
        {
            "name": "houses",
            "features": [{"name": n} for n in NUMERIC_NAMES],
            "label": {"values": [0, 1]},
            "training": {"estimator": "LogisticRegression"},
        }
    )
    columns, price = prices(200, seed=7)
    records = [
        AcceptedRecord(
            f"c{i}",
            T0 + timedelta(seconds=i),
            int(price[i] > 2500),
            1.0,
            None,
            None,
            tuple(columns[n][i] for n in NUMERIC_NAMES),
        )
        for i in range(200)
    ]
    DatasetRepository(store).write_version("houses", classify.schema_hash(), NUMERIC_NAMES, [0, 1], records, None)
    first = run(store, classify, 1, "c1")
    assert first.card is not None and first.passed, first.error
    registry.set_alias("houses", PRODUCTION, first.card.version, "test", "a classifier")

    spec = regression_spec("Ridge")  # the spec changed task: the same features, a number to predict
    early = run(store, spec, 1, "r0")  # before any data on the new schema: the 0 / 1 classes are no prices
    assert early.card is None and early.error is not None and "holds the classes [0, 1]" in early.error
    result = run(store, spec, write(store, spec, 200, seed=8, start=200), "r1")
    assert result.error is None and result.card is not None, result.error
    assert result.champion_version is None and result.champion_metrics is None
    assert result.passed and any("no champion" in reason for reason in result.gate.reasons)


def test_a_window_of_one_target_value_is_refused(store: FileStore) -> None:
    spec = regression_spec("Ridge")
    repo = DatasetRepository(store)
    records = [
        AcceptedRecord(f"k{i}", T0 + timedelta(seconds=i), 0.0, 1.0, None, None, (1.0 * i, 2.0, 3.0)) for i in range(60)
    ]
    repo.write_version(spec.name, spec.schema_hash(), spec.feature_names, [], records, None)
    result = run(store, spec, 1, "r1")
    assert result.card is None and result.error is not None and "single target value (0.0)" in result.error


def test_regression_targets_are_read_from_numbers_or_text_and_must_be_finite() -> None:
    assert core.regression_targets(np.array([1.5, 2.0])).dtype == np.float64
    assert core.regression_targets(np.array(["1.5", "-2", "3e3"])).tolist() == [1.5, -2.0, 3000.0]
    with pytest.raises(InvalidInput, match="not a number .'cheap'."):
        core.regression_targets(np.array(["1.5", "cheap"], dtype=object))
    with pytest.raises(InvalidInput, match="2 non-finite labels"):
        core.regression_targets(np.array(["nan", "1", "inf"]))


def test_regression_metrics_are_finite_for_a_constant_holdout() -> None:
    flat = np.full(20, 7.0)
    assert core.evaluate_regression(flat, flat) == {"mae": 0.0, "rmse": 0.0, "r2": 1.0}
    off = core.evaluate_regression(flat, flat + 1.0)
    assert off == {"mae": 1.0, "rmse": 1.0, "r2": 0.0}
    y = np.array([1.0, 2.0, 3.0, 4.0])
    mean_model = core.evaluate_regression(y, np.full(4, 2.5))
    assert mean_model["r2"] == 0.0 and mean_model["mae"] == 1.0 and mean_model["rmse"] == pytest.approx(math.sqrt(1.25))
    with pytest.raises(ValueError, match="finite"):
        core.evaluate_regression(y, np.array([1.0, 2.0, np.nan, 4.0]))


def test_a_reference_takes_finished_predictions() -> None:
    X = np.random.default_rng(0).normal(size=(50, 2))
    predictions = regression_prediction_reference(np.linspace(0, 100, 30))
    ref = build_reference(X, ["a", "b"], predictions=predictions)
    assert ref.predictions == predictions and set(ref.features) == {"a", "b"}
    with pytest.raises(ValueError, match="not both"):
        build_reference(X, ["a", "b"], np.zeros(3), np.zeros((3, 2)), [0, 1], predictions=predictions)
    with pytest.raises(ValueError, match="needs the predictions"):
        build_reference(X, ["a", "b"])


# --- every allowed regressor exports with parity ----------------------------------------------------


def diabetes_scaled() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled diabetes data, targets moved to a price's scale (around 20,000)."""
    data = load_diabetes()
    return np.asarray(data.data), np.asarray(data.target) * 100.0 + 5000.0


@pytest.mark.parametrize("name", REGRESSORS)
def test_every_regressor_exports_a_matrix_graph_with_parity(name: str) -> None:
    X, y = diabetes_scaled()
    pipeline = build_estimator(name, SMALL[name], seed=3).fit(X, y)
    blob, opset = to_onnx(pipeline, X.shape[1])
    graph = onnx.load_from_string(blob).graph
    assert (
        opset == 17 and [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["prediction"]
    )
    report = check_parity(blob, pipeline, X)
    assert report.passed, report.reason
    assert report.rows == len(X) and report.label_mismatches == 0
    assert report.max_abs_diff <= REGRESSION_RTOL * np.max(np.abs(y)) / 10  # a margin of 10 below the tolerance
    values, proba = predict_onnx(blob, X[:5])
    assert values == pytest.approx(pipeline.predict(X[:5].astype(np.float32).astype(np.float64)), rel=1e-6)
    assert proba.shape == (5, 0)
    assert (name in NEEDS_SCALING) == (pipeline.steps[0][0] == "scale")


@pytest.mark.parametrize("name", REGRESSORS)
def test_every_regressor_exports_typed_inputs_with_parity_on_probes(name: str) -> None:
    columns, price = prices(400, seed=9, typed=True)
    rows = TypedColumns.of(TYPED_NAMES, TYPED_TYPES, with_gaps(columns, seed=9))
    train_rows, test_rows = rows.take(slice(0, 320)), rows.take(slice(320, 400))
    frame = train_rows.frame()
    categories = one_hot_categories(frame, TYPED_NAMES, TYPED_TYPES)
    empty = empty_features(frame, TYPED_NAMES, TYPED_TYPES)
    pipeline = build_typed_estimator(name, SMALL[name], 3, TYPED_NAMES, TYPED_TYPES, categories, empty)
    pipeline.fit(frame, price[:320])
    blob, _ = to_onnx(pipeline, TYPED_NAMES, TYPED_TYPES)
    graph = onnx.load_from_string(blob).graph
    assert [i.name for i in graph.input] == TYPED_NAMES and [o.name for o in graph.output] == ["prediction"]
    probed = test_rows.with_probes()
    report = check_parity(blob, pipeline, probed)
    assert report.passed, report.reason
    assert report.max_abs_diff <= REGRESSION_RTOL * np.max(np.abs(price)) / 10
    values, proba = predict_onnx(blob, probed)
    assert values.shape == (len(probed),) and np.all(np.isfinite(values)) and proba.shape == (len(probed), 0)


def test_the_parity_check_catches_a_different_regressor() -> None:
    X, y = make_regression(300, 5, noise=3.0, random_state=0)
    fitted = build_estimator("Ridge", {}, seed=0).fit(X, y)
    other = build_estimator("RandomForestRegressor", {"n_estimators": 5}, seed=0).fit(X, y)
    report = check_parity(to_onnx(other, 5)[0], fitted, X)
    assert not report.passed and report.label_mismatches == 0
    assert report.reason.startswith("max prediction difference ") and "tolerance 1e-05" in report.reason


def test_the_parity_check_refuses_non_finite_predictions() -> None:
    X, y = make_regression(100, 3, random_state=0)
    pipeline = build_estimator("Ridge", {}, seed=0).fit(X, y)
    blob = to_onnx(pipeline, 3)[0]
    pipeline.steps[-1][1].intercept_ = np.inf  # a model that diverged answers infinity
    report = check_parity(blob, pipeline, X)
    assert not report.passed and report.reason == "scikit-learn predicts non-finite values for 100 of 100 rows"


def test_a_feature_named_prediction_clashes_with_a_regressors_output() -> None:
    rows = TypedColumns.of(["prediction", "c"], ["numeric", "categorical"], {"prediction": [1.0, 2.0], "c": ["a", "b"]})
    pipeline = build_typed_estimator("Ridge", {}, 0, rows.names, rows.types, {"c": ["a", "b"]})
    pipeline.fit(rows.frame(), [1.0, 2.0])
    with pytest.raises(ValueError, match="clash with the graph's outputs"):
        to_onnx(pipeline, rows.names, rows.types)
