"""The typed-feature convention (shared/features.py): what each type's values become, in each form."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from shared.features import (
    BOOLEAN,
    CATEGORICAL,
    COLUMNS,
    MATRIX,
    MISSING_CATEGORY,
    NUMERIC,
    boolean_value,
    category_column,
    category_key,
    category_text,
    float_column,
    frame_columns,
    layout_of,
    onnx_feeds,
)


def test_only_all_numeric_features_keep_the_matrix_layout() -> None:
    assert layout_of([NUMERIC, NUMERIC]) == MATRIX
    assert layout_of([NUMERIC, CATEGORICAL]) == COLUMNS
    assert layout_of([BOOLEAN]) == COLUMNS
    assert layout_of([]) == MATRIX


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("40K - 60K", "40K - 60K"),
        ("", None),  # the empty string stands for a missing value
        ("3", "3"),
        (3, "3"),
        (3.0, "3"),
        (-7.0, "-7"),
        (0, "0"),
        (2.5, None),
        (float("nan"), None),
        (float("inf"), None),
        (2.0**53, None),
        (True, None),
        (False, None),
        (None, None),
        ([1], None),
    ],
)
def test_category_text(value: object, text: str | None) -> None:
    assert category_text(value) == text


def test_a_code_sent_as_a_number_or_as_its_text_is_the_same_category() -> None:
    assert category_text(12) == category_text(12.0) == category_text("12")


@pytest.mark.parametrize(
    ("value", "flag"), [(True, True), (False, False), (1, None), (0.0, None), ("true", None), (None, None)]
)
def test_boolean_value_takes_only_true_and_false(value: object, flag: bool | None) -> None:
    assert boolean_value(value) is flag


def test_category_key_counts_booleans_as_true_and_false_and_categories_as_their_text() -> None:
    assert category_key(True, BOOLEAN) == "true"
    assert category_key(False, BOOLEAN) == "false"
    assert category_key(1, BOOLEAN) is None
    assert category_key(None, BOOLEAN) is None
    assert category_key(7, CATEGORICAL) == "7"
    assert category_key("north", CATEGORICAL) == "north"
    assert category_key(None, CATEGORICAL) is None


def test_category_column_turns_missing_and_invalid_values_into_the_missing_category() -> None:
    column = category_column(["a", None, 3, 2.5, True])
    assert column.dtype == object
    assert column.tolist() == ["a", MISSING_CATEGORY, "3", MISSING_CATEGORY, MISSING_CATEGORY]
    from_arrays = category_column(np.array(["x", None], dtype=object))
    assert from_arrays.tolist() == ["x", ""]


def test_float_column_is_float32_with_booleans_as_0_1_and_missing_as_nan() -> None:
    column = float_column([True, False, None, 2.5])
    assert column.dtype == np.float32
    assert column[:2].tolist() == [1.0, 0.0] and math.isnan(column[2]) and column[3] == 2.5
    typed = float_column(np.array([1.0, np.nan, 1e-10], dtype=np.float64))
    assert typed.dtype == np.float32 and math.isnan(typed[1]) and typed[2] == np.float32(1e-10)
    assert float_column(np.array([True, False])).tolist() == [1.0, 0.0]
    assert float_column(np.array([True, None], dtype=object)).tolist()[0] == 1.0


def test_onnx_feeds_are_one_n_by_1_tensor_per_feature_of_the_graph_type() -> None:
    names = ["income", "city", "repaid"]
    types = [NUMERIC, CATEGORICAL, BOOLEAN]
    columns: dict[str, list[Any]] = {"income": [1.5, None], "city": ["north", None], "repaid": [True, None]}
    feeds = onnx_feeds(names, types, columns)
    assert list(feeds) == names
    assert all(feed.shape == (2, 1) for feed in feeds.values())
    assert feeds["income"].dtype == np.float32 and math.isnan(feeds["income"][1, 0])
    assert feeds["city"].dtype.kind == "U" and feeds["city"][:, 0].tolist() == ["north", ""]
    assert feeds["repaid"].dtype == np.float32 and feeds["repaid"][0, 0] == 1.0 and math.isnan(feeds["repaid"][1, 0])


def test_onnx_feeds_need_a_type_per_name() -> None:
    with pytest.raises(ValueError):
        onnx_feeds(["a", "b"], [NUMERIC], {"a": [1.0], "b": [2.0]})


def test_frame_columns_hold_what_the_graph_is_fed_rounded_through_float32() -> None:
    names = ["x", "c", "b"]
    types = [NUMERIC, CATEGORICAL, BOOLEAN]
    columns: dict[str, Sequence[Any] | NDArray[Any]] = {
        "x": np.array([0.1, np.nan]),
        "c": np.array(["a", None], dtype=object),
        "b": [False, None],
    }
    frame = frame_columns(names, types, columns)
    feeds = onnx_feeds(names, types, columns)
    assert frame["x"].dtype == np.float64 and frame["x"][0] == float(np.float32(0.1)) != 0.1
    np.testing.assert_array_equal(frame["x"], feeds["x"][:, 0].astype(np.float64))
    np.testing.assert_array_equal(frame["b"], feeds["b"][:, 0].astype(np.float64))
    assert frame["c"].dtype == object and frame["c"].tolist() == feeds["c"][:, 0].tolist() == ["a", ""]
