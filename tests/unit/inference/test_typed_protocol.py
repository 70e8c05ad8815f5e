"""Typed features (COLUMNS layout) in V1 and V2 requests: every accepted form, every refusal,
unseen categories, and the typed rows of the prediction log."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from services.inference.binary import split_body, write_bytes
from services.inference.protocol import InputSchema, decode_v1, decode_v2, unseen_categories
from shared.errors import InvalidInput, MalformedRequest

SCHEMA = InputSchema(
    features=("age", "city", "member", "income", "plan", "vip"),
    types=("numeric", "categorical", "boolean", "numeric", "categorical", "boolean"),
    layout="columns",
    optional=frozenset({"income", "plan", "vip"}),
    categories={"city": frozenset({"Oslo", "Rome", "3"}), "plan": frozenset({"basic", "gold"})},
)
"""Each type twice: once required, once allowed to be missing."""


def feeds_as_rows(inputs: Any) -> list[list[Any]]:
    """The decoded feeds as event-like rows (NaN and "" as None), for comparing."""
    assert isinstance(inputs, dict) and sorted(inputs) == sorted(SCHEMA.features)  # one feed per feature
    columns = []
    for name, kind in zip(SCHEMA.features, SCHEMA.kinds, strict=True):
        feed = inputs[name]
        assert feed.ndim == 2 and feed.shape[1] == 1, name
        if kind == "categorical":
            assert feed.dtype == object and all(isinstance(v, str) for v in feed.ravel()), name
            columns.append([v or None for v in feed.ravel()])
        else:
            assert feed.dtype == np.float32, name
            values = [None if math.isnan(v) else v for v in feed.ravel().tolist()]
            columns.append(values if kind == "numeric" else [None if v is None else v == 1.0 for v in values])
    return [list(row) for row in zip(*columns, strict=True)]


ROWS = [
    [30.5, "Oslo", True, 1000.0, "gold", False],
    [41.0, "3", False, None, None, None],
]


def tensor(name: str, datatype: str, data: list[Any], shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


def v2_body(**overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The two ROWS as one JSON tensor per feature; ``overrides`` replace (or with None, drop) some."""
    tensors = {
        "age": tensor("age", "FP32", [30.5, 41]),
        "city": tensor("city", "BYTES", ["Oslo", 3]),  # an integer is read as its text
        "member": tensor("member", "BOOL", [[True], [False]], [2, 1]),
        "income": tensor("income", "FP64", [1000, None]),  # JSON null: missing
        "plan": tensor("plan", "BYTES", ["gold", ""]),  # "": missing
        "vip": tensor("vip", "BOOL", [False, None]),
    }
    for name, replacement in overrides.items():
        if replacement is None:
            del tensors[name]
        else:
            tensors[name] = replacement
    return {"inputs": list(tensors.values())}


# --- V1 ------------------------------------------------------------------------------------


def test_v1_instances_carry_strings_booleans_numbers_and_null() -> None:
    objects = [
        {"age": 30.5, "city": "Oslo", "member": True, "income": 1000, "plan": "gold", "vip": False},
        {"age": 41, "city": 3, "member": False, "income": None, "plan": ""},  # vip absent: allowed to be missing
    ]
    request = decode_v1({"instances": objects}, SCHEMA)
    assert feeds_as_rows(request.inputs) == ROWS and request.rows == 2

    lists = decode_v1(
        {"instances": [[30.5, "Oslo", True, 1000, "gold", False], [41, 3.0, False, None, None, None]]}, SCHEMA
    )
    assert feeds_as_rows(lists.inputs) == ROWS, "list-form rows in feature order"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"age": "30"}, r"instances\[0\]\.age must be a number \(numeric feature\), got '30'"),
        ({"age": True}, r"instances\[0\]\.age must be a number"),
        ({"income": "high"}, r"instances\[0\]\.income must be a number"),
        ({"city": 2.5}, r"instances\[0\]\.city must be a string \(categorical feature"),
        ({"city": True}, r"instances\[0\]\.city must be a string"),
        ({"city": ["Oslo"]}, r"instances\[0\]\.city must be a string"),
        ({"member": 1}, r"instances\[0\]\.member must be true or false \(boolean feature\), got 1"),
        ({"member": "true"}, r"instances\[0\]\.member must be true or false"),
        ({"vip": 0}, r"instances\[0\]\.vip must be true or false"),
        ({"age": None}, r"instances\[0\]\.age is null: feature 'age' does not allow missing values"),
        ({"city": None}, r"instances\[0\]\.city is null: feature 'city' does not allow missing"),
        ({"city": ""}, r"instances\[0\]\.city is an empty category: feature 'city' does not allow missing"),
        ({"member": None}, r"instances\[0\]\.member is null: feature 'member' does not allow missing"),
        ({"age": 1e39}, r"feature 'age': a value is too large for a 32-bit float"),
        ({"zip": "0150"}, r"instances\[0\]: unknown feature\(s\) zip"),
    ],
)
def test_v1_refusals_name_the_feature(change: dict[str, Any], message: str) -> None:
    instance = {"age": 30, "city": "Oslo", "member": True, **change}
    with pytest.raises(InvalidInput, match=message) as caught:
        decode_v1({"instances": [instance]}, SCHEMA)
    assert caught.value.status_code == 422


def test_v1_absent_features_that_may_not_be_missing() -> None:
    with pytest.raises(InvalidInput, match=r"instances\[0\]: missing feature\(s\) city, member"):
        decode_v1({"instances": [{"age": 30}]}, SCHEMA)
    with pytest.raises(InvalidInput, match=r"instances\[0\] has 2 values; the model takes 6"):
        decode_v1({"instances": [[30, "Oslo"]]}, SCHEMA)
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.member is null"):
        decode_v1({"instances": [[30, "Oslo", None, None, None, None]]}, SCHEMA)


# --- V2 JSON -------------------------------------------------------------------------------


def test_v2_json_one_tensor_per_feature() -> None:
    request = decode_v2(v2_body(), SCHEMA)
    assert feeds_as_rows(request.inputs) == ROWS
    shuffled = {"inputs": list(reversed(v2_body()["inputs"])), "id": "r1"}
    assert feeds_as_rows(decode_v2(shuffled, SCHEMA).inputs) == ROWS and decode_v2(shuffled, SCHEMA).request_id == "r1"


@pytest.mark.parametrize(
    "override",
    [
        {"age": tensor("age", "INT32", [[30], [41]], [2, 1])},
        {"age": tensor("age", "BYTES", ["30.5", "41"])},  # numbers as text, as for MATRIX models
        {"city": tensor("city", "INT64", [9, 3])},  # integer codes are categories read as text
        {"income": tensor("income", "BYTES", ["1000", ""])},
        {"plan": tensor("plan", "BYTES", ["gold", None])},
    ],
)
def test_v2_json_other_datatypes_that_fit(override: dict[str, Any]) -> None:
    rows = feeds_as_rows(decode_v2(v2_body(**override), SCHEMA).inputs)
    expected = [list(r) for r in ROWS]
    if "city" in override:
        expected[0][1] = "9"
    if "age" in override and override["age"]["datatype"] == "INT32":
        expected[0][0] = 30.0
    assert rows == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"city": tensor("city", "FP32", [1.0, 2.0])}, "input 'city': feature 'city' is categorical; send it as BYTES"),
        ({"city": tensor("city", "BOOL", [True, False])}, "feature 'city' is categorical; send it as BYTES"),
        ({"city": tensor("city", "BYTES", ["Oslo", 2.5])}, "feature 'city' is categorical; its data must be strings"),
        ({"city": tensor("city", "BYTES", ["Oslo", True])}, "feature 'city' is categorical"),
        ({"member": tensor("member", "INT8", [1, 0])}, "input 'member': feature 'member' is boolean; send it as BOOL"),
        ({"member": tensor("member", "BYTES", ["true", "false"])}, "feature 'member' is boolean; send it as BOOL"),
        ({"member": tensor("member", "BOOL", [1, 0])}, "input 'member': BOOL data must be true or false, got 1"),
        ({"age": tensor("age", "BYTES", ["old", "41"])}, "input 'age': BYTES element 'old' is not a number"),
        ({"age": tensor("age", "FP32", ["30", 41])}, "input 'age': FP32 data must be numbers, got '30'"),
        ({"age": tensor("age", "FP32", [30, None])}, "row 1, feature 'age' is missing; 'age' does not allow missing"),
        ({"age": tensor("age", "BYTES", ["30", ""])}, "feature 'age' is missing"),
        ({"city": tensor("city", "BYTES", ["Oslo", ""])}, "row 1, feature 'city' is missing"),
        ({"city": tensor("city", "BYTES", [None, "Rome"])}, "row 0, feature 'city' is missing"),
        ({"member": tensor("member", "BOOL", [True, None])}, "row 1, feature 'member' is missing"),
        ({"age": tensor("age", "FP64", [30, 1e39])}, "feature 'age': a value is too large for a 32-bit float"),
        ({"age": tensor("age", "FP32", [30])}, "input 'city' has 2 rows, other inputs have 1"),
        ({"age": tensor("age", "FP32", [30, 41, 1, 2], [2, 2])}, r"per-feature tensor has shape \[N\] or \[N, 1\]"),
        ({"age": None}, r"missing feature\(s\): age"),
        ({"vip": None}, r"missing feature\(s\): vip"),  # a tensor is needed even for a feature that may be missing
        ({"zip": tensor("zip", "BYTES", ["0150", "0151"])}, "input 'zip' is not a feature of this model"),
    ],
)
def test_v2_json_refusals_name_the_feature(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        decode_v2(v2_body(**overrides), SCHEMA)
    assert caught.value.status_code == 422


def test_v2_refuses_the_matrix_form_and_empty_requests() -> None:
    matrix = {"inputs": [tensor("input", "FP32", [1, 2, 3, 4, 5, 6], [1, 6])]}
    with pytest.raises(
        InvalidInput, match=r"one \[N\] or \[N, 1\] tensor per feature.*city \(BYTES\), member \(BOOL\)"
    ):
        decode_v2(matrix, SCHEMA)
    empty = {"inputs": [tensor(f, d, [], [0]) for f, d in zip(SCHEMA.features, SCHEMA.datatypes(), strict=True)]}
    with pytest.raises(InvalidInput, match="no rows"):
        decode_v2(empty, SCHEMA)
    twice = v2_body()
    twice["inputs"].append(tensor("age", "FP32", [1, 2]))
    with pytest.raises(InvalidInput, match="input 'age' is given twice"):
        decode_v2(twice, SCHEMA)


# --- V2 binary -----------------------------------------------------------------------------


def frame(inputs: list[tuple[dict[str, Any], bytes | None]]) -> tuple[Any, memoryview]:
    """A request as tritonclient builds it, split as the route splits it."""
    tensors, tail = [], b""
    for item, raw in inputs:
        if raw is not None:
            item = {k: v for k, v in item.items() if k != "data"} | {"parameters": {"binary_data_size": len(raw)}}
            tail += raw
        tensors.append(item)
    header = json.dumps({"inputs": tensors}).encode()
    return split_body(header + tail, str(len(header)).encode())


def text_bytes(values: list[str]) -> bytes:
    return bytes(serialize_byte_tensor(np.array(values, dtype=np.object_)).item())


def test_v2_binary_bytes_bool_and_fp32_mixed_with_json() -> None:
    header, tail = frame(
        [
            ({"name": "age", "shape": [2, 1], "datatype": "FP32"}, np.array([[30.5], [41]], "<f4").tobytes()),
            ({"name": "city", "shape": [2, 1], "datatype": "BYTES"}, text_bytes(["Oslo", "3"])),
            ({"name": "member", "shape": [2], "datatype": "BOOL"}, np.array([True, False]).tobytes()),
            ({"name": "income", "shape": [2], "datatype": "FP64"}, np.array([1000.0, np.nan]).tobytes()),
            ({"name": "plan", "shape": [2], "datatype": "BYTES"}, write_bytes(["gold", ""])),
            (tensor("vip", "BOOL", [False, None]), None),  # JSON beside the binary inputs
        ]
    )
    assert feeds_as_rows(decode_v2(header, SCHEMA, tail).inputs) == ROWS


def test_v2_binary_refusals() -> None:
    fine = [
        ({"name": "age", "shape": [1], "datatype": "FP32"}, np.array([30], "<f4").tobytes()),
        ({"name": "city", "shape": [1], "datatype": "BYTES"}, text_bytes(["Oslo"])),
        ({"name": "member", "shape": [1], "datatype": "BOOL"}, b"\x01"),
        (tensor("income", "FP32", [1.0]), None),
        (tensor("plan", "BYTES", ["gold"]), None),
        (tensor("vip", "BOOL", [True]), None),
    ]
    header, tail = frame(fine)
    assert feeds_as_rows(decode_v2(header, SCHEMA, tail).inputs) == [[30.0, "Oslo", True, 1.0, "gold", True]]

    def refused(index: int, replacement: tuple[dict[str, Any], bytes | None], message: str) -> None:
        inputs = list(fine)
        inputs[index] = replacement
        header, tail = frame(inputs)
        with pytest.raises(InvalidInput, match=message):
            decode_v2(header, SCHEMA, tail)

    refused(
        0,
        ({"name": "age", "shape": [1], "datatype": "FP32"}, np.array([np.nan], "<f4").tobytes()),
        "feature 'age' is missing",
    )
    refused(
        0,
        ({"name": "age", "shape": [1], "datatype": "FP32"}, np.array([np.inf], "<f4").tobytes()),
        "inf is not a finite",
    )
    refused(1, ({"name": "city", "shape": [1], "datatype": "BYTES"}, text_bytes([""])), "feature 'city' is missing")
    refused(
        1, ({"name": "city", "shape": [1], "datatype": "FP32"}, b"\0\0\0\0"), "'city' is categorical; send it as BYTES"
    )
    refused(2, ({"name": "member", "shape": [1], "datatype": "UINT8"}, b"\x01"), "'member' is boolean; send it as BOOL")
    refused(2, ({"name": "member", "shape": [1], "datatype": "BOOL"}, b"\x02"), "BOOL bytes must be 0 or 1")
    header, tail = frame([*fine[:1], ({"name": "city", "shape": [1], "datatype": "BYTES"}, b""), *fine[2:]])
    with pytest.raises(MalformedRequest, match="input 'city': the shape needs 1 BYTES elements"):
        decode_v2(header, SCHEMA, tail)


def test_integer_codes_in_binary_are_categories() -> None:
    inputs = [
        (tensor("age", "FP32", [30]), None),
        ({"name": "city", "shape": [1], "datatype": "INT32"}, np.array([3], "<i4").tobytes()),
        (tensor("member", "BOOL", [True]), None),
        (tensor("income", "FP32", [1.0]), None),
        (tensor("plan", "BYTES", ["gold"]), None),
        (tensor("vip", "BOOL", [True]), None),
    ]
    header, tail = frame(inputs)
    feeds = decode_v2(header, SCHEMA, tail).inputs
    assert isinstance(feeds, dict) and feeds["city"].tolist() == [["3"]]


# --- unseen categories ---------------------------------------------------------------------


def test_unseen_categories_are_counted_per_feature_and_missing_ones_are_not() -> None:
    request = decode_v1(
        {
            "instances": [
                {"age": 1, "city": "Paris", "member": True, "plan": "gold"},
                {"age": 1, "city": "Oslo", "member": True, "plan": None},
                {"age": 1, "city": "Lima", "member": True, "plan": "platinum"},
                {"age": 1, "city": 3, "member": True},
            ]
        },
        SCHEMA,
    )
    assert unseen_categories(request.inputs, SCHEMA) == [("city", 2), ("plan", 1)]
    seen = decode_v1({"instances": [{"age": 1, "city": "Rome", "member": False}]}, SCHEMA)
    assert unseen_categories(seen.inputs, SCHEMA) == []
    no_categories = InputSchema(SCHEMA.features, SCHEMA.optional, SCHEMA.types, SCHEMA.layout)
    assert unseen_categories(request.inputs, no_categories) == [], "a card without categories counts nothing"
    assert unseen_categories(np.zeros((1, 6), np.float32), SCHEMA) == []


def test_the_matrix_form_is_unchanged_for_all_numeric_models() -> None:
    numeric = InputSchema(features=("a", "b"), optional=frozenset({"b"}))
    request = decode_v1({"instances": [{"a": 1, "b": None}]}, numeric)
    assert isinstance(request.inputs, np.ndarray) and request.inputs.dtype == np.float32
    assert request.inputs.shape == (1, 2) and np.isnan(request.inputs[0, 1])
    assert numeric.datatypes() == ["FP32", "FP32"] and numeric.kinds == ("numeric", "numeric")
