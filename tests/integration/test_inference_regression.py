"""Regressors over real sockets, with the real broker: a typed regression model (numeric,
categorical and boolean features, one that may be missing) and an all-numeric one answer
``prediction`` in KServe V1, V2 JSON and a stock tritonclient's binary tensors alike; their
metadata lists that one FP64 output; asking for a classifier's outputs, a NaN feature, a wrong
shape or an unknown model is a 4xx; the prediction log carries the predicted numbers; and a
canary between two regression versions gets the requests its inference ids route to."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult

from services.inference.app import InferenceService
from services.inference.protocol import canary_bucket
from shared.bus import KafkaOptions
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore
from tests.integration.serving import inference_service
from tests.integration.test_inference import with_stock_client
from tests.integration.topic_reading import read_predictions
from tests.unit.inference import regression_model
from tests.unit.inference.regression_model import BIG, FEATURES, SMALL, TYPES, RegressionModel

pytestmark = pytest.mark.integration

DATATYPE = {"numeric": "FP32", "categorical": "BYTES", "boolean": "BOOL"}
PREDICTION_METADATA = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
MIDDLE: dict[str, Any] = {"size": 5.0, "age": 30.0, "city": "Rome", "garden": True}
Served = tuple[str, InferenceService, httpx.AsyncClient]


@pytest.fixture(scope="module")
def built() -> dict[str, RegressionModel]:
    """The typed regressor, one that prices 5,000 higher (a second version), the all-numeric one."""
    return {
        "typed": regression_model.build(),
        "shifted": regression_model.build(seed=1, offset=5000.0),
        "numeric": regression_model.build_numeric(),
    }


@pytest.fixture
async def served(
    options: KafkaOptions, store: FileStore, unique: str, tmp_path: Path, built: dict[str, RegressionModel]
) -> AsyncIterator[Served]:
    model = f"prices{unique}"
    apply_spec(store, regression_model.SPEC.format(name=model))
    version = regression_model.register(store, model, built["typed"])
    Registry(store).set_alias(model, "production", version, "test", "first")
    async with inference_service(options, store, tmp_path, model) as (service, client):
        yield model, service, client


@pytest.fixture
async def numeric(
    options: KafkaOptions, store: FileStore, unique: str, tmp_path: Path, built: dict[str, RegressionModel]
) -> AsyncIterator[Served]:
    model = f"demand{unique}"
    apply_spec(store, regression_model.NUMERIC_SPEC.format(name=model))
    version = regression_model.register(store, model, built["numeric"])
    Registry(store).set_alias(model, "production", version, "test", "first")
    async with inference_service(options, store, tmp_path, model) as (service, client):
        yield model, service, client


def v2_json(*rows: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One JSON tensor per feature (null where a value is missing)."""
    tensors = [
        {"name": f, "shape": [len(rows)], "datatype": DATATYPE[t], "data": [r.get(f) for r in rows]}
        for f, t in zip(FEATURES, TYPES, strict=True)
    ]
    return {"inputs": tensors, **extra}


def stock_inputs(*rows: dict[str, Any], binary: bool = True) -> list[InferInput]:
    """The rows as a tritonclient user builds them: BYTES from an object array, BOOL, FP32 (NaN
    where a number is missing)."""
    inputs = []
    for name, kind in zip(FEATURES, TYPES, strict=True):
        values = [r.get(name) for r in rows]
        if kind == "categorical":
            array = np.array([[v] for v in values], dtype=object)
        elif kind == "boolean":
            array = np.array([[v] for v in values], dtype=bool)
        else:
            array = np.array([[np.nan if v is None else v] for v in values], dtype=np.float32)
        inputs.append(
            InferInput(name, list(array.shape), DATATYPE[kind]).set_data_from_numpy(array, binary_data=binary)
        )
    return inputs


async def test_metadata_lists_the_one_output_prediction(served: Served) -> None:
    model, _, client = served
    for path in (f"/v2/models/{model}", f"/v2/models/{model}/versions/1"):
        meta = (await client.get(path)).json()
        assert meta["outputs"] == PREDICTION_METADATA, path
        assert meta["parameters"]["task"] == "regression" and meta["parameters"]["classes"] == []
        assert [i["datatype"] for i in meta["inputs"]] == ["FP32", "FP32", "BYTES", "BOOL"]

    def calls(stock: InferenceServerClient) -> dict[str, Any]:
        return stock.get_model_metadata(model)  # type: ignore[no-any-return]

    assert (await with_stock_client(client, calls))["outputs"] == PREDICTION_METADATA


async def test_v1_v2_json_and_tritonclient_binary_answer_the_same_numbers(
    served: Served, built: dict[str, RegressionModel]
) -> None:
    model, _, client = served
    rows: list[dict[str, Any]] = [BIG, SMALL, MIDDLE]  # SMALL's age is missing: allowed
    expected = built["typed"].expected(rows)

    r = await client.post(f"/v1/models/{model}:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == "1" and [set(p) for p in r.json()["predictions"]] == [{"prediction"}] * 3
    v1 = [p["prediction"] for p in r.json()["predictions"]]
    assert np.allclose(v1, expected, rtol=1e-4), (v1, expected)
    absent = {k: v for k, v in SMALL.items() if v is not None}
    r = await client.post(f"/v1/models/{model}:predict", json={"instances": [absent, list(BIG.values())]})
    assert r.status_code == 200 and [p["prediction"] for p in r.json()["predictions"]] == [v1[1], v1[0]], r.text

    r = await client.post(f"/v2/models/{model}/infer", json=v2_json(*rows, id="j1"))
    assert r.status_code == 200 and r.json()["id"] == "j1", r.text
    assert r.json()["outputs"] == [{"name": "prediction", "shape": [3], "datatype": "FP64", "data": v1}]

    def calls(stock: InferenceServerClient) -> list[InferResult]:
        return [
            stock.infer(model, stock_inputs(*rows), request_id="t1"),  # binary in, binary out (the defaults)
            stock.infer(
                model,
                stock_inputs(BIG, MIDDLE, binary=False),  # JSON has no NaN: the rows without a missing number
                outputs=[InferRequestedOutput("prediction", binary_data=False)],
            ),
            stock.infer(model, stock_inputs(*rows), model_version="1"),
        ]

    binary, as_json, pinned = await with_stock_client(client, calls)
    response = binary.get_response()
    assert response["id"] == "t1" and response["outputs"] == [
        {"name": "prediction", "datatype": "FP64", "shape": [3], "parameters": {"binary_data_size": 24}}
    ]
    numbers = binary.as_numpy("prediction")
    assert numbers.dtype == np.float64 and numbers.shape == (3,) and numbers.tolist() == v1
    assert as_json.get_response()["outputs"][0]["data"] == [v1[0], v1[2]]
    assert pinned.as_numpy("prediction").tolist() == v1 and pinned.get_response()["model_version"] == "1"


async def test_the_all_numeric_regressor_answers_alike(numeric: Served, built: dict[str, RegressionModel]) -> None:
    model, _, client = numeric
    X = np.array([[1.0, 2.0], [5.0, 0.5], [9.0, 9.0]], dtype=np.float32)
    expected = built["numeric"].pipeline.predict(X.astype(np.float64))
    assert np.allclose(expected, 3 * X[:, 0] - 2 * X[:, 1], atol=0.1), "the model learned its line"
    meta = (await client.get(f"/v2/models/{model}")).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}]
    assert meta["outputs"] == PREDICTION_METADATA

    r = await client.post(f"/v1/models/{model}:predict", json={"instances": [{"x1": 1, "x2": 2}, [5, 0.5], [9, 9]]})
    assert r.status_code == 200, r.text
    v1 = [p["prediction"] for p in r.json()["predictions"]]
    assert np.allclose(v1, expected, atol=1e-3)
    matrix = {"inputs": [{"name": "input", "shape": [3, 2], "datatype": "FP32", "data": X.tolist()}]}
    r = await client.post(f"/v2/models/{model}/infer", json=matrix)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == v1, r.text
    per_feature = {
        "inputs": [
            {"name": "x2", "shape": [3], "datatype": "FP64", "data": X[:, 1].tolist()},
            {"name": "x1", "shape": [3, 1], "datatype": "INT32", "data": [1, 5, 9]},
        ]
    }
    r = await client.post(f"/v2/models/{model}/infer", json=per_feature)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == v1, r.text

    def calls(stock: InferenceServerClient) -> InferResult:
        return stock.infer(model, [InferInput("input", [3, 2], "FP32").set_data_from_numpy(X)])

    result = await with_stock_client(client, calls)
    assert result.as_numpy("prediction").tolist() == v1


async def test_a_classifiers_outputs_and_bad_input_are_4xx(served: Served) -> None:
    model, _, client = served
    statuses: list[int] = []

    async def refused(path: str, body: dict[str, Any], status: int, message: str) -> None:
        r = await client.post(path, json=body)
        statuses.append(r.status_code)
        assert r.status_code == status and message in r.json()["error"], (path, body, r.text)

    infer, predict = f"/v2/models/{model}/infer", f"/v1/models/{model}:predict"
    for asked in ("label", "probabilities"):
        body = v2_json(BIG, outputs=[{"name": asked}])
        await refused(infer, body, 422, f"unknown output(s) {asked}; this model is a regressor and has prediction")
    await refused(infer, v2_json({**BIG, "size": None}), 422, "feature 'size' is missing")
    await refused(predict, {"instances": [{**BIG, "size": None}]}, 422, "instances[0].size is null")
    await refused(predict, {"instances": [{**BIG, "size": "big"}]}, 422, "instances[0].size must be a number")
    await refused(predict, {"instances": [[1.0, 2.0]]}, 422, "instances[0] has 2 values; the model takes 4")
    wrong_shape = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    await refused(infer, wrong_shape, 422, "one [N] or [N, 1] tensor per feature")
    short = v2_json(BIG)
    short["inputs"][0] = {**short["inputs"][0], "shape": [2]}
    await refused(infer, short, 422, "input 'size': shape [2] needs 2 values, data has 1")
    await refused("/v2/models/nope/infer", v2_json(BIG), 404, "not served here")
    await refused("/v1/models/nope:predict", {"instances": [BIG]}, 404, "not served here")
    assert (await client.get("/v2/models/nope")).status_code == 404

    def binary_refusals(stock: InferenceServerClient) -> list[str]:
        errors = []
        nan = stock_inputs(BIG)
        nan[0].set_data_from_numpy(np.array([[np.nan]], dtype=np.float32))
        for inputs, outputs in (
            (stock_inputs(BIG), [InferRequestedOutput("probabilities")]),
            (nan, None),
        ):
            try:
                stock.infer(model, inputs, outputs=outputs)
            except Exception as err:  # tritonclient raises InferenceServerException with the server's message
                errors.append(str(err))
        return errors

    errors = await with_stock_client(client, binary_refusals)
    assert len(errors) == 2
    assert "this model is a regressor and has prediction" in errors[0] and "feature 'size' is missing" in errors[1]
    assert all(400 <= s < 500 for s in statuses), "nothing 5xx"
    r = await client.post(infer, json=v2_json(BIG))
    assert r.status_code == 200, "the service carries on"


async def test_the_prediction_log_carries_the_predicted_numbers(served: Served, options: KafkaOptions) -> None:
    model, _, client = served
    r = await client.post(
        f"/v1/models/{model}:predict", json={"instances": [BIG, SMALL]}, headers={"X-Inference-Id": "v1"}
    )
    assert r.status_code == 200, r.text
    v1 = [p["prediction"] for p in r.json()["predictions"]]
    r = await client.post(f"/v2/models/{model}/infer", json=v2_json(MIDDLE, id="v2"))
    assert r.status_code == 200, r.text
    v2 = r.json()["outputs"][0]["data"][0]

    def calls(stock: InferenceServerClient) -> InferResult:
        return stock.infer(model, stock_inputs(SMALL), request_id="bin")

    binary = (await with_stock_client(client, calls)).as_numpy("prediction")[0]
    logged = {p.inference_id: p for p in await read_predictions(options, model, 4)}
    assert set(logged) == {"v1:0", "v1:1", "v2", "bin"}
    assert [logged["v1:0"].label, logged["v1:1"].label, logged["v2"].label] == [*v1, v2], "the numbers as answered"
    assert logged["bin"].label == binary == v1[1], "one row, one number, whatever the protocol"
    assert all(isinstance(p.label, float) and p.probabilities == {} for p in logged.values())
    assert logged["v1:1"].features == SMALL, "the missing age travels as null"
    assert logged["bin"].features == SMALL, "binary NaN is null too"
    assert {(p.version, p.variant) for p in logged.values()} == {(1, "champion")}


async def test_a_canary_between_two_regression_versions(
    served: Served, store: FileStore, options: KafkaOptions, built: dict[str, RegressionModel]
) -> None:
    model, service, client = served
    candidate = regression_model.register(store, model, built["shifted"])
    Registry(store).set_alias(model, "canary", candidate, "test", "canary at 50%")
    await service.handlers.refresh(model)
    meta = (await client.get(f"/v2/models/{model}")).json()
    assert meta["parameters"]["canary"] == candidate and meta["parameters"]["canary_traffic"] == 0.5

    ids = [f"req-{i}" for i in range(120)]
    answers = {}
    for inference_id in ids:
        r = await client.post(f"/v2/models/{model}/infer", json=v2_json(MIDDLE, id=inference_id))
        assert r.status_code == 200, r.text
        answers[inference_id] = r.json()
    for inference_id, body in answers.items():  # each id routes as its bucket says, and answers with its version
        to_canary = canary_bucket(inference_id) < 0.5
        assert body["parameters"]["variant"] == ("canary" if to_canary else "champion")
        assert body["model_version"] == (str(candidate) if to_canary else "1")
    by_version = {b["model_version"]: b["outputs"][0]["data"][0] for b in answers.values()}
    assert set(by_version) == {"1", str(candidate)}
    assert by_version[str(candidate)] - by_version["1"] > 4000, "the canary prices 5,000 higher"

    logged = await read_predictions(options, model, len(ids))
    for row in logged:
        assert row.variant == ("canary" if row.version == candidate else "champion")
        assert math.isclose(row.label, by_version[str(row.version)])  # type: ignore[arg-type]
    assert {row.inference_id for row in logged} == set(ids)
