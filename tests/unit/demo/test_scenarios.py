"""The demo's streams: real-looking tables that the spec written for them accepts; the operator's
hand (train, then promote or canary); the loop benchmark's scenarios and its comparison of a
variation with the undisturbed scenario."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, get_args

import pytest

from benchmarks import bench_loop
from services import demo
from services.cli import build_parser
from services.demo import (
    LOAN_SHIFT,
    LOAN_TIERS,
    OPERATOR_ACTIONS,
    SCENARIOS,
    SEA_SWITCH,
    TIERS,
    DemoPlan,
    OperatorAction,
    Scenario,
    broken_records,
    v2_inputs,
)
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


@pytest.mark.parametrize("action", get_args(OperatorAction))
def test_the_operator_trains_then_rolls_the_version_out_by_the_plan(
    action: OperatorAction, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[tuple[str, ...]] = []

    def driftloop(stack: Any, *args: str) -> str:
        commands.append(args)
        return json.dumps({"version": 4}) if args[:2] == ("models", "train") else ""

    monkeypatch.setattr(demo, "_driftloop", driftloop)
    assert DemoPlan().operator_action == "promote"
    assert OPERATOR_ACTIONS[action](object(), "m") == 4  # type: ignore[arg-type]
    reason = {"promote": "operator: train now", "canary": "operator: train now, canary"}[action]
    assert commands == [
        ("models", "train", "m", "--no-publish", "--json"),
        ("models", action, "m", "4", "--reason", reason),
    ]


@pytest.mark.parametrize("name", bench_loop.SCENARIOS)
def test_every_bench_scenario_builds_a_stream_its_spec_accepts(name: str) -> None:
    scenario = bench_loop.build_scenario(name)
    spec = parse_spec(scenario.spec_text)
    for regime in (scenario.before, scenario.after):
        for i, (x, y) in enumerate(regime(100, 5)):
            event = AnnotationSubmitted(model=scenario.model, record_id=f"r{i}", features=x, label=y)
            assert isinstance(check_record(spec, event), AcceptedRecord), (name, x, y)


def test_the_canary_variations_act_before_the_change_by_their_leads() -> None:
    canary, during = bench_loop.OPERATED["canary"], bench_loop.OPERATED["canary-change"]
    assert (canary.action, canary.lead) == ("canary", bench_loop.CANARY_LEAD)
    assert (during.action, during.lead) == ("canary", bench_loop.CANARY_CHANGE_LEAD)
    assert set(bench_loop.OPERATED) <= {name.partition("-")[2] for name in bench_loop.SCENARIOS}
    deployment = parse_spec(bench_loop.build_scenario("sea-canary").spec_text).deployment
    judged_after = deployment.promote_after.labelled_samples / deployment.canary_traffic  # served events, at least
    assert bench_loop.CANARY_CHANGE_LEAD < judged_after, "still on trial at the change"
    assert bench_loop.CANARY_LEAD > 2 * judged_after, "judged before the change"


def _bench_outcome(name: str, last_2000: float | None, error: str | None = None) -> bench_loop.Outcome:
    sizes = bench_loop.Sizes(bootstrap=2000, before_drift=3000, max_after_drift=10000, seed=7)
    outcome = bench_loop.Outcome(name, bench_loop.build_scenario(name), sizes, "HistGradientBoostingClassifier")
    outcome.accuracy["served"] = {"before": 0.88, "right_after": 0.78, "last_2000": last_2000}
    outcome.error = error
    return outcome


UNDISTURBED_SEA = "served last-2000 >= sea (undisturbed) - 2 pt"


def test_a_variation_is_held_to_its_undisturbed_base_when_both_ran() -> None:
    base = _bench_outcome("sea", 0.890)
    near, far, better = (
        _bench_outcome("sea-canary", 0.871),
        _bench_outcome("sea-promoted", 0.869),
        _bench_outcome("sea-canary-change", 0.95),
    )
    alone = _bench_outcome("hyperplane-promoted", 0.5)
    bench_loop.link_undisturbed([base, near, far, better, alone])
    assert near.targets()[UNDISTURBED_SEA] and better.targets()[UNDISTURBED_SEA]
    assert not far.targets()[UNDISTURBED_SEA]
    assert near.to_json()["undisturbed"] == {"scenario": "sea", "served": base.accuracy["served"]}
    assert not [t for t in base.targets() if "undisturbed" in t], "the base is not compared with itself"
    assert not [t for t in alone.targets() if "undisturbed" in t], "hyperplane did not run"


def test_no_undisturbed_target_when_the_base_failed() -> None:
    base, variation = _bench_outcome("sea", None, error="the loop did not finish"), _bench_outcome("sea-canary", 0.89)
    bench_loop.link_undisturbed([base, variation])
    assert variation.undisturbed is None and UNDISTURBED_SEA not in variation.targets()
