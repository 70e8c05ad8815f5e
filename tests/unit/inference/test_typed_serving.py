"""Serving a COLUMNS-layout model (typed features) from a FileStore registry: loading, warm-up,
answering, unseen categories, the prediction log's typed rows, and the HTTP adapter reading a
request against the version that answers it. The prediction log is the only fake."""

from __future__ import annotations

import math
import shutil
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from services.inference.handlers import InferenceHandlers, Served, encode_predictions, typed_rows
from services.inference.metrics import InferenceMetrics
from services.inference.predict_routes import PredictRoutes
from services.inference.protocol import canary_bucket, decode_v1, decode_v2
from services.inference.runtime import load_version
from shared import topics
from shared.errors import CorruptArtifact, InvalidInput
from shared.events import PredictionsLogged, decode_as, decode_event
from shared.registry import Registry
from shared.spec import SpecCatalog, apply_spec
from shared.store import FileStore
from tests.unit.inference import typed_model
from tests.unit.inference.test_handlers import RecordingLog
from tests.unit.inference.typed_model import HIGH, LOW, OPTIONAL

MODEL = "typed"
UNSEEN = "driftloop_inference_unseen_categories_total"


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1: the typed model (COLUMNS); v2: an all-numeric one (MATRIX); v3: the typed graph behind a
    card that claims the MATRIX layout."""
    store = FileStore(tmp_path_factory.mktemp("typed") / "store")
    apply_spec(store, typed_model.SPEC.format(name=MODEL))
    typed = typed_model.build()
    assert typed_model.register(store, MODEL, typed) == 1
    assert typed_model.register(store, MODEL, typed_model.build_numeric(), typed_model.NUMERIC_SCHEMA) == 2
    lying = typed_model.card_schema(typed).model_copy(update={"layout": "matrix"})
    assert typed_model.register(store, MODEL, typed, lying) == 3
    return Path(store.root)


@pytest.fixture
def store(registered: Path, tmp_path: Path) -> FileStore:
    return FileStore(shutil.copytree(registered, tmp_path / "store"))


class Serving:
    def __init__(self, store: FileStore) -> None:
        self.registry = Registry(store)
        self.log = RecordingLog()
        self.metrics_registry = CollectorRegistry()
        self.metrics = InferenceMetrics.create(self.metrics_registry)
        self.handlers = InferenceHandlers(self.registry, SpecCatalog(store, refresh_s=60.0), self.log, self.metrics)  # type: ignore[arg-type]

    async def serve(self, **aliases: int | None) -> None:
        for alias, version in aliases.items():
            self.registry.set_alias(MODEL, alias, version, "test", alias)  # type: ignore[arg-type]
        await self.handlers.refresh(MODEL)

    def unseen(self, feature: str) -> float | None:
        return self.metrics_registry.get_sample_value(UNSEEN, {"model": MODEL, "feature": feature})


def test_a_columns_model_loads_with_its_card_schema_and_the_specs_optional_features(store: FileStore) -> None:
    loaded = load_version(Registry(store), MODEL, 1, OPTIONAL)
    schema = loaded.schema
    assert schema.layout == "columns" and schema.features == typed_model.FEATURES and schema.types == typed_model.TYPES
    assert schema.optional == OPTIONAL
    assert schema.categories == {"city": frozenset({"Oslo", "Rome", "Lima"}), "plan": frozenset({"basic", "gold"})}
    labels, proba = loaded.predict(decode_v1({"instances": [HIGH, LOW]}, schema).inputs)
    assert labels.tolist() == [1, 0] and proba.shape == (2, 2)

    numeric = load_version(Registry(store), MODEL, 2)
    assert numeric.schema.layout == "matrix" and numeric.schema.types == () and numeric.schema.categories == {}
    assert numeric.predict(np.array([[60.0, 1.0]], np.float32))[0].tolist() == [1]


def test_a_card_whose_layout_does_not_match_the_graph_is_refused_at_load(store: FileStore) -> None:
    with pytest.raises(CorruptArtifact, match=r"inputs \['age', 'city', 'income', 'member', 'plan'\] do not match"):
        load_version(Registry(store), MODEL, 3)


def test_inputs_read_for_the_other_layout_are_a_422_not_a_crash(store: FileStore) -> None:
    typed = load_version(Registry(store), MODEL, 1)
    numeric = load_version(Registry(store), MODEL, 2)
    with pytest.raises(InvalidInput, match="takes one input per feature"):
        typed.predict(np.zeros((1, 5), np.float32))
    with pytest.raises(InvalidInput, match="takes one matrix"):
        numeric.predict(decode_v1({"instances": [HIGH]}, typed.schema).inputs)


async def test_answers_count_unseen_categories_and_queue_typed_inputs(store: FileStore) -> None:
    serving = Serving(store)
    await serving.serve(production=1)
    schema = serving.handlers.model_slots(MODEL).champion.schema  # type: ignore[union-attr]
    assert schema.optional == OPTIONAL, "allow_missing comes from the spec"

    paris = {**HIGH, "city": "Paris", "plan": "platinum"}
    request = decode_v1({"instances": [HIGH, LOW, paris, {**LOW, "city": "Rome"}]}, schema)
    answer = serving.handlers.predict(MODEL, request, "abc")
    assert answer.labels.tolist()[:2] == [1, 0] and answer.version == 1
    assert serving.unseen("city") == 1 and serving.unseen("plan") == 1, "Paris and platinum, once each"
    serving.handlers.predict(MODEL, decode_v1({"instances": [paris]}, schema), "abd")
    assert serving.unseen("city") == 2
    serving.handlers.predict(MODEL, decode_v1({"instances": [HIGH]}, schema), "abe")
    assert serving.unseen("city") == 2 and serving.unseen("member") is None

    first = serving.log.items[0]
    assert isinstance(first, Served) and first.inputs is request.inputs and first.row_ids()[0] == "abc:0"


async def test_the_shadow_of_another_layout_fails_on_its_own(store: FileStore) -> None:
    serving = Serving(store)
    await serving.serve(production=1, shadow=2)
    request = decode_v1({"instances": [HIGH]}, serving.handlers.model_slots(MODEL).champion.schema)  # type: ignore[union-attr]
    answer = serving.handlers.predict(MODEL, request, "s1")
    serving.handlers.shadow(MODEL, request, answer.inference_id)  # v2 takes a matrix: logged, not raised
    assert [item.variant for item in serving.log.items] == ["champion"]


# --- the prediction log ----------------------------------------------------------------------------


async def test_the_prediction_log_carries_typed_values_the_monitor_decodes(store: FileStore) -> None:
    serving = Serving(store)
    await serving.serve(production=1)
    schema = serving.handlers.model_slots(MODEL).champion.schema  # type: ignore[union-attr]
    odd = {"age": 0.1, "income": 2.5, "city": 7, "plan": "basic", "member": True}
    serving.handlers.predict(MODEL, decode_v1({"instances": [HIGH, LOW]}, schema), "two")
    serving.handlers.predict(MODEL, decode_v1({"instances": [odd]}, schema), "one")

    [(key, value, rows)] = encode_predictions(serving.log.items)
    assert (key, rows) == (MODEL.encode(), 3)
    event = decode_as(PredictionsLogged, value)
    assert event == decode_event(topics.PREDICTIONS, value)
    assert event.feature_names == list(typed_model.FEATURES) and event.inference_ids == ["two:0", "two:1", "one"]
    assert event.features == [
        [30.0, 1000.0, "Oslo", "gold", False],
        [20.0, None, "Lima", None, False],
        [0.1, 2.5, "7", "basic", True],
    ]
    raw = orjson.loads(value)["features"]
    assert raw[2][0] == 0.1, "float32 values written as the float32 they are (0.1, not 0.10000000149011612)"
    assert [type(v) for v in raw[1]] == [float, type(None), str, type(None), bool]
    assert event.labels == [1, 0, 0] and len(event.probabilities[0]) == 2


def test_typed_rows_of_several_requests_and_a_split_one(store: FileStore) -> None:
    loaded = load_version(Registry(store), MODEL, 1, OPTIONAL)
    many = decode_v1({"instances": [HIGH, LOW] * 30_000}, loaded.schema)  # 300,000 feature values: split
    labels, proba = loaded.predict(many.inputs)
    served = Served(loaded, "champion", "big", many.inputs, labels, proba, 1.0, 0.0)
    messages = encode_predictions([served])
    assert len(messages) > 1 and sum(rows for _, _, rows in messages) == 60_000
    events = [decode_as(PredictionsLogged, value) for _, value, _ in messages]
    rows = [row for event in events for row in event.features]
    assert rows[:2] == [[30.0, 1000.0, "Oslo", "gold", False], [20.0, None, "Lima", None, False]]
    assert rows[-1] == rows[1] and len({len(e.features[0]) for e in events}) == 1
    ids = [i for event in events for i in event.inference_ids]
    assert ids[0] == "big:0" and ids[-1] == "big:59999" and len(set(ids)) == 60_000

    def as_json(rows: Any) -> Any:  # numbers stay float32 scalars (NaN among them) until orjson writes them
        return orjson.loads(orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY))

    parts = [decode_v1({"instances": [row]}, loaded.schema).inputs for row in (HIGH, LOW)]
    assert as_json(typed_rows(parts, loaded.schema)) == [  # type: ignore[arg-type]
        [30.0, 1000.0, "Oslo", "gold", False],
        [20.0, None, "Lima", None, False],
    ]
    missing = {
        "age": np.array([[math.nan]], np.float32),
        "income": np.array([[1.0]], np.float32),
        "city": np.array([[""]], object),
        "plan": np.array([["x"]], object),
        "member": np.array([[math.nan]], np.float32),
    }
    assert as_json(typed_rows([missing], loaded.schema)) == [[None, 1.0, None, "x", None]]


# --- the HTTP adapter: routed first, then read against the answering version -----------------------


async def call(app: PredictRoutes, path: str, body: dict[str, Any], inference_id: str) -> tuple[int, Any]:
    """One request through the ASGI app, as uvicorn hands it over."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json"), (b"x-inference-id", inference_id.encode())],
    }
    messages = [{"type": "http.request", "body": orjson.dumps(body), "more_body": False}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not a prediction route")

    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


async def test_a_request_is_read_against_the_version_that_answers_it(store: FileStore) -> None:
    """An all-numeric champion (v2) and a typed canary (v1) at 50%: each request is decoded for the
    version its inference id routes to, so typed instances reach the canary and a mismatch is a 422."""
    serving = Serving(store)
    await serving.serve(production=2, canary=1)
    app = PredictRoutes(None, serving.handlers, serving.metrics, 1 << 20)  # type: ignore[arg-type]
    to_canary = next(f"id-{i}" for i in range(100) if canary_bucket(f"id-{i}") < 0.5)
    to_champion = next(f"id-{i}" for i in range(100) if canary_bucket(f"id-{i}") >= 0.5)

    status, body = await call(app, f"/v1/models/{MODEL}:predict", {"instances": [HIGH]}, to_canary)
    assert (status, body["model_version"], body["predictions"][0]["label"]) == (200, "1", 1)
    status, body = await call(
        app, f"/v1/models/{MODEL}:predict", {"instances": [{"age": 60, "income": 1}]}, to_champion
    )
    assert (status, body["model_version"]) == (200, "2")
    status, body = await call(app, f"/v1/models/{MODEL}:predict", {"instances": [HIGH]}, to_champion)
    assert status == 422 and "unknown feature(s) city, plan, member" in body["error"]

    v2 = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [60, 1]}]}
    status, body = await call(app, f"/v2/models/{MODEL}/infer", v2, to_canary)
    assert status == 422 and "one [N] or [N, 1] tensor per feature" in body["error"]
    status, body = await call(app, f"/v2/models/{MODEL}/infer", {**v2, "id": to_champion}, "")
    assert (status, body["model_version"], body["id"]) == (200, "2", to_champion), "the body's id routes too"
    status, body = await call(app, f"/v2/models/{MODEL}/versions/1/infer", {"inputs": typed_tensors(HIGH)}, "p")
    assert (status, body["model_version"], body["outputs"][0]["data"]) == (200, "1", [1])


def typed_tensors(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One JSON V2 tensor per feature of the typed model for one row."""
    datatypes = {"numeric": "FP32", "categorical": "BYTES", "boolean": "BOOL"}
    return [
        {"name": f, "shape": [1, 1], "datatype": datatypes[t], "data": [[row[f]]]}
        for f, t in zip(typed_model.FEATURES, typed_model.TYPES, strict=True)
    ]


def test_v2_json_tensors_of_the_typed_model(store: FileStore) -> None:
    loaded = load_version(Registry(store), MODEL, 1, OPTIONAL)
    request = decode_v2({"inputs": typed_tensors(HIGH) + []}, loaded.schema)
    assert loaded.predict(request.inputs)[0].tolist() == [1]
    low = decode_v2({"inputs": typed_tensors(LOW)}, loaded.schema)  # null income and plan: missing, allowed
    assert loaded.predict(low.inputs)[0].tolist() == [0]
