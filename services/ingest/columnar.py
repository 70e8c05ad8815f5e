"""Columnar validation: a poll's annotations decoded cheaply and checked as arrays. Pure: no I/O.

The reference path (:func:`~services.ingest.validation.parse_annotation`, then
:meth:`~services.ingest.validation.RecordValidator.check`) costs about a microsecond per
feature of every record: pydantic validates the ``features`` union value by value, and the
rules then run in Python value by value. This module is the fast path beside it, and it only
ever *accepts*. What it cannot show to be valid -- a schema problem, a failed rule, a spelling
it does not know (a non-canonical event id or time, a ``NaN`` literal, an integer beyond 64
bits) -- it leaves undecided (None), and the reference path decides. So every rejection, every
reason and every dead letter is the reference's own, and the fast path only has to be sound:
never accept what the reference refuses, and store exactly what it would store.

:func:`decode_annotation` parses a message with orjson and accepts the envelope only in the
forms it knows ``AnnotationSubmitted`` accepts: every field of its own type (a JSON integer
for a float field is that float, as pydantic reads it), no unknown field, the event id in its
canonical spelling, the time as RFC 3339. ``features`` stay as JSON gave them.

:class:`BatchValidator` checks one spec's share of a poll at once. Per feature, numeric values
become one float64 column (a whole matrix for an all-numeric spec) compared with the bounds in
one operation -- the bounds default to the largest finite floats, so NaN and the infinities
fail as in the reference -- and a missing value is NaN there (orjson never makes NaN, so NaN
always means absent or null). Categorical and boolean values are judged once per distinct
value. A JSON integer is read as the float pydantic makes of it: its category is that float's
text, and for a boolean feature it is the wrong type.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import orjson
from numpy.typing import NDArray

from services.ingest.validation import RecordValidator
from shared.datasets import AcceptedRecord, FeatureRow
from shared.events import FeatureValue, Target, utc_now
from shared.features import BOOLEAN, CATEGORICAL, NUMERIC, category_text

ENVELOPE_FIELDS = frozenset(
    {
        "schema_version",
        "event_id",
        "occurred_at",
        "model",
        "record_id",
        "features",
        "label",
        "confidence",
        "annotator",
        "inference_id",
    }
)
"""The fields of ``AnnotationSubmitted`` :func:`decode_annotation` checks itself. A message with
any other field is left to pydantic, so a field added to the event later is never let through
unchecked (a unit test says when this set falls behind the event)."""
_REQUIRED = frozenset({"model", "record_id", "features", "label"})
_LABEL_TYPES: frozenset[type] = frozenset({str, int, float, bool})
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_EVENT_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})")
_MAX_RECORD_ID = 256
_INT64 = 2.0**63
"""orjson reads an integer beyond 64 bits as a float, where pydantic keeps an int: a label this
large may be either, so the reference decides."""

_NUMBERS = frozenset({float, int, type(None)})
_SCALARS = frozenset({float, int, str, bool, type(None)})
_FAIL = object()
"""A value's verdict when it breaks its feature's rule."""


@dataclass(slots=True)
class Annotation:
    """An annotation the fast path decoded: the fields ``AnnotationSubmitted`` would hold.

    ``features`` are as JSON gave them (an integer is still an int, a list still a list):
    :class:`BatchValidator` reads them as pydantic would, and leaves what it would refuse.
    """

    model: str
    record_id: str
    occurred_at: datetime
    label: Target
    confidence: float
    annotator: str | None
    inference_id: str | None
    features: dict[str, Any]


@functools.lru_cache(maxsize=1024)
def _model_name(name: str) -> bool:
    """True for a name ``ModelName`` accepts (few names, many records: remembered)."""
    return _MODEL_NAME.fullmatch(name) is not None


def decode_annotation(data: bytes) -> Annotation | None:
    """The annotation in ``data``, or None when the reference decoder must say what it is.

    >>> event = decode_annotation(b'{"model": "m", "record_id": "r", "features": {"x": 1}, "label": 0}')
    >>> event.features, event.confidence, event.occurred_at.tzinfo is not None
    ({'x': 1}, 1.0, True)
    >>> decode_annotation(b'{"model": "m", "record_id": "r", "features": {}, "label": null}') is None
    True
    """
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if body.__class__ is not dict or not ENVELOPE_FIELDS.issuperset(body) or not _REQUIRED.issubset(body):
        return None
    model, record_id, features = body["model"], body["record_id"], body["features"]
    label: Any = body["label"]
    if model.__class__ is not str or not _model_name(model):
        return None
    if record_id.__class__ is not str or not 0 < len(record_id) <= _MAX_RECORD_ID:
        return None
    if features.__class__ is not dict or label.__class__ not in _LABEL_TYPES:
        return None
    if label.__class__ is float and abs(label) >= _INT64:  # orjson's reading of an integer beyond 64 bits?
        return None
    confidence = body.get("confidence", 1.0)
    if confidence.__class__ is int:
        confidence = float(confidence)
    elif confidence.__class__ is not float:
        return None
    if not 0.0 <= confidence <= 1.0:
        return None
    annotator = body.get("annotator")
    inference_id = body.get("inference_id")
    if (annotator is not None and annotator.__class__ is not str) or (
        inference_id is not None and inference_id.__class__ is not str
    ):
        return None
    if "schema_version" in body:
        version = body["schema_version"]
        if version.__class__ is not int or version != 1:
            return None
    if "event_id" in body:
        event_id = body["event_id"]
        if event_id.__class__ is not str or _EVENT_ID.fullmatch(event_id) is None:
            return None
    if "occurred_at" in body:
        occurred_at = _utc_time(body["occurred_at"])
        if occurred_at is None:
            return None
    else:
        occurred_at = utc_now()
    target = cast("Target", label)  # one of _LABEL_TYPES, as the event's union reads JSON
    return Annotation(model, record_id, occurred_at, target, confidence, annotator, inference_id, features)


def _utc_time(text: Any) -> datetime | None:
    """An RFC 3339 time with a zone, in UTC (what ``UtcDatetime`` makes of it); None otherwise."""
    if text.__class__ is not str or _TIME.fullmatch(text) is None:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


class BatchValidator:
    """One spec's rules applied to many annotations at once (see the module docstring).

    Built from the spec's :class:`RecordValidator`, whose label and confidence rules it uses
    as they are; the per-feature rules are the same comparisons, made column by column.
    """

    def __init__(self, validator: RecordValidator) -> None:
        self.validator = validator
        spec = validator.spec
        self.spec = spec
        self._names = tuple(spec.feature_names)
        self._layout = list(self._names)
        self._declared = frozenset(self._names)
        self._get: Callable[[dict[str, Any]], Any] = operator.itemgetter(*self._names)
        self._numeric_only = not spec.typed
        self._lows = np.array(validator.lows, dtype=np.float64)
        self._highs = np.array(validator.highs, dtype=np.float64)
        self._optional = np.array([f.allow_missing for f in spec.features], dtype=bool)
        self._kinds = tuple(f.type for f in spec.features)
        self._allowed = tuple(None if f.values is None else frozenset(f.values) for f in spec.features)

    def check(self, batch: Sequence[Annotation]) -> list[AcceptedRecord | None]:
        """Each annotation's stored form, or None where the reference path must decide."""
        out: list[AcceptedRecord | None] = [None] * len(batch)
        validator = self.validator
        labels = [validator.label_of(a.label) for a in batch]
        floor = validator.min_confidence
        kept = [i for i, a in enumerate(batch) if labels[i] is not None and a.confidence >= floor]
        features = [batch[i].features for i in kept]
        flat = self._flat(features)
        if flat is None:  # not every record in the spec's layout: one by one
            rows = [self._row(f) for f in features]
            kept = [i for i, row in zip(kept, rows, strict=True) if row is not None]
            flat = list(itertools.chain.from_iterable(row for row in rows if row is not None))
        if not kept:
            return out
        stored = self._numeric(flat, len(kept)) if self._numeric_only else self._typed(flat, len(kept))
        for i, values in zip(kept, stored, strict=True):
            label = labels[i]
            if values is not None and label is not None:
                a = batch[i]
                out[i] = AcceptedRecord(
                    a.record_id, a.occurred_at, label, a.confidence, a.annotator, a.inference_id, values
                )
        return out

    def _flat(self, features: list[dict[str, Any]]) -> list[Any] | None:
        """Every record's values one after the other, when every record has exactly the spec's
        features in the spec's order (the usual case: one sender, one layout); else None."""
        keys = list(itertools.chain.from_iterable(features))
        if len(keys) != len(self._names) * len(features) or keys != self._layout * len(features):
            return None
        return list(itertools.chain.from_iterable(map(dict.values, features)))

    def _row(self, features: dict[str, Any]) -> tuple[Any, ...] | None:
        """One record's values in spec order (None where absent), or None when it has a
        feature the spec does not declare."""
        if not self._declared.issuperset(features):
            return None
        if len(features) == len(self._names):
            row = self._get(features)
            return row if isinstance(row, tuple) else (row,)
        return tuple(map(features.get, self._names))

    def _numeric(self, flat: list[Any], n: int) -> list[FeatureRow | None]:
        """An all-numeric spec: the batch as one matrix, every bound checked at once."""
        width = len(self._names)
        refused: list[int] = []
        if not _NUMBERS.issuperset(map(type, flat)):  # a string or a flag somewhere: find its records
            refused = [r for r in range(n) if not _NUMBERS.issuperset(map(type, flat[r * width : (r + 1) * width]))]
            for r in refused:
                flat[r * width : (r + 1) * width] = [None] * width
        matrix = np.array(flat, dtype=np.float64).reshape(n, width)
        ok = ((matrix >= self._lows) & (matrix <= self._highs)) | (np.isnan(matrix) & self._optional)
        valid = ok.all(axis=1)
        valid[refused] = False
        return [row if good else None for row, good in zip(matrix, valid.tolist(), strict=True)]

    def _typed(self, flat: list[Any], n: int) -> list[FeatureRow | None]:
        """A typed spec: feature by feature, each column checked as a whole."""
        width = len(self._names)
        valid = np.ones(n, dtype=bool)
        columns: list[Sequence[FeatureValue]] = []
        for j in range(width):
            column = flat[j::width]
            kinds = set(map(type, column))
            if not _SCALARS.issuperset(kinds):  # a list or an object: not a feature value
                bad = np.array([v.__class__ not in _SCALARS for v in column], dtype=bool)
                valid &= ~bad
                column = [None if b else v for v, b in zip(column, bad.tolist(), strict=True)]
                kinds = set(map(type, column))
            kind = self._kinds[j]
            if kind == NUMERIC:
                stored, ok = self._numeric_column(j, column, kinds)
            elif kind == CATEGORICAL:
                stored, ok = self._categorical_column(j, column, kinds)
            else:
                assert kind == BOOLEAN
                stored, ok = self._boolean_column(j, column, kinds)
            columns.append(stored)
            if ok is not None:
                valid &= ok
        return [row if good else None for row, good in zip(zip(*columns, strict=True), valid.tolist(), strict=True)]

    def _numeric_column(
        self, j: int, column: Sequence[Any], kinds: set[type]
    ) -> tuple[Sequence[FeatureValue], NDArray[np.bool_] | None]:
        ok_types: NDArray[np.bool_] | None = None
        if not _NUMBERS.issuperset(kinds):
            ok_types = np.array([v.__class__ in _NUMBERS for v in column], dtype=bool)
            column = [v if good else None for v, good in zip(column, ok_types.tolist(), strict=True)]
        values = np.array(column, dtype=np.float64)
        ok = ((values >= self._lows[j]) & (values <= self._highs[j])) | (np.isnan(values) & self._optional[j])
        if ok_types is not None:
            ok &= ok_types
        if int in kinds:  # stored as the float pydantic makes of it
            column = [float(v) if v.__class__ is int else v for v in column]
        return column, ok

    def _categorical_column(
        self, j: int, column: Sequence[Any], kinds: set[type]
    ) -> tuple[Sequence[FeatureValue], NDArray[np.bool_] | None]:
        optional = bool(self._optional[j])
        allowed = self._allowed[j]
        if bool in kinds and (int in kinds or float in kinds):  # True == 1 == 1.0: no shared verdicts
            stored = [_category(v, optional, allowed) for v in column]
        else:
            verdicts = {v: _category(v, optional, allowed) for v in set(column)}
            stored = list(map(verdicts.__getitem__, column))
            if _FAIL not in verdicts.values():
                return stored, None
        ok = np.array([s is not _FAIL for s in stored], dtype=bool)
        return [None if s is _FAIL else s for s in stored], ok

    def _boolean_column(
        self, j: int, column: Sequence[Any], kinds: set[type]
    ) -> tuple[Sequence[FeatureValue], NDArray[np.bool_] | None]:
        if kinds <= {bool} or (kinds <= {bool, type(None)} and self._optional[j]):
            return column, None
        optional = bool(self._optional[j])
        ok = np.array([v.__class__ is bool or (v is None and optional) for v in column], dtype=bool)
        return [v if v.__class__ is bool else None for v in column], ok


def _category(value: Any, optional: bool, allowed: frozenset[str] | None) -> Any:
    """A categorical value's stored text (None: missing), or :data:`_FAIL` -- as the reference
    reads it, an integer being the float pydantic makes of it."""
    if value.__class__ is int:
        value = float(value)
    if value is None:
        return None if optional else _FAIL
    text = value if value.__class__ is str else category_text(value)
    if text is None:
        return _FAIL
    if text == "":  # not a category: the form a missing value takes (shared.features)
        return None if optional else _FAIL
    if allowed is not None and text not in allowed:
        return _FAIL
    return text
