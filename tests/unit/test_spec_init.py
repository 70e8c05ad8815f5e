"""``specs init``: specs inferred from real-looking tables parse as written and train without edits."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from services.cli import main
from services.ingest.validation import check_record
from services.publish import TableColumns, plan_table, read_sample, table_columns, table_records
from services.spec_init import feature_name, infer_spec
from services.trainer.runner import train
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.errors import InvalidInput
from shared.registry import Registry
from shared.spec import SpecCatalog, parse_spec
from shared.store import FileStore


def loans(n: int = 3000, seed: int = 7) -> pd.DataFrame:
    """Loan applications: amounts, ages, cities, codes with leading zeros, a flag, gaps; a learnable label."""
    rng = np.random.default_rng(seed)
    income = rng.gamma(2.0, 20_000.0, n).round(2)
    age = rng.integers(18, 80, n)
    city = rng.choice(["Berlin", "Paris", "Rome", "Lisbon"], n)
    member = rng.random(n) < 0.4
    score = rng.normal(0, 1, n)
    good = (income / 40_000 + member + (city == "Paris") + score * 0.3 + rng.normal(0, 0.3, n)) > 1.2
    frame = pd.DataFrame(
        {
            "record_id": [f"app-{i}" for i in range(n)],
            "Income (EUR)": income,
            "age": age,
            "city": city,
            "branch": [f"{b:05d}" for b in rng.integers(0, 300, n)],
            "member": member,
            "score": np.where(rng.random(n) < 0.05, np.nan, score),
            "segment": np.where(rng.random(n) < 0.03, None, rng.choice(["retail", "private"], n)),
            "applied_at": pd.date_range("2024-01-01", periods=n, freq="min").astype(str),
            "comment": [f"note {i}" for i in range(n)],
            "outcome": np.where(good, "good", "bad"),
        }
    )
    return frame


def deliveries(n: int = 3000, seed: int = 3) -> pd.DataFrame:
    """Delivery times: a regression label from distances, a region, an express flag, missing weights."""
    rng = np.random.default_rng(seed)
    distance = rng.uniform(0.5, 30.0, n)
    region = rng.choice(["north", "south", "centre"], n)
    express = rng.random(n) < 0.3
    weight = np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 2.0, n))
    minutes = 10 + 2.5 * distance - 8 * express + 5 * (region == "north") + rng.normal(0, 2, n)
    return pd.DataFrame(
        {"distance_km": distance, "region": region, "express": express, "weight": weight, "minutes": minutes.clip(1)}
    )


def flat(text: str) -> str:
    """A spec's text with its wrapped comments joined, to look for a sentence."""
    return re.sub(r"\n\s*#\s+", " ", text)


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def inferred_for(path: Path, label: str, name: str, **options: str):  # type: ignore[no-untyped-def]
    table, total = read_sample(path)
    return infer_spec(table, label, name=name, source=path.name, total_rows=total, **options)


def train_from(path: Path, spec_text: str, label: str, store: FileStore) -> dict[str, float]:
    """Publish the file's rows as ingest would store them, then run one training; its metrics."""
    spec = parse_spec(spec_text)
    plan = plan_table(spec, table_columns(path), TableColumns(label=label, given=frozenset({"label"})), str(path))
    records = []
    for batch in table_records(plan, path):
        assert not batch.invalid, batch.invalid[:3]
        for event in batch.events():
            record = check_record(spec, event)
            assert isinstance(record, AcceptedRecord), record
            records.append(record)
    repo = DatasetRepository(store)
    manifest = repo.write_version(
        spec.name,
        spec.schema_hash(),
        spec.feature_names,
        [] if spec.regression else spec.label.values,
        records,
        None,
        feature_types=spec.feature_types,
        task=spec.label.type,
    )
    assert manifest is not None
    result = train(spec, repo, Registry(store), manifest.version, uuid.uuid4().hex, "manual", None)
    assert result.card is not None and result.error is None, result.error
    assert result.card.gate.passed, result.card.gate.reasons
    return result.card.metrics


def test_a_typed_classification_table_as_csv(tmp_path: Path) -> None:
    path = write(loans(), tmp_path / "loans.csv")
    inferred = inferred_for(path, "outcome", "loans")
    features = {f.spec["name"]: f.spec for f in inferred.features}
    assert features == {
        "Income_EUR": {"name": "Income_EUR", "type": "numeric", "min": 0},
        "age": {"name": "age", "type": "numeric", "min": 0},
        "city": {"name": "city", "type": "categorical", "values": ["Berlin", "Lisbon", "Paris", "Rome"]},
        "branch": {"name": "branch", "type": "categorical"},
        "member": {"name": "member", "type": "boolean"},
        "score": {"name": "score", "type": "numeric", "allow_missing": True},
        "segment": {"name": "segment", "type": "categorical", "values": ["private", "retail"], "allow_missing": True},
    }
    assert {o.column for o in inferred.left_out} == {"record_id", "applied_at", "comment"}
    assert inferred.spec.label.values == ["bad", "good"]
    assert "# column 'Income (EUR)' (renamed" in inferred.text
    assert "300 distinct categories" in flat(inferred.text)
    metrics = train_from(path, inferred.text, "outcome", FileStore(tmp_path / "store"))
    assert metrics["accuracy"] > 0.8


def test_a_regression_table_as_parquet(tmp_path: Path) -> None:
    path = write(deliveries(), tmp_path / "deliveries.parquet")
    inferred = inferred_for(path, "minutes", "deliveries")
    spec = inferred.spec
    assert spec.regression and spec.label.min == 0
    assert spec.training.estimator == "HistGradientBoostingRegressor" and spec.gate.metric == "mae"
    assert spec.gate.max is not None and spec.gate.max > 10, "the median's MAE, rounded up"
    assert [(f.name, f.type, f.allow_missing) for f in spec.features] == [
        ("distance_km", "numeric", False),
        ("region", "categorical", False),
        ("express", "boolean", False),
        ("weight", "numeric", True),
    ]
    metrics = train_from(path, inferred.text, "minutes", FileStore(tmp_path / "store"))
    assert metrics["mae"] < spec.gate.max / 2


def test_sklearn_diabetes_as_csv_trains_a_regressor(tmp_path: Path) -> None:
    path = write(load_diabetes(as_frame=True).frame, tmp_path / "diabetes.csv")
    inferred = inferred_for(path, "target", "diabetes")
    assert inferred.spec.regression and len(inferred.spec.features) == 10
    assert "all 442 rows read" in inferred.text
    train_from(path, inferred.text, "target", FileStore(tmp_path / "store"))


def test_sklearn_iris_and_breast_cancer_as_csv_train_classifiers(tmp_path: Path) -> None:
    iris = write(load_iris(as_frame=True).frame.sample(frac=1.0, random_state=1), tmp_path / "iris.csv")
    inferred = inferred_for(iris, "target", "iris")
    assert inferred.spec.label.values == [0, 1, 2] and inferred.spec.gate.min == 0.33
    assert [f.name for f in inferred.spec.features][0] == "sepal_length_cm"
    store = FileStore(tmp_path / "store")
    frame = load_breast_cancer(as_frame=True).frame
    cancer = write(frame.sample(frac=1.0, random_state=0), tmp_path / "breast cancer.csv")
    inferred_cancer = inferred_for(cancer, "target", "breast-cancer")
    assert len(inferred_cancer.spec.features) == 30
    # iris has 150 rows: the newest fifth (30) is the holdout, the gate must beat always answering one class
    train_from(iris, inferred.text, "target", store)
    train_from(cancer, inferred_cancer.text, "target", store)


def test_a_boolean_label_and_pandas_gaps_in_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 1200
    x = rng.normal(0, 1, n)
    frame = pd.DataFrame(
        {
            "x": x,
            "count": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 9, n)), dtype="Int64"),
            "flag01": rng.integers(0, 2, n),
            "churned": x + rng.normal(0, 0.3, n) > 0,
        }
    )
    path = write(frame, tmp_path / "churn.parquet")
    inferred = inferred_for(path, "churned", "churn")
    spec = inferred.spec
    assert spec.label.values == [0, 1] and "false → 0, true → 1" in inferred.text
    flag = spec.features[2]
    assert (flag.name, flag.type, flag.min) == ("flag01", "numeric", 0.0)
    assert "only 0 and 1: kept numeric" in inferred.text
    assert spec.features[1].allow_missing and spec.features[1].type == "numeric"
    train_from(path, inferred.text, "churned", FileStore(tmp_path / "store"))


def test_declared_categories_only_for_a_small_set_seen_several_times() -> None:
    common = ["a", "b", "c"] * 40
    table = pa.table(
        {
            "small": common,
            "rare": [*common[:-1], "z"],  # 'z' once: the set may not be closed
            "many": [f"c{i % 30}" for i in range(120)],
            "y": ["p", "q"] * 60,
        }
    )
    features = {f.spec["name"]: f for f in infer_spec(table, "y", name="m", source="t.csv").features}
    assert features["small"].spec["values"] == ["a", "b", "c"]
    assert "values" not in features["rare"].spec and "fewer than 5 times" in features["rare"].notes[0]
    assert "values" not in features["many"].spec and "more than 20" in features["many"].notes[0]


def test_columns_that_are_not_features_are_left_out_with_a_reason() -> None:
    n = 60
    table = pa.table(
        {
            "id": list(range(n)),
            "row": list(range(100, 100 + n)),
            "constant": ["DE"] * n,
            "empty": pa.array([None] * n, pa.float64()),
            "when": pa.array(pd.date_range("2024-01-01", periods=n, freq="D")),
            "tags": [[1, 2]] * n,
            "confidence": [0.9] * n,
            "x": [float(i % 7) for i in range(n)],
            "y": ["a", "b", "c"] * 20,
        }
    )
    inferred = infer_spec(table, "y", name="m", source="t.parquet", id_column="id")
    reasons = {o.column: o.reason for o in inferred.left_out}
    assert reasons["id"].startswith("the record id")
    assert "row index" in reasons["row"]
    assert "one value ('DE')" in reasons["constant"]
    assert reasons["empty"] == "no value in any row"
    assert "timestamps" in reasons["when"] and "nested" in reasons["tags"]
    assert "annotation's confidence" in reasons["confidence"]
    assert inferred.spec.feature_names == ["x"]
    assert "--id id" in inferred.text and "raise min_confidence" in inferred.text


def test_a_csv_numeric_column_with_a_bad_cell_stays_numeric_and_says_so(tmp_path: Path) -> None:
    rows = [f"{i * 1.5},{'ab'[i % 2]}" for i in range(300)]
    rows[17] = "n.a.,a"  # not one of the null spellings: a bad cell
    path = tmp_path / "t.csv"
    path.write_text("amount,y\n" + "\n".join(rows) + "\n")
    inferred = inferred_for(path, "y", "t")
    assert inferred.spec.features[0].type == "numeric"
    assert "1 cells are not numbers (e.g. 'n.a.'): publish reports those rows as invalid" in flat(inferred.text)


def test_names_are_sanitised_quoted_or_refused() -> None:
    assert feature_name("Sale Price ($)") == "Sale_Price" and feature_name("1st") == "f_1st"
    table = pa.table({"yes": [1.0, 2.0] * 10, "null": ['say "hi"', "naïve, ünïcödé"] * 10, "y": ["a", "b"] * 10})
    inferred = infer_spec(table, "y", name="2024", source="t.csv")
    loaded = yaml.safe_load(inferred.text)
    assert loaded["name"] == "2024" and [f["name"] for f in loaded["features"]] == ["yes", "null"]
    assert inferred.spec.features[1].values == ["naïve, ünïcödé", 'say "hi"']
    clash = pa.table({"a b": [1.0, 2.0] * 10, "a_b": [3.0, 1.0] * 10, "y": ["p", "q"] * 10})
    with pytest.raises(InvalidInput, match="'a b' and 'a_b' both become the feature 'a_b'"):
        infer_spec(clash, "y", name="m", source="t.csv")
    with pytest.raises(InvalidInput, match="not a model name"):
        infer_spec(table, "y", name="no spaces", source="t.csv")


def test_labels_that_cannot_be_learned_are_refused_with_the_reason() -> None:
    table = pa.table({"x": [1.0, 2.0] * 200, "same": ["a"] * 400, "free": [f"t{i}" for i in range(400)]})
    with pytest.raises(InvalidInput, match="one value in every row"):
        infer_spec(table, "same", name="m", source="t.csv")
    with pytest.raises(InvalidInput, match="too many classes"):
        infer_spec(table, "free", name="m", source="t.csv")
    with pytest.raises(InvalidInput, match="no column 'nope' for the label.*its columns: x, same, free"):
        infer_spec(table, "nope", name="m", source="t.csv")


def test_imbalanced_classes_gate_on_balanced_accuracy() -> None:
    table = pa.table({"x": [i / 3 for i in range(100)], "y": ["ok"] * 90 + ["fraud"] * 10})
    spec = infer_spec(table, "y", name="m", source="t.csv").spec
    assert (spec.gate.metric, spec.gate.min) == ("balanced_accuracy", 0.5)


def test_a_sample_of_a_big_file_says_so(tmp_path: Path) -> None:
    path = write(deliveries(5000), tmp_path / "big.parquet")
    table, total = read_sample(path, rows=1000)
    assert (table.num_rows, total) == (1000, 5000)
    text = infer_spec(table, "minutes", name="big", source=path.name, total_rows=total).text
    assert "its first 1,000 rows read (of 5,000)" in flat(text)
    csv = write(deliveries(5000), tmp_path / "big.csv")
    table, total = read_sample(csv, rows=1000)
    assert (table.num_rows, total) == (1000, None)
    assert table.schema.field("distance_km").type == pa.string(), "CSV cells are read as text, then judged"


def test_the_cli_writes_a_spec_that_specs_apply_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(loans(1500), tmp_path / "loans.csv")
    assert main(["specs", "init", str(path), "--label", "outcome"]) == 0
    printed = capsys.readouterr()
    assert parse_spec(printed.out).name == "loans"
    assert "loans: 7 features (3 numeric, 3 categorical, 1 boolean), 2 classes" in printed.err
    output = tmp_path / "loans.yaml"
    args = ["specs", "init", str(path), "--label", "outcome", "--name", "credit", "--output", str(output)]
    assert main(args) == 0
    assert main(args) == 1, "an existing spec is not overwritten without --force"
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    data_dir = tmp_path / "stack"
    assert main(["specs", "apply", str(output), "--data-dir", str(data_dir)]) == 0
    stored = SpecCatalog(FileStore(data_dir / "store")).get("credit")
    assert stored is not None and stored.feature_names[0] == "Income_EUR"
    assert main(["specs", "init", str(path), "--label", "missing"]) == 1
    assert "no column 'missing' for the label" in capsys.readouterr().err
