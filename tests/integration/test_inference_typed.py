"""Typed features over real sockets, with the real broker: a COLUMNS-layout model (numeric,
categorical and boolean inputs) answered in KServe V1, V2 JSON and a stock tritonclient's binary
tensors alike; its metadata; unseen categories; every refusal a 422 naming the feature; and the
prediction log carrying the typed values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult

from services.inference.app import InferenceService
from shared.bus import KafkaOptions
from shared.registry import Registry
from shared.spec import apply_spec
from shared.store import FileStore
from tests.integration.serving import inference_service
from tests.integration.test_inference import with_stock_client
from tests.integration.topic_reading import read_predictions
from tests.unit.inference import typed_model
from tests.unit.inference.typed_model import FEATURES, HIGH, LOW, TYPES, TypedModel

pytestmark = pytest.mark.integration

UNSEEN = "driftloop_inference_unseen_categories_total"
LOW_INCOME = {**LOW, "income": 1000.0}
DATATYPE = {"numeric": "FP32", "categorical": "BYTES", "boolean": "BOOL"}


@pytest.fixture(scope="module")
def built() -> TypedModel:
    """The typed model, fitted and exported once for the module."""
    return typed_model.build()


@pytest.fixture
async def served(
    options: KafkaOptions, store: FileStore, unique: str, tmp_path: Path, built: TypedModel
) -> AsyncIterator[tuple[str, InferenceService, httpx.AsyncClient]]:
    model = f"typed{unique}"
    apply_spec(store, typed_model.SPEC.format(name=model))
    version = typed_model.register(store, model, built)
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
    """The rows as a tritonclient user builds them: BYTES from an object array, BOOL, FP32 (NaN and
    "" where a value is missing)."""
    inputs = []
    for name, kind in zip(FEATURES, TYPES, strict=True):
        values = [r.get(name) for r in rows]
        if kind == "categorical":
            array = np.array([["" if v is None else v] for v in values], dtype=object)
        elif kind == "boolean":
            array = np.array([[v] for v in values], dtype=bool)
        else:
            array = np.array([[np.nan if v is None else v] for v in values], dtype=np.float32)
        inputs.append(
            InferInput(name, list(array.shape), DATATYPE[kind]).set_data_from_numpy(array, binary_data=binary)
        )
    return inputs


async def test_metadata_gives_each_input_its_datatype(served: tuple[str, InferenceService, httpx.AsyncClient]) -> None:
    model, _, client = served
    for path in (f"/v2/models/{model}", f"/v2/models/{model}/versions/1"):
        meta = (await client.get(path)).json()
        assert meta["inputs"] == [
            {"name": "age", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "income", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "plan", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "member", "datatype": "BOOL", "shape": [-1, 1]},
        ], path
        assert meta["parameters"]["feature_types"] == list(TYPES) and meta["parameters"]["layout"] == "columns"
        assert meta["parameters"]["optional"] == ["income", "plan"]


async def test_v1_v2_json_and_tritonclient_binary_get_one_answer(
    served: tuple[str, InferenceService, httpx.AsyncClient],
) -> None:
    model, _, client = served
    r = await client.post(f"/v1/models/{model}:predict", json={"instances": [HIGH, LOW]})
    assert r.status_code == 200, r.text
    v1 = r.json()["predictions"]
    assert [p["label"] for p in v1] == [1, 0]
    absent = {k: v for k, v in LOW.items() if v is not None}  # absent = missing, for allow_missing features
    r = await client.post(f"/v1/models/{model}:predict", json={"instances": [absent, list(HIGH.values())]})
    assert r.status_code == 200 and [p["label"] for p in r.json()["predictions"]] == [0, 1], r.text

    r = await client.post(f"/v2/models/{model}/infer", json=v2_json(HIGH, LOW, id="j1"))
    assert r.status_code == 200, r.text
    label, proba = r.json()["outputs"]
    assert label["data"] == [1, 0] and r.json()["id"] == "j1"
    expected = np.array(proba["data"], dtype=np.float32).reshape(2, 2)
    assert np.allclose(expected[:, 1], [p["probabilities"]["1"] for p in v1])

    def calls(stock: InferenceServerClient) -> tuple[dict[str, Any], list[InferResult]]:
        meta = stock.get_model_metadata(model)
        built = [  # inputs built from the metadata, as generic clients do
            InferInput(i["name"], [1, 1], i["datatype"]).set_data_from_numpy(
                np.array([[HIGH[i["name"]]]], dtype={"BYTES": object, "BOOL": bool, "FP32": np.float32}[i["datatype"]])
            )
            for i in meta["inputs"]
        ]
        return (
            meta,
            [
                stock.infer(model, stock_inputs(HIGH, LOW), request_id="t1"),  # binary in, binary out
                # JSON has no NaN (tritonclient would write one): a missing number is binary NaN or JSON null
                stock.infer(
                    model, stock_inputs(HIGH, LOW_INCOME, binary=False), outputs=[InferRequestedOutput("label")]
                ),
                stock.infer(model, stock_inputs(HIGH, LOW)[:2] + stock_inputs(HIGH, LOW, binary=False)[2:]),  # mixed
                stock.infer(model, built, model_version="1"),
            ],
        )

    meta, (binary, as_json, mixed, from_metadata) = await with_stock_client(client, calls)
    assert [i["datatype"] for i in meta["inputs"]] == ["FP32", "FP32", "BYTES", "BYTES", "BOOL"]
    response = binary.get_response()
    assert response["id"] == "t1" and all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert binary.as_numpy("label").tolist() == [1, 0] and np.array_equal(binary.as_numpy("probabilities"), expected)
    assert as_json.as_numpy("label").tolist() == [1, 0] and mixed.as_numpy("label").tolist() == [1, 0]
    assert from_metadata.as_numpy("label").tolist() == [1]


async def test_an_unseen_category_is_answered_and_counted(
    served: tuple[str, InferenceService, httpx.AsyncClient],
) -> None:
    model, service, client = served

    def unseen(feature: str) -> float | None:
        return service.registry.get_sample_value(UNSEEN, {"model": model, "feature": feature})

    assert unseen("city") is None
    r = await client.post(f"/v1/models/{model}:predict", json={"instances": [{**LOW, "city": "Paris"}]})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == 0, r.text
    r = await client.post(f"/v2/models/{model}/infer", json=v2_json({**HIGH, "city": "Paris", "plan": "platinum"}))
    assert r.status_code == 200, r.text
    assert unseen("city") == 2 and unseen("plan") == 1
    text = (await client.get("/metrics")).text
    assert f'{UNSEEN}{{feature="city",model="{model}"}} 2.0' in text


def tensor(name: str, datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "shape": [len(data)], "datatype": datatype, "data": data}


def replaced(body: dict[str, Any], name: str, new: dict[str, Any] | None) -> dict[str, Any]:
    """``body`` with input ``name`` replaced by ``new`` (dropped when None)."""
    inputs = [new if i["name"] == name else i for i in body["inputs"]]
    return {**body, "inputs": [i for i in inputs if i is not None]}


ONE = v2_json(HIGH)
V1_REFUSALS: list[tuple[dict[str, Any], str]] = [  # (instance changes, message)
    ({"age": "thirty"}, "instances[0].age must be a number (numeric feature), got 'thirty'"),
    ({"city": 2.5}, "instances[0].city must be a string (categorical feature"),
    ({"city": False}, "instances[0].city must be a string"),
    ({"member": "yes"}, "instances[0].member must be true or false (boolean feature), got 'yes'"),
    ({"member": 1}, "instances[0].member must be true or false"),
    ({"age": None}, "instances[0].age is null: feature 'age' does not allow missing values"),
    ({"city": None}, "instances[0].city is null: feature 'city' does not allow missing values"),
    ({"city": ""}, "instances[0].city is an empty category: feature 'city' does not allow missing"),
    ({"member": None}, "instances[0].member is null: feature 'member' does not allow missing values"),
    ({"zip": "0150"}, "instances[0]: unknown feature(s) zip"),
]
V2_REFUSALS = [  # (body, message)
    (
        replaced(ONE, "city", tensor("city", "FP32", [1.0])),
        "input 'city': feature 'city' is categorical; send it as BYTES",
    ),
    (replaced(ONE, "city", tensor("city", "BYTES", [1.5])), "feature 'city' is categorical; its data must be strings"),
    (
        replaced(ONE, "member", tensor("member", "INT8", [1])),
        "input 'member': feature 'member' is boolean; send it as BOOL",
    ),
    (replaced(ONE, "member", tensor("member", "BOOL", ["true"])), "input 'member': BOOL data must be true or false"),
    (replaced(ONE, "age", tensor("age", "BYTES", ["thirty"])), "input 'age': BYTES element 'thirty' is not a number"),
    (replaced(ONE, "age", tensor("age", "FP32", ["30"])), "input 'age': FP32 data must be numbers"),
    (replaced(ONE, "age", tensor("age", "FP32", [None])), "feature 'age' is missing; 'age' does not allow missing"),
    (replaced(ONE, "city", tensor("city", "BYTES", [""])), "feature 'city' is missing"),
    (replaced(ONE, "member", tensor("member", "BOOL", [None])), "feature 'member' is missing"),
    (replaced(ONE, "member", None), "missing feature(s): member"),
    ({"inputs": [*ONE["inputs"], tensor("zip", "BYTES", ["0150"])]}, "input 'zip' is not a feature of this model"),
    (
        {"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]},
        "one [N] or [N, 1] tensor per feature, not one [N, F] tensor",
    ),
]


async def test_every_refusal_is_a_422_naming_the_feature(
    served: tuple[str, InferenceService, httpx.AsyncClient],
) -> None:
    model, _, client = served
    for change, message in V1_REFUSALS:
        r = await client.post(f"/v1/models/{model}:predict", json={"instances": [{**HIGH, **change}]})
        assert r.status_code == 422 and message in r.json()["error"], (message, r.text)
    for body, message in V2_REFUSALS:
        r = await client.post(f"/v2/models/{model}/infer", json=body)
        assert r.status_code == 422 and message in r.json()["error"], (message, r.text)

    def binary_refusals(stock: InferenceServerClient) -> list[str]:
        errors = []
        wrong = stock_inputs(HIGH)
        wrong[4] = InferInput("member", [1, 1], "INT32").set_data_from_numpy(np.array([[1]], dtype=np.int32))
        missing = stock_inputs(HIGH)
        missing[0].set_data_from_numpy(np.array([[np.nan]], dtype=np.float32))
        for inputs in (wrong, missing, stock_inputs(HIGH)[:4]):
            try:
                stock.infer(model, inputs)
            except Exception as err:  # tritonclient raises InferenceServerException with the server's message
                errors.append(str(err))
        return errors

    errors = await with_stock_client(client, binary_refusals)
    assert len(errors) == 3
    assert "feature 'member' is boolean; send it as BOOL, not INT32" in errors[0]
    assert "feature 'age' is missing" in errors[1] and "missing feature(s): member" in errors[2]
    r = await client.post(f"/v2/models/{model}/infer", json=ONE)
    assert r.status_code == 200, "the service carries on"


async def test_the_prediction_log_carries_the_typed_values(
    served: tuple[str, InferenceService, httpx.AsyncClient], options: KafkaOptions
) -> None:
    model, _, client = served
    r = await client.post(
        f"/v1/models/{model}:predict", json={"instances": [HIGH, LOW]}, headers={"X-Inference-Id": "v1"}
    )
    assert r.status_code == 200
    odd = {"age": 0.1, "income": 2.5, "city": 7, "plan": "basic", "member": True}  # an integer category
    r = await client.post(f"/v2/models/{model}/infer", json=v2_json(odd, id="v2"))
    assert r.status_code == 200, r.text

    def calls(stock: InferenceServerClient) -> InferResult:
        return stock.infer(model, stock_inputs({**LOW, "city": "Rome"}), request_id="bin")

    await with_stock_client(client, calls)
    logged = {p.inference_id: p for p in await read_predictions(options, model, 4)}
    assert logged["v1:0"].features == HIGH
    assert logged["v1:1"].features == LOW, "missing values travel as null"
    assert logged["v2"].features == {"age": 0.1, "income": 2.5, "city": "7", "plan": "basic", "member": True}
    assert logged["bin"].features == {**LOW, "city": "Rome"}, "binary NaN and empty BYTES are null too"
    assert isinstance(logged["bin"].features["member"], bool) and logged["v1:0"].label == 1
