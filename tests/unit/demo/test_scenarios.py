"""The demo's streams: real-looking tables that the spec written for them accepts."""

from __future__ import annotations

from collections import Counter

import pytest

from services.cli import build_parser
from services.demo import LOAN_SHIFT, LOAN_TIERS, SCENARIOS, SEA_SWITCH, TIERS, Scenario, broken_records, v2_inputs
from services.ingest.validation import check_record
from shared.datasets import AcceptedRecord
from shared.events import AnnotationSubmitted
from shared.spec import parse_spec


@pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_every_record_of_a_stream_is_valid_for_its_spec(scenario: Scenario) -> None:
    spec = parse_spec(scenario.spec_text)
    assert tuple(spec.feature_names) == scenario.features
    assert tuple(spec.feature_types) == (scenario.types or ("numeric",) * len(scenario.features))
    for regime in (scenario.before, scenario.after):
        for i, (x, y) in enumerate(regime(300, 5)):
            event = AnnotationSubmitted(model=scenario.model, record_id=f"r{i}", features=x, label=y)
            assert isinstance(check_record(spec, event), AcceptedRecord), (x, y)


def test_the_loan_table_has_categories_flags_and_holes() -> None:
    rows = [x for x, _ in LOAN_SHIFT.before(2000, 1)]
    assert all(isinstance(x["education"], str) and isinstance(x["has_commission"], bool) for x in rows)
    missing_age = sum(x["age"] is None for x in rows) / len(rows)
    assert 0.02 < missing_age < 0.1
    assert len({x["car"] for x in rows if x["car"] is not None}) == 20


def test_the_shift_changes_who_applies_and_the_rule() -> None:
    before = Counter(x["education"] for x, _ in LOAN_SHIFT.before(3000, 1))
    after = Counter(x["education"] for x, _ in LOAN_SHIFT.after(3000, 1))
    share = lambda counts, level: counts[level] / sum(counts.values())  # noqa: E731
    assert share(after, "doctorate") > 1.4 * share(before, "doctorate")
    assert share(after, "none") < 0.7 * share(before, "none")


def test_tiers_are_three_classes() -> None:
    labels = Counter(y for _, y in LOAN_TIERS.before(3000, 1))
    assert set(labels) == set(TIERS) and min(labels.values()) > 150


@pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_broken_records_fail_by_the_one_rule_they_break(scenario: Scenario) -> None:
    spec = parse_spec(scenario.spec_text)
    rules: Counter[str] = Counter()
    for event in broken_records(scenario, 12):
        outcome = check_record(spec, event)
        assert isinstance(outcome, list) and len(outcome) == 1, (event, outcome)
        rules.update(reason.rule for reason in outcome)
    expected = {"range", "min_confidence", "label", "missing"}
    assert set(rules) == (expected | {"type", "category"} if scenario.types else expected)


def test_typed_scenarios_are_served_as_one_tensor_per_feature() -> None:
    x, _ = LOAN_SHIFT.before(1, 3)[0]
    x = {**x, "age": None}
    inputs = {i["name"]: i for i in v2_inputs(LOAN_SHIFT, x)}
    assert set(inputs) == set(LOAN_SHIFT.features)
    assert inputs["education"]["datatype"] == "BYTES" and inputs["has_commission"]["datatype"] == "BOOL"
    assert inputs["salary"]["datatype"] == "FP64" and inputs["age"] == {
        "name": "age",
        "shape": [1],
        "datatype": "BYTES",
        "data": [""],
    }
    (single,) = v2_inputs(SEA_SWITCH, SEA_SWITCH.before(1, 3)[0][0])
    assert single["name"] == "input" and single["shape"] == [1, 3]


def test_the_demo_command_offers_every_scenario() -> None:
    demo = build_parser().parse_args(["demo", "--scenario", "loan-tiers"])
    assert demo.scenario == "loan-tiers"
    for name in SCENARIOS:
        assert build_parser().parse_args(["demo", "--scenario", name]).scenario == name
