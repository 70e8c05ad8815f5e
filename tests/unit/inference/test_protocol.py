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
    assert request.X.dtype == np.float32
    assert np.array_equal(request.X, EXPECTED)
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
        ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}, "BYTES"),
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
    assert np.isnan(ok.X[0, 2])
    with pytest.raises(InvalidInput, match="row 0, feature 'a'"):
        decode_v2(
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [float("nan"), 1, 1]}]}, SCHEMA
        )
    with pytest.raises(InvalidInput, match="feature 'b': inf"):
        decode_v1({"instances": [[1, float("inf"), 1]]}, SCHEMA)


def test_v1_instances() -> None:
    request = decode_v1({"instances": [{"a": 1, "b": 2, "c": 3}, [4, 5, 6]]}, SCHEMA)
    assert np.array_equal(request.X, EXPECTED)
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
    out = encode_v2_outputs(np.array(["good"]), proba, ("label", "probabilities"))
    assert out[0] == {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["good"]}
    assert out[1] == {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.25, 0.75]}
    assert encode_v2_outputs(np.array([3]), proba, ("label",))[0]["datatype"] == "INT64"


def test_canary_bucket_is_stable_and_spread() -> None:
    buckets = [canary_bucket(f"id-{i}") for i in range(10000)]
    assert all(0 <= b < 1 for b in buckets)
    assert 0.08 < sum(b < 0.1 for b in buckets) / len(buckets) < 0.12
    assert canary_bucket("id-1") == buckets[1]


def test_prediction_records_follow_the_event_contract() -> None:
    from datetime import UTC, datetime

    from services.inference.handlers import encode_prediction
    from services.inference.runtime import LoadedModel
    from shared import topics
    from shared.events import PredictionLogged, decode_event

    loaded = LoadedModel("credit", 3, None, InputSchema(features=("a", "b")), ["bad", "good"], 0.0)  # type: ignore[arg-type]
    raw = encode_prediction(
        loaded,
        "canary",
        "id-1",
        np.array([1.5, np.nan], dtype=np.float32),
        np.str_("good"),
        np.array([0.25, 0.75], dtype=np.float32),
        0.4,
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    event = decode_event(topics.PREDICTIONS, raw)
    assert isinstance(event, PredictionLogged)
    assert (event.model, event.version, event.variant, event.inference_id) == ("credit", 3, "canary", "id-1")
    assert event.features == {"a": 1.5, "b": None}
    assert event.outputs.label == "good" and event.outputs.probabilities == {"bad": 0.25, "good": 0.75}
    assert event.occurred_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
