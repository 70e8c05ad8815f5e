"""Typed features in the trainer: one pipeline per run, typed ONNX inputs, parity, card, reference."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from services.trainer import core
from services.trainer.estimators import (
    ALLOWED,
    MAX_ONE_HOT_CATEGORIES,
    NEEDS_SCALING,
    TAKES_MISSING,
    build_typed_estimator,
    empty_features,
    one_hot_categories,
)
from services.trainer.export import (
    PROBE_ROWS,
    UNSEEN_CATEGORY,
    TypedColumns,
    check_parity,
    session_for,
    to_onnx,
)
from services.trainer.runner import fit_pipeline, predict_onnx, rows_for, train
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.errors import InvalidSpec
from shared.features import COLUMNS, MATRIX, MISSING_CATEGORY
from shared.reference import (
    MAX_REFERENCE_CATEGORIES,
    OTHER_CATEGORIES,
    build_reference,
    build_typed_reference,
    category_reference,
)
from shared.registry import PRODUCTION, InputSchema, ModelCard, Registry
from shared.spec import CLASSIFIERS, FeatureSpec, LabelSpec, ModelSpec, TrainingSpec
from shared.store import FileStore

SMALL = {
    "RandomForestClassifier": {"n_estimators": 15},
    "ExtraTreesClassifier": {"n_estimators": 15},
    "GradientBoostingClassifier": {"n_estimators": 15},
    "HistGradientBoostingClassifier": {"max_iter": 25},
    "LogisticRegression": {"max_iter": 500},
    "SGDClassifier": {},
    "RandomForestRegressor": {"n_estimators": 15},
    "ExtraTreesRegressor": {"n_estimators": 15},
    "GradientBoostingRegressor": {"n_estimators": 15},
    "HistGradientBoostingRegressor": {"max_iter": 25},
    "Ridge": {},
    "SGDRegressor": {},
}
NAMES = ["income", "age.years", "city", "owner", "plan-code"]
TYPES = ["numeric", "numeric", "categorical", "boolean", "categorical"]
CITIES = ["oslo", "rome", "lima", "kyiv", "pune"]


def mixed(n: int, classes: int = 2, seed: int = 0, text_labels: bool = False) -> tuple[TypedColumns, np.ndarray]:
    """A mixed table (numeric, categorical, boolean, missing in every type) with a learnable label."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n)
    income[rng.random(n) < 0.1] = np.nan
    age = rng.uniform(18, 80, n)  # never missing in training: the probes bring missing values it never saw
    city = np.array(list(rng.choice(CITIES, n)), dtype=object)
    city[rng.random(n) < 0.1] = None
    owner = np.array([bool(v) for v in rng.random(n) < 0.4], dtype=object)
    owner[rng.random(n) < 0.1] = None
    plan = np.array([f"p{v}" for v in rng.integers(0, 30, n)], dtype=object)
    score = (
        np.nan_to_num(income - 50) / 15
        + (city == "oslo") * 1.5
        - (city == "rome") * 1.0
        + (owner == True) * 1.0  # noqa: E712 (an object array of True / False / None)
        + 0.02 * (age - 50)
        + rng.normal(0, 0.3, n)
    )
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    labels: np.ndarray = np.array(["low", "mid", "high", "top"])[y] if text_labels else y
    columns = {"income": income, "age.years": age, "city": city, "owner": owner, "plan-code": plan}
    return TypedColumns.of(NAMES, TYPES, columns), labels


def fitted(name: str, rows: TypedColumns, y: np.ndarray, cap: int = MAX_ONE_HOT_CATEGORIES) -> Pipeline:
    frame = rows.frame()
    categories = one_hot_categories(frame, rows.names, rows.types, cap=cap)
    empty = empty_features(frame, rows.names, rows.types)
    return build_typed_estimator(name, SMALL[name], 3, rows.names, rows.types, categories, empty).fit(frame, y)


# --- the pipeline ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALLOWED)
def test_one_pipeline_selects_columns_by_name_with_the_right_steps(name: str) -> None:
    pipeline = build_typed_estimator(name, SMALL[name], 3, NAMES, TYPES, {"city": CITIES, "plan-code": ["p1"]})
    prep = pipeline.named_steps["prep"]
    assert isinstance(prep, ColumnTransformer)
    steps = {label: (step, columns) for label, step, columns in prep.transformers}
    numeric, numeric_columns = steps["numeric"]
    encoder, encoded_columns = steps["categorical"]
    assert numeric_columns == ["income", "age.years", "owner"]  # booleans go with the numbers, as 0 / 1
    assert encoded_columns == ["city", "plan-code"]
    assert isinstance(encoder, OneHotEncoder) and encoder.handle_unknown == "ignore" and not encoder.sparse_output
    if name in TAKES_MISSING:
        assert numeric == "passthrough"
    elif name in NEEDS_SCALING:
        assert isinstance(numeric, Pipeline)
        assert isinstance(numeric.steps[0][1], SimpleImputer) and numeric.steps[0][1].strategy == "median"
        assert isinstance(numeric.steps[1][1], StandardScaler)
    else:
        assert isinstance(numeric, SimpleImputer) and numeric.strategy == "median"
    model = pipeline.named_steps["model"]
    assert type(model).__name__ == name
    if "random_state" in model.get_params():
        assert model.random_state == 3


def test_typed_pipeline_validates_params_like_the_plain_one() -> None:
    with pytest.raises(InvalidSpec, match="has no parameter n_trees"):
        build_typed_estimator("RandomForestClassifier", {"n_trees": 3}, 0, NAMES, TYPES, {"city": CITIES})


def test_one_hot_categories_keep_the_most_frequent_sorted_missing_included() -> None:
    columns: dict[str, list[Any]] = {"c": ["b"] * 5 + ["a"] * 3 + [MISSING_CATEGORY] * 4 + ["z", "y"], "n": [1.0] * 14}
    assert one_hot_categories(columns, ["n", "c"], ["numeric", "categorical"], cap=3) == {"c": ["", "a", "b"]}
    assert one_hot_categories(columns, ["n", "c"], ["numeric", "categorical"]) == {"c": ["", "a", "b", "y", "z"]}


# --- export and parity -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSIFIERS)  # regressors: test_regression.py
@pytest.mark.parametrize("classes,text", [(2, False), (3, True)], ids=["binary-int", "3class-str"])
def test_every_estimator_exports_typed_inputs_with_parity(name: str, classes: int, text: bool) -> None:
    rows, y = mixed(500, classes=classes, text_labels=text)
    train_rows, test_rows = rows.take(slice(0, 400)), rows.take(slice(400, 500))
    pipeline = fitted(name, train_rows, y[:400])
    blob, opset = to_onnx(pipeline, NAMES, TYPES)
    assert opset == 17
    graph = onnx.load_from_string(blob).graph
    assert [i.name for i in graph.input] == NAMES  # named as the features, dots and dashes included
    kinds = [i.type.tensor_type.elem_type for i in graph.input]
    assert kinds == [TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.STRING, TensorProto.FLOAT, TensorProto.STRING]
    for graph_input in graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        assert len(dims) == 2 and dims[1].dim_value == 1
    assert [o.name for o in graph.output] == ["label", "probabilities"]

    probed = test_rows.with_probes()
    assert len(probed) == 100 + 3 * PROBE_ROWS
    assert UNSEEN_CATEGORY in set(probed.columns["city"]) and None in set(probed.columns["owner"])
    assert np.isnan(probed.columns["age.years"]).any()  # a value never missing in training
    report = check_parity(blob, pipeline, probed)
    assert report.passed, report.reason
    assert report.rows == len(probed) and report.label_mismatches == 0 and report.max_abs_diff <= 1e-4

    label, proba = predict_onnx(blob, probed)
    assert proba.shape == (len(probed), classes) and np.all(np.isfinite(proba))
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert set(map(str, label)) <= set(map(str, pipeline.classes_))


def test_unseen_category_encodes_as_nothing_known() -> None:
    rows, y = mixed(400, seed=1)
    pipeline = fitted("LogisticRegression", rows, y)
    blob, _ = to_onnx(pipeline, NAMES, TYPES)
    one = rows.take(slice(0, 1))
    unseen = TypedColumns.of(NAMES, TYPES, {**one.columns, "city": np.array(["atlantis"], dtype=object)})
    encoded = pipeline.named_steps["prep"].transform(unseen.frame())
    city_block = encoded[0, 3 : 3 + len(pipeline.named_steps["prep"].named_transformers_["categorical"].categories_[0])]
    assert not city_block.any()  # all zeros: a valid input, not an error
    assert check_parity(blob, pipeline, unseen).passed


def test_a_single_high_cardinality_categorical_feature_is_capped_and_exports() -> None:
    # skl2onnx 1.20 cannot convert OneHotEncoder(max_categories=...) with infrequent categories
    # when the encoder has one input: the cap is given as explicit categories instead.
    rng = np.random.default_rng(4)
    n = 600
    codes = np.array([f"z{v}" for v in rng.zipf(1.3, n) % 500], dtype=object)
    x = rng.normal(size=n)
    y = ((codes == "z1") | (x > 0.5)).astype(int)
    rows = TypedColumns.of(["zip", "x"], ["categorical", "numeric"], {"zip": codes, "x": x})
    for name in ("LogisticRegression", "HistGradientBoostingClassifier"):
        frame = rows.frame()
        categories = one_hot_categories(frame, rows.names, rows.types, cap=10)
        assert len(categories["zip"]) == 10 and len(set(codes)) > 10
        pipeline = build_typed_estimator(name, SMALL[name], 0, rows.names, rows.types, categories).fit(frame, y)
        assert pipeline.named_steps["prep"].transform(frame).shape[1] == 1 + 10
        blob, _ = to_onnx(pipeline, rows.names, rows.types)
        report = check_parity(blob, pipeline, rows.with_probes())
        assert report.passed, report.reason


def test_colliding_sanitised_names_keep_their_own_inputs() -> None:
    # skl2onnx writes "x.a" as "x_a"; the real "x_a" must still get its own values.
    rng = np.random.default_rng(2)
    n = 400
    dotted, plain = rng.normal(size=n), rng.normal(size=n) * 10
    flag = np.array([bool(v) for v in rng.random(n) < 0.5], dtype=object)
    y = (dotted > 0).astype(int)
    names, types = ["x.a", "x_a", "f"], ["numeric", "numeric", "boolean"]
    rows = TypedColumns.of(names, types, {"x.a": dotted, "x_a": plain, "f": flag})
    frame = rows.frame()
    pipeline = build_typed_estimator("LogisticRegression", {}, 0, names, types, {}).fit(frame, y)
    blob, _ = to_onnx(pipeline, names, types)
    assert [i.name for i in onnx.load_from_string(blob).graph.input] == names
    assert check_parity(blob, pipeline, rows.with_probes()).passed
    # the wiring matters: feeding x.a's values to x_a changes what the graph answers
    swapped = TypedColumns.of(names, types, {"x.a": plain, "x_a": dotted, "f": flag})
    _, proba = predict_onnx(blob, swapped)
    assert np.abs(proba - pipeline.predict_proba(frame)).max() > 0.1


def test_a_feature_named_like_an_output_is_refused() -> None:
    rows = TypedColumns.of(["label", "c"], ["numeric", "categorical"], {"label": [1.0, 2.0], "c": ["a", "b"]})
    pipeline = build_typed_estimator("LogisticRegression", {}, 0, rows.names, rows.types, {"c": ["a", "b"]})
    pipeline.fit(rows.frame(), [0, 1])
    with pytest.raises(ValueError, match="clash with the graph's outputs"):
        to_onnx(pipeline, rows.names, rows.types)


@pytest.mark.parametrize("name", ["HistGradientBoostingClassifier", "RandomForestClassifier", "SGDClassifier"])
def test_features_missing_in_every_training_row_still_export(name: str) -> None:
    rows, y = mixed(300, seed=5)
    empty = {
        **rows.columns,
        "income": np.full(300, np.nan),
        "owner": np.full(300, None, dtype=object),
        "city": np.full(300, None, dtype=object),
    }
    rows = TypedColumns.of(NAMES, TYPES, empty)
    pipeline = fitted(name, rows, y)
    blob, _ = to_onnx(pipeline, NAMES, TYPES)
    report = check_parity(blob, pipeline, rows.with_probes())
    assert report.passed, report.reason


def test_the_parity_check_catches_a_different_model() -> None:
    rows, y = mixed(300)
    one = fitted("LogisticRegression", rows, y)
    other = fitted("RandomForestClassifier", rows, y)
    report = check_parity(to_onnx(other, NAMES, TYPES)[0], one, rows)
    assert not report.passed and "max probability difference" in report.reason


def test_all_numeric_names_and_types_keep_the_matrix_graph() -> None:
    from services.trainer.estimators import build_estimator

    X = np.random.default_rng(0).normal(size=(100, 3))
    y = (X[:, 0] > 0).astype(int)
    pipeline = build_estimator("LogisticRegression", {}, 0).fit(X, y)
    by_names = to_onnx(pipeline, ["a", "b", "c"], ["numeric"] * 3)[0]
    assert by_names == to_onnx(pipeline, 3)[0]
    assert [i.name for i in onnx.load_from_string(by_names).graph.input] == ["input"]


# --- typed columns ---------------------------------------------------------------------------------


def test_graph_and_frame_see_the_same_values() -> None:
    rows = TypedColumns.of(
        ["n", "c", "b"],
        ["numeric", "categorical", "boolean"],
        {"n": [0.1, None, 3.0], "c": ["x", None, 7], "b": [True, None, False]},
    )
    feeds, frame = rows.feeds(), rows.frame()
    assert feeds["n"].dtype == np.float32 and feeds["n"].shape == (3, 1)
    assert feeds["c"].ravel().tolist() == ["x", "", "7"] == frame["c"].tolist()
    assert frame["c"].dtype == object
    assert feeds["b"].ravel().tolist()[::2] == [1.0, 0.0] and math.isnan(feeds["b"][1, 0])
    assert frame["n"].iloc[0] == float(np.float32(0.1))  # rounded through float32, as the graph sees it
    assert math.isnan(frame["n"].iloc[1]) and math.isnan(frame["b"].iloc[1])
    assert len(rows.take(slice(1, 3))) == 2 and rows.take(np.array([2])).columns["c"].tolist() == [7]


def test_rows_take_the_form_of_each_layout() -> None:
    X = np.arange(6, dtype=np.float64).reshape(3, 2)
    as_columns = rows_for(COLUMNS, ["a", "b"], X)
    assert isinstance(as_columns, TypedColumns) and as_columns.columns["b"].tolist() == [1.0, 3.0, 5.0]
    assert np.array_equal(rows_for(MATRIX, ["a", "b"], as_columns), X)  # type: ignore[arg-type]
    assert rows_for(MATRIX, ["a", "b"], X) is X
    with pytest.raises(ValueError, match="all-numeric"):
        mixed(30)[0].matrix()


# --- reference -------------------------------------------------------------------------------------


def test_category_reference_shares_missing_and_rows() -> None:
    ref = category_reference(["a", "b", "a", None, 3, "a"], "categorical")
    assert ref.shares == pytest.approx({"a": 0.6, "b": 0.2, "3": 0.2})
    assert ref.missing == pytest.approx(1 / 6) and ref.rows == 6
    flags = category_reference(np.array([True, None, True, False], dtype=object), "boolean")
    assert flags.shares == pytest.approx({"true": 2 / 3, "false": 1 / 3}) and flags.missing == 0.25
    assert category_reference([None, None], "boolean").shares == {"true": 0.0, "false": 0.0}


def test_category_reference_caps_the_categories_it_names() -> None:
    values = [f"c{i:03d}" for i in range(200) for _ in range(200 - i)]  # c000 most frequent
    ref = category_reference(values, "categorical")
    assert len(ref.shares) == MAX_REFERENCE_CATEGORIES + 1
    assert list(ref.shares)[:2] == ["c000", "c001"] and "c049" in ref.shares and "c050" not in ref.shares
    assert ref.shares[OTHER_CATEGORIES] == pytest.approx(sum(200 - i for i in range(50, 200)) / len(values))
    assert sum(ref.shares.values()) == pytest.approx(1.0)
    assert OTHER_CATEGORIES not in category_reference(["a", "b"], "categorical").shares


def test_typed_reference_splits_numeric_from_categories() -> None:
    rows, y = mixed(200)
    proba = np.tile([0.3, 0.7], (50, 1))
    ref = build_typed_reference(rows.columns, NAMES, TYPES, y[:50], proba, [0, 1])
    assert set(ref.features) == {"income", "age.years"}
    assert set(ref.categories) == {"city", "owner", "plan-code"}
    plain = build_reference(
        np.c_[rows.columns["income"], rows.columns["age.years"]], ["income", "age.years"], y[:50], proba, [0, 1]
    )
    assert ref.features == plain.features and ref.predictions == plain.predictions
    city = ref.categories["city"]
    assert set(city.shares) <= set(CITIES) and sum(city.shares.values()) == pytest.approx(1.0)
    assert city.missing == pytest.approx(np.mean([v is None for v in rows.columns["city"]]))
    assert set(ref.categories["owner"].shares) == {"true", "false"} and ref.categories["owner"].rows == 200


# --- metrics ----------------------------------------------------------------------------------------


def test_evaluate_works_for_three_classes_and_a_class_the_model_never_saw() -> None:
    y_true = np.array(["a", "b", "c", "a", "b", "c"])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]] * 2)
    metrics = core.evaluate(y_true, y_true, proba, ["a", "b", "c"])
    assert metrics["accuracy"] == 1.0 and metrics["f1_macro"] == 1.0 and metrics["balanced_accuracy"] == 1.0
    assert metrics["log_loss_neg"] == pytest.approx(math.log(0.8))
    # "c" is in the holdout but the model was trained on a and b only: it counts against it, no crash
    two = np.array([[0.9, 0.1], [0.2, 0.8], [0.9, 0.1]] * 2)
    partial = core.evaluate(y_true, np.array(["a", "b", "a"] * 2), two, ["a", "b"])
    assert partial["accuracy"] == pytest.approx(4 / 6)
    assert partial["f1_macro"] < 1.0 and partial["log_loss_neg"] < -10


# --- the runner through a real FileStore -------------------------------------------------------------

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def typed_spec(name: str, estimator: str, classes: int = 2) -> ModelSpec:
    labels: list[Any] = ["low", "mid", "high"][:classes] if classes > 2 else [0, 1]
    return ModelSpec(
        name=name,
        features=[
            FeatureSpec(name="income", allow_missing=True),
            FeatureSpec(name="age.years"),
            FeatureSpec(name="city", type="categorical", allow_missing=True),
            FeatureSpec(name="owner", type="boolean", allow_missing=True),
            FeatureSpec(name="plan-code", type="categorical"),
        ],
        label=LabelSpec(values=labels),
        training=TrainingSpec.model_validate({"estimator": estimator, "params": SMALL[estimator]}),
    )


def write_typed(store: FileStore, spec: ModelSpec, n: int, seed: int, known: int | None) -> int:
    rows, y = mixed(n, classes=len(spec.label.values), seed=seed, text_labels=len(spec.label.values) > 2)
    records = []
    for i in range(n):
        values = tuple(
            None if isinstance(v, float) and math.isnan(v) else (float(v) if kind == "numeric" else v)
            for v, kind in ((rows.columns[f][i], t) for f, t in zip(NAMES, TYPES, strict=True))
        )
        label = y[i].item() if isinstance(y[i], np.generic) else y[i]
        records.append(
            AcceptedRecord(f"s{seed}-{i}", T0 + timedelta(seconds=seed * 10_000 + i), label, 1.0, None, None, values)
        )
    manifest = DatasetRepository(store).write_version(
        spec.name,
        spec.schema_hash(),
        spec.feature_names,
        spec.label.values,
        records,
        known,
        feature_types=spec.feature_types,
    )
    assert manifest is not None
    return manifest.version


def run(store: FileStore, spec: ModelSpec, version: int, run_id: str) -> Any:
    return train(spec, DatasetRepository(store), Registry(store), version, run_id, "manual", None)


def test_a_typed_run_registers_a_columns_version_and_judges_its_champion(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    spec = typed_spec("loans", "HistGradientBoostingClassifier")
    first = run(store, spec, write_typed(store, spec, 400, seed=0, known=None), "r1")
    assert first.error is None and first.card is not None, first.error
    card = first.card
    schema = card.input_schema
    assert schema.layout == "columns" and schema.types == TYPES and schema.features == NAMES
    assert schema.categories["city"] == sorted(CITIES)
    assert schema.categories["plan-code"] == sorted({f"p{i}" for i in range(30)})
    assert MISSING_CATEGORY not in schema.categories["city"] and set(schema.categories) == {"city", "plan-code"}
    assert set(card.reference.features) == {"income", "age.years"}
    assert set(card.reference.categories) == {"city", "owner", "plan-code"}
    assert (
        card.reference.categories["city"].missing > 0 and card.reference.categories["city"].rows == card.training_rows
    )
    assert card.metrics["accuracy"] > 0.7
    blob = Registry(store).load_onnx("loans", card.version)
    assert [i.name for i in onnx.load_from_string(blob).graph.input] == NAMES

    Registry(store).set_alias("loans", PRODUCTION, card.version, "test", "first")
    version = write_typed(store, spec, 200, seed=1, known=card.dataset_version)
    second = run(store, spec, version, "r2")
    assert second.error is None and second.card is not None, second.error
    assert second.champion_version == card.version and second.champion_metrics is not None
    assert set(second.champion_metrics) == set(second.metrics)


def test_a_three_class_typed_run(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    spec = typed_spec("tiers", "LogisticRegression", classes=3)
    result = run(store, spec, write_typed(store, spec, 450, seed=2, known=None), "r1")
    assert result.error is None and result.card is not None, result.error
    assert sorted(result.card.input_schema.label_values) == ["high", "low", "mid"]
    assert set(result.card.reference.predictions.label_distribution) == {"high", "low", "mid"}
    assert result.metrics["accuracy"] > 0.5 and result.gate.passed


def test_a_champion_of_other_feature_types_is_not_judged(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    registry = Registry(store)
    spec = typed_spec("swap", "RandomForestClassifier")
    first = run(store, spec, write_typed(store, spec, 300, seed=3, known=None), "r1")
    card: ModelCard = first.card
    assert card is not None, first.error
    blob = registry.load_onnx("swap", card.version)
    numeric = InputSchema(features=NAMES, label_values=[0, 1])  # same names, all numeric: a matrix graph

    def as_numeric(version: int, key: str, sha256: str) -> ModelCard:
        update = {"version": version, "artifact_key": key, "artifact_sha256": sha256, "input_schema": numeric}
        return card.model_copy(update=update)

    champion = registry.register("swap", blob, as_numeric)
    registry.set_alias("swap", PRODUCTION, champion.version, "test", "a champion of other types")
    second = run(store, spec, card.dataset_version, "r2")
    assert second.error is None and second.card is not None, second.error
    assert second.champion_version is None and second.champion_metrics is None
    assert any("no champion" in reason for reason in second.gate.reasons)


def test_a_dataset_of_other_feature_types_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    spec = typed_spec("retyped", "RandomForestClassifier")
    version = write_typed(store, spec, 100, seed=3, known=None)
    features = [*spec.features[:3], FeatureSpec(name="owner", type="categorical"), spec.features[4]]
    result = run(store, spec.model_copy(update={"features": features}), version, "r1")
    assert result.card is None and result.error is not None and "feature types" in result.error


def test_fit_pipeline_keeps_the_plain_pipeline_for_all_numeric_specs() -> None:
    spec = ModelSpec(
        name="plain",
        features=[FeatureSpec(name="a"), FeatureSpec(name="b")],
        label=LabelSpec(values=[0, 1]),
        training=TrainingSpec(estimator="LogisticRegression"),
    )
    X = np.random.default_rng(0).normal(size=(60, 2))
    pipeline, categories = fit_pipeline(spec, X, (X[:, 0] > 0).astype(int))
    assert categories == {} and [name for name, _ in pipeline.steps] == ["scale", "model"]
    assert [i.name for i in onnx.load_from_string(to_onnx(pipeline, 2)[0]).graph.input] == ["input"]
    assert session_for(to_onnx(pipeline, 2)[0]).get_inputs()[0].shape[1] == 2
