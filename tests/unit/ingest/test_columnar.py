"""The columnar fast path against the per-record reference it stands beside.

Soundness: whatever :func:`decode_annotation` decodes, pydantic decodes to the same event, and
whatever :class:`BatchValidator` accepts, :meth:`RecordValidator.check` accepts and stores the
same way -- over seeded random messages full of odd values (integers beyond 2**53 and 2**64,
``NaN`` literals, booleans where numbers go, lists, unknown and absent features, odd times and
ids). Completeness where it matters: on the messages senders write (plain values, canonical
envelope), the fast path accepts everything the reference accepts.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest

from services.ingest.columnar import ENVELOPE_FIELDS, Annotation, BatchValidator, decode_annotation
from services.ingest.validation import RecordValidator, SchemaRejection, parse_annotation
from shared import topics
from shared.datasets import AcceptedRecord
from shared.errors import InvalidEvent
from shared.events import AnnotationSubmitted
from shared.spec import ModelSpec, parse_spec

NUMERIC = parse_spec(
    "name: m\nfeatures: [{name: a, min: 0, max: 100}, {name: b}, {name: c, allow_missing: true}]\n"
    'label: {values: ["no", "yes"]}\nvalidation: {min_confidence: 0.5}'
)
TYPED = parse_spec(
    """
name: m
features:
  - {name: a, min: 0}
  - {name: b, allow_missing: true}
  - {name: c, type: categorical, values: ["0%", "10%", a, "3"]}
  - {name: d, type: categorical, allow_missing: true}
  - {name: e, type: boolean}
  - {name: f, type: boolean, allow_missing: true}
label: {values: [0, 1, 2]}
validation: {min_confidence: 0.5}
"""
)
REGRESSION = parse_spec(
    "name: m\nfeatures: [{name: a, min: 0}, {name: c, type: categorical, allow_missing: true}]\n"
    "label: {type: regression, min: 0, max: 1000}"
)
SPECS = {"numeric": NUMERIC, "typed": TYPED, "regression": REGRESSION}

PLAIN_VALUES = ["0.5", "3", "-3.25", "42.0", "0", "true", "false", "null", '""', '"a"', '"3"', '"0%"', '"x"']
ODD_VALUES = [
    "150.0",
    "1e300",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "-0.0",
    "2.5",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "[1]",
    "{}",
    '"10%"',
    '"yes"',
    '"\\u00e9"',
]
PLAIN_LABELS = ['"no"', '"yes"', "0", "1", "2", "true", "false", "7.5", '"x"']
ODD_LABELS = ["1.0", '"1"', "2.5", "-1", "1e400", "NaN", "null", "1000.5", "[0]", "18446744073709551616"]
ODD_ENVELOPE: list[tuple[str, str | None]] = [
    ("confidence", "0.4"),
    ("confidence", "1"),
    ("confidence", "0"),
    ("confidence", "null"),
    ("confidence", '"0.9"'),
    ("confidence", "1.5"),
    ("confidence", "true"),
    ("confidence", None),
    ("occurred_at", '"2024-05-01T10:00:00.5+02:00"'),
    ("occurred_at", '"2024-05-01 10:00:00Z"'),
    ("occurred_at", '"2024-05-01T10:00:00"'),
    ("occurred_at", '"2024-02-30T10:00:00Z"'),
    ("occurred_at", '"2024-05-01T10:00:00.1234567Z"'),
    ("occurred_at", "1714557600"),
    ("occurred_at", "null"),
    ("event_id", '"12345678-1234-5678-1234-56781234567A"'),
    ("event_id", '"1234567812345678123456781234567a"'),
    ("event_id", '"not-a-uuid"'),
    ("event_id", "null"),
    ("schema_version", "1"),
    ("schema_version", "2"),
    ("schema_version", "true"),
    ("schema_version", "1.0"),
    ("annotator", '"alice"'),
    ("annotator", "null"),
    ("annotator", "3"),
    ("inference_id", '"inf-1"'),
    ("inference_id", "[]"),
    ("model", '"bad name"'),
    ("model", '"' + "m" * 129 + '"'),
    ("model", "null"),
    ("record_id", '""'),
    ("record_id", '"' + "r" * 257 + '"'),
    ("record_id", "7"),
    ("features", "[]"),
    ("features", "null"),
    ("label", None),
    ("surprise", "1"),
]


def message(rng: random.Random, spec: ModelSpec, i: int, odd: bool) -> bytes:
    """One annotation as JSON text a sender might write (``odd``: with strange values too)."""
    values = PLAIN_VALUES + (ODD_VALUES if odd else [])
    labels = PLAIN_LABELS + (ODD_LABELS if odd else [])
    features = []
    names = list(spec.feature_names)
    if rng.random() < 0.2:
        rng.shuffle(names)
    for name in names:
        if rng.random() < 0.08:
            continue  # absent
        features.append(f'"{name}": {_value_for(rng, spec, name, values)}')
    if odd and rng.random() < 0.05:
        features.append('"zz": 1.0')
    fields = {
        "schema_version": "1",
        "event_id": '"123e4567-e89b-12d3-a456-426614174000"',
        "occurred_at": f'"2024-05-01T10:{i % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}Z"',
        "model": '"m"',
        "record_id": f'"r{rng.randrange(10**6)}"',
        "features": "{" + ", ".join(features) + "}",
        "label": _label_for(rng, spec) if rng.random() < 0.75 else rng.choice(labels),
        "confidence": rng.choice(["0.9", "1.0", "0.75"]),
    }
    if odd and rng.random() < 0.3:
        field, text = rng.choice(ODD_ENVELOPE)
        if text is None:
            fields.pop(field, None)
        else:
            fields[field] = text
    if not odd and rng.random() < 0.2:
        del fields["occurred_at"], fields["event_id"], fields["schema_version"]
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


def _label_for(rng: random.Random, spec: ModelSpec) -> str:
    if spec.regression:
        return repr(rng.uniform(0, 1000))
    return json.dumps(rng.choice(spec.label.values))


def _value_for(rng: random.Random, spec: ModelSpec, name: str, values: list[str]) -> str:
    feature = spec.features[spec.feature_names.index(name)]
    if rng.random() < 0.7:  # mostly a value of the feature's own kind, so that records pass
        if feature.type == "numeric":
            return repr(rng.uniform(0, 100) if rng.random() < 0.5 else round(rng.uniform(0, 100), 3))
        if feature.type == "boolean":
            return rng.choice(["true", "false"])
        return rng.choice(['"0%"', '"10%"', '"a"', "3", '"3"'])
    return rng.choice(values)


def comparable(record: AcceptedRecord) -> tuple[Any, ...]:
    """A stored record as values with their types; NaN (missing, in a matrix row) as None."""
    features = []
    for value in record.features:
        if isinstance(value, np.floating):
            value = None if math.isnan(value) else float(value)
        features.append((type(value).__name__, value))
    return (
        record.record_id,
        record.occurred_at,
        (type(record.label).__name__, record.label),
        record.confidence,
        record.annotator,
        record.inference_id,
        features,
    )


def reference(spec: ModelSpec, data: bytes) -> AcceptedRecord | list[Any] | None:
    """The per-record verdict; None for a dead letter."""
    try:
        event = parse_annotation(topics.ANNOTATIONS, data)
    except InvalidEvent:
        return None
    if isinstance(event, SchemaRejection):
        return event.reasons
    return RecordValidator(spec).check(event)


def test_the_decoder_checks_every_field_of_the_event_itself() -> None:
    assert set(AnnotationSubmitted.model_fields) == ENVELOPE_FIELDS


@pytest.mark.parametrize("name", sorted(SPECS))
def test_what_the_fast_path_decodes_and_accepts_the_reference_accepts_and_stores_alike(name: str) -> None:
    spec = SPECS[name]
    rng = random.Random(23)
    data = [message(rng, spec, i, odd=True) for i in range(3000)]
    validator = BatchValidator(RecordValidator(spec))
    decoded = [decode_annotation(d) for d in data]
    accepted = 0
    for at in range(0, len(data), 250):
        chunk = range(at, min(at + 250, len(data)))
        fast = [i for i in chunk if decoded[i] is not None]
        verdicts = dict(zip(fast, validator.check([decoded[i] for i in fast]), strict=True))  # type: ignore[misc]
        for i in chunk:
            expected = reference(spec, data[i])
            event = decoded[i]
            if event is None:
                continue
            assert isinstance(expected, AcceptedRecord | list), (data[i], expected)
            reread = parse_annotation(topics.ANNOTATIONS, data[i])
            verdict = verdicts[i]
            if isinstance(reread, SchemaRejection):  # only a feature value can be what pydantic refuses
                assert {r.field.split(".")[0] for r in reread.reasons} == {"features"}, data[i]
                assert any(isinstance(v, list | dict) for v in event.features.values()), data[i]
                assert verdict is None, data[i]
                continue
            assert _envelope(event) == _envelope(reread), data[i]
            if verdict is not None:
                accepted += 1
                assert isinstance(expected, AcceptedRecord), (data[i], expected)
                assert comparable(verdict) == comparable(expected), data[i]
    assert accepted > 300, "the odd corpus still has records the fast path takes"


def _envelope(event: Annotation | AnnotationSubmitted) -> tuple[Any, ...]:
    features = {k: float(v) if type(v) is int else v for k, v in event.features.items()}
    label = event.label
    return (
        event.model,
        event.record_id,
        event.occurred_at,
        type(label).__name__,
        label,
        event.confidence,
        event.annotator,
        event.inference_id,
        {k: (type(v).__name__, v) for k, v in features.items()},
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_on_plain_messages_the_fast_path_accepts_all_the_reference_accepts(name: str) -> None:
    spec = SPECS[name]
    rng = random.Random(5)
    data = [message(rng, spec, i, odd=False) for i in range(2000)]
    decoded = [decode_annotation(d) for d in data]
    assert all(decoded), "a plain message is always decoded by the fast path"
    verdicts = BatchValidator(RecordValidator(spec)).check(decoded)  # type: ignore[arg-type]
    taken = 0
    for raw, verdict in zip(data, verdicts, strict=True):
        expected = reference(spec, raw)
        if isinstance(expected, AcceptedRecord):
            taken += 1
            assert verdict is not None, raw
            assert comparable(verdict)[:2] == comparable(expected)[:2] or b"occurred_at" not in raw
            assert comparable(verdict)[2:] == comparable(expected)[2:], raw
        else:
            assert verdict is None, raw
    assert taken > 200


def test_a_batch_in_the_spec_layout_is_one_matrix_and_every_row_checked() -> None:
    validator = BatchValidator(RecordValidator(NUMERIC))
    rows = [
        b'{"model": "m", "record_id": "r1", "features": {"a": 1.5, "b": -2, "c": null}, "label": "yes"}',
        b'{"model": "m", "record_id": "r2", "features": {"a": 101.0, "b": 0.0, "c": 1.0}, "label": "no"}',
        b'{"model": "m", "record_id": "r3", "features": {"a": 3.0, "b": true, "c": 1.0}, "label": "no"}',
        b'{"model": "m", "record_id": "r4", "features": {"c": 2.0, "a": 4.0, "b": 1e300}, "label": "no"}',
        b'{"model": "m", "record_id": "r5", "features": {"a": 5.0, "b": 1.0}, "label": "yes", "confidence": 0.4}',
    ]
    verdicts = validator.check([decode_annotation(r) for r in rows])  # type: ignore[misc]
    first, out_of_range, a_flag, reordered, unsure = verdicts
    assert first is not None and first.label == "yes"
    assert [float(v) for v in first.features[:2]] == [1.5, -2.0] and math.isnan(first.features[2])
    assert out_of_range is None and a_flag is None and unsure is None, "left to the reference, which says why"
    assert reordered is not None and [float(v) for v in reordered.features] == [4.0, 1e300, 2.0]


def test_typed_values_are_read_as_pydantic_reads_them() -> None:
    validator = BatchValidator(RecordValidator(TYPED))
    body = '"a": 1, "b": null, "c": 3, "d": "", "e": false, "f": null'
    accepted = validator.check(
        [decode_annotation(f'{{"model": "m", "record_id": "r", "features": {{{body}}}, "label": 1}}'.encode())]  # type: ignore[list-item]
    )[0]
    assert accepted is not None
    assert [(type(v).__name__, v) for v in accepted.features] == [
        ("float", 1.0),
        ("NoneType", None),
        ("str", "3"),
        ("NoneType", None),
        ("bool", False),
        ("NoneType", None),
    ]
    flags_and_codes = '"a": 1.0, "c": "a", "d": 1, "e": true, "f": 1'
    refused = validator.check(
        [
            decode_annotation(
                f'{{"model": "m", "record_id": "r", "features": {{{flags_and_codes}}}, "label": 1}}'.encode()
            )
        ]  # type: ignore[list-item]
    )[0]
    assert refused is None, "an integer is not a boolean (nor is True the category 1)"
