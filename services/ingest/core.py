"""Ingest's bookkeeping between flushes. Pure: no I/O.

Accepted records wait in a buffer of their model's own until a flush (by the model's rows, or
by the age of its oldest row) turns them into a dataset version, so a model's versions do not
depend on how many other models share the topic. The buffer remembers which record ids it
holds, so a resend inside one window is caught before the dataset's own ids are consulted; the
first offset it holds on each partition, so offsets are committed only below what is still
buffered; and each window's outcomes, for the batch checks. Batches too small for a check to
mean anything are carried into the next one (:meth:`ModelWindow.merged`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.datasets import AcceptedRecord, LabelHistogram, batch_label_summary, label_shift
from shared.reference import ReferenceHistogram, bin_counts, psi_from_counts
from shared.spec import ModelSpec

MIN_ROWS_FOR_LABEL_SHIFT = 100
"""Rows the dataset needs before a batch's labels are compared with it."""
MIN_BATCH_ROWS = 100
"""Rows a batch needs for its checks (``validation.min_batch_rows``' default): a PSI over ten
bins of a few dozen values, or the rejection rate of twenty records, is mostly noise."""
PSI_NOISE_Z = 2.326
"""The standard normal's 99th percentile: the PSI two samples of one distribution stay under
(nearly always) is the bound a regression label's shift must also exceed to be flagged."""


@dataclass
class ModelWindow:
    """One model's records and counts since its last flush."""

    records: list[AcceptedRecord] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    spec: ModelSpec | None = None
    """The spec the records were validated against: they are stored under its schema."""
    rejected_by_rule: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    duplicates: int = 0
    opened_at: float | None = None
    """When the window's first record arrived (the flush policy's age counts from it)."""
    held: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) -> the first offset of a message this window holds: below it, the
    partition's messages are durable as far as this window is concerned."""
    batches: int = 1
    """Flushed batches this window stands for (more than one when small batches were carried)."""

    def hold(self, topic: str, partition: int, offset: int) -> None:
        """Remember that the message at ``offset`` is in this window until it is flushed."""
        self.held.setdefault((topic, partition), offset)

    def accept(self, record: AcceptedRecord) -> None:
        """Buffer an accepted record."""
        self.records.append(record)
        self.ids.add(record.record_id)

    def reject(self, rules: list[str]) -> None:
        """Count a rejected record under each rule it failed."""
        self.rejected += 1
        self.rejected_by_rule.update(set(rules))

    @property
    def seen(self) -> int:
        """Records of the window, whatever became of them."""
        return len(self.records) + self.rejected + self.duplicates

    def merged(self, later: ModelWindow) -> ModelWindow:
        """This (carried) window's outcomes followed by ``later``'s, for the batch checks.

        The records are shared, not copied; the result checks against ``later``'s spec.

        >>> carried = ModelWindow(rejected=2, duplicates=1)
        >>> both = carried.merged(ModelWindow(rejected=1))
        >>> both.rejected, both.duplicates, both.batches
        (3, 1, 2)
        """
        return ModelWindow(
            records=self.records + later.records,
            spec=later.spec or self.spec,
            rejected_by_rule=self.rejected_by_rule + later.rejected_by_rule,
            rejected=self.rejected + later.rejected,
            duplicates=self.duplicates + later.duplicates,
            batches=self.batches + later.batches,
        )

    def checkable(self, min_rows: int) -> bool:
        """Large enough for the batch checks: ``min_rows`` records accepted or rejected."""
        return len(self.records) + self.rejected >= min_rows


@dataclass
class FlushPolicy:
    """When a model's buffered records are written.

    A model's window is flushed when it holds ``max_rows`` rows, or when its oldest row has
    waited ``max_age_s`` -- unless the consumer is behind (a backlog on the topic, as in a bulk
    load), when the oldest may wait up to ``max_age_behind_s``: rows are still streaming in, so
    each model's versions are cut by its row threshold, not by how fast the shared topic is read.
    ``max_buffered_rows`` bounds memory over all models: beyond it, the largest windows go first.
    """

    max_rows: int = 5000
    max_age_s: float = 5.0
    max_age_behind_s: float = 60.0
    max_buffered_rows: int = 200_000

    def due(self, buffered_rows: int, oldest_at: float | None, now: float, behind: bool = False) -> bool:
        """True when a window of ``buffered_rows`` opened at ``oldest_at`` should be flushed now.

        >>> FlushPolicy(max_rows=10, max_age_s=5).due(10, 0.0, 1.0)
        True
        >>> FlushPolicy(max_rows=10, max_age_s=5).due(3, 0.0, 4.9)
        False
        >>> FlushPolicy(max_rows=10, max_age_s=5, max_age_behind_s=60).due(3, 0.0, 30.0, behind=True)
        False
        """
        if buffered_rows >= self.max_rows:
            return True
        if oldest_at is None:
            return False
        return now - oldest_at >= (max(self.max_age_behind_s, self.max_age_s) if behind else self.max_age_s)

    def due_windows(self, windows: dict[str, ModelWindow], now: float, behind: bool = False) -> list[str]:
        """The models whose windows are due, and the largest others while the total is over the bound.

        A window of rejections alone is always due: its rejections are durable on their topic
        once confirmed, and its counts go to the batch checks (carried, while they are few).

        >>> policy = FlushPolicy(max_rows=10, max_age_s=5, max_buffered_rows=8)
        >>> def window(rows: int) -> ModelWindow:
        ...     return ModelWindow(records=[None] * rows, opened_at=0.0)  # type: ignore[list-item]
        >>> policy.due_windows({"a": window(10), "b": window(3), "c": window(6)}, now=1.0)
        ['a', 'c']
        """
        due = [m for m, w in windows.items() if not w.records or self.due(len(w.records), w.opened_at, now, behind)]
        left = sum(len(w.records) for m, w in windows.items() if m not in due)
        for model in sorted((m for m in windows if m not in due), key=lambda m: -len(windows[m].records)):
            if left <= self.max_buffered_rows:
                break
            due.append(model)
            left -= len(windows[model].records)
        return due


def held_offsets(windows: Iterable[ModelWindow]) -> dict[tuple[str, int], int]:
    """Per (topic, partition), the first offset any of ``windows`` still holds.

    >>> a, b = ModelWindow(), ModelWindow()
    >>> a.hold("annotations", 0, 7); b.hold("annotations", 0, 3); b.hold("annotations", 1, 9)
    >>> held_offsets([a, b])
    {('annotations', 0): 3, ('annotations', 1): 9}
    """
    held: dict[tuple[str, int], int] = {}
    for window in windows:
        for position, offset in window.held.items():
            held[position] = min(offset, held.get(position, offset))
    return held


def batch_checks(
    window: ModelWindow,
    dataset_label_counts: dict[str, int],
    label_shift_alert: float,
    max_rejection_rate: float,
    dataset_label_histogram: LabelHistogram | None = None,
    min_rows: int = MIN_BATCH_ROWS,
) -> dict[str, Any]:
    """The checks written into a dataset version's manifest.

    ``label_shift``: for a class label, the total-variation distance between the window's
    labels and the current dataset's (flagged above ``label_shift_alert`` once the dataset has
    enough rows); for a regression label (the window's spec says so), the PSI of the window's
    labels against the dataset's label histogram (:func:`regression_label_shift`).
    ``rejections``: the window's rejection rate against ``max_rejection_rate``.
    Neither is flagged on a window of fewer than ``min_rows`` records accepted or rejected (the
    spec's ``validation.min_batch_rows``): three rows' labels or rejections say nothing. Such a
    window says ``deferred``, and the handler carries it into the next batch's checks.
    """
    considered = len(window.records) + window.rejected
    rate = window.rejected / considered if considered else 0.0
    enough_rows = window.checkable(min_rows)
    if window.spec is not None and window.spec.regression:
        shift = regression_label_shift(
            [float(r.label) for r in window.records],
            dataset_label_histogram,
            label_shift_alert,
            1 if enough_rows else len(window.records) + 1,  # the window's size was judged above
        )
    else:
        batch_labels = Counter(str(r.label) for r in window.records)
        distance = label_shift(dataset_label_counts, dict(batch_labels))
        enough = sum(dataset_label_counts.values()) >= MIN_ROWS_FOR_LABEL_SHIFT
        shift = {
            "distance": distance,
            "threshold": label_shift_alert,
            "batch_label_counts": dict(batch_labels),
            "flagged": bool(enough and enough_rows and distance > label_shift_alert),
        }
    shift.update(batch_rows=len(window.records), batches=window.batches, min_rows=min_rows, deferred=not enough_rows)
    return {
        "label_shift": shift,
        "rejections": {
            "rate": round(rate, 6),
            "limit": max_rejection_rate,
            "rejected": window.rejected,
            "accepted": len(window.records),
            "duplicates": window.duplicates,
            "by_rule": dict(window.rejected_by_rule),
            "batches": window.batches,
            "min_rows": min_rows,
            "deferred": considered < min_rows,
            "flagged": bool(considered >= min_rows and rate > max_rejection_rate),
        },
    }


def regression_label_shift(
    batch: list[float], dataset: LabelHistogram | None, label_shift_alert: float, min_rows: int = MIN_BATCH_ROWS
) -> dict[str, Any]:
    """How far a batch's regression labels moved from the dataset's: PSI on the dataset's bins.

    The batch is binned on the dataset's histogram edges (:func:`shared.reference.bin_counts`)
    and compared with its shares by :func:`shared.reference.psi_from_counts`, the definition the
    monitor's windows use. It is flagged when the dataset and the batch both have
    :data:`MIN_ROWS_FOR_LABEL_SHIFT` rows (the batch ``min_rows``) and the PSI exceeds both ``label_shift_alert`` and
    ``noise``, the PSI that sampling alone stays under in 99 % of stable batches
    (:func:`psi_noise`): a small batch's PSI over ten bins is large by chance alone.

    >>> stable = LabelHistogram(edges=[0.0, 1.0, 2.0, 3.0], counts=[100, 100, 100])
    >>> check = regression_label_shift([0.5] * 60 + [2.5] * 60, stable, 0.2)
    >>> round(check["psi"], 2), check["flagged"]
    (2.84, True)
    """
    dataset_rows = dataset.rows if dataset is not None else 0
    summary = batch_label_summary(batch) if batch else None
    if dataset is None or not dataset_rows:
        return {
            "psi": 0.0,
            "threshold": label_shift_alert,
            "noise": None,
            "batch_rows": len(batch),
            "dataset_rows": 0,
            "batch_label_summary": summary,
            "flagged": False,
        }
    shares = dataset.shares()
    counts = bin_counts(ReferenceHistogram(edges=dataset.edges, proportions=shares), batch)
    psi = psi_from_counts(shares, counts)
    noise = psi_noise(len(dataset.counts), len(batch), dataset_rows) if batch else math.inf
    enough = dataset_rows >= MIN_ROWS_FOR_LABEL_SHIFT and len(batch) >= min_rows
    return {
        "psi": round(psi, 6),
        "threshold": label_shift_alert,
        "noise": round(noise, 6) if math.isfinite(noise) else None,
        "batch_rows": len(batch),
        "dataset_rows": dataset_rows,
        "batch_counts": counts,
        "batch_label_summary": summary,
        "flagged": bool(enough and psi > label_shift_alert and psi > noise),
    }


def psi_noise(bins: int, batch_rows: int, dataset_rows: int) -> float:
    """The PSI two samples of one distribution stay under 99 % of the time.

    For nearby distributions PSI is about ``sum((a - e)^2 / e)``, so ``PSI / (1/n + 1/m)``
    is close to chi-square with ``bins - 1`` degrees of freedom; its 99th percentile comes from
    the Wilson-Hilferty approximation.

    >>> round(psi_noise(10, 100, 10_000), 3), round(psi_noise(10, 5000, 100_000), 4)
    (0.219, 0.0046)
    """
    if bins < 2 or batch_rows <= 0 or dataset_rows <= 0:
        return 0.0
    k = bins - 1
    quantile = k * (1.0 - 2.0 / (9.0 * k) + PSI_NOISE_Z * math.sqrt(2.0 / (9.0 * k))) ** 3
    return float(quantile * (1.0 / batch_rows + 1.0 / dataset_rows))
