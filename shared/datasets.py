"""Versioned datasets in the object store: content-addressed Parquet shards and manifests.

Layout (DESIGN.md)::

    datasets/<model>/shards/<sha256>.parquet   immutable; the key is the sha256 of the bytes
    datasets/<model>/versions/<n>.json         manifest of version n: every shard of the dataset

Version ``n`` holds every row of version ``n-1`` plus one new shard. A manifest is created
with put-if-absent, so two writers can never claim the same number: the loser re-reads the
winner's manifest, drops the rows the winner already stored, and tries ``n+1``. A shard is
written before the manifest that names it; a crash in between leaves an unreferenced shard
(harmless: the rows are written again, and identical bytes land on the same key).

Rows are kept in arrival order (shard order, then row order), which is the time order the
trainer's holdout split and "last N rows" window rely on.

Columns are typed as the spec's features are (:mod:`shared.features`): float64 for numeric,
string for categorical, bool for boolean, with nulls where a value is missing. Datasets
written before features had types are all-float64, which is exactly the numeric form, so
they load unchanged; their manifests (without ``feature_types``) read as all-numeric.

The label column is a class's text (string) for a classification dataset and a float64 for a
regression one (the manifest's ``task``; manifests written before regression read as
classification). A regression manifest keeps the label's summary instead of class counts:
statistics that merge exactly across shards (:class:`FeatureStats`: count, mean, M2, min, max)
and a :class:`LabelHistogram` whose bin edges are fixed for the lineage, so its counts add up
exactly from version to version; the median is read from the histogram (interpolated), and
ingest's label-shift check compares a batch with it by PSI.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import AlreadyExists, CorruptArtifact, KeyNotFound, NotFound
from shared.events import DatasetVersionCreated, FeatureValue, Label, Target, UtcDatetime, utc_now
from shared.features import (
    BOOLEAN,
    CATEGORICAL,
    MATRIX,
    NUMERIC,
    FeatureType,
    TaskKind,
    category_key,
    category_text,
    layout_of,
)
from shared.reference import FeatureStats, column_counts, histogram
from shared.spec import CLASSIFICATION, REGRESSION
from shared.store import ObjectStore

log = logging.getLogger(__name__)

FeatureRow = tuple[FeatureValue, ...] | NDArray[np.float64]
"""A record's features in spec order: values in their dataset form, or a row of float64 (all numeric)."""

RECORD_ID = "_record_id"
OCCURRED_AT = "_occurred_at"
LABEL = "_label"
CONFIDENCE = "_confidence"
ANNOTATOR = "_annotator"
INFERENCE_ID = "_inference_id"
META_COLUMNS = (RECORD_ID, OCCURRED_AT, LABEL, CONFIDENCE, ANNOTATOR, INFERENCE_ID)
MAX_VERSION_ATTEMPTS = 50
MAX_CATEGORIES = 1000
"""Categories a manifest lists per feature; rarer ones are only counted (``categories_other``).

A categorical feature can be an identifier with a new value per row: listing every one in
every shard and version would make manifests grow with the data instead of with its shape.
"""
LABEL_EDGES_ROWS = 500
"""Rows a regression lineage collects before its label histogram's bin edges are fixed.

Until then every version derives the edges again from all the lineage's labels (kept in the
manifest's ``label_sample``), so a first flush of a handful of rows does not leave the lineage
with two or three bins for good; from then on the edges stay and only counts are added.
"""


def shard_key(model: str, sha256: str) -> str:
    """Key of a content-addressed shard."""
    return f"datasets/{model}/shards/{sha256}.parquet"


def manifest_key(model: str, version: int) -> str:
    """Key of the manifest of dataset version ``version``."""
    return f"datasets/{model}/versions/{version}.json"


def versions_prefix(model: str) -> str:
    """Prefix under which a model's manifests live."""
    return f"datasets/{model}/versions/"


@dataclass(slots=True)
class AcceptedRecord:
    """A validated annotation, ready to be stored.

    ``features`` follow the spec's order, each in its type's dataset form: a float (numeric),
    the category's text (categorical) or a bool (boolean); None where the value is missing.
    A record of an all-numeric spec may instead carry a row of a float64 matrix, NaN where a
    value is missing (ingest's columnar validation hands out rows of its batch's matrix): the
    shard stacks such rows back with one copy, instead of converting every value again.
    """

    record_id: str
    occurred_at: datetime
    label: Target
    """A class (classification) or a float (regression)."""
    confidence: float
    annotator: str | None
    inference_id: str | None
    features: FeatureRow


class LabelHistogram(BaseModel):
    """A regression label's histogram over a dataset version: bin edges and each bin's rows.

    The edges are quantile edges (:func:`shared.reference.histogram`) of the lineage's first
    :data:`LABEL_EDGES_ROWS` labels and stay fixed after that, so the counts of two batches binned
    on them (:func:`shared.reference.bin_of`: values beyond the end edges go to the end bins)
    add up exactly, and a batch binned on them compares with the dataset by PSI.

    >>> h = LabelHistogram(edges=[0.0, 1.0, 2.0, 4.0], counts=[2, 4, 2])
    >>> h.rows, h.shares(), h.quantile(0.5, low=0.0, high=4.0)
    (8, [0.25, 0.5, 0.25], 1.5)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    edges: list[float]
    counts: list[int]

    @model_validator(mode="after")
    def _one_count_per_bin(self) -> LabelHistogram:
        if len(self.edges) != len(self.counts) + 1:
            raise ValueError(f"{len(self.edges)} edges for {len(self.counts)} bins")
        return self

    @property
    def rows(self) -> int:
        """Values counted."""
        return sum(self.counts)

    def shares(self) -> list[float]:
        """Each bin's share of the values (all 0 when there are none)."""
        total = self.rows
        return [c / total if total else 0.0 for c in self.counts]

    def add(self, counts: Sequence[int]) -> LabelHistogram:
        """This histogram with ``counts`` binned on the same edges added."""
        if len(counts) != len(self.counts):
            raise ValueError(f"{len(counts)} counts for {len(self.counts)} bins")
        return LabelHistogram(edges=self.edges, counts=[a + int(b) for a, b in zip(self.counts, counts, strict=True)])

    def quantile(self, q: float, low: float, high: float) -> float:
        """The ``q`` quantile, interpolated linearly inside its bin.

        ``low`` / ``high`` are the smallest and largest value counted: the end bins also hold
        the values beyond the end edges, so they reach out to those.
        """
        total = self.rows
        if total == 0:
            return low
        target = min(max(q, 0.0), 1.0) * total
        last = len(self.counts) - 1
        before = 0
        for i, count in enumerate(self.counts):
            if count and before + count >= target:
                lo = low if i == 0 else max(self.edges[i], low)
                hi = high if i == last else min(self.edges[i + 1], high)
                hi = max(hi, lo)
                return min(max(lo + (hi - lo) * (target - before) / count, low), high)
            before += count
        return high


def summary_of_labels(stats: FeatureStats, median: float) -> dict[str, float]:
    """A regression label's summary as events and listings carry it: count, mean, std, min, p50, max."""
    return {
        "count": float(stats.count),
        "mean": stats.mean,
        "std": stats.std,
        "min": stats.min if stats.min is not None else math.nan,
        "p50": median,
        "max": stats.max if stats.max is not None else math.nan,
    }


def batch_label_summary(labels: Sequence[float] | NDArray[np.float64]) -> dict[str, float]:
    """The summary of a batch of regression labels held in memory (its median exact)."""
    values = np.asarray(labels, dtype=np.float64)
    return summary_of_labels(FeatureStats.of(values), float(np.median(values)) if values.size else math.nan)


class ShardInfo(BaseModel):
    """One shard as a manifest lists it.

    ``stats`` summarise its numeric features; ``categories`` count the rows of each category
    of its categorical and boolean features (booleans as ``"true"`` / ``"false"``), most
    frequent first, at most :data:`MAX_CATEGORIES` of them (``categories_other`` counts the
    rows of the rest); ``missing`` counts the rows where each feature is null. Shards written
    before features had types have no ``categories`` and no ``missing``. A regression shard
    has no ``label_counts`` (``{}``) but ``label_stats``, its label's statistics.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    sha256: str
    rows: int
    label_counts: dict[str, int]
    stats: dict[str, FeatureStats]
    label_stats: FeatureStats | None = None
    first_occurred_at: UtcDatetime | None = None
    last_occurred_at: UtcDatetime | None = None
    categories: dict[str, dict[str, int]] = Field(default_factory=dict)
    categories_other: dict[str, int] = Field(default_factory=dict)
    missing: dict[str, int] = Field(default_factory=dict)

    def missing_of(self, name: str) -> int:
        """Rows where ``name`` is missing, also for a shard written before that was counted.

        A stored numeric value is always finite (ingest rejects the rest), so there the rows
        without a statistic are exactly the missing ones.
        """
        if name in self.missing:
            return self.missing[name]
        stats = self.stats.get(name)
        return self.rows - stats.count if stats is not None else 0


class DatasetManifest(BaseModel):
    """An immutable dataset version: its shards and what they hold.

    ``feature_types`` give each feature's type in ``features`` order (a manifest written
    before features had types reads as all-numeric). ``stats`` cover the numeric features;
    ``categories`` / ``categories_other`` the categorical and boolean ones, and ``missing``
    every feature, merged over all shards as in :class:`ShardInfo`.

    ``task`` says what the label is (a manifest written before regression reads as
    classification). A classification manifest counts rows per class (``label_counts``); a
    regression one has ``label_counts == {}`` and instead ``label_stats`` (merged over the
    shards exactly) and ``label_histogram`` (see :class:`LabelHistogram`); while the lineage has
    fewer than :data:`LABEL_EDGES_ROWS` rows, ``label_sample`` holds all its labels, from which
    each version derives the histogram's edges again. :meth:`label_summary` reads them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    version: int
    parent_version: int | None
    created_at: UtcDatetime = Field(default_factory=utc_now)
    schema_hash: str
    features: list[str]
    label_values: list[Label]
    shards: list[ShardInfo]
    rows_total: int
    rows_added: int
    label_counts: dict[str, int]
    stats: dict[str, FeatureStats]
    checks: dict[str, Any] = Field(default_factory=dict)
    feature_types: list[FeatureType] = Field(default_factory=list)
    categories: dict[str, dict[str, int]] = Field(default_factory=dict)
    categories_other: dict[str, int] = Field(default_factory=dict)
    missing: dict[str, int] = Field(default_factory=dict)
    task: TaskKind = CLASSIFICATION
    label_stats: FeatureStats | None = None
    label_histogram: LabelHistogram | None = None
    label_sample: list[float] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _untyped_is_numeric(cls, data: Any) -> Any:
        """A manifest from before features had types: every feature was a float."""
        if isinstance(data, dict) and not data.get("feature_types") and isinstance(data.get("features"), list):
            data = {**data, "feature_types": [NUMERIC] * len(data["features"])}
        return data

    @model_validator(mode="after")
    def _one_type_per_feature(self) -> DatasetManifest:
        if len(self.feature_types) != len(self.features):
            raise ValueError(f"{len(self.features)} features but {len(self.feature_types)} feature types")
        return self

    def label_distribution(self) -> dict[str, float]:
        """Share of each label over the whole dataset (``{}`` for a regression label)."""
        total = sum(self.label_counts.values())
        return {k: v / total for k, v in self.label_counts.items()} if total else {}

    @property
    def regression(self) -> bool:
        """True when the label is a number."""
        return self.task == REGRESSION

    def label_summary(self) -> dict[str, float] | None:
        """A regression label's count, mean, std, min, p50 and max over the whole version.

        The median is exact while the lineage is small enough to keep every label
        (``label_sample``), and read from the histogram, interpolated inside its bin, after
        that (a version written without a histogram has no ``p50`` then). None for a
        classification label (its summary is ``label_counts``).
        """
        stats = self.label_stats
        if not self.regression or stats is None or stats.count == 0:
            return None
        assert stats.min is not None and stats.max is not None
        if self.label_sample:
            median = float(np.median(np.asarray(self.label_sample, dtype=np.float64)))
        elif self.label_histogram is not None:
            median = self.label_histogram.quantile(0.5, stats.min, stats.max)
        else:
            return {k: v for k, v in summary_of_labels(stats, math.nan).items() if k != "p50"}
        return summary_of_labels(stats, median)

    def announcement(self) -> DatasetVersionCreated:
        """The ``datasets`` event that says this version exists."""
        return DatasetVersionCreated(
            model=self.model,
            version=self.version,
            manifest_key=manifest_key(self.model, self.version),
            rows_total=self.rows_total,
            rows_added=self.rows_added,
            label_counts=self.label_counts,
            schema_hash=self.schema_hash,
            label_summary=self.label_summary(),
        )


@dataclass(frozen=True)
class Dataset:
    """A dataset version as arrays, rows in arrival order.

    ``columns`` hold every feature in spec order, each in its training form: numeric as
    float64 with NaN where missing, boolean as an object array of True / False / None,
    categorical as an object array of str / None. ``X`` is the float matrix of an
    all-numeric dataset (as it always was); a dataset with any categorical or boolean
    feature has no such matrix, and ``X`` is ``(rows, 0)``: use ``columns``. ``y`` holds the
    spec's classes for a classification dataset and is float64 for a regression one.
    """

    model: str
    version: int
    feature_names: list[str]
    X: NDArray[np.float64]
    y: NDArray[Any]
    record_ids: NDArray[Any]
    occurred_at: NDArray[Any]
    types: list[str] = field(default_factory=list)
    columns: dict[str, NDArray[Any]] = field(default_factory=dict)
    task: TaskKind = CLASSIFICATION


_ARROW_TYPES: dict[str, pa.DataType] = {NUMERIC: pa.float64(), CATEGORICAL: pa.string(), BOOLEAN: pa.bool_()}


def _types_of(feature_names: Sequence[str], feature_types: Sequence[str] | None) -> list[FeatureType]:
    """The feature types to store, checked against the names (None: all numeric, as before types)."""
    types = [NUMERIC] * len(feature_names) if feature_types is None else list(feature_types)
    if len(types) != len(feature_names):
        raise ValueError(f"{len(feature_names)} features but {len(types)} feature types")
    unknown = sorted({t for t in types if t not in _ARROW_TYPES})
    if unknown:
        raise ValueError(f"unknown feature types: {', '.join(unknown)}")
    return cast("list[FeatureType]", types)


def _arrow_schema(
    feature_names: Sequence[str], feature_types: Sequence[str] | None = None, task: TaskKind = CLASSIFICATION
) -> pa.Schema:
    types = _types_of(feature_names, feature_types)
    return pa.schema(
        [
            pa.field(RECORD_ID, pa.string(), nullable=False),
            pa.field(OCCURRED_AT, pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field(LABEL, pa.float64() if task == REGRESSION else pa.string(), nullable=False),
            pa.field(CONFIDENCE, pa.float64(), nullable=False),
            pa.field(ANNOTATOR, pa.string()),
            pa.field(INFERENCE_ID, pa.string()),
            *[pa.field(name, _ARROW_TYPES[kind]) for name, kind in zip(feature_names, types, strict=True)],
        ]
    )


def _feature_matrix(records: Sequence[AcceptedRecord], n_features: int) -> NDArray[np.float64]:
    """All-numeric features as a float matrix; a missing value (None) becomes NaN.

    Validation never lets NaN in otherwise, so NaN here always means missing.
    """
    if not records:
        return np.empty((0, n_features), dtype=np.float64)
    return np.array([r.features for r in records], dtype=np.float64).reshape(len(records), n_features)


def _feature_columns(records: Sequence[AcceptedRecord], n_features: int) -> list[tuple[FeatureValue, ...]]:
    """Typed features column by column, each a tuple of the records' values in row order."""
    if not records:
        return [()] * n_features
    columns: list[tuple[FeatureValue, ...]] = list(zip(*(r.features for r in records), strict=True))
    if len(columns) != n_features:
        raise ValueError(f"records have {len(columns)} features, the dataset {n_features}")
    return columns


def _float_column(values: Sequence[FeatureValue]) -> NDArray[np.float64]:
    return np.array(values, dtype=np.float64)  # None becomes NaN


def _category_texts(values: Sequence[FeatureValue]) -> Sequence[FeatureValue]:
    """A categorical column as text, ``""`` as missing (:mod:`shared.features`).

    Ingest's validation already sends text; records built elsewhere (a backfill, a test)
    may carry integer codes, which become their text here rather than a failed write.
    """
    if all(v is None or (v.__class__ is str and v != "") for v in values):
        return values
    texts: list[FeatureValue] = []
    for value in values:
        text = None if value is None or value == "" else category_text(value)
        if value is not None and value != "" and text is None:
            raise ValueError(f"{value!r} is not a category (expected a string or an integer code)")
        texts.append(text)
    return texts


def _float_arrow(column: NDArray[np.float64]) -> pa.Array:
    """A numeric column as float64, NaN (a missing value) as null."""
    missing = np.isnan(column)
    return pa.array(column, type=pa.float64(), mask=missing if missing.any() else None)


def _regression_labels(records: Sequence[AcceptedRecord]) -> NDArray[np.float64]:
    """The records' labels as float64 (ingest's validation sends floats; an int is a number too)."""
    labels = np.empty(len(records), dtype=np.float64)
    for i, record in enumerate(records):
        label = record.label
        if isinstance(label, bool) or not isinstance(label, int | float):
            raise ValueError(f"record {record.record_id}: label {label!r} is not a number (a regression label is)")
        labels[i] = label
    if not np.isfinite(labels).all():
        raise ValueError("a regression label must be a finite number")
    return labels


FeatureColumn = NDArray[np.float64] | Sequence[FeatureValue]
"""One feature's values over a shard's rows: float64 with NaN for missing (numeric), else the values."""


def _feature_data(
    records: Sequence[AcceptedRecord], feature_names: Sequence[str], types: Sequence[str]
) -> list[FeatureColumn]:
    """Each feature's column, built once for both a shard's bytes and its summary.

    All-numeric records become one float matrix, transposed so that each column is contiguous
    (Arrow and the statistics then read it without a gather); a typed record set is split
    column by column, categories as their text.
    """
    if all(kind == NUMERIC for kind in types):
        columns = np.ascontiguousarray(_feature_matrix(records, len(feature_names)).T)
        return list(columns)
    data: list[FeatureColumn] = []
    for values, kind in zip(_feature_columns(records, len(feature_names)), types, strict=True):
        if kind == NUMERIC:
            data.append(_float_column(values))
        elif kind == CATEGORICAL:
            data.append(_category_texts(values))
        else:
            data.append(values)
    return data


def encode_shard(
    records: Sequence[AcceptedRecord],
    feature_names: Sequence[str],
    feature_types: Sequence[str] | None = None,
    task: TaskKind = CLASSIFICATION,
) -> bytes:
    """Records as Parquet bytes; the same records always give the same bytes.

    Each feature is a column of its type (``feature_types``, spec order; None: all numeric):
    float64, string or bool, with nulls where a value is missing. The label is the class's
    text, or a float64 for a regression ``task``.
    """
    types = _types_of(feature_names, feature_types)
    return _encode(records, feature_names, types, task, _feature_data(records, feature_names, types))


def _encode(
    records: Sequence[AcceptedRecord],
    feature_names: Sequence[str],
    types: Sequence[FeatureType],
    task: TaskKind,
    features: Sequence[FeatureColumn],
) -> bytes:
    """:func:`encode_shard` on columns already built (:func:`_feature_data`).

    Numeric feature columns are written without a dictionary: measured values rarely repeat,
    so pyarrow's dictionary attempt cost most of the write and made pages larger, not smaller
    (300 float columns of 20,000 rows: 0.28 s and 57 MB with it, 0.07 s and 46 MB without).
    Strings, flags and the record's own columns keep it. Readers see the same schema and values.
    """
    schema = _arrow_schema(feature_names, types, task)
    label = (
        pa.array(_regression_labels(records), type=pa.float64())
        if task == REGRESSION
        else pa.array([str(r.label) for r in records], type=pa.string())
    )
    arrays = [
        pa.array([r.record_id for r in records], type=pa.string()),
        pa.array([r.occurred_at for r in records], type=pa.timestamp("us", tz="UTC")),
        label,
        pa.array([r.confidence for r in records], type=pa.float64()),
        pa.array([r.annotator for r in records], type=pa.string()),
        pa.array([r.inference_id for r in records], type=pa.string()),
    ]
    for values, kind in zip(features, types, strict=True):
        if kind == NUMERIC:
            arrays.append(_float_arrow(np.asarray(values, dtype=np.float64)))
        else:
            arrays.append(pa.array(values, type=_ARROW_TYPES[kind]))
    table = pa.Table.from_arrays(arrays, schema=schema)
    dictionary = [*META_COLUMNS, *(n for n, kind in zip(feature_names, types, strict=True) if kind != NUMERIC)]
    sink = io.BytesIO()
    pq.write_table(
        table, sink, compression="zstd", write_statistics=False, store_schema=False, use_dictionary=dictionary
    )
    return sink.getvalue()


def decode_shard(data: bytes) -> pa.Table:
    """Parquet bytes back to an Arrow table."""
    return pq.read_table(io.BytesIO(data))


def _capped(counts: Mapping[str, int], other: int = 0) -> tuple[dict[str, int], int]:
    """Counts most frequent first (ties by text), at most :data:`MAX_CATEGORIES`; the rest's rows."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(ordered[:MAX_CATEGORIES]), other + sum(n for _, n in ordered[MAX_CATEGORIES:])


def shard_info(
    model: str,
    records: Sequence[AcceptedRecord],
    feature_names: Sequence[str],
    data: bytes,
    feature_types: Sequence[str] | None = None,
    task: TaskKind = CLASSIFICATION,
) -> ShardInfo:
    """Describe a shard for its manifest: rows, labels, numeric statistics, category counts, missing values.

    Labels are counted per class, or for a regression ``task`` summarised (``label_stats``).
    """
    types = _types_of(feature_names, feature_types)
    return _info(model, records, feature_names, data, types, task, _feature_data(records, feature_names, types))


def _info(
    model: str,
    records: Sequence[AcceptedRecord],
    feature_names: Sequence[str],
    data: bytes,
    types: Sequence[FeatureType],
    task: TaskKind,
    features: Sequence[FeatureColumn],
) -> ShardInfo:
    """:func:`shard_info` on columns already built (:func:`_feature_data`)."""
    sha = hashlib.sha256(data).hexdigest()
    stats: dict[str, FeatureStats] = {}
    categories: dict[str, dict[str, int]] = {}
    other: dict[str, int] = {}
    missing: dict[str, int] = {}
    for name, kind, values in zip(feature_names, types, features, strict=True):
        if kind == NUMERIC:
            column = np.asarray(values, dtype=np.float64)
            finite = np.isfinite(column)
            stats[name] = FeatureStats.of(column[finite])
            missing[name] = int(np.isnan(column).sum())
            continue
        counts = Counter(values)
        missing[name] = counts.pop(None, 0)
        keyed: Counter[str] = Counter()
        for value, n in counts.items():
            keyed[str(category_key(value, kind))] += n
        categories[name], rest = _capped(keyed)
        if rest:
            other[name] = rest
    times = [r.occurred_at for r in records]
    return ShardInfo(
        key=shard_key(model, sha),
        sha256=sha,
        rows=len(records),
        label_counts={} if task == REGRESSION else dict(Counter(str(r.label) for r in records)),
        stats=stats,
        label_stats=FeatureStats.of(_regression_labels(records)) if task == REGRESSION else None,
        first_occurred_at=min(times) if times else None,
        last_occurred_at=max(times) if times else None,
        categories=categories,
        categories_other=other,
        missing={name: missing[name] for name in feature_names},
    )


def label_shift(before: dict[str, int], batch: dict[str, int]) -> float:
    """Total-variation distance between two label distributions (0 = same, 1 = disjoint).

    >>> label_shift({"a": 50, "b": 50}, {"a": 90, "b": 10})
    0.4
    """
    total_a, total_b = sum(before.values()), sum(batch.values())
    if not total_a or not total_b:
        return 0.0
    labels = set(before) | set(batch)
    return round(0.5 * sum(abs(before.get(k, 0) / total_a - batch.get(k, 0) / total_b) for k in labels), 12)


def next_label_histogram(
    parent: DatasetManifest | None, labels: NDArray[np.float64]
) -> tuple[LabelHistogram, list[float]]:
    """A regression version's label histogram and sample: its lineage parent's plus the new ``labels``.

    ``parent`` is the previous version of the same lineage (None for the first). Once the
    parent's edges are fixed (its ``label_sample`` is empty), the new labels are binned on them
    and added; before that, the edges are derived from every label so far, which are also kept
    as the new ``label_sample`` while there are fewer than :data:`LABEL_EDGES_ROWS` of them (an
    empty list once the edges are fixed). Edges and counts follow :mod:`shared.reference`'s rule
    (quantile edges, :func:`~shared.reference.bin_of`), the one the monitor bins with.
    """
    if parent is not None and parent.label_histogram is not None and not parent.label_sample:
        fixed = parent.label_histogram
        return fixed.add(_label_counts(fixed.edges, labels)), []
    seen = np.concatenate([np.asarray(parent.label_sample if parent else [], dtype=np.float64), labels])
    sample = [float(v) for v in seen] if seen.size < LABEL_EDGES_ROWS else []
    edges = histogram(seen).edges
    return LabelHistogram(edges=edges, counts=_label_counts(edges, seen)), sample


def _label_counts(edges: Sequence[float], values: NDArray[np.float64]) -> list[int]:
    """Rows of ``values`` in each bin of ``edges`` (beyond the end edges: the end bins)."""
    return [int(c) for c in column_counts(edges[1:-1], len(edges) - 1, values)]


class DatasetRepository:
    """Reads and writes a model's dataset versions in an object store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def models(self) -> list[str]:
        """Models that have at least one dataset version."""
        names = {key.split("/")[1] for key in self.store.list("datasets/") if "/versions/" in key}
        return sorted(names)

    def versions(self, model: str) -> list[int]:
        """Version numbers of a model, ascending."""
        found = []
        for key in self.store.list(versions_prefix(model)):
            stem = key.rsplit("/", 1)[-1].removesuffix(".json")
            if stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def latest_version(self, model: str) -> int | None:
        """Newest version number, or None when the model has no dataset yet."""
        versions = self.versions(model)
        return versions[-1] if versions else None

    def manifest(self, model: str, version: int | None = None) -> DatasetManifest:
        """A version's manifest (the newest when ``version`` is None)."""
        if version is None:
            version = self.latest_version(model)
            if version is None:
                raise NotFound(f"model {model!r} has no dataset version yet")
        try:
            data = self.store.get(manifest_key(model, version))
        except KeyNotFound:
            raise NotFound(f"model {model!r} has no dataset version {version}") from None
        return DatasetManifest.model_validate_json(data)

    def shard_table(self, shard: ShardInfo, columns: Sequence[str] | None = None) -> pa.Table:
        """A shard's rows; verifies its sha256 (:class:`CorruptArtifact` when it does not match)."""
        data = self.store.get(shard.key)
        if hashlib.sha256(data).hexdigest() != shard.sha256:
            raise CorruptArtifact(f"shard {shard.key} is corrupt: its sha256 does not match the manifest")
        table = decode_shard(data)
        return table.select(list(columns)) if columns is not None else table

    def record_ids(self, shards: Iterable[ShardInfo]) -> set[str]:
        """Record ids stored in the given shards."""
        ids: set[str] = set()
        for shard in shards:
            ids.update(self.shard_table(shard, [RECORD_ID]).column(RECORD_ID).to_pylist())
        return ids

    def write_version(
        self,
        model: str,
        schema_hash: str,
        feature_names: Sequence[str],
        label_values: Sequence[Label],
        records: Sequence[AcceptedRecord],
        known_version: int | None,
        checks: dict[str, Any] | None = None,
        feature_types: Sequence[str] | None = None,
        task: TaskKind = CLASSIFICATION,
    ) -> DatasetManifest | None:
        """Store ``records`` as a new shard and a new version; returns its manifest.

        ``known_version`` is the newest version the caller deduplicated ``records`` against.
        Rows another writer stored in a later version are dropped first; returns None when
        nothing new is left to store. ``feature_types`` are the spec's (``ModelSpec.feature_types``,
        None for all numeric): they type the shard's columns and the manifest's summaries.
        ``task`` is the spec's ``label.type``: a regression label is stored as float64 and
        summarised instead of counted per class (a change of task changes the schema hash, so
        it starts a new lineage as any schema change does), with a histogram of it
        (:func:`next_label_histogram`) for the label-shift check.
        """
        types = _types_of(feature_names, feature_types)
        pending = list(records)
        parent_version = known_version
        for _ in range(MAX_VERSION_ATTEMPTS):
            latest = self.latest_version(model)
            if latest is not None and (parent_version is None or latest > parent_version):
                newer = [
                    s
                    for v in range(parent_version + 1 if parent_version else 1, latest + 1)
                    for s in self._new_shards(model, v)
                ]
                stored = self.record_ids(newer)
                pending = [r for r in pending if r.record_id not in stored]
                parent_version = latest
            if not pending:
                return None
            parent = self.manifest(model, parent_version) if parent_version else None
            if parent is not None and parent.schema_hash != schema_hash:
                log.warning(
                    "%s: spec schema changed since version %d; version %d starts from the new schema",
                    model,
                    parent.version,
                    parent.version + 1,
                )
                parent_shards: list[ShardInfo] = []
                lineage = None
            else:
                parent_shards = list(parent.shards) if parent else []
                lineage = parent
            features = _feature_data(pending, feature_names, types)
            data = _encode(pending, feature_names, types, task, features)
            info = _info(model, pending, feature_names, data, types, task, features)
            if not self.store.exists(info.key):
                self.store.put(info.key, data)
            labels = next_label_histogram(lineage, _regression_labels(pending)) if task == REGRESSION else None
            manifest = self._manifest(
                model,
                schema_hash,
                feature_names,
                types,
                label_values,
                parent_version,
                parent_shards,
                info,
                checks or {},
                task,
                labels,
            )
            try:
                self.store.put_if_absent(manifest_key(model, manifest.version), manifest.model_dump_json().encode())
            except AlreadyExists:
                log.info("%s: version %d was taken by another writer; retrying", model, manifest.version)
                continue
            return manifest
        raise AlreadyExists(f"{model}: could not claim a dataset version after {MAX_VERSION_ATTEMPTS} attempts")

    def _new_shards(self, model: str, version: int) -> list[ShardInfo]:
        """Shards version ``version`` added over its parent (normally its last one)."""
        manifest = self.manifest(model, version)
        parent_keys = set()
        if manifest.parent_version:
            parent_keys = {s.key for s in self.manifest(model, manifest.parent_version).shards}
        return [s for s in manifest.shards if s.key not in parent_keys]

    @staticmethod
    def _manifest(
        model: str,
        schema_hash: str,
        feature_names: Sequence[str],
        feature_types: Sequence[str],
        label_values: Sequence[Label],
        parent_version: int | None,
        parent_shards: list[ShardInfo],
        added: ShardInfo,
        checks: dict[str, Any],
        task: TaskKind = CLASSIFICATION,
        labels: tuple[LabelHistogram | None, list[float]] | None = None,
    ) -> DatasetManifest:
        shards = [*parent_shards, added]
        label_counts: Counter[str] = Counter()
        label_stats = FeatureStats() if task == REGRESSION else None
        numeric = [n for n, kind in zip(feature_names, feature_types, strict=True) if kind == NUMERIC]
        counted = [n for n, kind in zip(feature_names, feature_types, strict=True) if kind != NUMERIC]
        stats = {name: FeatureStats() for name in numeric}
        counts: dict[str, Counter[str]] = {name: Counter() for name in counted}
        other = dict.fromkeys(counted, 0)
        missing = dict.fromkeys(feature_names, 0)
        for shard in shards:
            label_counts.update(shard.label_counts)
            if label_stats is not None:
                label_stats = label_stats.merge(shard.label_stats or FeatureStats())
            for name in numeric:
                stats[name] = stats[name].merge(shard.stats.get(name, FeatureStats()))
            for name in counted:
                counts[name].update(shard.categories.get(name, {}))
                other[name] += shard.categories_other.get(name, 0)
            for name in feature_names:
                missing[name] += shard.missing_of(name)
        categories: dict[str, dict[str, int]] = {}
        categories_other: dict[str, int] = {}
        for name in counted:
            categories[name], rest = _capped(counts[name], other[name])
            if rest:
                categories_other[name] = rest
        return DatasetManifest(
            model=model,
            version=(parent_version or 0) + 1,
            parent_version=parent_version,
            schema_hash=schema_hash,
            features=list(feature_names),
            label_values=list(label_values),
            shards=shards,
            rows_total=sum(s.rows for s in shards),
            rows_added=added.rows,
            label_counts=dict(label_counts),
            stats=stats,
            checks=checks,
            feature_types=_types_of(feature_names, feature_types),
            categories=categories,
            categories_other=categories_other,
            missing=missing,
            task=task,
            label_stats=label_stats,
            label_histogram=labels[0] if labels else None,
            label_sample=labels[1] if labels else [],
        )

    def rows_since(self, model: str, version: int, since: datetime) -> int:
        """How many rows of a version were recorded at or after ``since`` (their ``occurred_at``).

        The manifest's per-shard time range answers for most shards; only a shard that
        straddles ``since`` (or predates the time range) is read, and then only its time column.
        """
        total = 0
        for shard in self.manifest(model, version).shards:
            if shard.first_occurred_at is not None and shard.first_occurred_at >= since:
                total += shard.rows
            elif shard.last_occurred_at is not None and shard.last_occurred_at < since:
                continue
            else:
                times = self.shard_table(shard, [OCCURRED_AT]).column(OCCURRED_AT)
                total += int(pc.sum(pc.greater_equal(times, _utc_scalar(since))).as_py() or 0)
        return total

    def load(
        self, model: str, version: int | None = None, last_rows: int | None = None, since: datetime | None = None
    ) -> Dataset:
        """A version as numpy arrays (the newest when ``version`` is None), optionally its last rows.

        With ``since``, only rows recorded at or after it (``occurred_at``) are kept — the rows
        of a new regime after a drift — and ``last_rows`` then takes the newest of those.
        Only the shards that can hold the rows asked for are read.
        """
        manifest = self.manifest(model, version)
        shards = manifest.shards
        if since is not None:
            shards = [s for s in shards if s.last_occurred_at is None or s.last_occurred_at >= since]
        if last_rows is not None:
            kept: list[ShardInfo] = []
            total = 0
            for shard in reversed(shards):
                if total >= last_rows:
                    break
                kept.append(shard)
                whole = since is None or (shard.first_occurred_at is not None and shard.first_occurred_at >= since)
                total += shard.rows if whole else 0  # a shard straddling `since` may hold fewer
            shards = list(reversed(kept))
        types = list(manifest.feature_types)
        schema = _arrow_schema(manifest.features, types, manifest.task)
        tables = [_conform(self.shard_table(s), schema) for s in shards]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        if since is not None:
            table = table.filter(pc.greater_equal(table.column(OCCURRED_AT), _utc_scalar(since)))
        if last_rows is not None and table.num_rows > last_rows:
            table = table.slice(table.num_rows - last_rows)
        columns = {
            name: _numpy_column(table.column(name), kind) for name, kind in zip(manifest.features, types, strict=True)
        }
        if layout_of(types) == MATRIX:
            X = (
                np.column_stack([columns[name] for name in manifest.features])
                if table.num_rows
                else np.empty((0, len(manifest.features)), dtype=np.float64)
            )
        else:
            X = np.empty((table.num_rows, 0), dtype=np.float64)
        if manifest.regression:
            y = np.asarray(table.column(LABEL).to_numpy(zero_copy_only=False), dtype=np.float64)
        else:
            by_text = {str(v): v for v in manifest.label_values}
            y = np.array([by_text.get(v, v) for v in table.column(LABEL).to_pylist()])
        return Dataset(
            model=model,
            version=manifest.version,
            feature_names=list(manifest.features),
            X=X,
            y=y,
            record_ids=np.array(table.column(RECORD_ID).to_pylist(), dtype=object),
            occurred_at=table.column(OCCURRED_AT).to_numpy(zero_copy_only=False),
            types=list(types),
            columns=columns,
            task=manifest.task,
        )


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A shard's table in the manifest's schema (column order and types), so shards concatenate."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    return table.select(schema.names).cast(schema)


def _numpy_column(column: pa.ChunkedArray, kind: str) -> NDArray[Any]:
    """One feature's values in its training form (see :class:`Dataset`)."""
    if kind == NUMERIC:
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)  # nulls become NaN
    values = column.to_pylist()
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _utc_scalar(at: datetime) -> pa.Scalar:
    """A time as an Arrow scalar of the shards' ``occurred_at`` type."""
    return pa.scalar(at, type=pa.timestamp("us", tz="UTC"))


def manifest_summary(manifest: DatasetManifest) -> dict[str, Any]:
    """A manifest's headline figures, for listings.

    ``label_counts`` for a classification label; ``label_summary`` (count, mean, std, min,
    p50, max) for a regression one, None otherwise.
    """
    return {
        "model": manifest.model,
        "version": manifest.version,
        "rows_total": manifest.rows_total,
        "rows_added": manifest.rows_added,
        "shards": len(manifest.shards),
        "task": manifest.task,
        "label_counts": manifest.label_counts,
        "label_summary": manifest.label_summary(),
        "created_at": manifest.created_at.isoformat(),
        "schema_hash": manifest.schema_hash[:12],
        "feature_types": dict(Counter(manifest.feature_types)),
        "flags": [name for name, check in manifest.checks.items() if isinstance(check, dict) and check.get("flagged")],
    }
