"""Flush policy and batch checks."""

from __future__ import annotations

from datetime import UTC, datetime

from services.ingest.core import FlushPolicy, ModelWindow, batch_checks
from shared.datasets import AcceptedRecord


def accepted(i: int, label: str) -> AcceptedRecord:
    return AcceptedRecord(f"r-{i}", datetime(2026, 1, 1, tzinfo=UTC), label, 1.0, None, None, (float(i),))


def test_flush_policy_by_size_and_age() -> None:
    policy = FlushPolicy(max_rows=100, max_age_s=5.0)
    assert policy.due(100, 10.0, 10.0)
    assert not policy.due(99, 10.0, 14.9)
    assert policy.due(1, 10.0, 15.0)
    assert not policy.due(0, None, 1e9)


def test_label_shift_is_flagged_beyond_threshold() -> None:
    window = ModelWindow()
    for i in range(50):
        window.accept(accepted(i, "bad" if i < 45 else "good"))
    checks = batch_checks(window, {"good": 500, "bad": 500}, label_shift_alert=0.2, max_rejection_rate=0.5)
    assert checks["label_shift"]["distance"] == 0.4
    assert checks["label_shift"]["flagged"] is True
    assert checks["label_shift"]["batch_label_counts"] == {"bad": 45, "good": 5}


def test_label_shift_needs_a_dataset_to_compare_with() -> None:
    window = ModelWindow()
    window.accept(accepted(1, "bad"))
    checks = batch_checks(window, {"good": 10}, label_shift_alert=0.2, max_rejection_rate=0.5)
    assert checks["label_shift"]["flagged"] is False


def test_rejection_rate_alarm() -> None:
    window = ModelWindow()
    for i in range(15):
        window.accept(accepted(i, "good"))
    for _ in range(10):
        window.reject(["range", "label"])
    window.reject(["range"])
    window.duplicates = 3
    checks = batch_checks(window, {}, label_shift_alert=0.2, max_rejection_rate=0.3)
    rejections = checks["rejections"]
    assert rejections["rate"] == round(11 / 26, 6)
    assert rejections["flagged"] is True
    assert rejections["by_rule"] == {"range": 11, "label": 10}
    assert rejections["duplicates"] == 3
    assert window.seen == 29


def test_small_windows_do_not_raise_the_alarm() -> None:
    window = ModelWindow()
    window.reject(["label"])
    checks = batch_checks(window, {}, label_shift_alert=0.2, max_rejection_rate=0.1)
    assert checks["rejections"]["rate"] == 1.0 and checks["rejections"]["flagged"] is False
