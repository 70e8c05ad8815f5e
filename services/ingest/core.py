"""Ingest's bookkeeping between flushes. Pure: no I/O.

Accepted records wait in a per-model buffer until a flush (by size or by age) turns them
into a dataset version. The buffer also remembers which record ids it holds, so a resend
inside one window is caught before the dataset's own ids are consulted, and counts each
window's outcomes for the rejection-rate alarm.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.datasets import AcceptedRecord, label_shift
from shared.spec import ModelSpec

MIN_ROWS_FOR_LABEL_SHIFT = 100
MIN_RECORDS_FOR_REJECTION_ALARM = 20


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
) -> dict[str, Any]:
    """The checks written into a dataset version's manifest.

    ``label_shift``: total-variation distance between the window's labels and the current
    dataset's (flagged above ``label_shift_alert`` once the dataset has enough rows).
    ``rejections``: the window's rejection rate against ``max_rejection_rate``.
    """
    batch_labels = Counter(str(r.label) for r in window.records)
    distance = label_shift(dataset_label_counts, dict(batch_labels))
    enough = sum(dataset_label_counts.values()) >= MIN_ROWS_FOR_LABEL_SHIFT
    considered = len(window.records) + window.rejected
    rate = window.rejected / considered if considered else 0.0
    return {
        "label_shift": {
            "distance": distance,
            "threshold": label_shift_alert,
            "batch_label_counts": dict(batch_labels),
            "flagged": bool(enough and distance > label_shift_alert),
        },
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
