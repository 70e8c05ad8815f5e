"""Serving regressors: the protocols' ``prediction`` output (V2 FP64 ``[N]`` as JSON and as binary
data, V1 ``{"prediction": x}``), requested outputs a model does not have, model metadata's
outputs, loading a regressor (its graph checked against its card's task), answering from the
champion, canary, shadow and pinned versions with one :class:`Prediction`, the prediction log's
rows of a regressor as the event contract says, and the HTTP adapter. The prediction log is the
only fake (and, once, an ONNX session that answers NaN)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from tritonclient.utils import triton_to_np_dtype

from services.inference.handlers import InferenceHandlers, Served, encode_predictions
from services.inference.metrics import InferenceMetrics
from services.inference.predict_routes import PredictRoutes
from services.inference.protocol import (
    OUTPUT_NAMES,
    InputSchema,
    Prediction,
    canary_bucket,
    decode_v1,
    decode_v2,
    describe_outputs,
    encode_v1_predictions,
    encode_v2_outputs,
)
from services.inference.runtime import LoadedModel, load_version
from shared import topics
from shared.errors import CorruptArtifact, InvalidInput
from shared.events import PredictionsLogged, decode_as, decode_event
from shared.features import REGRESSION_OUTPUTS
from shared.registry import Registry
from shared.spec import SpecCatalog, apply_spec
from shared.store import FileStore
from tests.unit.inference import regression_model, typed_model
from tests.unit.inference.regression_model import BIG, SMALL, RegressionModel
from tests.unit.inference.test_handlers import RecordingLog
from tests.unit.inference.test_typed_serving import call

MODEL = "prices"
NUMERIC = "demand"
REGRESSION = REGRESSION_OUTPUTS
SCHEMA = InputSchema(features=("x1", "x2"))


def row_tensor(*rows: list[float]) -> dict[str, Any]:
    return {"name": "input", "shape": [len(rows), 2], "datatype": "FP32", "data": [list(r) for r in rows]}


# --- the protocols ---------------------------------------------------------------------------------


def test_a_regressors_prediction_is_fp64_n_in_json_and_binary() -> None:
    prediction = Prediction.of_values(np.array([[12.5], [-3.25], [1e6]], dtype=np.float32))
    assert prediction.labels.dtype == np.float64 and prediction.probabilities.shape == (3, 0)

    [output], tail = encode_v2_outputs(*prediction, REGRESSION)
    assert output == {"name": "prediction", "shape": [3], "datatype": "FP64", "data": [12.5, -3.25, 1e6]}
    assert tail == b""

    [output], tail = encode_v2_outputs(*prediction, REGRESSION, frozenset(REGRESSION))
    assert output == {
        "name": "prediction",
        "shape": [3],
        "datatype": "FP64",
        "parameters": {"binary_data_size": 24},
    }
    assert tail == np.array([12.5, -3.25, 1e6], dtype="<f8").tobytes()
    # as tritonclient reads a binary output: datatype to dtype, then frombuffer and the shape
    read = np.frombuffer(tail, dtype=triton_to_np_dtype(output["datatype"])).reshape(output["shape"])
    assert read.tolist() == [12.5, -3.25, 1e6] and read.dtype == np.float64


def test_numbers_json_cannot_hold_are_null_not_invalid_json() -> None:
    prediction = Prediction.of_values(np.array([1.5, math.nan, math.inf]))
    [output], _ = encode_v2_outputs(*prediction, REGRESSION)
    assert output["data"] == [1.5, None, None]
    assert encode_v1_predictions(prediction, [], REGRESSION) == [
        {"prediction": 1.5},
        {"prediction": None},
        {"prediction": None},
    ]
    assert orjson.loads(orjson.dumps(output))["data"] == [1.5, None, None]


def test_v1_answers_a_prediction_per_instance_and_classifiers_as_before() -> None:
    regressed = Prediction.of_values(np.array([[12.5], [3.0]], dtype=np.float32))
    assert encode_v1_predictions(regressed, [], REGRESSION) == [{"prediction": 12.5}, {"prediction": 3.0}]
    classified = Prediction(np.array([1, 0]), np.array([[0.25, 0.75], [0.9, 0.1]], dtype=np.float32))
    assert encode_v1_predictions(classified, [0, 1]) == [
        {"label": 1, "probabilities": {"0": 0.25, "1": 0.75}},
        {"label": 0, "probabilities": {"0": pytest.approx(0.9), "1": pytest.approx(0.1)}},
    ]


def test_a_regressor_is_asked_for_prediction_only_and_a_classifier_never() -> None:
    rows = row_tensor([1, 2], [3, 4])
    everything = decode_v2({"inputs": [rows]}, SCHEMA, model_outputs=REGRESSION)
    assert everything.outputs == ("prediction",) and everything.binary_outputs == frozenset()
    binary = decode_v2({"inputs": [rows], "parameters": {"binary_data_output": True}}, SCHEMA, None, REGRESSION)
    assert binary.outputs == ("prediction",) and binary.binary_outputs == {"prediction"}
    named = decode_v2(
        {"inputs": [rows], "outputs": [{"name": "prediction", "parameters": {"binary_data": True}}]},
        SCHEMA,
        model_outputs=REGRESSION,
    )
    assert named.outputs == ("prediction",) and named.binary_outputs == {"prediction"}
    assert decode_v1({"instances": [[1, 2]]}, SCHEMA, REGRESSION).outputs == ("prediction",)

    for asked in ("label", "probabilities"):
        with pytest.raises(
            InvalidInput, match=f"unknown output.s. {asked}; this model is a regressor and has prediction"
        ):
            decode_v2({"inputs": [rows], "outputs": [{"name": asked}]}, SCHEMA, model_outputs=REGRESSION)
    with pytest.raises(InvalidInput, match="prediction; this model is a classifier and has label, probabilities"):
        decode_v2({"inputs": [rows], "outputs": [{"name": "prediction"}]}, SCHEMA)
    with pytest.raises(InvalidInput, match="output 'prediction': classification is not supported"):
        decode_v2(
            {"inputs": [rows], "outputs": [{"name": "prediction", "parameters": {"classification": 1}}]},
            SCHEMA,
            model_outputs=REGRESSION,
        )


def test_metadata_describes_each_kind_of_output() -> None:
    assert describe_outputs(REGRESSION, []) == [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    assert describe_outputs(OUTPUT_NAMES, [0, 1, 2]) == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]


# --- loading and answering -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> dict[str, RegressionModel]:
    return {
        "typed": regression_model.build(),
        "shifted": regression_model.build(seed=1, offset=5000.0),
        "numeric": regression_model.build_numeric(),
    }


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, models: dict[str, RegressionModel]) -> Path:
    """MODEL v1: the typed regressor; v2: one that prices 5,000 higher; v3: a classifier's graph
    behind a regressor's card; v4: the regressor's graph behind a classifier's card. NUMERIC v1:
    the all-numeric regressor."""
    store = FileStore(tmp_path_factory.mktemp("regression") / "store")
    apply_spec(store, regression_model.SPEC.format(name=MODEL))
    apply_spec(store, regression_model.NUMERIC_SPEC.format(name=NUMERIC))
    assert regression_model.register(store, MODEL, models["typed"]) == 1
    assert regression_model.register(store, MODEL, models["shifted"]) == 2
    classifier = typed_model.build()
    regression_card = typed_model.card_schema(classifier).model_copy(update={"task": "regression", "label_values": []})
    assert typed_model.register(store, MODEL, classifier, regression_card) == 3
    classification_card = models["typed"].schema.model_copy(update={"task": "classification", "label_values": [0, 1]})
    assert regression_model.register(store, MODEL, models["typed"], classification_card) == 4
    assert regression_model.register(store, NUMERIC, models["numeric"]) == 1
    return Path(store.root)


@pytest.fixture
def store(registered: Path, tmp_path: Path) -> FileStore:
    return FileStore(shutil.copytree(registered, tmp_path / "store"))


def test_a_regressor_loads_with_its_task_and_answers_float64_numbers(
    store: FileStore, models: dict[str, RegressionModel]
) -> None:
    loaded = load_version(Registry(store), MODEL, 1, regression_model.OPTIONAL)
    assert (loaded.task, loaded.regression, loaded.outputs, loaded.classes) == ("regression", True, REGRESSION, [])
    assert loaded.load_seconds > 0, "warmed up with one row in the graph's layout"
    prediction = loaded.predict(decode_v1({"instances": [BIG, SMALL]}, loaded.schema).inputs)
    assert isinstance(prediction, Prediction) and prediction.labels.dtype == np.float64
    assert prediction.labels.shape == (2,) and prediction.probabilities.shape == (2, 0)
    assert np.allclose(prediction.labels, models["typed"].expected([BIG, SMALL]), rtol=1e-4)

    numeric = load_version(Registry(store), NUMERIC, 1)
    X = np.array([[1.0, 2.0], [5.0, 0.0]], dtype=np.float32)
    values, probabilities = numeric.predict(X)
    assert numeric.schema.layout == "matrix" and probabilities.shape == (2, 0)
    assert np.allclose(values, models["numeric"].pipeline.predict(X.astype(np.float64)), atol=1e-3)


def test_a_card_whose_task_does_not_match_the_graph_is_refused_at_load(store: FileStore) -> None:
    with pytest.raises(CorruptArtifact, match=r"outputs \['label', 'probabilities'\] do not match .* 'regression'"):
        load_version(Registry(store), MODEL, 3)
    with pytest.raises(CorruptArtifact, match=r"outputs \['prediction'\] do not match .* 'classification'"):
        load_version(Registry(store), MODEL, 4)


class Serving:
    """One inference replica on a store, its prediction log recorded."""

    def __init__(self, store: FileStore) -> None:
        self.registry = Registry(store)
        self.log = RecordingLog()
        self.metrics = InferenceMetrics.create(CollectorRegistry())
        self.handlers = InferenceHandlers(self.registry, SpecCatalog(store, refresh_s=60.0), self.log, self.metrics)  # type: ignore[arg-type]

    async def serve(self, model: str = MODEL, **aliases: int | None) -> None:
        for alias, version in aliases.items():
            self.registry.set_alias(model, alias, version, "test", alias)  # type: ignore[arg-type]
        await self.handlers.refresh(model)


async def test_champion_canary_shadow_and_pinned_answer_one_kind_of_prediction(store: FileStore) -> None:
    serving = Serving(store)
    await serving.serve(production=1, canary=2, shadow=2)
    handlers = serving.handlers
    schema = handlers.model_slots(MODEL).champion.schema  # type: ignore[union-attr]
    assert schema.optional == regression_model.OPTIONAL, "allow_missing comes from the spec"
    to_canary = next(f"id-{i}" for i in range(100) if canary_bucket(f"id-{i}") < 0.5)
    to_champion = next(f"id-{i}" for i in range(100) if canary_bucket(f"id-{i}") >= 0.5)
    request = decode_v1({"instances": [BIG, SMALL]}, schema, REGRESSION)

    champion = handlers.predict(MODEL, request, to_champion)
    canary = handlers.predict(MODEL, request, to_canary)
    assert (champion.version, champion.variant, canary.version, canary.variant) == (1, "champion", 2, "canary")
    assert champion.labels.dtype == np.float64 and champion.probabilities.shape == (2, 0)
    assert np.all(canary.labels - champion.labels > 4000), "the canary prices 5,000 higher"
    handlers.shadow(MODEL, request, champion.inference_id)
    pinned = await handlers.pinned(MODEL, 2)
    again = handlers.predict(MODEL, request, "p", version=2, pinned=pinned)
    assert again.version == 2 and again.labels.tolist() == canary.labels.tolist()

    logged = [(s.variant, s.loaded.version, s.labels.tolist()) for s in serving.log.items]
    assert logged == [
        ("champion", 1, champion.labels.tolist()),
        ("canary", 2, canary.labels.tolist()),
        ("shadow", 2, canary.labels.tolist()),
        ("champion", 2, canary.labels.tolist()),
    ]


async def test_a_regressors_rows_are_logged_as_the_event_contract_says(store: FileStore) -> None:
    serving = Serving(store)
    await serving.serve(production=1)
    schema = serving.handlers.model_slots(MODEL).champion.schema  # type: ignore[union-attr]
    two = serving.handlers.predict(MODEL, decode_v1({"instances": [BIG, SMALL]}, schema), "two")
    one = serving.handlers.predict(MODEL, decode_v1({"instances": [BIG]}, schema), "one")

    [(key, value, rows)] = encode_predictions(serving.log.items)
    assert (key, rows) == (MODEL.encode(), 3)
    raw = orjson.loads(value)
    assert raw["classes"] == [] and raw["probabilities"] == [[], [], []], "[N, 0] arrays are rows of nothing"
    event = decode_event(topics.PREDICTIONS, value)
    assert isinstance(event, PredictionsLogged) and event == decode_as(PredictionsLogged, value)
    assert event.inference_ids == ["two:0", "two:1", "one"]
    assert event.labels == [*two.labels.tolist(), *one.labels.tolist()], "the predicted numbers, exactly"
    assert all(isinstance(v, float) for v in event.labels)
    assert event.features[1] == [2.0, None, "Lima", False]

    many = decode_v1({"instances": [BIG, SMALL] * 40_000}, schema)  # split across messages
    labels, probabilities = serving.handlers.model_slots(MODEL).champion.predict(many.inputs)  # type: ignore[union-attr]
    loaded = serving.handlers.model_slots(MODEL).champion
    parts = encode_predictions([Served(loaded, "champion", "big", many.inputs, labels, probabilities, 1.0, 0.0)])  # type: ignore[arg-type]
    assert len(parts) > 1 and sum(rows for _, _, rows in parts) == 80_000
    events = [decode_as(PredictionsLogged, v) for _, v, _ in parts]
    assert [v for e in events for v in e.labels] == labels.tolist()
    assert all(row == [] for e in events for row in e.probabilities)


class NaNSession:
    """An ONNX session seam whose regressor answers NaN (no exported graph does)."""

    def run(self, names: list[str], feeds: dict[str, Any]) -> list[np.ndarray]:
        assert names == ["prediction"]
        return [np.full((len(next(iter(feeds.values()))), 1), np.nan, dtype=np.float32)]


def test_a_prediction_that_is_not_a_number_is_answered_as_null_and_not_logged(store: FileStore) -> None:
    serving = Serving(store)
    odd = LoadedModel("odd", 1, NaNSession(), SCHEMA, [], 0.0, "regression")
    answer = serving.handlers.predict("odd", decode_v1({"instances": [[1, 2]]}, SCHEMA), "n", pinned=odd)
    assert math.isnan(answer.labels[0])
    assert encode_v1_predictions(answer.prediction, odd.classes, odd.outputs) == [{"prediction": None}]
    assert serving.log.items == [], "the event has no form for it: not logged"


# --- the HTTP adapter -------------------------------------------------------------------------------


def typed_tensors(*rows: dict[str, Any]) -> list[dict[str, Any]]:
    datatypes = {"numeric": "FP64", "categorical": "BYTES", "boolean": "BOOL"}
    return [
        {"name": f, "shape": [len(rows)], "datatype": datatypes[t], "data": [r[f] for r in rows]}
        for f, t in zip(regression_model.FEATURES, regression_model.TYPES, strict=True)
    ]


async def test_the_adapter_answers_v1_and_v2_with_prediction(store: FileStore) -> None:
    serving = Serving(store)
    await serving.serve(production=1, canary=2)
    app = PredictRoutes(None, serving.handlers, serving.metrics, 1 << 20)  # type: ignore[arg-type]
    to_champion = next(f"id-{i}" for i in range(100) if canary_bucket(f"id-{i}") >= 0.5)

    status, v1 = await call(app, f"/v1/models/{MODEL}:predict", {"instances": [BIG, SMALL]}, to_champion)
    assert status == 200 and v1["model_version"] == "1" and v1["id"] == to_champion
    assert [set(p) for p in v1["predictions"]] == [{"prediction"}, {"prediction"}]
    numbers = [p["prediction"] for p in v1["predictions"]]

    status, v2 = await call(app, f"/v2/models/{MODEL}/infer", {"inputs": typed_tensors(BIG, SMALL)}, to_champion)
    assert status == 200 and v2["model_version"] == "1"
    assert v2["outputs"] == [{"name": "prediction", "shape": [2], "datatype": "FP64", "data": numbers}]

    status, pinned = await call(app, f"/v2/models/{MODEL}/versions/2/infer", {"inputs": typed_tensors(BIG)}, "p")
    assert status == 200 and pinned["model_version"] == "2" and pinned["outputs"][0]["data"][0] > numbers[0] + 4000

    asked = {"inputs": typed_tensors(BIG), "outputs": [{"name": "probabilities"}]}
    status, body = await call(app, f"/v2/models/{MODEL}/infer", asked, to_champion)
    assert status == 422 and "this model is a regressor and has prediction" in body["error"]
    nan = {"inputs": [{**typed_tensors(BIG)[0], "data": [math.nan]}, *typed_tensors(BIG)[1:]]}
    status, body = await call(app, f"/v2/models/{MODEL}/infer", {**nan, "id": to_champion}, "")
    assert status == 422 and "feature 'size'" in body["error"]
