"""Typed features: the one convention every service follows for their values. Pure.

A spec's feature is ``numeric``, ``categorical`` or ``boolean``. Wherever values travel, each
type has one form, written here once (ingest, trainer, inference and monitor import it):

============ ==================== ==================== ============================ ==================
type         event / JSON         dataset (Parquet)    ONNX graph input ``[N, 1]``  missing
============ ==================== ==================== ============================ ==================
numeric      number               float64              float32                      null / NaN
categorical  string (an integer   string               string                       null / ``""`` in
             is read as its text)                                                   the graph
boolean      true / false         bool                 float32 0.0 / 1.0            null / NaN
============ ==================== ==================== ============================ ==================

Graph layouts. A model whose features are all numeric keeps the graph of earlier versions:
one float32 input ``input`` of shape ``[N, F]`` (:data:`MATRIX`). A model with any categorical
or boolean feature takes one input per feature, named as the feature (:data:`COLUMNS`), so
strings reach the graph as strings and the trainer's encoders live inside it.

Training frames. scikit-learn sees exactly what the graph sees: :func:`frame_columns` turns
typed columns into the same values :func:`onnx_feeds` sends (numeric and boolean as float,
rounded through float32; categories as text, missing as ``""``), so the parity check compares
like with like.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

FeatureType = Literal["numeric", "categorical", "boolean"]
NUMERIC: Final = "numeric"
CATEGORICAL: Final = "categorical"
BOOLEAN: Final = "boolean"

MISSING_CATEGORY = ""
"""How a missing categorical value enters the graph (and the training frame)."""

GRAPH_OUTPUTS: Final = ("label", "probabilities")
"""The outputs of every classifier's graph, in order: the predicted label and the class
probabilities (what the trainer exports, the registry's cards list, inference runs and the V2
protocol names)."""
REGRESSION_OUTPUTS: Final = ("prediction",)
"""The output of every regressor's graph: the predicted number, float32 ``[N, 1]`` in the graph
(served as FP64 ``[N]``)."""


TaskKind = Literal["classification", "regression"]
"""What a model predicts: a class, or a number (the spec's ``label.type``)."""


def graph_outputs(regression: bool) -> tuple[str, ...]:
    """The outputs of a classifier's or a regressor's graph."""
    return REGRESSION_OUTPUTS if regression else GRAPH_OUTPUTS


MATRIX: Final = "matrix"
COLUMNS: Final = "columns"
Layout = Literal["matrix", "columns"]


def layout_of(types: Sequence[str]) -> Layout:
    """The graph layout for features of these types.

    >>> layout_of(["numeric", "numeric"]), layout_of(["numeric", "boolean"])
    ('matrix', 'columns')
    """
    return "matrix" if all(t == NUMERIC for t in types) else "columns"


def category_text(value: Any) -> str | None:
    """A categorical value as its category's text; None when it is not one.

    Strings are categories as they are, except the empty string, which stands for a missing
    value (:data:`MISSING_CATEGORY`, as the graph receives one); an integer (or an integral
    float, as JSON numbers arrive) is read as its decimal text, so a code sent as ``3`` or
    ``"3"`` is the same category. Booleans, fractions, NaN and None are not categories.

    >>> category_text("40K - 60K"), category_text(3), category_text(3.0), category_text(2.5), category_text(True)
    ('40K - 60K', '3', '3', None, None)
    >>> category_text("") is None
    True
    """
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return None


def boolean_value(value: Any) -> bool | None:
    """A boolean feature's value; None when it is not one (only true and false are).

    >>> boolean_value(True), boolean_value(False), boolean_value(1), boolean_value("yes")
    (True, False, None, None)
    """
    return value if isinstance(value, bool) else None


def category_key(value: Any, kind: str) -> str | None:
    """The category a categorical or boolean value counts under (for reference shares and drift).

    >>> category_key(True, "boolean"), category_key(7, "categorical"), category_key(None, "boolean")
    ('true', '7', None)
    """
    if kind == BOOLEAN:
        flag = boolean_value(value)
        return None if flag is None else ("true" if flag else "false")
    return category_text(value)


def category_column(values: Sequence[Any] | NDArray[Any]) -> NDArray[np.object_]:
    """A categorical column as the graph takes it: text, missing as :data:`MISSING_CATEGORY`."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        text = category_text(value)
        out[i] = MISSING_CATEGORY if text is None else text
    return out


def float_column(values: Sequence[Any] | NDArray[Any]) -> NDArray[np.float32]:
    """A numeric or boolean column as the graph takes it: float32, booleans 0/1, missing NaN."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float32)
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float32)


def onnx_feeds(
    names: Sequence[str], types: Sequence[str], columns: Mapping[str, Sequence[Any] | NDArray[Any]]
) -> dict[str, NDArray[Any]]:
    """The inputs of a :data:`COLUMNS` graph: one ``[N, 1]`` tensor per feature.

    ``columns`` maps each feature to its values in any of the forms above (event values,
    Parquet-decoded values, or arrays already converted).
    """
    feeds: dict[str, NDArray[Any]] = {}
    for name, kind in zip(names, types, strict=True):
        values = columns[name]
        if kind == CATEGORICAL:
            column: NDArray[Any] = category_column(values).astype(str)
        else:
            column = float_column(values)
        feeds[name] = column.reshape(-1, 1)
    return feeds


def frame_columns(
    names: Sequence[str], types: Sequence[str], columns: Mapping[str, Sequence[Any] | NDArray[Any]]
) -> dict[str, NDArray[Any]]:
    """The training frame's columns, equal to what :func:`onnx_feeds` sends the graph.

    Numeric and boolean columns are float64 holding float32-rounded values (onnxruntime
    computes in float32); categorical columns are object arrays of text. Build a
    ``pandas.DataFrame`` from the result for a scikit-learn ``ColumnTransformer`` that selects
    columns by name.
    """
    frame: dict[str, NDArray[Any]] = {}
    for name, kind in zip(names, types, strict=True):
        values = columns[name]
        frame[name] = category_column(values) if kind == CATEGORICAL else float_column(values).astype(np.float64)
    return frame
