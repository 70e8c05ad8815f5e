"""Dataset versions on a FileStore: shards, manifests, version races, reading back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from shared.datasets import (
    AcceptedRecord,
    DatasetRepository,
    FeatureStats,
    encode_shard,
    label_shift,
    manifest_key,
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
