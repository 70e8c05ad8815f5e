"""Model specs: DESIGN.md's example parses; bad specs name the bad field; the catalog reloads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared.errors import InvalidSpec
from shared.spec import SpecCatalog, apply_spec, dump_spec, parse_duration, parse_spec, spec_key
from shared.store import FileStore

DESIGN_EXAMPLE = """
name: credit
features: [{name: income, min: 0}, {name: age, min: 18, max: 120}]   # numeric features
label: {values: ["good", "bad"]}
validation: {min_confidence: 0.9}
training:
  estimator: HistGradientBoostingClassifier   # from an allow-list of sklearn estimators
  params: {max_iter: 200}
  window: {last_rows: 50000, since_change: true, min_rows_after_change: 1000}
  holdout: 0.2
  seed: 42
triggers: {on_drift: true, new_labels: 5000, schedule: 24h, cooldown: 5m, max_runs_per_hour: 6}
gate: {metric: accuracy, min: 0.7, min_delta_vs_champion: -0.005}
deployment:
  strategy: canary            # canary | shadow | direct
  canary_traffic: 0.1
  promote_after: {labelled_samples: 500, max_error_delta: 0.0}
  rollback_on: {error_increase: 0.05}
monitoring: {data_detector: ADWIN, concept_detector: ADWIN, psi_alert: 0.2}
"""


def test_design_example_parses() -> None:
    spec = parse_spec(DESIGN_EXAMPLE)
    assert spec.feature_names == ["income", "age"]
    assert spec.triggers.schedule == timedelta(hours=24)
    assert spec.triggers.cooldown == timedelta(minutes=5)
    assert spec.training.window.since_change is True
    assert spec.deployment.promote_after.labelled_samples == 500
    assert parse_spec(dump_spec(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nfeatures: [{name: a}]\nlabel: {values: [1, 2]}\ncolour: red", r"colour: Extra inputs"),
        ("name: x\nfeatures: [{name: a, min: 3, max: 1}]\nlabel: {values: [1, 2]}", r"features\.0: .*above max"),
        ("name: x\nfeatures: [{name: a}]\nlabel: {values: [1]}", r"label: .*needs at least two values"),
        ("name: x\nfeatures: [{name: a}]\nlabel: {values: [1, 2]}\ntriggers: {cooldown: soon}", r"triggers\.cooldown"),
        ("name: x\nfeatures: [{name: a}]\nlabel: {values: [1, 2]}\ntraining: {estimator: SVC}", r"training\.estimator"),
        ("name: x\nfeatures: [{name: a}, {name: a}]\nlabel: {values: [1, 2]}", r"repeated: a"),
        ("name: x\nfeatures: [{name: _a}]\nlabel: {values: [1, 2]}", r"features\.0\.name"),
        ("name: x\nfeatures: [{name: a}]\nlabel: {values: [1, 2]}\ndeployment: {canary_traffic: 2}", r"canary_traffic"),
        ("[1, 2", r"not valid YAML"),
        ("- 1\n- 2", r"must be a YAML mapping"),
    ],
)
def test_bad_specs_name_the_field(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(text, "x.yaml")


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration(30) == timedelta(seconds=30)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("-5m")


def test_apply_then_catalog_sees_new_and_changed_specs(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    catalog = SpecCatalog(store, refresh_s=3600)
    assert catalog.get("credit") is None
    spec, changed = apply_spec(store, DESIGN_EXAMPLE)
    assert changed and store.exists(spec_key("credit"))
    assert apply_spec(store, DESIGN_EXAMPLE)[1] is False
    assert catalog.refresh() == ["credit"]
    assert catalog.cached("credit") == spec
    apply_spec(store, DESIGN_EXAMPLE.replace("min_confidence: 0.9", "min_confidence: 0.5"))
    assert catalog.refresh() == ["credit"]
    cached = catalog.cached("credit")
    assert cached is not None and cached.validation.min_confidence == 0.5
    assert catalog.refresh() == []
    store.delete(spec_key("credit"))
    assert catalog.refresh() == ["credit"] and catalog.cached("credit") is None


def test_canonical_label_and_schema_hash() -> None:
    spec = parse_spec("name: s\nfeatures: [{name: x}]\nlabel: {values: [0, 1]}")
    assert spec.canonical_label("1") == 1 and spec.canonical_label(1) == 1
    assert spec.canonical_label(True) is None and spec.canonical_label(2) is None
    other = parse_spec("name: s\nfeatures: [{name: y}]\nlabel: {values: [0, 1]}")
    assert spec.schema_hash() != other.schema_hash()


TYPED = """
name: car-loan
features:
  - {name: car_value, type: numeric, min: 0}
  - {name: driver_tenure, type: numeric, allow_missing: true}
  - {name: salary_range, type: categorical}
  - {name: downpayment, type: categorical, values: ["0%", "10%", "20%"]}
  - {name: repaid_before, type: boolean}
label: {values: ["0", "1", "2"]}
"""


def test_the_typed_example_of_design_parses() -> None:
    spec = parse_spec(TYPED)
    assert spec.feature_types == ["numeric", "numeric", "categorical", "categorical", "boolean"]
    assert spec.typed and spec.features[3].values == ["0%", "10%", "20%"]
    assert spec.features[1].allow_missing and not spec.features[0].allow_missing
    assert parse_spec(dump_spec(spec)) == spec


def test_an_all_numeric_spec_keeps_its_schema_hash_and_a_type_change_moves_it() -> None:
    plain = parse_spec(DESIGN_EXAMPLE)
    explicit = parse_spec(DESIGN_EXAMPLE.replace("{name: income, min: 0}", "{name: income, type: numeric, min: 0}"))
    assert not plain.typed and plain.schema_hash() == explicit.schema_hash()
    flagged = parse_spec(DESIGN_EXAMPLE.replace("{name: income, min: 0}", "{name: income, type: boolean}"))
    assert flagged.schema_hash() != plain.schema_hash()


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ("{name: c, type: categorical, min: 0}", "min and max apply to numeric features"),
        ("{name: b, type: boolean, values: [x]}", "values apply to categorical features"),
        ("{name: c, type: categorical, values: [x, x]}", "must be distinct"),
        ("{name: c, type: categorical, values: ['']}", "the empty string is not a category"),
        ("{name: c, type: text}", "features.0.type"),
        ("{name: label, type: categorical}", "label: a model with categorical or boolean features"),
    ],
)
def test_typed_features_are_checked(feature: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(f"name: m\nfeatures: [{feature}]\nlabel: {{values: [a, b]}}\n")
