"""Request and response shapes of the Open Inference Protocol V2 and KServe V1. Pure: no I/O.

Every request becomes one float32 matrix ``[N, F]`` in the model's feature order, whatever
form the caller chose: one ``[N, F]`` tensor, or one ``[N]`` (or ``[N, 1]``) tensor per
feature named after it; flat or nested JSON ``data`` or binary data (:mod:`.binary`), freely
mixed; any of the protocol's datatypes — BOOL, INT8-64, UINT8-64, FP16, BF16, FP32, FP64, or
BYTES holding numbers as text (an empty element is a missing value). Anything else is an
:class:`InvalidInput` whose message says what was wrong and what was expected.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.inference.binary import FIXED_SIZE, BinaryCursor, read_tensor, write_bytes
from shared.errors import InvalidInput, MalformedRequest

DATATYPES = (*FIXED_SIZE, "BYTES")
"""Every tensor datatype a request may use; all become the model's float32 features."""
OUTPUT_NAMES = ("label", "probabilities")


@dataclass(frozen=True)
class InputSchema:
    """What a model version takes: feature names in order, and which may be missing (NaN)."""

    features: tuple[str, ...]
    optional: frozenset[str] = frozenset()


@dataclass(frozen=True)
class InferenceRequest:
    """A decoded request: the feature matrix, the caller's id, and the outputs asked for
    (``binary_outputs``: those to return with the binary tensor data extension)."""

    X: NDArray[np.float32]
    request_id: str | None
    outputs: tuple[str, ...]
    binary_outputs: frozenset[str] = frozenset()


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data must be a list (flat or nested), got {type(data).__name__}")
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        for row in data:
            flat.extend(_flatten(row, where))
        return flat
    return data


def _json_values(flat: list[Any], datatype: str, where: str) -> NDArray[Any]:
    """JSON ``data`` of one tensor as an array, each value checked against the datatype."""
    if datatype == "BYTES":
        for value in flat:
            if not isinstance(value, str):
                raise InvalidInput(f"{where}: BYTES data must be strings, got {value!r}")
        return _numbers(flat, where)
    if datatype == "BOOL":
        for value in flat:
            if not isinstance(value, bool):
                raise InvalidInput(f"{where}: BOOL data must be true or false, got {value!r}")
        return np.asarray(flat, dtype=np.bool_)
    if datatype[0] in "IU":  # INT*, UINT*
        info = np.iinfo(FIXED_SIZE[datatype])
        for value in flat:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{where}: {datatype} data must be integers, got {value!r}")
            if not info.min <= value <= info.max:
                raise InvalidInput(f"{where}: {value} is out of range for {datatype} ({info.min} to {info.max})")
        return np.asarray(flat, dtype=np.float64)
    for value in flat:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{where}: {datatype} data must be numbers, got {value!r}")
    return np.asarray(flat, dtype=np.float64)


def _numbers(texts: list[str], where: str) -> NDArray[np.float64]:
    """``BYTES`` elements of a numeric feature: each a number written as text, or empty for missing."""
    values = np.empty(len(texts), dtype=np.float64)
    for i, text in enumerate(texts):
        try:
            values[i] = float(text) if text.strip() else math.nan
        except ValueError:
            raise InvalidInput(
                f"{where}: BYTES element {text[:40]!r} is not a number (this model's features are numeric)"
            ) from None
    return values


def _tensor(item: Any, index: int, cursor: BinaryCursor) -> tuple[str, list[int], NDArray[Any]]:
    where = f"inputs[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where} must be an object with name, shape, datatype and data")
    name, shape, datatype, data = (item.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name must be a non-empty string")
    where = f"input {name!r}"
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if datatype not in DATATYPES:
        raise InvalidInput(f"{where}: datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}")
    expected = math.prod(shape)
    size = _binary_size(item.get("parameters"), where)
    if size is not None:
        if data is not None:
            raise MalformedRequest(f"{where} has both data and parameters.binary_data_size; send one of them")
        raw = read_tensor(cursor.take(name, size), datatype, expected, where)
        values = _numbers(raw, where) if isinstance(raw, list) else raw
    else:
        if data is None:
            raise InvalidInput(f"{where} has no data (give data, or binary data with parameters.binary_data_size)")
        flat = _flatten(data, where)
        if len(flat) != expected:
            raise InvalidInput(f"{where}: shape {shape} needs {expected} values, data has {len(flat)}")
        values = _json_values(flat, datatype, where)
    return name, shape, values


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


def decode_v2(body: Any, schema: InputSchema, binary: memoryview | None = None) -> InferenceRequest:
    """An Open Inference Protocol V2 request → the feature matrix.

    ``body`` is the parsed JSON (the part before ``binary`` when the request uses the binary
    tensor data extension; :func:`services.inference.binary.split_body` splits them).
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
        by_name: dict[str, NDArray[Any]] = {}
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
            by_name[name] = values.reshape(-1)
        missing = [f for f in schema.features if f not in by_name]
        if missing:
            raise InvalidInput(f"missing feature(s): {', '.join(missing)}")
        X = (
            np.column_stack([by_name[f].astype(np.float64) for f in schema.features])
            if rows
            else np.empty((0, n_features))
        )
    outputs, binary_outputs = _outputs(body.get("outputs"), _binary_output_default(body.get("parameters")))
    return InferenceRequest(
        X=_checked(X, schema), request_id=request_id, outputs=outputs, binary_outputs=binary_outputs
    )


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


def _outputs(requested: Any, binary_default: bool) -> tuple[tuple[str, ...], frozenset[str]]:
    """The outputs asked for, in order, and which of them go back as binary data."""
    if requested is None:
        return OUTPUT_NAMES, frozenset(OUTPUT_NAMES) if binary_default else frozenset()
    if not isinstance(requested, list) or not all(isinstance(o, Mapping) and "name" in o for o in requested):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    names = tuple(str(o["name"]) for o in requested)
    unknown = [n for n in names if n not in OUTPUT_NAMES]
    if unknown:
        raise InvalidInput(f"unknown output(s) {', '.join(unknown)}; this model has {', '.join(OUTPUT_NAMES)}")
    binary: set[str] = set()
    for name, output in zip(names, requested, strict=True):
        parameters = output.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise InvalidInput(f"output {name!r}: parameters must be an object")
        if "classification" in parameters:
            raise InvalidInput(f"output {name!r}: classification is not supported; ask for 'probabilities'")
        wanted = parameters.get("binary_data", binary_default)
        if not isinstance(wanted, bool):
            raise InvalidInput(f"output {name!r}: parameters.binary_data must be true or false, got {wanted!r}")
        if wanted:
            binary.add(name)
    return names, frozenset(binary)


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
    if X.dtype.itemsize > 4 and (np.abs(X[np.isfinite(X)]) > np.finfo(np.float32).max).any():
        raise InvalidInput("a value is too large for a 32-bit float")
    return X.astype(np.float32)


def encode_v2_outputs(
    labels: NDArray[Any],
    probabilities: NDArray[np.float32],
    outputs: Sequence[str],
    binary: frozenset[str] = frozenset(),
) -> tuple[list[dict[str, Any]], bytes]:
    """The ``outputs`` list of a V2 response, in the order asked for, and the bytes of those in
    ``binary`` (sent after the JSON, each output saying its ``binary_data_size``)."""
    encoded: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for name in outputs:
        if name == "label":
            is_text = labels.dtype.kind in "OUS"
            output: dict[str, Any] = {
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


def canary_bucket(inference_id: str) -> float:
    """A stable number in [0, 1) for an inference id: the same id always takes the same route.

    >>> canary_bucket("abc") == canary_bucket("abc")
    True
    """
    digest = hashlib.blake2b(inference_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
