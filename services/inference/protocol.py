"""Request and response shapes of the Open Inference Protocol V2 and KServe V1. Pure: no I/O.

A request becomes the inputs of the model's ONNX graph, in its layout (:mod:`shared.features`):

* **MATRIX** (every feature numeric, as models were before features had types): one float32
  matrix ``[N, F]`` in the model's feature order, whatever form the caller chose: one
  ``[N, F]`` tensor, or one ``[N]`` (or ``[N, 1]``) tensor per feature named after it; flat
  or nested JSON ``data`` or binary data (:mod:`.binary`), freely mixed; any of the
  protocol's datatypes -- BOOL, INT8-64, UINT8-64, FP16, BF16, FP32, FP64, or BYTES holding
  numbers as text (an empty element is a missing value).
* **COLUMNS** (any categorical or boolean feature): one ``[N, 1]`` array per feature, named
  as the feature -- float32 for numeric and boolean (0 / 1, NaN missing), text for
  categorical (missing ``""``). V2 sends one tensor per feature: BYTES for a categorical
  feature (INT* too: an integer is read as its text), BOOL for a boolean one, any numeric
  datatype (or BYTES numbers as text) for a numeric one; in JSON ``data``, ``null`` is a
  missing value. V1 instances carry JSON strings, booleans, numbers and ``null`` / absent.

A missing value is refused where the feature does not allow one (the spec's
``allow_missing``), a non-finite number always. A category the model never saw in training
is a valid input (:func:`unseen_categories` counts them). Anything else is an
:class:`InvalidInput` whose message names the feature, says what was wrong and what was
expected.

What a version answers is a :class:`Prediction`, whatever it predicts. Its outputs are named
by :func:`shared.features.graph_outputs`: a classifier's ``label`` and ``probabilities``, a
regressor's ``prediction`` (FP64 ``[N]`` in V2, ``{"prediction": x}`` per instance in V1). A
request for an output the answering version does not have is an :class:`InvalidInput` naming
the ones it has.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from services.inference.binary import FIXED_SIZE, BinaryCursor, read_tensor, write_bytes
from shared.errors import InvalidInput, MalformedRequest
from shared.features import (
    BOOLEAN,
    CATEGORICAL,
    COLUMNS,
    GRAPH_OUTPUTS,
    MATRIX,
    MISSING_CATEGORY,
    NUMERIC,
    REGRESSION_OUTPUTS,
    category_text,
)

DATATYPES = (*FIXED_SIZE, "BYTES")
"""Every tensor datatype a request may use."""
_DATATYPE_SET = frozenset(DATATYPES)
OUTPUT_NAMES = GRAPH_OUTPUTS
"""A classifier's outputs (the default of the functions that take a model's outputs)."""
PREDICTION = REGRESSION_OUTPUTS[0]
"""A regressor's one output: the predicted number."""
FLOAT32_MAX = float(np.finfo(np.float32).max)

Feeds = dict[str, NDArray[Any]]
"""A :data:`~shared.features.COLUMNS` graph's inputs: one ``[N, 1]`` array per feature."""
Inputs = NDArray[np.float32] | Feeds
"""What a request gives the graph: the ``[N, F]`` float32 matrix, or the per-feature feeds."""

DATATYPE_OF = {NUMERIC: "FP32", CATEGORICAL: "BYTES", BOOLEAN: "BOOL"}
"""The V2 datatype a feature of each type is described with (model metadata)."""


@dataclass(frozen=True)
class InputSchema:
    """What a model version takes: feature names in order, their types, which may be missing,
    the graph's layout, and the categories each categorical feature had in training."""

    features: tuple[str, ...]
    optional: frozenset[str] = frozenset()
    types: tuple[str, ...] = ()
    """Each feature's type; empty when every feature is numeric."""
    layout: str = MATRIX
    categories: Mapping[str, frozenset[str]] = field(default_factory=dict, hash=False)
    """Per categorical feature, the training categories (a feature without an entry is not counted)."""

    @property
    def kinds(self) -> tuple[str, ...]:
        """Each feature's type, ``numeric`` when the schema has none."""
        return self.types or (NUMERIC,) * len(self.features)

    @cached_property
    def feature_set(self) -> frozenset[str]:
        """The features, for membership tests."""
        return frozenset(self.features)

    def datatypes(self) -> list[str]:
        """The V2 datatype of each feature's tensor (:data:`DATATYPE_OF`)."""
        return [DATATYPE_OF[kind] for kind in self.kinds]


class Prediction(NamedTuple):
    """What a version answered for ``N`` rows, in the columns the prediction log carries
    (:class:`~shared.events.PredictionsLogged`), so every caller -- champion, canary, shadow,
    pinned versions, warm-up -- handles one type whatever the model predicts.

    A classifier's ``labels`` are its classes and ``probabilities`` ``[N, C]`` in class order;
    a regressor's ``labels`` are its predicted numbers (float64 ``[N]``, :meth:`of_values`) and
    ``probabilities`` is ``[N, 0]``. A tuple, so ``labels, probabilities = loaded.predict(X)``
    reads as it always did.

    >>> p = Prediction.of_values(np.array([[12.5], [3.0]], dtype=np.float32))
    >>> p.labels.tolist(), p.probabilities.shape, p.rows
    ([12.5, 3.0], (2, 0), 2)
    """

    labels: NDArray[Any]
    probabilities: NDArray[np.float32]

    @classmethod
    def of_values(cls, values: NDArray[Any]) -> Prediction:
        """A regressor's answer: its graph's ``prediction`` (float32 ``[N, 1]``) as float64 ``[N]``."""
        numbers = np.asarray(values, dtype=np.float64).reshape(-1)
        return cls(numbers, np.empty((numbers.shape[0], 0), dtype=np.float32))

    @property
    def rows(self) -> int:
        """How many rows were answered."""
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class InferenceRequest:
    """A decoded request: the graph's inputs, the caller's id, and the outputs asked for
    (``binary_outputs``: those to return with the binary tensor data extension)."""

    inputs: Inputs
    request_id: str | None
    outputs: tuple[str, ...]
    binary_outputs: frozenset[str] = frozenset()

    @property
    def rows(self) -> int:
        """How many rows (predictions) the request holds."""
        return rows_of(self.inputs)


def rows_of(inputs: Inputs) -> int:
    """The number of rows of a matrix or of per-feature feeds."""
    if isinstance(inputs, np.ndarray):
        return int(inputs.shape[0])
    return len(next(iter(inputs.values())))


# --- V2 tensors ----------------------------------------------------------------------------


class _Tensor(NamedTuple):
    """One V2 input as sent, before it is read as a feature: the values are a numpy array
    (binary fixed-size data), a list of text (binary BYTES) or the flat JSON ``data``."""

    name: str
    shape: list[int]
    datatype: str
    values: NDArray[Any] | list[Any]
    json: bool

    @property
    def where(self) -> str:
        return f"input {self.name!r}"


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data must be a list (flat or nested), got {type(data).__name__}")
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        for row in data:
            if isinstance(row, list) and not (row and isinstance(row[0], list)):
                flat.extend(row)  # the common [N, k] nesting, without a call per row
            else:
                flat.extend(_flatten(row, where))
        return flat
    return data


_NUMBERS = frozenset({float, int})
_NUMBERS_OR_NULL = frozenset({float, int, type(None)})


def _json_values(flat: list[Any], datatype: str, where: str, nulls: bool = False) -> NDArray[Any]:
    """JSON ``data`` of one numeric tensor as an array, each value checked against the datatype
    (``nulls``: ``null`` is a missing value, NaN)."""
    if datatype == "BYTES":
        if nulls:
            flat = ["" if value is None else value for value in flat]
        for value in flat:
            if not isinstance(value, str):
                raise InvalidInput(f"{where}: BYTES data must be strings, got {value!r}")
        return _numbers(flat, where)
    if datatype == "BOOL":
        for value in flat:
            if not (isinstance(value, bool) or (nulls and value is None)):
                raise InvalidInput(f"{where}: BOOL data must be true or false, got {value!r}")
        if nulls:
            return np.array([math.nan if v is None else float(v) for v in flat], dtype=np.float64)
        return np.asarray(flat, dtype=np.bool_)
    if datatype[0] in "IU":  # INT*, UINT*
        info = np.iinfo(FIXED_SIZE[datatype])
        for value in flat:
            if nulls and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{where}: {datatype} data must be integers, got {value!r}")
            if not info.min <= value <= info.max:
                raise InvalidInput(f"{where}: {value} is out of range for {datatype} ({info.min} to {info.max})")
    else:
        kinds = set(map(type, flat))  # one pass in C: a wide tensor's values are checked at once
        if kinds <= _NUMBERS or (nulls and kinds <= _NUMBERS_OR_NULL):
            return np.array(flat, dtype=np.float64)  # null becomes NaN
        for value in flat:
            if (isinstance(value, bool) or not isinstance(value, int | float)) and not (nulls and value is None):
                raise InvalidInput(f"{where}: {datatype} data must be numbers, got {value!r}")
    if nulls:
        return np.array([math.nan if v is None else v for v in flat], dtype=np.float64)
    return np.asarray(flat, dtype=np.float64)


def _numbers(texts: list[str], where: str) -> NDArray[np.float64]:
    """``BYTES`` elements of a numeric feature: each a number written as text, or empty for missing."""
    values = np.empty(len(texts), dtype=np.float64)
    for i, text in enumerate(texts):
        try:
            values[i] = float(text) if text.strip() else math.nan
        except ValueError:
            raise InvalidInput(
                f"{where}: BYTES element {text[:40]!r} is not a number (a numeric feature takes numbers)"
            ) from None
    return values


def _tensor(item: Any, index: int, cursor: BinaryCursor) -> _Tensor:
    if item.__class__ is not dict and not isinstance(item, Mapping):
        raise InvalidInput(f"inputs[{index}] must be an object with name, shape, datatype and data")
    name = item.get("name")
    shape = item.get("shape")
    datatype = item.get("datatype")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}].name must be a non-empty string")
    if not isinstance(shape, list) or not shape:
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    expected = 1
    for dim in shape:
        if not isinstance(dim, int) or dim < 0:
            raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
        expected *= dim
    if datatype not in _DATATYPE_SET:
        raise InvalidInput(f"input {name!r}: datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}")
    data = item.get("data")
    parameters = item.get("parameters")
    size = None if parameters is None else _binary_size(parameters, f"input {name!r}")
    if size is not None:
        if data is not None:
            raise MalformedRequest(f"input {name!r} has both data and parameters.binary_data_size; send one of them")
        values = read_tensor(cursor.take(name, size), datatype, expected, f"input {name!r}")
        return _Tensor(name, shape, datatype, values, False)
    if data is None:
        raise InvalidInput(f"input {name!r} has no data (give data, or binary data with parameters.binary_data_size)")
    flat = data if len(shape) == 1 and isinstance(data, list) and not (data and isinstance(data[0], list)) else None
    if flat is None:
        flat = _flatten(data, f"input {name!r}")
    if len(flat) != expected:
        raise InvalidInput(f"input {name!r}: shape {shape} needs {expected} values, data has {len(flat)}")
    return _Tensor(name, shape, datatype, flat, True)


def _as_numbers(tensor: _Tensor, nulls: bool = False) -> NDArray[Any]:
    """A tensor's values as numbers: any datatype, BYTES as numbers written as text."""
    if tensor.json:
        return _json_values(tensor.values, tensor.datatype, tensor.where, nulls)  # type: ignore[arg-type]
    if isinstance(tensor.values, list):
        return _numbers(tensor.values, tensor.where)
    return tensor.values


def _binary_size(parameters: Any, where: str) -> int | None:
    """An input's ``binary_data_size``, or None when its data is JSON."""
    if parameters is None:
        return None
    if not isinstance(parameters, Mapping):
        raise InvalidInput(f"{where}: parameters must be an object")
    if "shared_memory_region" in parameters:
        raise InvalidInput(f"{where}: shared memory is not supported here; send the tensor as data or binary data")
    size = parameters.get("binary_data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise MalformedRequest(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
    return size


def decode_v2(
    body: Any,
    schema: InputSchema,
    binary: memoryview | None = None,
    model_outputs: Sequence[str] = OUTPUT_NAMES,
) -> InferenceRequest:
    """An Open Inference Protocol V2 request → the graph's inputs.

    ``body`` is the parsed JSON (the part before ``binary`` when the request uses the binary
    tensor data extension; :func:`services.inference.binary.split_body` splits them).
    ``model_outputs`` are the outputs of the version that answers (a classifier's by default):
    the request may ask for any of them, and gets all of them when it names none.
    """
    if not isinstance(body, Mapping):
        raise InvalidInput("the request body must be a JSON object with an 'inputs' list")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    cursor = BinaryCursor(binary if binary is not None else memoryview(b""))
    tensors = [_tensor(item, i, cursor) for i, item in enumerate(inputs)]
    cursor.finish()
    decoded: Inputs
    if schema.layout == COLUMNS:
        decoded = _v2_columns(tensors, schema)
    else:
        decoded = _checked(_v2_matrix(tensors, schema), schema)
    outputs, binary_outputs = _outputs(
        body.get("outputs"), _binary_output_default(body.get("parameters")), tuple(model_outputs)
    )
    return InferenceRequest(inputs=decoded, request_id=request_id, outputs=outputs, binary_outputs=binary_outputs)


def _v2_matrix(tensors: list[_Tensor], schema: InputSchema) -> NDArray[Any]:
    """The ``[N, F]`` matrix of a MATRIX model: one 2-D tensor, or one tensor per feature."""
    n_features = len(schema.features)
    if len(tensors) == 1 and len(tensors[0].shape) == 2 and tensors[0].name not in schema.features:
        tensor = tensors[0]
        if tensor.shape[1] != n_features:
            raise InvalidInput(
                f"input {tensor.name!r} has {tensor.shape[1]} columns; the model takes {n_features} "
                f"features in this order: {', '.join(schema.features)}"
            )
        return _as_numbers(tensor).reshape(tensor.shape[0], n_features)
    by_name = _per_feature(tensors, schema)
    if not _rows_of_tensors(by_name):
        return np.empty((0, n_features))
    return np.column_stack([_as_numbers(by_name[f]).reshape(-1).astype(np.float64) for f in schema.features])


def _per_feature(tensors: list[_Tensor], schema: InputSchema) -> dict[str, _Tensor]:
    """One tensor per feature, each ``[N]`` or ``[N, 1]`` with the same N; none missing, none extra."""
    by_name: dict[str, _Tensor] = {}
    rows: int | None = None
    features = schema.features
    known = schema.feature_set
    for tensor in tensors:
        name, shape = tensor.name, tensor.shape
        if name not in known:
            if schema.layout == COLUMNS:
                raise InvalidInput(
                    f"input {name!r} is not a feature of this model; send one [N] or [N, 1] tensor per feature: "
                    f"{_described(schema)}"
                )
            raise InvalidInput(
                f"input {name!r} is not a feature of this model; send one [N, {len(features)}] tensor "
                f"or one [N] tensor per feature: {', '.join(features)}"
            )
        if name in by_name:
            raise InvalidInput(f"input {name!r} is given twice")
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidInput(f"input {name!r}: a per-feature tensor has shape [N] or [N, 1], got {shape}")
        if rows is not None and shape[0] != rows:
            raise InvalidInput(f"input {name!r} has {shape[0]} rows, other inputs have {rows}")
        rows = shape[0]
        by_name[name] = tensor
    if len(by_name) != len(features):
        raise InvalidInput(f"missing feature(s): {', '.join(f for f in features if f not in by_name)}")
    return by_name


def _rows_of_tensors(by_name: Mapping[str, _Tensor]) -> int:
    return next(iter(by_name.values())).shape[0]


def _described(schema: InputSchema) -> str:
    """Each feature with the datatype its tensor takes: ``age (FP32), city (BYTES)``."""
    return ", ".join(f"{f} ({d})" for f, d in zip(schema.features, schema.datatypes(), strict=True))


def _v2_columns(tensors: list[_Tensor], schema: InputSchema) -> Feeds:
    """The feeds of a COLUMNS model: one tensor per feature, each read as its feature's type.

    Numeric and boolean features are read into one ``[k, N]`` array, checked and cast at once,
    and categorical ones into one array of text; each feature is fed a view of its row (a
    one-row request of many features pays for two arrays, not one per feature).
    """
    if len(tensors) == 1 and len(tensors[0].shape) == 2 and tensors[0].name not in schema.features:
        raise InvalidInput(
            f"input {tensors[0].name!r}: this model's features have types, so it takes one [N] or [N, 1] "
            f"tensor per feature, not one [N, F] tensor: {_described(schema)}"
        )
    by_name = _per_feature(tensors, schema)
    if not _rows_of_tensors(by_name):
        raise InvalidInput("the request has no rows")
    numbers: list[Any] = []
    number_names: list[str] = []
    texts: list[list[str]] = []
    text_names: list[str] = []
    for name, kind in zip(schema.features, schema.kinds, strict=True):
        tensor = by_name[name]
        if kind == CATEGORICAL:
            values = _v2_categories(tensor)
            if MISSING_CATEGORY in values and name not in schema.optional:
                _refuse_missing_category(values, name, tensor.where)
            texts.append(values)
            text_names.append(name)
            continue
        if kind == BOOLEAN and tensor.datatype != "BOOL":
            raise InvalidInput(f"{tensor.where}: feature {name!r} is boolean; send it as BOOL, not {tensor.datatype}")
        numbers.append(_json_floats(tensor) if tensor.json else _as_numbers(tensor))
        number_names.append(name)
    feeds = _text_feeds(texts, text_names)
    if numbers:
        feeds.update(_float_feeds(np.array(numbers, dtype=np.float64), number_names, schema.optional, "input"))
    return feeds


def _json_floats(tensor: _Tensor) -> list[float]:
    """JSON ``data`` of a numeric or boolean feature as floats (``null``: NaN), each value checked."""
    values: list[Any] = tensor.values  # type: ignore[assignment]
    datatype = tensor.datatype
    if datatype in _FLOATS:
        for value in values:
            if value.__class__ is not float and value.__class__ is not int and value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidInput(f"{tensor.where}: {datatype} data must be numbers, got {value!r}")
        return [math.nan if v is None else v for v in values] if None in values else values
    return _json_values(values, datatype, tensor.where, nulls=True).tolist()  # type: ignore[no-any-return]


_FLOATS = frozenset({"FP16", "BF16", "FP32", "FP64"})


def _float_feeds(floats: NDArray[np.float64], names: list[str], optional: frozenset[str], where: str) -> Feeds:
    """``[N, 1]`` float32 views of the rows of ``floats`` (one row per numeric or boolean
    feature), once every value is checked: NaN only where the feature may be missing, never
    infinite, within float32's range (errors name the feature, as ``where`` (``input`` or
    ``instances``) says it)."""
    if not (np.abs(floats) <= FLOAT32_MAX).all():  # one test for NaN, inf and too large: then find which
        for j, name in enumerate(names):
            place = f"input {name!r}" if where == "input" else where
            _float_feed(floats[j], name, name in optional, place)  # raises if refused
    block = floats.astype(np.float32).reshape(len(names), -1, 1)
    return {name: block[j] for j, name in enumerate(names)}


def _text_feeds(texts: list[list[str]], names: list[str]) -> Feeds:
    """``[N, 1]`` views of one object array of text, one row per categorical feature."""
    if not texts:
        return {}
    block = np.empty((len(texts), len(texts[0])), dtype=object)
    block[...] = texts
    cube = block.reshape(len(names), -1, 1)
    return {name: cube[j] for j, name in enumerate(names)}


def _refuse_missing_category(texts: list[str], name: str, where: str) -> None:
    raise InvalidInput(
        f"{where}: row {texts.index(MISSING_CATEGORY)}, feature {name!r} is missing (an empty or null "
        f"category); {name!r} does not allow missing values"
    )


def _v2_categories(tensor: _Tensor) -> list[str]:
    """A categorical feature's tensor as category text: BYTES, or integers read as their text."""
    name, datatype, values, where = tensor.name, tensor.datatype, tensor.values, tensor.where
    if datatype == "BYTES":
        if not tensor.json:
            return values  # type: ignore[return-value]
        texts: list[str] = []
        for value in values:
            text = MISSING_CATEGORY if value is None or value == MISSING_CATEGORY else category_text(value)
            if text is None:
                raise InvalidInput(
                    f"{where}: feature {name!r} is categorical; its data must be strings (categories), got {value!r}"
                )
            texts.append(text)
        return texts
    if datatype[0] in "IU":  # integer codes are categories written as numbers
        if tensor.json:
            _json_values(values, datatype, where, nulls=True)  # type: ignore[arg-type]
            return [MISSING_CATEGORY if v is None else str(v) for v in values]
        return [str(v) for v in values.tolist()]  # type: ignore[union-attr]
    raise InvalidInput(f"{where}: feature {name!r} is categorical; send it as BYTES (strings), not {datatype}")


def _float_feed(values: NDArray[Any], name: str, optional: bool, where: str) -> NDArray[np.float32]:
    """A numeric or boolean feature's ``[N, 1]`` float32 feed: NaN only where it may be missing,
    never infinite, within float32's range."""
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            missing = np.isnan(values)
            infinite = ~finite & ~missing
            if infinite.any():
                row = int(np.argmax(infinite))
                raise InvalidInput(f"{where}: row {row}, feature {name!r}: {values[row]} is not a finite number")
            if not optional:
                raise InvalidInput(
                    f"{where}: row {int(np.argmax(missing))}, feature {name!r} is missing; "
                    f"{name!r} does not allow missing values"
                )
        if values.dtype.itemsize > 4 and (np.abs(values[finite]) > FLOAT32_MAX).any():
            raise InvalidInput(f"{where}: feature {name!r}: a value is too large for a 32-bit float")
    return values.astype(np.float32).reshape(-1, 1)


# --- V2 outputs ----------------------------------------------------------------------------


def _binary_output_default(parameters: Any) -> bool:
    """The request's ``parameters.binary_data_output``: outputs are binary unless they say otherwise."""
    if parameters is None:
        return False
    if not isinstance(parameters, Mapping):
        raise InvalidInput("'parameters' must be an object")
    value = parameters.get("binary_data_output", False)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameters.binary_data_output must be true or false, got {value!r}")
    return value


def _outputs(
    requested: Any, binary_default: bool, available: tuple[str, ...] = OUTPUT_NAMES
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The outputs asked for (of the model's ``available`` ones), in order, and which of them go
    back as binary data."""
    if requested is None:
        return available, frozenset(available) if binary_default else frozenset()
    if not isinstance(requested, list) or not all(isinstance(o, Mapping) and "name" in o for o in requested):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    names = tuple(str(o["name"]) for o in requested)
    unknown = [n for n in names if n not in available]
    if unknown:
        kind = "a regressor" if PREDICTION in available else "a classifier"
        raise InvalidInput(
            f"unknown output(s) {', '.join(unknown)}; this model is {kind} and has {', '.join(available)}"
        )
    binary: set[str] = set()
    for name, output in zip(names, requested, strict=True):
        parameters = output.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise InvalidInput(f"output {name!r}: parameters must be an object")
        if "classification" in parameters:
            hint = "ask for 'probabilities'" if name != PREDICTION else f"{name!r} is a number, not classes"
            raise InvalidInput(f"output {name!r}: classification is not supported; {hint}")
        wanted = parameters.get("binary_data", binary_default)
        if not isinstance(wanted, bool):
            raise InvalidInput(f"output {name!r}: parameters.binary_data must be true or false, got {wanted!r}")
        if wanted:
            binary.add(name)
    return names, frozenset(binary)


# --- V1 ------------------------------------------------------------------------------------


def decode_v1(body: Any, schema: InputSchema, model_outputs: Sequence[str] = OUTPUT_NAMES) -> InferenceRequest:
    """A KServe V1 ``{"instances": [{feature: value, ...}, ...]}`` body → the graph's inputs.

    Instances may also be lists of values in the model's feature order. A feature that may be
    missing may be ``null`` or absent. A V1 answer has every output of the model (``model_outputs``).
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("instances"), list):
        raise InvalidInput('the request body must be {"instances": [{feature: value, ...}, ...]}')
    instances: list[Any] = body["instances"]
    if not instances:
        raise InvalidInput("'instances' is empty")
    if schema.layout == COLUMNS:
        return InferenceRequest(inputs=_v1_columns(instances, schema), request_id=None, outputs=tuple(model_outputs))
    rows: list[list[float]] = []
    declared = frozenset(schema.features)
    for i, instance in enumerate(instances):
        values = _instance_values(instance, i, schema, declared)
        row = []
        for name, value in zip(schema.features, values, strict=True):
            if value is None and name in schema.optional:
                row.append(math.nan)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"instances[{i}].{name} must be a number, got {value!r}")
            else:
                row.append(float(value))
        rows.append(row)
    return InferenceRequest(inputs=_checked(np.asarray(rows), schema), request_id=None, outputs=tuple(model_outputs))


def _instance_values(instance: Any, i: int, schema: InputSchema, declared: frozenset[str]) -> Sequence[Any]:
    """One instance's values in feature order (absent ones None), its keys checked."""
    if isinstance(instance, Mapping):
        unknown = [k for k in instance if k not in declared]
        if unknown:
            raise InvalidInput(f"instances[{i}]: unknown feature(s) {', '.join(map(str, unknown))}")
        missing = [f for f in schema.features if f not in instance and f not in schema.optional]
        if missing:
            raise InvalidInput(f"instances[{i}]: missing feature(s) {', '.join(missing)}")
        return [instance.get(f) for f in schema.features]
    if isinstance(instance, list):
        if len(instance) != len(schema.features):
            raise InvalidInput(
                f"instances[{i}] has {len(instance)} values; the model takes {len(schema.features)}: "
                f"{', '.join(schema.features)}"
            )
        return instance
    raise InvalidInput(f"instances[{i}] must be an object of feature values or a list")


def _v1_columns(instances: list[Any], schema: InputSchema) -> Feeds:
    """Typed instances → per-feature feeds: each value checked against its feature's type."""
    features, kinds, optional = schema.features, schema.kinds, schema.optional
    declared = frozenset(features)
    columns: list[list[Any]] = [[] for _ in features]
    for i, instance in enumerate(instances):
        values = _instance_values(instance, i, schema, declared)
        for column, name, kind, value in zip(columns, features, kinds, values, strict=True):
            if value is None or (value == MISSING_CATEGORY and kind == CATEGORICAL):
                if name not in optional:
                    shown = "null" if value is None else "an empty category"
                    raise InvalidInput(
                        f"instances[{i}].{name} is {shown}: feature {name!r} does not allow missing values"
                    )
                column.append(MISSING_CATEGORY if kind == CATEGORICAL else math.nan)
            elif kind == NUMERIC:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidInput(f"instances[{i}].{name} must be a number (numeric feature), got {value!r}")
                column.append(value)
            elif kind == CATEGORICAL:
                text = category_text(value)
                if text is None:
                    raise InvalidInput(
                        f"instances[{i}].{name} must be a string (categorical feature; an integer is read as "
                        f"its text), got {value!r}"
                    )
                column.append(text)
            elif isinstance(value, bool):
                column.append(1.0 if value else 0.0)
            else:
                raise InvalidInput(f"instances[{i}].{name} must be true or false (boolean feature), got {value!r}")
    text_names = [name for name, kind in zip(features, kinds, strict=True) if kind == CATEGORICAL]
    feeds = _text_feeds([c for c, kind in zip(columns, kinds, strict=True) if kind == CATEGORICAL], text_names)
    number_names = [name for name, kind in zip(features, kinds, strict=True) if kind != CATEGORICAL]
    if number_names:
        numbers = np.array([c for c, kind in zip(columns, kinds, strict=True) if kind != CATEGORICAL], np.float64)
        feeds.update(_float_feeds(numbers, number_names, optional, "instances"))
    return feeds


def _checked(X: NDArray[Any], schema: InputSchema) -> NDArray[np.float32]:
    """Refuse NaN/inf (NaN only where the feature may be missing) and values float32 cannot hold."""
    if X.shape[0] == 0:
        raise InvalidInput("the request has no rows")
    if X.dtype.kind != "f":  # integers and booleans: always finite, always within float32's range
        return X.astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        optional = np.array([f in schema.optional for f in schema.features])
        allowed = np.isnan(X) & optional[np.newaxis, :]
        refused = bad & ~allowed
        if refused.any():
            row, col = (int(v) for v in np.argwhere(refused)[0])
            raise InvalidInput(f"row {row}, feature {schema.features[col]!r}: {X[row, col]} is not a finite number")
    if X.dtype.itemsize > 4 and (np.abs(X[np.isfinite(X)]) > FLOAT32_MAX).any():
        raise InvalidInput("a value is too large for a 32-bit float")
    return X.astype(np.float32)


def unseen_categories(inputs: Inputs, schema: InputSchema) -> list[tuple[str, int]]:
    """Per categorical feature with training categories, how many values were not among them
    (missing values are not counted: they are missing, not unseen).

    >>> schema = InputSchema(("city",), types=("categorical",), layout="columns",
    ...                      categories={"city": frozenset({"Oslo"})})
    >>> unseen_categories({"city": np.array([["Oslo"], ["Rome"], [""]], dtype=object)}, schema)
    [('city', 1)]
    """
    if not schema.categories or isinstance(inputs, np.ndarray):
        return []
    found: list[tuple[str, int]] = []
    for name, known in schema.categories.items():
        feed = inputs.get(name)
        if feed is None:
            continue
        count = 0
        for value in feed.ravel().tolist():
            if value and value not in known:
                count += 1
        if count:
            found.append((name, count))
    return found


def encode_v2_outputs(
    labels: NDArray[Any],
    probabilities: NDArray[np.float32],
    outputs: Sequence[str],
    binary: frozenset[str] = frozenset(),
) -> tuple[list[dict[str, Any]], bytes]:
    """The ``outputs`` list of a V2 response, in the order asked for, and the bytes of those in
    ``binary`` (sent after the JSON, each output saying its ``binary_data_size``).

    ``labels`` and ``probabilities`` are a :class:`Prediction`'s; a regressor's ``prediction``
    is its labels as FP64 ``[N]`` (little-endian float64 bytes when binary). A number JSON cannot
    hold (NaN, infinite; no graph served here gives one) is written as ``null``, never as
    invalid JSON.
    """
    encoded: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for name in outputs:
        if name == PREDICTION:
            values = labels.astype(np.float64, copy=False)
            output: dict[str, Any] = {"name": PREDICTION, "shape": [int(values.shape[0])], "datatype": "FP64"}
            if name in binary:
                tail.append(values.astype("<f8", copy=False).tobytes())
            else:
                output["data"] = _json_numbers(values)
        elif name == "label":
            is_text = labels.dtype.kind in "OUS"
            output = {
                "name": "label",
                "shape": [int(labels.shape[0])],
                "datatype": "BYTES" if is_text else "INT64",
            }
            if name in binary:
                tail.append(write_bytes([str(v) for v in labels]) if is_text else labels.astype("<i8").tobytes())
            else:
                output["data"] = [str(v) for v in labels] if is_text else [int(v) for v in labels]
        else:
            output = {
                "name": "probabilities",
                "shape": [int(probabilities.shape[0]), int(probabilities.shape[1])],
                "datatype": "FP32",
            }
            if name in binary:
                tail.append(probabilities.astype("<f4").tobytes())
            else:
                output["data"] = [float(v) for v in probabilities.ravel()]
        if name in binary:
            output["parameters"] = {"binary_data_size": len(tail[-1])}
        encoded.append(output)
    return encoded, b"".join(tail)


def _json_numbers(values: NDArray[np.float64]) -> list[float | None]:
    """Numbers for a JSON body: finite ones as they are, others as ``null`` (JSON has no NaN)."""
    numbers: list[float | None] = values.tolist()
    if not np.isfinite(values).all():
        numbers = [v if math.isfinite(v) else None for v in numbers]  # type: ignore[arg-type]
    return numbers


def encode_v1_predictions(
    prediction: Prediction, classes: Sequence[Any], model_outputs: Sequence[str] = OUTPUT_NAMES
) -> list[dict[str, Any]]:
    """The ``predictions`` of a KServe V1 response, one object per instance: a classifier's
    ``{"label": ..., "probabilities": {class: p, ...}}``, a regressor's ``{"prediction": x}``.

    >>> encode_v1_predictions(Prediction.of_values(np.array([12.5])), [], ("prediction",))
    [{'prediction': 12.5}]
    """
    labels, probabilities = prediction
    if PREDICTION in model_outputs:
        return [{PREDICTION: value} for value in _json_numbers(labels.astype(np.float64, copy=False))]
    names = [str(c) for c in classes]
    return [
        {
            "label": label.item() if hasattr(label, "item") else label,
            "probabilities": dict(zip(names, map(float, row), strict=False)),
        }
        for label, row in zip(labels, probabilities, strict=True)
    ]


def describe_outputs(model_outputs: Sequence[str], classes: Sequence[Any]) -> list[dict[str, Any]]:
    """The ``outputs`` of V2 model metadata: each output's name, datatype and shape.

    >>> describe_outputs(("prediction",), [])
    [{'name': 'prediction', 'datatype': 'FP64', 'shape': [-1]}]
    >>> [o["datatype"] for o in describe_outputs(("label", "probabilities"), ["bad", "good"])]
    ['BYTES', 'FP32']
    """
    described: list[dict[str, Any]] = []
    for name in model_outputs:
        if name == PREDICTION:
            described.append({"name": name, "datatype": "FP64", "shape": [-1]})
        elif name == "label":
            label_type = "BYTES" if any(isinstance(c, str) for c in classes) else "INT64"
            described.append({"name": name, "datatype": label_type, "shape": [-1]})
        else:
            described.append({"name": name, "datatype": "FP32", "shape": [-1, len(classes)]})
    return described


def canary_bucket(inference_id: str) -> float:
    """A stable number in [0, 1) for an inference id: the same id always takes the same route.

    >>> canary_bucket("abc") == canary_bucket("abc")
    True
    """
    digest = hashlib.blake2b(inference_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
