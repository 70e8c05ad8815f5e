"""Request and response shapes of the Open Inference Protocol V2 and KServe V1. Pure: no I/O.

Every request becomes one float32 matrix ``[N, F]`` in the model's feature order, whatever
form the caller chose: one ``[N, F]`` tensor, or one ``[N]`` (or ``[N, 1]``) tensor per
feature named after it; flat or nested ``data``; FP32, FP64, INT32 or INT64. Anything else is
an :class:`InvalidInput` whose message says what was wrong and what was expected.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shared.errors import InvalidInput

NUMERIC_DATATYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}
OUTPUT_NAMES = ("label", "probabilities")


@dataclass(frozen=True)
class InputSchema:
    """What a model version takes: feature names in order, and which may be missing (NaN)."""

    features: tuple[str, ...]
    optional: frozenset[str] = frozenset()


@dataclass(frozen=True)
class InferenceRequest:
    """A decoded request: the feature matrix, the caller's id, and the outputs asked for."""

    X: NDArray[np.float32]
    request_id: str | None
    outputs: tuple[str, ...]


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data must be a list (flat or nested), got {type(data).__name__}")
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        for row in data:
            flat.extend(_flatten(row, where))
        return flat
    return data


def _tensor(item: Any, index: int) -> tuple[str, list[int], NDArray[np.float64]]:
    where = f"inputs[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where} must be an object with name, shape, datatype and data")
    name, shape, datatype, data = (item.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name must be a non-empty string")
    where = f"input {name!r}"
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if datatype not in NUMERIC_DATATYPES:
        raise InvalidInput(
            f"{where}: datatype {datatype!r} is not supported; use one of {', '.join(NUMERIC_DATATYPES)}"
        )
    flat = _flatten(data, where)
    expected = math.prod(shape)
    if len(flat) != expected:
        raise InvalidInput(f"{where}: shape {shape} needs {expected} values, data has {len(flat)}")
    integer = datatype.startswith("INT")
    for value in flat:
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and isinstance(value, float)):
            kind = "integers" if integer else "numbers"
            raise InvalidInput(f"{where}: {datatype} data must be {kind}, got {value!r}")
    values = np.asarray(flat, dtype=np.float64)
    return name, shape, values


def decode_v2(body: Any, schema: InputSchema) -> InferenceRequest:
    """An Open Inference Protocol V2 request body → the feature matrix."""
    if not isinstance(body, Mapping):
        raise InvalidInput("the request body must be a JSON object with an 'inputs' list")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    tensors = [_tensor(item, i) for i, item in enumerate(inputs)]
    n_features = len(schema.features)
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][0] not in schema.features:
        name, shape, values = tensors[0]
        if shape[1] != n_features:
            raise InvalidInput(
                f"input {name!r} has {shape[1]} columns; the model takes {n_features} "
                f"features in this order: {', '.join(schema.features)}"
            )
        X = values.reshape(shape[0], n_features)
    else:
        by_name: dict[str, NDArray[np.float64]] = {}
        rows: int | None = None
        for name, shape, values in tensors:
            if name not in schema.features:
                raise InvalidInput(
                    f"input {name!r} is not a feature of this model; send one [N, {n_features}] tensor "
                    f"or one [N] tensor per feature: {', '.join(schema.features)}"
                )
            if name in by_name:
                raise InvalidInput(f"input {name!r} is given twice")
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
                raise InvalidInput(f"input {name!r}: a per-feature tensor has shape [N] or [N, 1], got {shape}")
            if rows is not None and shape[0] != rows:
                raise InvalidInput(f"input {name!r} has {shape[0]} rows, other inputs have {rows}")
            rows = shape[0]
            by_name[name] = values
        missing = [f for f in schema.features if f not in by_name]
        if missing:
            raise InvalidInput(f"missing feature(s): {', '.join(missing)}")
        X = np.column_stack([by_name[f] for f in schema.features]) if rows else np.empty((0, n_features))
    return InferenceRequest(X=_checked(X, schema), request_id=request_id, outputs=_outputs(body.get("outputs")))


def _outputs(requested: Any) -> tuple[str, ...]:
    if requested is None:
        return OUTPUT_NAMES
    if not isinstance(requested, list) or not all(isinstance(o, Mapping) and "name" in o for o in requested):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    names = tuple(str(o["name"]) for o in requested)
    unknown = [n for n in names if n not in OUTPUT_NAMES]
    if unknown:
        raise InvalidInput(f"unknown output(s) {', '.join(unknown)}; this model has {', '.join(OUTPUT_NAMES)}")
    return names


def decode_v1(body: Any, schema: InputSchema) -> InferenceRequest:
    """A KServe V1 ``{"instances": [{feature: value, ...}, ...]}`` body → the feature matrix.

    Instances may also be lists of values in the model's feature order.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("instances"), list):
        raise InvalidInput('the request body must be {"instances": [{feature: value, ...}, ...]}')
    instances: list[Any] = body["instances"]
    if not instances:
        raise InvalidInput("'instances' is empty")
    rows: list[list[float]] = []
    declared = set(schema.features)
    for i, instance in enumerate(instances):
        if isinstance(instance, Mapping):
            unknown = [k for k in instance if k not in declared]
            if unknown:
                raise InvalidInput(f"instances[{i}]: unknown feature(s) {', '.join(map(str, unknown))}")
            missing = [f for f in schema.features if f not in instance and f not in schema.optional]
            if missing:
                raise InvalidInput(f"instances[{i}]: missing feature(s) {', '.join(missing)}")
            values = [instance.get(f) for f in schema.features]
        elif isinstance(instance, list):
            if len(instance) != len(schema.features):
                raise InvalidInput(
                    f"instances[{i}] has {len(instance)} values; the model takes {len(schema.features)}: "
                    f"{', '.join(schema.features)}"
                )
            values = instance
        else:
            raise InvalidInput(f"instances[{i}] must be an object of feature values or a list")
        row = []
        for name, value in zip(schema.features, values, strict=True):
            if value is None and name in schema.optional:
                row.append(math.nan)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"instances[{i}].{name} must be a number, got {value!r}")
            else:
                row.append(float(value))
        rows.append(row)
    return InferenceRequest(X=_checked(np.asarray(rows), schema), request_id=None, outputs=OUTPUT_NAMES)


def _checked(X: NDArray[np.float64], schema: InputSchema) -> NDArray[np.float32]:
    """Refuse NaN/inf (NaN only where the feature may be missing) and values float32 cannot hold."""
    if X.shape[0] == 0:
        raise InvalidInput("the request has no rows")
    bad = ~np.isfinite(X)
    if bad.any():
        optional = np.array([f in schema.optional for f in schema.features])
        allowed = np.isnan(X) & optional[np.newaxis, :]
        refused = bad & ~allowed
        if refused.any():
            row, col = (int(v) for v in np.argwhere(refused)[0])
            raise InvalidInput(f"row {row}, feature {schema.features[col]!r}: {X[row, col]} is not a finite number")
    if (np.abs(X[np.isfinite(X)]) > np.finfo(np.float32).max).any():
        raise InvalidInput("a value is too large for a 32-bit float")
    return X.astype(np.float32)


def encode_v2_outputs(
    labels: NDArray[Any], probabilities: NDArray[np.float32], outputs: Sequence[str]
) -> list[dict[str, Any]]:
    """The ``outputs`` list of a V2 response, in the order asked for."""
    encoded: list[dict[str, Any]] = []
    for name in outputs:
        if name == "label":
            is_text = labels.dtype.kind in "OUS"
            encoded.append(
                {
                    "name": "label",
                    "shape": [int(labels.shape[0])],
                    "datatype": "BYTES" if is_text else "INT64",
                    "data": [str(v) for v in labels] if is_text else [int(v) for v in labels],
                }
            )
        else:
            encoded.append(
                {
                    "name": "probabilities",
                    "shape": [int(probabilities.shape[0]), int(probabilities.shape[1])],
                    "datatype": "FP32",
                    "data": [float(v) for v in probabilities.ravel()],
                }
            )
    return encoded


def canary_bucket(inference_id: str) -> float:
    """A stable number in [0, 1) for an inference id: the same id always takes the same route.

    >>> canary_bucket("abc") == canary_bucket("abc")
    True
    """
    digest = hashlib.blake2b(inference_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
