"""Dataset versions on a FileStore: shards, manifests, version races, reading back, typed columns."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared import datasets
from shared.datasets import (
    AcceptedRecord,
    DatasetManifest,
    DatasetRepository,
    FeatureStats,
    decode_shard,
    encode_shard,
    label_shift,
    manifest_key,
    manifest_summary,
)
from shared.errors import CorruptArtifact, NotFound, StoreError
from shared.store import FileStore

FEATURES = ["a", "b"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rows(start: int, n: int, label: str = "x") -> list[AcceptedRecord]:
    return [
        AcceptedRecord(f"r-{i}", T0 + timedelta(seconds=i), label, 1.0, None, None, (float(i), i * 0.5))
        for i in range(start, start + n)
    ]


@pytest.fixture
def repo(tmp_path: Path) -> DatasetRepository:
    return DatasetRepository(FileStore(tmp_path))


def write(repo: DatasetRepository, records: list[AcceptedRecord], known: int | None) -> int | None:
    manifest = repo.write_version("m", "h" * 64, FEATURES, ["x", "y"], records, known)
    return manifest.version if manifest else None


def test_versions_accumulate_shards(repo: DatasetRepository) -> None:
    assert write(repo, rows(0, 10), None) == 1
    assert write(repo, rows(10, 5, "y"), 1) == 2
    manifest = repo.manifest("m")
    assert manifest.version == 2 and manifest.parent_version == 1
    assert manifest.rows_total == 15 and manifest.rows_added == 5
    assert manifest.label_counts == {"x": 10, "y": 5}
    assert len(manifest.shards) == 2
    assert manifest.stats["a"].count == 15 and manifest.stats["a"].max == 14.0
    assert repo.versions("m") == [1, 2] and repo.models() == ["m"]
    data = repo.load("m")
    assert data.record_ids.tolist() == [f"r-{i}" for i in range(15)]
    assert data.X[:, 0].tolist() == [float(i) for i in range(15)]
    assert data.y.tolist() == ["x"] * 10 + ["y"] * 5
    first = repo.load("m", version=1)
    assert len(first.record_ids) == 10


def test_last_rows_reads_only_the_tail(repo: DatasetRepository) -> None:
    write(repo, rows(0, 10), None)
    write(repo, rows(10, 10), 1)
    tail = repo.load("m", last_rows=13)
    assert tail.record_ids.tolist() == [f"r-{i}" for i in range(7, 20)]


def test_rows_since_a_change_point_count_and_load_the_new_regime(repo: DatasetRepository) -> None:
    write(repo, rows(0, 10), None)
    write(repo, rows(10, 10), 1)  # the change at second 15 falls inside this shard
    write(repo, rows(20, 10), 2)
    change = T0 + timedelta(seconds=15)
    assert repo.rows_since("m", 3, change) == 15
    assert repo.rows_since("m", 1, change) == 0
    assert repo.rows_since("m", 3, T0) == 30
    since = repo.load("m", since=change)
    assert since.record_ids.tolist() == [f"r-{i}" for i in range(15, 30)]
    newest = repo.load("m", last_rows=12, since=change)
    assert newest.record_ids.tolist() == [f"r-{i}" for i in range(18, 30)]
    assert repo.load("m", version=1, since=change).X.shape == (0, 2)


def test_same_records_give_the_same_shard_bytes() -> None:
    assert encode_shard(rows(0, 50), FEATURES) == encode_shard(rows(0, 50), FEATURES)


def test_missing_values_are_stored_as_nulls_and_read_as_nan(repo: DatasetRepository) -> None:
    records = [AcceptedRecord("r-1", T0, "x", 1.0, None, None, (1.0, None))]
    write(repo, records, None)
    data = repo.load("m")
    assert data.X[0, 0] == 1.0 and np.isnan(data.X[0, 1])
    assert repo.manifest("m").stats["b"].count == 0


def test_a_stale_writer_drops_rows_stored_meanwhile_and_takes_the_next_number(repo: DatasetRepository) -> None:
    assert write(repo, rows(0, 10), None) == 1
    assert write(repo, rows(5, 10), None) == 2  # knew no version: rows r-5..r-9 were already in v1
    manifest = repo.manifest("m")
    assert manifest.rows_total == 15 and manifest.rows_added == 5
    assert write(repo, rows(0, 15), None) is None  # nothing new left


def test_concurrent_writers_never_collide(tmp_path: Path) -> None:
    repo = DatasetRepository(FileStore(tmp_path))
    barrier = threading.Barrier(4)
    results: list[int | None] = []

    def writer(k: int) -> None:
        barrier.wait()
        results.append(write(repo, rows(k * 100, 100), None))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v for v in results if v is not None) == [1, 2, 3, 4]
    final = repo.manifest("m")
    assert final.rows_total == 400
    assert sorted(repo.load("m").record_ids.tolist()) == sorted(f"r-{i}" for i in range(400))


def test_corrupt_shard_is_a_corrupt_artifact_not_a_missing_one(repo: DatasetRepository) -> None:
    write(repo, rows(0, 3), None)
    shard = repo.manifest("m").shards[0]
    repo.store.put(shard.key, b"tampered")
    with pytest.raises(CorruptArtifact, match="corrupt") as caught:
        repo.load("m")
    assert shard.key in caught.value.message
    assert isinstance(caught.value, StoreError) and not isinstance(caught.value, NotFound)
    assert caught.value.status_code == 503, "the store holds bad bytes: a server-side failure, not a 404"
    with pytest.raises(CorruptArtifact):
        repo.record_ids([shard])  # ingest's duplicate check reads shards the same way


def test_missing_versions_are_clear_errors(repo: DatasetRepository) -> None:
    with pytest.raises(NotFound, match="no dataset version yet"):
        repo.manifest("m")
    write(repo, rows(0, 1), None)
    with pytest.raises(NotFound, match="no dataset version 7"):
        repo.manifest("m", 7)
    assert repo.store.exists(manifest_key("m", 1))


def test_feature_stats_merge_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(3, 2, size=1000)
    merged = FeatureStats.of(values[:300]).merge(FeatureStats.of(values[300:])).merge(FeatureStats())
    assert merged.count == 1000
    assert merged.mean == pytest.approx(values.mean())
    assert merged.std == pytest.approx(values.std())
    assert (merged.min, merged.max) == (values.min(), values.max())


def test_label_shift_distance() -> None:
    assert label_shift({"a": 1, "b": 1}, {"a": 1, "b": 1}) == 0.0
    assert label_shift({"a": 10}, {"b": 3}) == 1.0
    assert label_shift({}, {"a": 1}) == 0.0


# --- typed features ---------------------------------------------------------------------------

TYPED_NAMES = ["amount", "city", "repaid", "tenure"]
TYPED_TYPES = ["numeric", "categorical", "boolean", "numeric"]


def typed_rows(start: int, n: int, cities: tuple[str, ...] = ("north", "south", "east")) -> list[AcceptedRecord]:
    """Rows of a mixed-type dataset; every fourth row misses its city, every fifth its flag."""
    return [
        AcceptedRecord(
            f"t-{i}",
            T0 + timedelta(seconds=i),
            ["low", "mid", "high"][i % 3],
            1.0,
            None,
            None,
            (
                float(i),
                None if i % 4 == 3 else cities[i % len(cities)],
                None if i % 5 == 4 else i % 2 == 0,
                None if i % 2 else 0.5 * i,
            ),
        )
        for i in range(start, start + n)
    ]


def write_typed(repo: DatasetRepository, records: list[AcceptedRecord], known: int | None) -> int | None:
    manifest = repo.write_version(
        "t", "t" * 64, TYPED_NAMES, ["low", "mid", "high"], records, known, feature_types=TYPED_TYPES
    )
    return manifest.version if manifest else None


def test_a_typed_shard_keeps_its_types_and_nulls() -> None:
    records = typed_rows(0, 8)
    table = decode_shard(encode_shard(records, TYPED_NAMES, TYPED_TYPES))
    assert [table.schema.field(n).type for n in TYPED_NAMES] == [pa.float64(), pa.string(), pa.bool_(), pa.float64()]
    assert table.column("city").to_pylist() == [r.features[1] for r in records]
    assert table.column("repaid").to_pylist() == [r.features[2] for r in records]
    assert table.column("tenure").to_pylist() == [r.features[3] for r in records]
    assert table.column("city").null_count == 2 and table.column("repaid").null_count == 1
    assert encode_shard(records, TYPED_NAMES, TYPED_TYPES) == encode_shard(records, TYPED_NAMES, TYPED_TYPES)


def test_an_all_numeric_shard_is_the_same_with_or_without_types() -> None:
    assert encode_shard(rows(0, 20), FEATURES) == encode_shard(rows(0, 20), FEATURES, ["numeric", "numeric"])


def test_feature_types_must_match_the_features() -> None:
    with pytest.raises(ValueError, match="2 features but 1 feature types"):
        encode_shard(rows(0, 1), FEATURES, ["numeric"])
    with pytest.raises(ValueError, match="unknown feature types: text"):
        encode_shard(rows(0, 1), FEATURES, ["numeric", "text"])


def test_load_gives_typed_columns_and_no_matrix_for_a_typed_dataset(repo: DatasetRepository) -> None:
    records = typed_rows(0, 12)
    assert write_typed(repo, records, None) == 1
    data = repo.load("t")
    assert data.types == TYPED_TYPES
    assert list(data.columns) == TYPED_NAMES
    assert data.X.shape == (12, 0)
    amount, city, repaid, tenure = (data.columns[n] for n in TYPED_NAMES)
    assert amount.dtype == np.float64 and amount.tolist() == [float(i) for i in range(12)]
    assert tenure.dtype == np.float64 and np.isnan(tenure[1]) and tenure[2] == 1.0
    assert city.dtype == object and city.tolist() == [r.features[1] for r in records]
    assert city[3] is None and isinstance(city[0], str)
    assert repaid.dtype == object and repaid.tolist() == [r.features[2] for r in records]
    assert repaid[4] is None and repaid[0] is True and repaid[1] is False
    assert data.y.tolist() == ["low", "mid", "high"] * 4, "three classes come back as they went in"
    tail = repo.load("t", last_rows=5)
    assert tail.X.shape == (5, 0) and tail.columns["city"].tolist() == city[-5:].tolist()
    assert repo.load("t", since=T0 + timedelta(days=1)).columns["repaid"].shape == (0,)


def test_load_gives_columns_beside_the_matrix_for_an_all_numeric_dataset(repo: DatasetRepository) -> None:
    write(repo, rows(0, 6) + [AcceptedRecord("r-x", T0, "x", 1.0, None, None, (None, 1.0))], None)
    data = repo.load("m")
    assert data.types == ["numeric", "numeric"] and data.X.shape == (7, 2)
    for i, name in enumerate(FEATURES):
        assert data.columns[name].dtype == np.float64
        np.testing.assert_array_equal(data.columns[name], data.X[:, i])
    assert np.isnan(data.columns["a"][-1])


def test_the_manifest_lists_types_categories_and_missing_values_merged_over_versions(
    repo: DatasetRepository,
) -> None:
    write_typed(repo, typed_rows(0, 12), None)
    first = repo.manifest("t")
    assert first.feature_types == TYPED_TYPES
    assert first.categories["city"] == {"north": 3, "south": 3, "east": 3}
    assert first.categories["repaid"] == {"true": 5, "false": 5}
    assert first.missing == {"amount": 0, "city": 3, "repaid": 2, "tenure": 6}
    assert set(first.stats) == {"amount", "tenure"}, "numeric statistics for numeric features only"
    assert first.stats["tenure"].count == 6

    write_typed(repo, typed_rows(12, 8, cities=("west", "north")), 1)
    second = repo.manifest("t")
    assert second.shards[1].categories["city"] == {"west": 4, "north": 2}
    assert second.categories["city"] == {"north": 5, "west": 4, "east": 3, "south": 3}
    assert list(second.categories["city"]) == ["north", "west", "east", "south"], "most frequent first"
    assert sum(second.categories["repaid"].values()) + second.missing["repaid"] == 20
    assert second.missing["city"] == 5 and second.missing["tenure"] == 10
    assert second.stats["amount"].count == 20 and second.stats["amount"].max == 19.0
    again = DatasetManifest.model_validate_json(second.model_dump_json())
    assert again == second


def test_a_feature_with_very_many_categories_lists_the_most_frequent_and_counts_the_rest(
    repo: DatasetRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "MAX_CATEGORIES", 3)
    cities = ("a", "a", "a", "b", "b", "c", "d", "e")
    records = [
        AcceptedRecord(f"t-{i}", T0, "low", 1.0, None, None, (1.0, city, True, None)) for i, city in enumerate(cities)
    ]
    write_typed(repo, records, None)
    manifest = repo.manifest("t")
    assert manifest.categories["city"] == {"a": 3, "b": 2, "c": 1}
    assert manifest.categories_other == {"city": 2}
    records = [AcceptedRecord(f"u-{i}", T0, "low", 1.0, None, None, (1.0, "e", True, None)) for i in range(3)]
    write_typed(repo, records, 1)
    merged = repo.manifest("t")
    assert merged.categories["city"] == {"a": 3, "e": 3, "b": 2}
    assert merged.categories_other == {"city": 3}, "c, d and the first version's e, whose count was not kept"


def test_a_dataset_written_before_features_had_types_still_loads(repo: DatasetRepository) -> None:
    """An old shard (plain float64 columns, written without types) under an old manifest (no type fields)."""
    legacy_rows = rows(0, 4)
    table = pa.table(
        {
            "_record_id": pa.array([r.record_id for r in legacy_rows], pa.string()),
            "_occurred_at": pa.array([r.occurred_at for r in legacy_rows], pa.timestamp("us", tz="UTC")),
            "_label": pa.array([str(r.label) for r in legacy_rows], pa.string()),
            "_confidence": pa.array([r.confidence for r in legacy_rows], pa.float64()),
            "_annotator": pa.array([None] * 4, pa.string()),
            "_inference_id": pa.array([None] * 4, pa.string()),
            "a": pa.array([1.0, 2.0, None, 4.0], pa.float64()),
            "b": pa.array([0.5, 1.5, 2.5, 3.5], pa.float64()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=False, store_schema=False)
    data = sink.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    repo.store.put(f"datasets/m/shards/{sha}.parquet", data)
    legacy_manifest = {
        "model": "m",
        "version": 1,
        "parent_version": None,
        "created_at": "2025-06-01T00:00:00Z",
        "schema_hash": "h" * 64,
        "features": ["a", "b"],
        "label_values": ["x", "y"],
        "shards": [
            {
                "key": f"datasets/m/shards/{sha}.parquet",
                "sha256": sha,
                "rows": 4,
                "label_counts": {"x": 4},
                "stats": {"a": {"count": 3, "mean": 7 / 3, "m2": 4.6667, "min": 1.0, "max": 4.0}},
            }
        ],
        "rows_total": 4,
        "rows_added": 4,
        "label_counts": {"x": 4},
        "stats": {"a": {"count": 3, "mean": 7 / 3, "m2": 4.6667, "min": 1.0, "max": 4.0}},
    }
    repo.store.put(manifest_key("m", 1), json.dumps(legacy_manifest).encode())

    manifest = repo.manifest("m")
    assert manifest.feature_types == ["numeric", "numeric"] and manifest.categories == {} and manifest.missing == {}
    loaded = repo.load("m")
    assert loaded.types == ["numeric", "numeric"]
    assert loaded.X.shape == (4, 2) and loaded.X[:, 1].tolist() == [0.5, 1.5, 2.5, 3.5] and np.isnan(loaded.X[2, 0])
    np.testing.assert_array_equal(loaded.columns["a"], loaded.X[:, 0])

    # the next version is written on top of the old one, its counts completing the old shard's
    assert write(repo, rows(4, 2), 1) == 2
    following = repo.manifest("m")
    assert following.rows_total == 6 and following.missing == {"a": 1, "b": 0}
    assert repo.load("m").X.shape == (6, 2)


def test_manifest_summary_counts_feature_types(repo: DatasetRepository) -> None:
    write_typed(repo, typed_rows(0, 3), None)
    summary = manifest_summary(repo.manifest("t"))
    assert summary["feature_types"] == {"numeric": 2, "categorical": 1, "boolean": 1}


def test_records_built_outside_ingest_may_carry_integer_codes_and_empty_categories(repo: DatasetRepository) -> None:
    records = [
        AcceptedRecord("t-0", T0, "low", 1.0, None, None, (1.0, 7, True, None)),
        AcceptedRecord("t-1", T0, "low", 1.0, None, None, (2.0, "7", False, None)),
        AcceptedRecord("t-2", T0, "low", 1.0, None, None, (3.0, "", None, None)),
    ]
    write_typed(repo, records, None)
    assert repo.load("t").columns["city"].tolist() == ["7", "7", None]
    manifest = repo.manifest("t")
    assert manifest.categories["city"] == {"7": 2} and manifest.missing["city"] == 1
    with pytest.raises(ValueError, match="2.5 is not a category"):
        encode_shard(
            [AcceptedRecord("t-3", T0, "low", 1.0, None, None, (1.0, 2.5, True, None))], TYPED_NAMES, TYPED_TYPES
        )
