"""Ingest's bookkeeping between flushes. Pure: no I/O.

Accepted records wait in a per-model buffer until a flush (by size or by age) turns them
into a dataset version. The buffer also remembers which record ids it holds, so a resend
inside one window is caught before the dataset's own ids are consulted, and counts each
window's outcomes for the rejection-rate alarm.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.datasets import AcceptedRecord, LabelHistogram, batch_label_summary, label_shift
from shared.reference import ReferenceHistogram, bin_counts, psi_from_counts
from shared.spec import ModelSpec

MIN_ROWS_FOR_LABEL_SHIFT = 100
"""Rows the dataset needs before a batch's labels are compared with it (and, for a regression
label, rows the batch needs too: a PSI over ten bins of a few dozen values is mostly noise)."""
MIN_RECORDS_FOR_REJECTION_ALARM = 20
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


@dataclass
class FlushPolicy:
    """When buffered records are written: ``max_rows`` in total, or the oldest waited ``max_age_s``."""

    max_rows: int = 5000
    max_age_s: float = 5.0

    def due(self, buffered_rows: int, oldest_at: float | None, now: float) -> bool:
        """True when a flush should happen now.

        >>> FlushPolicy(max_rows=10, max_age_s=5).due(10, 0.0, 1.0)
        True
        >>> FlushPolicy(max_rows=10, max_age_s=5).due(3, 0.0, 4.9)
        False
        """
        if buffered_rows >= self.max_rows:
            return True
        return oldest_at is not None and now - oldest_at >= self.max_age_s


def batch_checks(
    window: ModelWindow,
    dataset_label_counts: dict[str, int],
    label_shift_alert: float,
    max_rejection_rate: float,
    dataset_label_histogram: LabelHistogram | None = None,
) -> dict[str, Any]:
    """The checks written into a dataset version's manifest.

    ``label_shift``: for a class label, the total-variation distance between the window's
    labels and the current dataset's (flagged above ``label_shift_alert`` once the dataset has
    enough rows); for a regression label (the window's spec says so), the PSI of the window's
    labels against the dataset's label histogram (:func:`regression_label_shift`).
    ``rejections``: the window's rejection rate against ``max_rejection_rate``.
    """
    considered = len(window.records) + window.rejected
    rate = window.rejected / considered if considered else 0.0
    if window.spec is not None and window.spec.regression:
        shift = regression_label_shift(
            [float(r.label) for r in window.records], dataset_label_histogram, label_shift_alert
        )
    else:
        batch_labels = Counter(str(r.label) for r in window.records)
        distance = label_shift(dataset_label_counts, dict(batch_labels))
        enough = sum(dataset_label_counts.values()) >= MIN_ROWS_FOR_LABEL_SHIFT
        shift = {
            "distance": distance,
            "threshold": label_shift_alert,
            "batch_label_counts": dict(batch_labels),
            "flagged": bool(enough and distance > label_shift_alert),
        }
    return {
        "label_shift": shift,
        "rejections": {
            "rate": round(rate, 6),
            "limit": max_rejection_rate,
            "rejected": window.rejected,
            "accepted": len(window.records),
            "duplicates": window.duplicates,
            "by_rule": dict(window.rejected_by_rule),
            "flagged": bool(considered >= MIN_RECORDS_FOR_REJECTION_ALARM and rate > max_rejection_rate),
        },
    }


def regression_label_shift(
    batch: list[float], dataset: LabelHistogram | None, label_shift_alert: float
) -> dict[str, Any]:
    """How far a batch's regression labels moved from the dataset's: PSI on the dataset's bins.

    The batch is binned on the dataset's histogram edges (:func:`shared.reference.bin_counts`)
    and compared with its shares by :func:`shared.reference.psi_from_counts`, the definition the
    monitor's windows use. It is flagged when the dataset and the batch both have
    :data:`MIN_ROWS_FOR_LABEL_SHIFT` rows and the PSI exceeds both ``label_shift_alert`` and
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
    enough = dataset_rows >= MIN_ROWS_FOR_LABEL_SHIFT and len(batch) >= MIN_ROWS_FOR_LABEL_SHIFT
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
