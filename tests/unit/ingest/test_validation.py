"""Per-record validation: each rule, with the field it names."""

from __future__ import annotations

import json

import pytest

from services.ingest.validation import SchemaRejection, check_record, parse_annotation
from shared.datasets import AcceptedRecord
from shared.errors import InvalidEvent
from shared.events import AnnotationSubmitted, encode_event
from shared.spec import ModelSpec, parse_spec

SPEC = parse_spec(
    """
name: credit
features: [{name: income, min: 0}, {name: age, min: 18, max: 120}, {name: score, allow_missing: true}]
label: {values: ["good", "bad"]}
validation: {min_confidence: 0.9}
"""
)
NUMERIC = parse_spec("name: sea\nfeatures: [{name: x}]\nlabel: {values: [0, 1]}")


def record(**overrides: object) -> AnnotationSubmitted:
    base: dict[str, object] = {
        "model": "credit",
        "record_id": "r-1",
        "features": {"income": 52000.0, "age": 41.0, "score": 0.3},
        "label": "good",
        "confidence": 0.95,
    }
    base.update(overrides)
    return AnnotationSubmitted.model_validate(base)


def rules(spec: ModelSpec | None, event: AnnotationSubmitted) -> list[tuple[str, str]]:
    result = check_record(spec, event)
    assert isinstance(result, list), f"expected a rejection, got {result}"
    return [(r.field, r.rule) for r in result]


def test_valid_record_is_accepted_in_spec_order() -> None:
    result = check_record(SPEC, record(features={"score": 0.3, "age": 41.0, "income": 52000.0}))
    assert isinstance(result, AcceptedRecord)
    assert result.features == (52000.0, 41.0, 0.3)
    assert result.label == "good"


def test_optional_feature_may_be_missing() -> None:
    result = check_record(SPEC, record(features={"income": 1.0, "age": 30.0}))
    assert isinstance(result, AcceptedRecord)
    assert result.features == (1.0, 30.0, None)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"features": {"income": 1.0, "score": 0.1}}, [("features.age", "missing")]),
        ({"features": {"income": 1.0, "age": None}}, [("features.age", "missing")]),
        ({"features": {"income": float("nan"), "age": 30.0}}, [("features.income", "finite")]),
        ({"features": {"income": float("inf"), "age": 30.0}}, [("features.income", "finite")]),
        ({"features": {"income": -1.0, "age": 30.0}}, [("features.income", "range")]),
        ({"features": {"income": 1.0, "age": 121.0}}, [("features.age", "range")]),
        ({"features": {"income": 1.0, "age": 30.0, "height": 2.0}}, [("features.height", "unknown_feature")]),
        ({"label": "maybe"}, [("label", "label")]),
        ({"confidence": 0.5}, [("confidence", "min_confidence")]),
    ],
)
def test_each_rule(overrides: dict[str, object], expected: list[tuple[str, str]]) -> None:
    assert rules(SPEC, record(**overrides)) == expected


def test_every_failed_rule_is_reported() -> None:
    found = rules(SPEC, record(features={"income": -5.0}, label="x", confidence=0.1))
    assert found == [
        ("features.income", "range"),
        ("features.age", "missing"),
        ("label", "label"),
        ("confidence", "min_confidence"),
    ]


def test_unknown_model() -> None:
    result = check_record(None, record(model="nobody"))
    assert isinstance(result, list)
    assert result[0].rule == "known_model" and "driftloop specs apply" in result[0].message


def test_numeric_labels_match_as_text_and_keep_the_spec_type() -> None:
    event = AnnotationSubmitted(model="sea", record_id="r", features={"x": 1.0}, label="1")
    result = check_record(NUMERIC, event)
    assert isinstance(result, AcceptedRecord) and result.label == 1
    assert rules(NUMERIC, AnnotationSubmitted(model="sea", record_id="r", features={"x": 1.0}, label=2)) == [
        ("label", "label")
    ]


def test_parse_valid_annotation() -> None:
    event = parse_annotation("annotations", encode_event(record()))
    assert isinstance(event, AnnotationSubmitted) and event.record_id == "r-1"


def test_parse_schema_violation_is_a_rejection_naming_fields() -> None:
    body = json.loads(encode_event(record()))
    body["confidence"] = "high"
    del body["record_id"]
    result = parse_annotation("annotations", json.dumps(body).encode())
    assert isinstance(result, SchemaRejection)
    assert result.model == "credit"
    assert {(r.field, r.rule) for r in result.reasons} == {("confidence", "schema"), ("record_id", "schema")}


def test_parse_schema_violation_with_bad_model_name() -> None:
    result = parse_annotation("annotations", b'{"model": 5}')
    assert isinstance(result, SchemaRejection) and result.model == "unknown"


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b"\xff\xfe", b"42"])
def test_not_a_json_object_goes_to_the_dlq(data: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_annotation("annotations", data)


def test_nan_literal_from_python_json_is_caught_as_finite() -> None:
    body = json.loads(encode_event(record()))
    body["features"]["income"] = float("nan")
    event = parse_annotation("annotations", json.dumps(body).encode())
    assert isinstance(event, AnnotationSubmitted)
    assert rules(SPEC, event) == [("features.income", "finite")]
