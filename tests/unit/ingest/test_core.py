"""Flush policy and batch checks (a class label's distance, a regression label's PSI, the rejection rate)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from services.ingest.core import (
    MIN_ROWS_FOR_LABEL_SHIFT,
    FlushPolicy,
    ModelWindow,
    batch_checks,
    psi_noise,
    regression_label_shift,
)
from shared.datasets import LABEL_EDGES_ROWS, AcceptedRecord, LabelHistogram
from shared.reference import column_counts, histogram, psi_from_counts
from shared.spec import parse_spec


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
    checks = batch_checks(window, {"good": 500, "bad": 500}, label_shift_alert=0.2, max_rejection_rate=0.5, min_rows=50)
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
    checks = batch_checks(window, {}, label_shift_alert=0.2, max_rejection_rate=0.3, min_rows=20)
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


# --- a regression label: PSI on the dataset's label histogram ---------------------------------

PRICE = parse_spec("name: price\nfeatures: [{name: x}]\nlabel: {type: regression, min: 0}")


def priced(labels: np.ndarray) -> ModelWindow:
    window = ModelWindow(spec=PRICE)
    for i, label in enumerate(labels):
        window.accept(AcceptedRecord(f"r-{i}", datetime(2026, 1, 1, tzinfo=UTC), float(label), 1.0, None, None, (0.0,)))
    return window


def dataset_histogram(seed: int = 0, rows: int = 20_000) -> LabelHistogram:
    """A dataset of lognormal prices: quantile edges of its first rows, every row counted on them."""
    values = np.random.default_rng(seed).lognormal(5.0, 0.5, rows)
    edges = histogram(values[:LABEL_EDGES_ROWS]).edges
    return LabelHistogram(edges=edges, counts=column_counts(edges[1:-1], len(edges) - 1, values).tolist())


def test_a_shifted_regression_batch_is_flagged_by_psi_and_a_stable_one_is_not() -> None:
    dataset = dataset_histogram()
    rng = np.random.default_rng(1)
    stable = batch_checks(priced(rng.lognormal(5.0, 0.5, 1000)), {}, 0.2, 0.5, dataset)["label_shift"]
    shifted = batch_checks(priced(rng.lognormal(5.4, 0.5, 1000)), {}, 0.2, 0.5, dataset)["label_shift"]
    assert stable["flagged"] is False and stable["psi"] < 0.05
    assert shifted["flagged"] is True and shifted["psi"] > 0.2
    for check in (stable, shifted):
        assert "distance" not in check and check["threshold"] == 0.2
        assert check["batch_rows"] == 1000 and check["dataset_rows"] == 20_000
        assert sum(check["batch_counts"]) == 1000 and len(check["batch_counts"]) == len(dataset.counts)
        assert set(check["batch_label_summary"]) == {"count", "mean", "std", "min", "p50", "max"}
    assert shifted["batch_label_summary"]["mean"] > stable["batch_label_summary"]["mean"]


def test_psi_on_the_dataset_bins_is_the_shared_definition() -> None:
    dataset = dataset_histogram()
    batch = np.random.default_rng(2).lognormal(5.2, 0.5, 500)
    check = regression_label_shift(batch.tolist(), dataset, 0.2)
    counts = column_counts(dataset.edges[1:-1], len(dataset.counts), batch).tolist()
    assert check["batch_counts"] == counts
    assert check["psi"] == round(psi_from_counts(dataset.shares(), counts), 6)


def test_stable_regression_batches_rarely_raise_the_flag_even_when_small() -> None:
    dataset = dataset_histogram()
    rng = np.random.default_rng(3)
    flags = sum(
        regression_label_shift(rng.lognormal(5.0, 0.5, MIN_ROWS_FOR_LABEL_SHIFT).tolist(), dataset, 0.2)["flagged"]
        for _ in range(200)
    )
    assert flags <= 6, "sampling noise in a batch of 100 is not a label shift"
    assert psi_noise(10, 100, 20_000) > 0.2 > psi_noise(10, 5000, 20_000)


def test_a_regression_shift_needs_enough_rows_on_both_sides() -> None:
    rng = np.random.default_rng(4)
    few = regression_label_shift(rng.lognormal(7.0, 0.5, 50).tolist(), dataset_histogram(), 0.2)
    assert few["psi"] > 1.0 and few["flagged"] is False, "50 labels are too few to say the distribution moved"
    small = dataset_histogram(rows=60)
    young = regression_label_shift(rng.lognormal(7.0, 0.5, 500).tolist(), small, 0.2)
    assert young["dataset_rows"] == 60 and young["flagged"] is False
    first = batch_checks(priced(rng.lognormal(5.0, 0.5, 500)), {}, 0.2, 0.5)["label_shift"]
    assert first["psi"] == 0.0 and first["flagged"] is False and first["dataset_rows"] == 0


def test_the_classification_check_keeps_its_shape() -> None:
    window = ModelWindow()
    for i in range(200):
        window.accept(accepted(i, "bad" if i % 2 else "good"))
    checks = batch_checks(window, {"good": 500, "bad": 500}, 0.2, 0.5, dataset_histogram())
    assert set(checks["label_shift"]) == {
        *("distance", "threshold", "batch_label_counts", "flagged"),
        *("batch_rows", "batches", "min_rows", "deferred"),
    }
    assert checks["label_shift"]["distance"] == 0.0
