"""A regression label at ingest's door: a finite number within the declared range, rule ``label``.

Both validation paths (the all-numeric chained comparison and the typed loop) must give the
verdict :func:`label_reason` gives, and a JSON boolean must not slip through as 1.0.
"""

from __future__ import annotations

import json

import pytest

from services.ingest.validation import check_record, label_reason, parse_annotation
from shared import topics
from shared.datasets import AcceptedRecord
from shared.events import AnnotationSubmitted, RejectionReason
from shared.spec import ModelSpec, parse_spec

NUMERIC = parse_spec(
    "name: price\nfeatures: [{name: size, min: 0}, {name: rooms}]\nlabel: {type: regression, min: 0, max: 1000}"
)
TYPED = parse_spec(
    "name: price\nfeatures: [{name: size, min: 0}, {name: district, type: categorical}]\n"
    "label: {type: regression, min: 0, max: 1000}"
)
UNBOUNDED = parse_spec("name: price\nfeatures: [{name: size}]\nlabel: {type: regression}")
CLASSES = parse_spec("name: price\nfeatures: [{name: size}]\nlabel: {values: [0, 1]}")

VALUES: dict[str, object] = {"size": 70.0, "rooms": 3.0, "district": "north"}


def message(spec: ModelSpec, label: str) -> bytes:
    """An annotation as an annotator's JSON would carry it, with ``label`` as raw JSON text."""
    features = json.dumps({name: VALUES[name] for name in spec.feature_names})
    return (
        f'{{"model": "price", "record_id": "r-1", "features": {features}, "label": {label}, "confidence": 1.0}}'
    ).encode()


def verdict(spec: ModelSpec, label: str) -> AcceptedRecord | list[RejectionReason]:
    event = parse_annotation(topics.ANNOTATIONS, message(spec, label))
    assert isinstance(event, AnnotationSubmitted)
    return check_record(spec, event)


@pytest.mark.parametrize("spec", [NUMERIC, TYPED], ids=["all-numeric", "typed"])
@pytest.mark.parametrize(
    ("label", "text"),
    [
        ('"abc"', "label 'abc' is not a number: a regression label is a number"),
        ('"3.5"', "label '3.5' is not a number: a regression label is a number"),
        ("true", "label true is not a number: a regression label is a number"),
        ("false", "label false is not a number: a regression label is a number"),
        ("NaN", "label nan is not finite"),
        ("Infinity", "label inf is not finite"),
        ("-Infinity", "label -inf is not finite"),
        ("1e400", "label inf is not finite"),
        ("-3", "label -3.0 is below min 0.0"),
        ("-0.5", "label -0.5 is below min 0.0"),
        ("1000.001", "label 1000.001 is above max 1000.0"),
    ],
)
def test_a_bad_regression_label_is_rejected_by_the_label_rule_with_a_clear_message(
    spec: ModelSpec, label: str, text: str
) -> None:
    result = verdict(spec, label)
    assert result == [RejectionReason(field="label", rule="label", message=text)]


@pytest.mark.parametrize("spec", [NUMERIC, TYPED], ids=["all-numeric", "typed"])
@pytest.mark.parametrize(
    ("label", "stored"), [("0", 0.0), ("3", 3.0), ("249.5", 249.5), ("1000", 1000.0), ("1e3", 1000.0), ("-0.0", 0.0)]
)
def test_a_number_in_range_is_accepted_and_stored_as_a_float(spec: ModelSpec, label: str, stored: float) -> None:
    result = verdict(spec, label)
    assert isinstance(result, AcceptedRecord)
    assert result.label == stored and type(result.label) is float


def test_an_integer_too_large_for_a_float_is_rejected_not_raised() -> None:
    result = verdict(UNBOUNDED, "1" + "0" * 400)
    assert isinstance(result, list) and [(r.field, r.rule) for r in result] == [("label", "label")]
    assert "too large to be a number" in result[0].message


def test_without_a_declared_range_any_finite_number_is_a_label() -> None:
    for label, stored in (("-1e300", -1e300), ("1e300", 1e300), ("-7", -7.0)):
        result = verdict(UNBOUNDED, label)
        assert isinstance(result, AcceptedRecord) and result.label == stored
    assert isinstance(verdict(UNBOUNDED, "NaN"), list)


def test_a_bad_label_is_reported_beside_the_other_failed_rules() -> None:
    body = json.loads(message(NUMERIC, "1"))
    body.update(features={"size": -1.0, "rooms": 2.0}, label="cheap")
    event = AnnotationSubmitted.model_validate(body)
    result = check_record(NUMERIC, event)
    assert isinstance(result, list)
    assert [(r.field, r.rule) for r in result] == [("features.size", "range"), ("label", "label")]


def test_a_boolean_label_stays_a_boolean_only_where_json_said_so() -> None:
    as_json = parse_annotation(topics.ANNOTATIONS, message(UNBOUNDED, "true"))
    assert isinstance(as_json, AnnotationSubmitted) and as_json.label is True
    number = parse_annotation(topics.ANNOTATIONS, message(UNBOUNDED, "1"))
    assert isinstance(number, AnnotationSubmitted) and number.label == 1 and number.label is not True
    # a feature called "label" holding a boolean does not turn the real label into one
    named = b'{"model": "price", "record_id": "r", "features": {"label": true}, "label": 1}'
    event = parse_annotation(topics.ANNOTATIONS, named)
    assert isinstance(event, AnnotationSubmitted) and event.label == 1 and not isinstance(event.label, bool)


def test_a_classification_label_of_true_is_still_read_as_the_class_1() -> None:
    result = verdict(CLASSES, "true")
    assert isinstance(result, AcceptedRecord) and result.label == 1
    result = verdict(CLASSES, "false")
    assert isinstance(result, AcceptedRecord) and result.label == 0
    rejected = verdict(CLASSES, "2")
    assert isinstance(rejected, list) and rejected[0].message == "2 is not one of 0, 1"


@pytest.mark.parametrize("spec", [NUMERIC, TYPED, UNBOUNDED], ids=["all-numeric", "typed", "unbounded"])
def test_both_paths_accept_exactly_what_label_reason_accepts(spec: ModelSpec) -> None:
    labels = ['"x"', '""', "true", "false", "NaN", "Infinity", "1e400", "-1e-300", "0", "0.0", "1000", "1000.0000001"]
    labels += ["-1", "5", "999.999", "2e308", "1" + "0" * 400, "-" + "9" * 320]
    for label in labels:
        event = parse_annotation(topics.ANNOTATIONS, message(spec, label))
        assert isinstance(event, AnnotationSubmitted)
        result = check_record(spec, event)
        reason = label_reason(spec, event.label)
        assert isinstance(result, AcceptedRecord) == (reason is None), label
        if reason is not None:
            assert result == [reason], label
