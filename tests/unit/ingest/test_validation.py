"""Per-record validation: each rule (numeric, categorical, boolean, missing, labels), with the field it names."""

from __future__ import annotations

import json

import pytest

from services.ingest.validation import SchemaRejection, check_record, feature_reason, parse_annotation
from shared.datasets import AcceptedRecord
from shared.errors import InvalidEvent
from shared.events import AnnotationSubmitted, RejectionReason, encode_event
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


# --- typed features ---------------------------------------------------------------------------

TYPED = parse_spec(
    """
name: car-loan
features:
  - {name: car_value, min: 0}
  - {name: driver_tenure, allow_missing: true}
  - {name: salary_range, type: categorical}
  - {name: downpayment, type: categorical, values: ["0%", "10%", "20%"]}
  - {name: repaid_before, type: boolean}
  - {name: region, type: categorical, allow_missing: true}
  - {name: verified, type: boolean, allow_missing: true}
label: {values: ["low", "mid", "high"]}
"""
)
VALID_TYPED: dict[str, object] = {
    "car_value": 20000.0,
    "driver_tenure": 4.0,
    "salary_range": "40K - 60K",
    "downpayment": "10%",
    "repaid_before": True,
    "region": "north",
    "verified": False,
}


def typed(features: dict[str, object] | None = None, **overrides: object) -> AnnotationSubmitted:
    """A car-loan annotation as ingest receives it: decoded from JSON."""
    body: dict[str, object] = {
        "model": "car-loan",
        "record_id": "c-1",
        "features": VALID_TYPED if features is None else features,
        "label": "mid",
    }
    body.update(overrides)
    event = parse_annotation("annotations", json.dumps(body).encode())
    assert isinstance(event, AnnotationSubmitted)
    return event


def with_feature(name: str, value: object) -> dict[str, object]:
    return {**VALID_TYPED, name: value}


def without(name: str) -> dict[str, object]:
    return {k: v for k, v in VALID_TYPED.items() if k != name}


def test_a_typed_record_is_stored_as_typed_values_in_spec_order() -> None:
    shuffled = dict(reversed(list(VALID_TYPED.items())))
    result = check_record(TYPED, typed(shuffled))
    assert isinstance(result, AcceptedRecord)
    assert result.features == (20000.0, 4.0, "40K - 60K", "10%", True, "north", False)
    assert [type(v) for v in result.features] == [float, float, str, str, bool, str, bool]


def test_json_integers_are_numbers_for_numeric_features_and_their_text_for_categorical_ones() -> None:
    result = check_record(TYPED, typed(with_feature("salary_range", 3) | {"car_value": 7}))
    assert isinstance(result, AcceptedRecord)
    assert result.features[0] == 7.0 and isinstance(result.features[0], float)
    assert result.features[2] == "3", "a code sent as 3 is the category '3'"
    as_text = check_record(TYPED, typed(with_feature("salary_range", "3")))
    assert isinstance(as_text, AcceptedRecord) and as_text.features[2] == "3"


def test_missing_values_allowed_by_the_spec_are_stored_as_none_for_every_type() -> None:
    absent = check_record(TYPED, typed(without("driver_tenure") | {"region": None, "verified": None}))
    assert isinstance(absent, AcceptedRecord)
    assert absent.features == (20000.0, None, "40K - 60K", "10%", True, None, None)
    empty = check_record(TYPED, typed(with_feature("region", "")))
    assert isinstance(empty, AcceptedRecord) and empty.features[5] is None, "'' is a missing category, not one"


@pytest.mark.parametrize(
    ("features", "field", "rule", "message"),
    [
        (with_feature("car_value", "abc"), "features.car_value", "type", "car_value is numeric, got the string 'abc'"),
        (with_feature("car_value", True), "features.car_value", "type", "car_value is numeric, got the boolean true"),
        (with_feature("car_value", -1), "features.car_value", "range", "car_value=-1.0 is below min 0.0"),
        (with_feature("salary_range", True), "features.salary_range", "type", "got the boolean true"),
        (with_feature("salary_range", 2.5), "features.salary_range", "type", "got the number 2.5"),
        (with_feature("downpayment", "15%"), "features.downpayment", "category", "'15%' is not a declared category"),
        (with_feature("downpayment", 10), "features.downpayment", "category", "'10' is not a declared category"),
        (with_feature("repaid_before", 1), "features.repaid_before", "type", "boolean (true or false), got the number"),
        (with_feature("repaid_before", "yes"), "features.repaid_before", "type", "got the string 'yes'"),
        (with_feature("verified", "false"), "features.verified", "type", "got the string 'false'"),
        (without("salary_range"), "features.salary_range", "missing", "salary_range is missing"),
        (with_feature("salary_range", None), "features.salary_range", "missing", "salary_range is missing"),
        (with_feature("salary_range", ""), "features.salary_range", "missing", "salary_range is missing"),
        (with_feature("repaid_before", None), "features.repaid_before", "missing", "repaid_before is missing"),
        (without("car_value"), "features.car_value", "missing", "car_value is missing"),
        (with_feature("colour", "red"), "features.colour", "unknown_feature", "colour is not a feature of car-loan"),
    ],
)
def test_each_typed_rule_names_its_field_and_says_why(
    features: dict[str, object], field: str, rule: str, message: str
) -> None:
    result = check_record(TYPED, typed(features))
    assert isinstance(result, list)
    assert [(r.field, r.rule) for r in result] == [(field, rule)]
    assert message in result[0].message


def test_a_category_rejection_lists_a_few_of_the_declared_values() -> None:
    many = parse_spec(
        "name: m\nfeatures: [{name: grade, type: categorical, values: [a, b, c, d, e, f, g, h]}]\n"
        "label: {values: [0, 1]}"
    )
    [reason] = rules_of(many, AnnotationSubmitted(model="m", record_id="r", features={"grade": "z"}, label=0))
    assert reason.rule == "category"
    assert reason.message == "grade='z' is not a declared category; allowed: 'a', 'b', 'c', 'd', 'e', … (3 more)"


def test_a_long_string_is_clipped_in_the_message() -> None:
    [reason] = rules_of(TYPED, typed(with_feature("car_value", "x" * 500)))
    assert reason.rule == "type" and len(reason.message) < 120 and reason.message.endswith("…'")


def test_every_failed_typed_rule_is_reported_in_spec_order() -> None:
    bad = {**VALID_TYPED, "car_value": "abc", "downpayment": "15%", "repaid_before": None, "verified": 0}
    found = rules(TYPED, typed(bad, label="none"))
    assert found == [
        ("features.car_value", "type"),
        ("features.downpayment", "category"),
        ("features.repaid_before", "missing"),
        ("features.verified", "type"),
        ("label", "label"),
    ]


@pytest.mark.parametrize("value", [True, False, "12", "abc", ""])
def test_an_all_numeric_spec_refuses_booleans_and_strings_as_type(value: bool | str) -> None:
    event = AnnotationSubmitted(model="credit", record_id="r", features={"income": value, "age": 30.0}, label="good")
    assert rules(SPEC, event.model_copy(update={"confidence": 0.95})) == [("features.income", "type")]


def test_multiclass_labels_are_accepted_like_binary_ones() -> None:
    for label in ("low", "mid", "high"):
        result = check_record(TYPED, typed(label=label))
        assert isinstance(result, AcceptedRecord) and result.label == label
    assert rules(TYPED, typed(label="extreme")) == [("label", "label")]
    three = parse_spec("name: sea\nfeatures: [{name: x}]\nlabel: {values: [0, 1, 2]}")
    for sent, kept in ((2, 2), ("2", 2), (0, 0)):
        result = check_record(three, AnnotationSubmitted(model="sea", record_id="r", features={"x": 1.0}, label=sent))
        assert isinstance(result, AcceptedRecord) and result.label == kept
    assert rules(three, AnnotationSubmitted(model="sea", record_id="r", features={"x": 1.0}, label=3)) == [
        ("label", "label")
    ]


SAMPLE_VALUES: list[object] = [
    None,
    0.0,
    -3.0,
    2.5,
    150.0,
    1e300,
    float("nan"),
    float("inf"),
    3,
    True,
    False,
    "",
    "a",
    "3",
    "0%",
    "yes",
]


@pytest.mark.parametrize(
    "feature",
    [
        "{name: v, min: 0, max: 100}",
        "{name: v, allow_missing: true}",
        "{name: v, type: categorical}",
        "{name: v, type: categorical, values: ['0%', a], allow_missing: true}",
        "{name: v, type: boolean}",
        "{name: v, type: boolean, allow_missing: true}",
    ],
)
def test_the_fast_path_accepts_exactly_what_the_rules_accept(feature: str) -> None:
    """The compiled hot path and the rule-by-rule explanation never disagree (either way a crash or a leak)."""
    for others in ("", ", {name: w, type: boolean}"):  # all-numeric specs take the chained-comparison path
        spec = parse_spec(f"name: m\nfeatures: [{feature}{others}]\nlabel: {{values: [0, 1]}}")
        spec_feature = spec.features[0]
        for value in SAMPLE_VALUES:
            features: dict[str, object] = {"v": value}
            if others:
                features["w"] = True
            event = AnnotationSubmitted(model="m", record_id="r", features=features, label=0)  # type: ignore[arg-type]
            result = check_record(spec, event)
            expected = feature_reason(spec_feature, event.features["v"])
            if expected is None:
                assert isinstance(result, AcceptedRecord), (feature, value, result)
            else:
                assert isinstance(result, list) and result == [expected], (feature, value, result)


def test_feature_reason_is_none_for_a_valid_value() -> None:
    assert feature_reason(TYPED.features[3], "20%") is None
    assert feature_reason(TYPED.features[1], None) is None
    reason = feature_reason(TYPED.features[0], float("nan"))
    assert reason is not None and reason.rule == "finite"


def rules_of(spec: ModelSpec, event: AnnotationSubmitted) -> list[RejectionReason]:
    result = check_record(spec, event)
    assert isinstance(result, list), f"expected a rejection, got {result}"
    return result
