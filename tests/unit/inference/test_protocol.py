"""Open Inference Protocol V2 and KServe V1 decoding: every accepted form, every refusal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.inference.protocol import InputSchema, canary_bucket, decode_v1, decode_v2, encode_v2_outputs
from shared.errors import InvalidInput

SCHEMA = InputSchema(features=("a", "b", "c"), optional=frozenset({"c"}))
EXPECTED = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]},
        {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 3], [4, 5, 6]]}]},
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6]}]},
        {
            "inputs": [
                {"name": "c", "shape": [2], "datatype": "FP32", "data": [3, 6]},
                {"name": "a", "shape": [2, 1], "datatype": "INT32", "data": [[1], [4]]},
                {"name": "b", "shape": [2], "datatype": "FP64", "data": [2.0, 5.0]},
            ]
        },
    ],
)
def test_v2_accepted_forms(body: dict[str, Any]) -> None:
    request = decode_v2(body, SCHEMA)
    assert request.inputs.dtype == np.float32
    assert np.array_equal(request.inputs, EXPECTED)
    assert request.outputs == ("label", "probabilities")


def test_v2_id_and_output_selection() -> None:
    body = {
        "id": "req-1",
        "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
        "outputs": [{"name": "probabilities"}],
    }
    request = decode_v2(body, SCHEMA)
    assert request.request_id == "req-1" and request.outputs == ("probabilities",)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({"inputs": []}, "non-empty list"),
        ({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, "has 2 columns"),
        ({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "needs 6 values"),
        (
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}]},
            "not a number",
        ),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": [1, 2, 3]}]}, "must be strings"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BF32", "data": [1, 2, 3]}]}, "not supported"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "INT8", "data": [1, 300, 3]}]}, "out of range"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "UINT8", "data": [1, -1, 3]}]}, "out of range"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BOOL", "data": [1, 0, 1]}]}, "true or false"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32"}]}, "has no data"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, "x", 3]}]}, "got 'x'"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "INT64", "data": [1, 2.5, 3]}]}, "integers"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, None, 3]}]}, "got None"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, True, 3]}]}, "got True"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}, "missing feature"),
        (
            {
                "inputs": [
                    {"name": "zz", "shape": [1], "datatype": "FP32", "data": [1]},
                    {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
                ]
            },
            "'zz' is not a feature",
        ),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "id": 5}, "'id'"),
        (
            {
                "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
                "outputs": [{"name": "logits"}],
            },
            "unknown output",
        ),
        ({"inputs": [{"name": "input", "shape": [0, 3], "datatype": "FP32", "data": []}]}, "no rows"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 1e300, 3]}]}, "too large"),
    ],
)
def test_v2_refusals_say_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_v2(body, SCHEMA)


def test_nan_only_where_a_feature_may_be_missing() -> None:
    ok = decode_v1({"instances": [{"a": 1, "b": 2, "c": None}]}, SCHEMA)
    assert np.isnan(ok.inputs[0, 2])
    with pytest.raises(InvalidInput, match="row 0, feature 'a'"):
        decode_v2(
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [float("nan"), 1, 1]}]}, SCHEMA
        )
    with pytest.raises(InvalidInput, match="feature 'b': inf"):
        decode_v1({"instances": [[1, float("inf"), 1]]}, SCHEMA)


def test_v1_instances() -> None:
    request = decode_v1({"instances": [{"a": 1, "b": 2, "c": 3}, [4, 5, 6]]}, SCHEMA)
    assert np.array_equal(request.inputs, EXPECTED)
    for body, message in (
        ({"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, "unknown feature"),
        ({"instances": [{"a": 1, "c": 3}]}, "missing feature"),
        ({"instances": [[1, 2]]}, "has 2 values"),
        ({"instances": [{"a": "1", "b": 2, "c": 3}]}, "must be a number"),
        ({"instances": []}, "empty"),
        ({"rows": []}, "instances"),
    ):
        with pytest.raises(InvalidInput, match=message):
            decode_v1(body, SCHEMA)


def test_encode_outputs() -> None:
    proba = np.array([[0.25, 0.75]], dtype=np.float32)
    out, binary = encode_v2_outputs(np.array(["good"]), proba, ("label", "probabilities"))
    assert out[0] == {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["good"]}
    assert out[1] == {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.25, 0.75]}
    assert binary == b"", "JSON unless binary outputs are asked for"
    assert encode_v2_outputs(np.array([3]), proba, ("label",))[0][0]["datatype"] == "INT64"


def test_canary_bucket_is_stable_and_spread() -> None:
    buckets = [canary_bucket(f"id-{i}") for i in range(10000)]
    assert all(0 <= b < 1 for b in buckets)
    assert 0.08 < sum(b < 0.1 for b in buckets) / len(buckets) < 0.12
    assert canary_bucket("id-1") == buckets[1]


def test_prediction_messages_follow_the_event_contract() -> None:
    from datetime import UTC, datetime

    from services.inference.handlers import MAX_VALUES_PER_MESSAGE, Served, encode_predictions
    from services.inference.runtime import LoadedModel
    from shared import topics
    from shared.events import PredictionsLogged, decode_event

    def model(version: int) -> LoadedModel:
        return LoadedModel("credit", version, None, InputSchema(features=("a", "b")), ["bad", "good"], 0.0)  # type: ignore[arg-type]

    v3, v4 = model(3), model(4)
    at_time = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    at = at_time.timestamp()
    one = np.array([[1.5, np.nan]], dtype=np.float32)
    two = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    proba = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    served = [
        Served(v3, "canary", "id-1", one, np.array(["good"]), proba[:1], 0.4, at),
        Served(v3, "canary", "id-2", two, np.array(["bad", "good"]), proba, 0.6, at),
        Served(v4, "champion", "id-3", one, np.array(["bad"]), proba[:1], 0.5, at),
    ]
    messages = encode_predictions(served)
    assert [(key, rows) for key, _, rows in messages] == [(b"credit", 3), (b"credit", 1)]
    first = decode_event(topics.PREDICTIONS, messages[0][1])
    assert isinstance(first, PredictionsLogged) and (first.version, first.variant) == (3, "canary")
    assert first.inference_ids == ["id-1", "id-2:0", "id-2:1"]
    assert first.features[0] == [1.5, None], "NaN (missing) travels as null"
    assert first.labels[0] == "good" and first.probabilities[0] == [0.25, 0.75] and first.classes == ["bad", "good"]
    assert first.latency_ms[2] == 0.6 and first.predicted_at[2] == at_time

    wide = [Served(v3, "champion", f"w{i}", two, np.array([0, 1]), proba, 0.1, at) for i in range(20_000)]
    parts = encode_predictions(wide)
    assert sum(rows for _, _, rows in parts) == 40_000 and len(parts) > 1
    assert all(rows * 4 <= MAX_VALUES_PER_MESSAGE for _, _, rows in parts), "each message stays under the cap"


def test_a_request_too_wide_for_one_message_is_split_across_several() -> None:
    """1,000 rows of 300 features in one request: no message over the value cap or Kafka's 1 MB,
    every row once, with its id as if unsplit."""
    from services.inference.handlers import MAX_VALUES_PER_MESSAGE, Served, encode_predictions
    from services.inference.runtime import LoadedModel
    from shared import topics
    from shared.events import PredictionsLogged, decode_event

    features = tuple(f"f{i}" for i in range(300))
    loaded = LoadedModel("wide", 1, None, InputSchema(features=features), [0, 1], 0.0)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 300)).astype(np.float32)
    proba = np.full((1000, 2), 0.5, dtype=np.float32)
    one = Served(loaded, "champion", "big", X, np.zeros(1000, dtype=np.int64), proba, 3.0, 0.0)
    small = Served(loaded, "champion", "small", X[:1], np.zeros(1, dtype=np.int64), proba[:1], 1.0, 0.0)
    messages = encode_predictions([small, one])
    assert len(messages) > 1 and sum(rows for _, _, rows in messages) == 1001
    ids: list[str] = []
    for _, value, rows in messages:
        assert rows * 302 <= MAX_VALUES_PER_MESSAGE and len(value) < 1_000_000
        event = decode_event(topics.PREDICTIONS, value)
        assert isinstance(event, PredictionsLogged)
        ids += event.inference_ids
    assert ids == ["small", *(f"big:{i}" for i in range(1000))]


def test_a_wide_json_tensor_is_read_whole_and_a_bad_value_in_it_is_still_named() -> None:
    features = tuple(f"f{i}" for i in range(300))
    schema = InputSchema(features=features, optional=frozenset({"f7"}))
    X = np.random.default_rng(0).normal(size=(32, 300)).round(4)
    data: list[Any] = X.tolist()
    data[3][5] = 2  # an integer is a number
    body = {"inputs": [{"name": "input", "shape": [32, 300], "datatype": "FP32", "data": data}]}
    decoded = decode_v2(body, schema).inputs
    X[3, 5] = 2.0
    assert isinstance(decoded, np.ndarray) and np.array_equal(decoded, X.astype(np.float32))
    for bad, message in ((True, "got True"), ("1.5", "got '1.5'"), (None, "got None")):
        data[10][200] = bad
        with pytest.raises(InvalidInput, match=f"FP32 data must be numbers, {message}"):
            decode_v2(body, schema)
