"""``driftloop datasets list|show`` and ``specs list`` say what a label is: class counts, or a
regression label's summary (text and ``--json``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.cli import main
from shared.datasets import AcceptedRecord, DatasetRepository
from shared.spec import apply_spec
from shared.store import FileStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileStore:
    root = tmp_path / "store"
    monkeypatch.setenv("DRIFTLOOP_STORE_KIND", "file")
    monkeypatch.setenv("DRIFTLOOP_STORE_ROOT", str(root))
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps a table's cells to the terminal's width
    store = FileStore(root)
    repo = DatasetRepository(store)
    prices = [
        AcceptedRecord(f"p{i}", T0 + timedelta(seconds=i), 10.0 * i, 1.0, None, None, (float(i),)) for i in range(1, 6)
    ]
    repo.write_version("price", "r" * 64, ["size"], [], prices, None, task="regression")
    classes = [AcceptedRecord(f"c{i}", T0, ["no", "yes"][i % 2], 1.0, None, None, (float(i),)) for i in range(3)]
    repo.write_version("credit", "c" * 64, ["size"], ["no", "yes"], classes, None)
    apply_spec(store, "name: price\nfeatures: [{name: size}]\nlabel: {type: regression, min: 0}")
    apply_spec(store, "name: credit\nfeatures: [{name: size}]\nlabel: {values: ['no', 'yes']}")
    return store


SUMMARY = {"count": 5.0, "mean": 30.0, "std": pytest.approx(14.1421356), "min": 10.0, "p50": 30.0, "max": 50.0}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_datasets_list_json_gives_a_regression_summary_and_class_counts(
    store: FileStore, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = {r["model"]: r for r in json.loads(run(capsys, "datasets", "list", "--json"))}
    assert rows["price"]["task"] == "regression" and rows["price"]["label_counts"] == {}
    assert rows["price"]["label_summary"] == SUMMARY
    assert rows["credit"]["task"] == "classification" and rows["credit"]["label_counts"] == {"no": 2, "yes": 1}
    assert rows["credit"]["label_summary"] is None


def test_datasets_list_text_shows_the_summary_in_the_labels_column(
    store: FileStore, capsys: pytest.CaptureFixture[str]
) -> None:
    text = run(capsys, "datasets", "list", "price")
    assert "mean 30 ± 14.14, p50 30, [10, 50]" in text


def test_datasets_show_gives_the_label_summary(store: FileStore, capsys: pytest.CaptureFixture[str]) -> None:
    shown = json.loads(run(capsys, "datasets", "show", "price", "--json"))
    assert shown["task"] == "regression" and shown["label_summary"] == SUMMARY
    assert sum(shown["label_histogram"]["counts"]) == 5 and shown["label_sample"] == [10.0, 20.0, 30.0, 40.0, 50.0]
    text = run(capsys, "datasets", "show", "price")
    assert "regression label" in text and "p50" in text
    credit = json.loads(run(capsys, "datasets", "show", "credit", "--json"))
    assert "label_summary" not in credit and credit["label_counts"] == {"no": 2, "yes": 1}, "as it always was"


def test_specs_list_says_a_regression_label_is_a_number(store: FileStore, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r["model"]: r for r in json.loads(run(capsys, "specs", "list", "--json"))}
    assert rows["price"]["task"] == "regression" and rows["price"]["label_range"] == {"min": 0.0, "max": None}
    assert rows["credit"]["labels"] == ["no", "yes"] and rows["credit"]["label_range"] is None
    text = run(capsys, "specs", "list")
    assert "a number (regression)" in text
