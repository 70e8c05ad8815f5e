"""Regression datasets on a FileStore: float64 labels, a label summary that merges exactly, and the
label histogram whose edges settle once per lineage."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shared.datasets import (
    LABEL,
    LABEL_EDGES_ROWS,
    AcceptedRecord,
    DatasetManifest,
    DatasetRepository,
    LabelHistogram,
    decode_shard,
    encode_shard,
    manifest_key,
    manifest_summary,
)
from shared.reference import column_counts, histogram
from shared.store import FileStore

FEATURES = ["size", "district"]
TYPES = ["numeric", "categorical"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SCHEMA = "r" * 64


def priced(start: int, n: int, seed: int = 0, scale: float = 1.0) -> list[AcceptedRecord]:
    """Rows whose label is a price (lognormal, so mean and median differ)."""
    rng = np.random.default_rng(seed)
    labels = rng.lognormal(5.0, 0.6, n) * scale
    return [
        AcceptedRecord(
            f"p-{i}",
            T0 + timedelta(seconds=i),
            float(labels[i - start]),
            1.0,
            None,
            None,
            (float(i), ["north", "south"][i % 2]),
        )
        for i in range(start, start + n)
    ]


def labels_of(records: list[AcceptedRecord]) -> np.ndarray:
    return np.array([r.label for r in records], dtype=np.float64)


@pytest.fixture
def repo(tmp_path: Path) -> DatasetRepository:
    return DatasetRepository(FileStore(tmp_path))


def write(repo: DatasetRepository, records: list[AcceptedRecord], known: int | None) -> DatasetManifest | None:
    """A regression version, as ingest writes it."""
    return repo.write_version("p", SCHEMA, FEATURES, [], records, known, feature_types=TYPES, task="regression")


def test_a_regression_label_round_trips_through_parquet_as_float64(repo: DatasetRepository) -> None:
    records = priced(0, 50)
    records[3].label = 7  # an integer label is a number too
    table = decode_shard(encode_shard(records, FEATURES, TYPES, task="regression"))
    assert table.schema.field(LABEL).type == pa.float64()
    assert table.column(LABEL).to_pylist() == [float(r.label) for r in records]  # exact
    write(repo, records, None)
    data = repo.load("p")
    assert data.task == "regression" and data.y.dtype == np.float64
    assert data.y.tolist() == [float(r.label) for r in records]
    assert data.columns["district"].tolist() == [r.features[1] for r in records]
    assert repo.load("p", last_rows=5).y.tolist() == data.y[-5:].tolist()


def test_a_label_that_is_not_a_number_is_never_stored_as_one() -> None:
    bad = priced(0, 2)
    bad[1].label = "cheap"
    with pytest.raises(ValueError, match="not a number"):
        encode_shard(bad, FEATURES, TYPES, task="regression")
    bad[1].label = float("nan")
    with pytest.raises(ValueError, match="finite"):
        encode_shard(bad, FEATURES, TYPES, task="regression")


def test_the_label_summary_merges_exactly_across_shards_and_versions(repo: DatasetRepository) -> None:
    batches = [priced(0, 300, seed=1), priced(300, 700, seed=2), priced(1000, 40, seed=3), priced(1040, 900, seed=4)]
    known = None
    for batch in batches:
        manifest = write(repo, batch, known)
        assert manifest is not None
        known = manifest.version
    manifest = repo.manifest("p")
    everything = np.concatenate([labels_of(b) for b in batches])
    assert manifest.task == "regression" and manifest.label_counts == {} and manifest.label_values == []
    assert all(s.label_counts == {} and s.label_stats is not None for s in manifest.shards)
    summary = manifest.label_summary()
    assert summary is not None
    assert summary["count"] == everything.size == manifest.rows_total
    assert summary["mean"] == pytest.approx(everything.mean(), rel=1e-12)
    assert summary["std"] == pytest.approx(everything.std(), rel=1e-9)
    assert (summary["min"], summary["max"]) == (everything.min(), everything.max())
    # the median is read from the histogram: within the bin that holds the true one
    assert manifest.label_histogram is not None
    edges = manifest.label_histogram.edges
    true_median = float(np.median(everything))
    i = int(np.searchsorted(edges[1:-1], true_median, side="right"))
    low, high = (summary["min"] if i == 0 else edges[i]), (summary["max"] if i == len(edges) - 2 else edges[i + 1])
    assert low <= summary["p50"] <= high and summary["p50"] == pytest.approx(true_median, rel=0.05)
    assert manifest.announcement().label_summary == summary
    listed = manifest_summary(manifest)
    assert listed["task"] == "regression" and listed["label_summary"] == summary and listed["label_counts"] == {}


def test_the_histogram_edges_follow_the_lineage_until_it_has_enough_rows_then_stay(repo: DatasetRepository) -> None:
    first, second, third = priced(0, 5, seed=1), priced(5, LABEL_EDGES_ROWS, seed=2), priced(505, 300, seed=3)
    v1 = write(repo, first, None)
    assert v1 is not None and v1.label_histogram is not None
    assert v1.label_sample == labels_of(first).tolist(), "a small lineage keeps every label"
    assert v1.label_summary() is not None and v1.label_summary()["p50"] == float(np.median(labels_of(first)))

    v2 = write(repo, second, 1)
    assert v2 is not None and v2.label_histogram is not None
    so_far = np.concatenate([labels_of(first), labels_of(second)])
    assert v2.label_histogram.edges == histogram(so_far).edges, "the edges of every label once there are enough"
    assert v2.label_sample == [] and len(v2.label_histogram.counts) == 10
    assert v2.label_histogram.rows == so_far.size

    v3 = write(repo, third, 2)
    assert v3 is not None and v3.label_histogram is not None
    assert v3.label_histogram.edges == v2.label_histogram.edges, "fixed for the lineage"
    everything = np.concatenate([so_far, labels_of(third)])
    inner = v2.label_histogram.edges[1:-1]
    assert v3.label_histogram.counts == column_counts(inner, 10, everything).tolist(), "counts add up exactly"
    assert v3.label_histogram.rows == v3.rows_total == 805


def test_a_stale_writer_adds_its_rows_to_the_winners_histogram(repo: DatasetRepository) -> None:
    write(repo, priced(0, 600, seed=1), None)
    late = write(repo, priced(300, 600, seed=1), None)  # knew no version: half its rows are stored already
    assert late is not None and late.rows_total == 900 and late.rows_added == 300
    assert late.label_histogram is not None and late.label_histogram.rows == 900
    assert late.label_stats is not None and late.label_stats.count == 900


def test_concurrent_regression_writers_keep_one_consistent_histogram(tmp_path: Path) -> None:
    repo = DatasetRepository(FileStore(tmp_path))
    barrier = threading.Barrier(3)

    def writer(k: int) -> None:
        barrier.wait()
        write(repo, priced(k * 400, 400, seed=k), None)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = repo.manifest("p")
    assert final.rows_total == 1200 and final.label_histogram is not None
    assert final.label_histogram.rows == 1200 and final.label_stats is not None and final.label_stats.count == 1200
    assert (
        np.sort(repo.load("p").y).tolist()
        == np.sort(np.concatenate([labels_of(priced(k * 400, 400, seed=k)) for k in range(3)])).tolist()
    )


def test_switching_a_spec_to_regression_starts_a_new_lineage(repo: DatasetRepository) -> None:
    classes = [AcceptedRecord(f"c-{i}", T0, "cheap", 1.0, None, None, (float(i), "north")) for i in range(20)]
    repo.write_version("p", "c" * 64, FEATURES, ["cheap", "dear"], classes, None, feature_types=TYPES)
    manifest = write(repo, priced(100, 30), 1)
    assert manifest is not None and manifest.version == 2 and manifest.parent_version == 1
    assert len(manifest.shards) == 1 and manifest.rows_total == 30, "the classification rows are not carried over"
    assert manifest.task == "regression" and manifest.label_counts == {}
    assert manifest.label_histogram is not None and manifest.label_histogram.rows == 30
    assert repo.load("p").y.dtype == np.float64 and repo.load("p", version=1).y.tolist() == ["cheap"] * 20


def test_a_manifest_from_before_regression_reads_as_classification(repo: DatasetRepository) -> None:
    repo.write_version(
        "p", "c" * 64, ["size"], ["a", "b"], [AcceptedRecord("c", T0, "a", 1.0, None, None, (1.0,))], None
    )
    stored = json.loads(repo.store.get(manifest_key("p", 1)))
    for key in ("task", "label_stats", "label_histogram", "label_sample"):
        stored.pop(key)
    for shard in stored["shards"]:
        shard.pop("label_stats")
    old = DatasetManifest.model_validate(stored)
    assert old.task == "classification" and not old.regression
    assert old.label_summary() is None and old.announcement().label_summary is None
    assert manifest_summary(old)["label_counts"] == {"a": 1} and manifest_summary(old)["label_summary"] is None


def test_the_histogram_quantile_interpolates_inside_its_bin() -> None:
    values = np.linspace(0.0, 100.0, 1001)
    h = histogram(values)
    counts = column_counts(h.inner, len(h.proportions), values)
    hist = LabelHistogram(edges=h.edges, counts=counts.tolist())
    assert hist.quantile(0.5, 0.0, 100.0) == pytest.approx(50.0, abs=0.2)
    assert hist.quantile(0.0, 0.0, 100.0) == 0.0 and hist.quantile(1.0, 0.0, 100.0) == 100.0
    # values beyond the end edges sit in the end bins, which then reach out to the true extremes
    wide = hist.add(column_counts(h.inner, len(h.proportions), np.array([-50.0, 200.0])).tolist())
    assert wide.quantile(1.0, -50.0, 200.0) == 200.0 and wide.quantile(0.0, -50.0, 200.0) == -50.0
    with pytest.raises(ValueError, match="counts for"):
        hist.add([1, 2])
