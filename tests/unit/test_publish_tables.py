"""``publish annotations`` on tables: columns mapped to the spec, cells converted, bad rows reported."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services import publish
from services.ingest.validation import check_record
from services.publish import TableColumns, batch_records, file_kind, plan_table, table_columns, table_records
from shared.datasets import AcceptedRecord
from shared.errors import InvalidInput
from shared.events import AnnotationSubmitted, encode_event
from shared.spec import parse_spec

SPEC = parse_spec(
    """
name: loans
features:
  - {name: income, min: 0}
  - {name: Sale_Price, allow_missing: true}
  - {name: city, type: categorical, values: [Berlin, Paris]}
  - {name: branch, type: categorical}
  - {name: member, type: boolean, allow_missing: true}
label: {values: [bad, good]}
"""
)
HEADER = "record_id,income,Sale Price,city,branch,member,outcome,confidence,annotator,notes\n"


def plan_for(path: Path, **given: str) -> publish.TablePlan:
    columns = TableColumns(**{"label": "outcome", **given}, given=frozenset({"label", *given}))
    return plan_table(SPEC, table_columns(path), columns, str(path))


def all_events(plan: publish.TablePlan, path: Path) -> tuple[list[AnnotationSubmitted], list[tuple[int, str]]]:
    events: list[AnnotationSubmitted] = []
    invalid: list[tuple[int, str]] = []
    for batch in table_records(plan, path):
        events += batch.events()
        invalid += batch.invalid
    return events, invalid


def test_csv_rows_become_annotations_of_the_spec_types(tmp_path: Path) -> None:
    path = tmp_path / "loans.csv"
    path.write_text(
        HEADER
        + "r1, 52000 ,1.5,Berlin,007,true,good,0.9,ann,free text\n"
        + "r2,41000,,Paris,12,FALSE,bad,,,\n"
        + "r3,39000,NA,Paris,12,,good,1,bob,x\n"
    )
    plan = plan_for(path)
    assert plan.features == {
        "income": "income",
        "Sale_Price": "Sale Price",
        "city": "city",
        "branch": "branch",
        "member": "member",
    }
    assert (plan.record_id, plan.confidence, plan.annotator, plan.inference_id) == (
        "record_id",
        "confidence",
        "annotator",
        None,
    )
    assert plan.ignored == ["notes"]
    events, invalid = all_events(plan, path)
    assert not invalid
    first, second, third = events
    assert first.features == {
        "income": 52000.0,
        "Sale_Price": 1.5,
        "city": "Berlin",
        "branch": "007",
        "member": True,
    }, "numbers trimmed and parsed; a code keeps its leading zeros; true is a flag"
    assert (first.record_id, first.label, first.confidence, first.annotator) == ("r1", "good", 0.9, "ann")
    assert second.features["Sale_Price"] is None and second.features["member"] is False
    assert (second.confidence, second.annotator) == (1.0, None), "an empty confidence is the default"
    assert third.features["Sale_Price"] is None and third.features["member"] is None, "NA and empty are missing"
    for event in events:  # written without pydantic, decoded under the full contract, stored by ingest's rules
        assert AnnotationSubmitted.model_validate_json(encode_event(event)) == event
        assert isinstance(check_record(SPEC, event), AcceptedRecord)
    assert len({e.event_id for e in events}) == 3 and all(e.occurred_at.tzinfo is not None for e in events)


def test_bad_cells_make_their_rows_invalid_with_the_row_number(tmp_path: Path) -> None:
    path = tmp_path / "loans.csv"
    path.write_text(
        HEADER
        + "r1,12,1,Berlin,1,true,good,1,,\n"
        + "r2,twelve,1,Berlin,1,true,good,1,,\n"  # a bad number: not a category, not silently text
        + "r3,12,1,Berlin,1,maybe,good,1,,\n"
        + "r4,12,1,Berlin,1,true,,1,,\n"
        + "r5,12,1,Berlin,1,true,good,1.5,,\n"
        + ",12,1,Berlin,1,true,good,1,,\n"
        + "r7,-3,1,Rome,1,true,ugly,1,,\n"  # valid cells, invalid values: sent, and ingest judges them
    )
    events, invalid = all_events(plan_for(path), path)
    assert invalid == [
        (2, "income: 'twelve' is not a number"),
        (3, "member: 'maybe' is not true or false"),
        (4, "outcome: no label"),
        (5, "confidence: confidence 1.5 is not between 0 and 1"),
        (6, "record_id: no record id"),
    ]
    assert [e.record_id for e in events] == ["r1", "r7"]
    rejected = check_record(SPEC, events[1])
    assert isinstance(rejected, list) and {r.rule for r in rejected} == {"range", "category", "label"}


def test_without_an_id_column_each_row_gets_a_stable_id(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "income": [1.0, 2.0, 3.0],
            "Sale Price": [None, 2.0, float("nan")],
            "city": pd.Categorical(["Paris", "Berlin", "Paris"]),
            "branch": [3, 4, 5],
            "member": [True, None, False],
            "label": ["good", "bad", "good"],
        }
    )
    path = tmp_path / "history.parquet"
    frame.to_parquet(path, index=False)
    plan = plan_table(SPEC, table_columns(path), TableColumns(), str(path))
    assert plan.record_id is None and plan.confidence is None
    events, invalid = all_events(plan, path)
    assert not invalid
    assert [e.record_id for e in events] == ["history.parquet#1", "history.parquet#2", "history.parquet#3"]
    again, _ = all_events(plan, path)
    assert [e.record_id for e in again] == [e.record_id for e in events], "a re-publish names the same records"
    assert [e.features["Sale_Price"] for e in events] == [None, 2.0, None], "pandas' NaN is a missing value"
    assert [e.features["branch"] for e in events] == ["3", "4", "5"], "integer codes are categories"
    assert events[0].features["city"] == "Paris", "a dictionary column is read as its text"


def test_classification_labels_keep_the_spec_form(tmp_path: Path) -> None:
    spec = parse_spec("name: m\nfeatures: [{name: x}]\nlabel: {values: [0, 1]}")
    table = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "label": [0.0, 1.0, None, 0.5]})
    plan = plan_table(spec, table.column_names, TableColumns(), "t.parquet")
    batch = batch_records(plan, table.to_batches()[0], first_row=1)
    assert [e.label for e in batch.events()] == [0, 1]
    assert batch.invalid == [(3, "label: no label"), (4, "label: 0.5 is not a class (text or an integer)")]
    flags = pa.table({"x": [1.0, 2.0], "label": [True, False]})
    assert [e.label for e in batch_records(plan, flags.to_batches()[0], 1).events()] == [1, 0]


def test_regression_labels_are_numbers(tmp_path: Path) -> None:
    spec = parse_spec("name: m\nfeatures: [{name: x}]\nlabel: {type: regression, min: 0}")
    table = pa.table({"x": ["1", "2", "3"], "y": ["12.5", "oops", "3"]})
    plan = plan_table(spec, table.column_names, TableColumns(label="y", given=frozenset({"label"})), "t.csv")
    batch = batch_records(plan, table.to_batches()[0], first_row=10)
    assert [(e.features["x"], e.label) for e in batch.events()] == [(1.0, 12.5), (3.0, 3.0)]
    assert batch.invalid == [(11, "y: 'oops' is not a number")]


def test_columns_that_cannot_be_mapped_are_refused_with_what_to_do() -> None:
    header = ["income", "city", "branch", "outcome"]
    with pytest.raises(InvalidInput, match="no label column 'label': name it with --label"):
        plan_table(SPEC, header, TableColumns(), "t.csv")
    with pytest.raises(InvalidInput, match=r"no column 'score' \(--confidence\)"):
        plan_table(
            SPEC, header, TableColumns(label="outcome", confidence="score", given=frozenset({"confidence"})), "t"
        )
    with pytest.raises(InvalidInput, match="no column for the features city of loans"):
        plan_table(SPEC, ["income", "branch", "outcome"], TableColumns(label="outcome"), "t.csv")
    plan = plan_table(SPEC, header, TableColumns(label="outcome"), "t.csv")
    assert plan.absent == ["Sale_Price", "member"], "features that may be missing and have no column"


def test_a_big_csv_is_read_in_batches_with_row_numbers_across_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish, "CSV_BLOCK_BYTES", 4096)
    rows = [f"r{i},{i},,Paris,{i % 7},true,good,1,,x" for i in range(1, 3001)]
    rows[2499] = "r2500,bad,,Paris,1,true,good,1,,x"
    path = tmp_path / "big.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    position = [0]
    batches = list(table_records(plan_for(path), path, position))
    assert len(batches) > 10, "streamed in blocks, not loaded whole"
    assert position[0] == path.stat().st_size
    events = [e for b in batches for e in b.events()]
    assert len(events) == 2999 and [i for b in batches for i in b.invalid] == [(2500, "income: 'bad' is not a number")]
    assert events[-1].record_id == "r3000" and events[-1].features["income"] == 3000.0


def test_a_parquet_file_is_read_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "TABLE_BATCH_ROWS", 100)
    n = 1000
    table = pa.table(
        {
            "income": pa.array(range(n), pa.int32()),
            "city": pa.array(["Berlin"] * n).dictionary_encode(),
            "branch": ["b"] * n,
            "outcome": ["good", "bad"] * (n // 2),
            "extra": [0] * n,
        }
    )
    path = tmp_path / "t.pq"
    pq.write_table(table, path, row_group_size=250)
    plan = plan_for(path)
    assert file_kind(path) == "parquet" and plan.ignored == ["extra"]
    batches = list(table_records(plan, path))
    assert sum(len(b.events()) for b in batches) == n and max(len(b.events()) for b in batches) == 100
    assert batches[-1].events()[-1].record_id == "t.pq#1000" and batches[-1].events()[-1].features["income"] == 999.0


def test_read_errors_say_what_is_wrong(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidInput, match="empty: a CSV needs a header row"):
        table_columns(empty)
    twice = tmp_path / "twice.csv"
    twice.write_text("a,a,label\n1,2,x\n")
    with pytest.raises(InvalidInput, match="columns named more than once: a"):
        table_columns(twice)
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    with pytest.raises(InvalidInput, match="is not a Parquet file"):
        table_columns(fake)
    with pytest.raises(InvalidInput, match="cannot read"):
        table_columns(tmp_path / "absent.csv")
