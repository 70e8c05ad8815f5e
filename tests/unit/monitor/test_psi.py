"""PSI and its tumbling windows over features and predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.monitor.psi import (
    PredictionWindow,
    PsiWindowState,
    WindowedPsi,
    chi_square,
    label_psi,
    psi,
)
from shared.reference import PredictionReference, ReferenceHistogram, bin_counts

UNIT = ReferenceHistogram(edges=[0.0, 1.0, 2.0, 3.0], proportions=[0.2, 0.5, 0.3])


def test_psi_is_zero_for_the_reference_distribution_and_matches_the_formula() -> None:
    values = [0.5] * 20 + [1.5] * 50 + [2.5] * 30
    assert psi(UNIT, values) == pytest.approx(0.0)
    shifted = [0.5] * 50 + [1.5] * 30 + [2.5] * 20
    expected = sum((a - e) * math.log(a / e) for a, e in [(0.5, 0.2), (0.3, 0.5), (0.2, 0.3)])
    assert psi(UNIT, shifted) == pytest.approx(expected)


def test_values_outside_the_edges_go_to_the_end_bins_and_missing_values_are_skipped() -> None:
    assert bin_counts(UNIT, [-100.0, 0.0, 1.0, 2.999, 3.0, 1e9, None, math.nan, math.inf]) == [2, 1, 3]


def test_empty_bins_keep_psi_finite() -> None:
    value = psi(UNIT, [2.5] * 100)
    assert math.isfinite(value) and value > 1.0
    assert psi(UNIT, []) == 0.0


def test_windowed_psi_yields_every_window_and_restarts() -> None:
    windowed = WindowedPsi({"x": UNIT}, window=10)
    results = [windowed.add_columns({"x": np.array([0.5])}, rows=1) for _ in range(25)]
    closed = [r for r in results if r is not None]
    assert len(closed) == 2 and all(r["x"] > 1.0 for r in closed)
    assert windowed.remaining == 5
    saved = PsiWindowState.model_validate_json(windowed.state.model_dump_json())
    restored = WindowedPsi({"x": UNIT}, 10, saved)
    assert restored.add_columns({"x": np.full(5, 1.5)}, rows=5) is not None
    rebinned = WindowedPsi({"x": ReferenceHistogram(edges=[0.0, 1.0], proportions=[1.0])}, 10, saved)
    assert rebinned.state.counts == {"x": [0]} and rebinned.remaining == 5, "changed bins start empty"
    with pytest.raises(ValueError, match="do not fit"):
        restored.add_columns({"x": np.ones(11)}, rows=11)


def test_prediction_drift_statistics() -> None:
    reference = {"good": 0.5, "bad": 0.5}
    assert label_psi(reference, {"good": 50, "bad": 50}) == pytest.approx(0.0)
    assert label_psi(reference, {"good": 90, "bad": 10}) > 0.5
    assert chi_square(reference, {"good": 90, "bad": 10}) == pytest.approx(64.0)
    proba = ReferenceHistogram(edges=[0.0, 0.5, 1.0], proportions=[0.5, 0.5])
    window = PredictionWindow(
        PredictionReference(label_distribution=reference, probability_histograms={"good": proba}), window=4
    )
    out = [window.add_many(["good"], {"good": np.array([0.9])}) for _ in range(4)]
    assert out[:3] == [None, None, None]
    assert out[3] is not None and set(out[3]) == {"label", "proba:good"} and out[3]["label"] > 1.0
    assert window.last_chi_square > 0


def test_prediction_drift_with_three_classes() -> None:
    """Every class has its share and its probability histogram; a shift among three classes is seen,
    the class shares of the reference are not."""
    rng = np.random.default_rng(2)
    shares = {"low": 0.5, "mid": 0.3, "high": 0.2}
    histograms = {c: ReferenceHistogram(edges=[0.0, 0.5, 1.0], proportions=[0.5, 0.5]) for c in shares}
    window = PredictionWindow(PredictionReference(label_distribution=shares, probability_histograms=histograms), 1000)

    def close(p: list[float]) -> dict[str, float]:
        labels = rng.choice(list(shares), size=1000, p=p).tolist()
        proba = {c: rng.uniform(size=1000) for c in shares}
        closed = window.add_many(labels, proba)
        assert closed is not None
        return closed

    stable = close(list(shares.values()))
    assert set(stable) == {"label", "proba:low", "proba:mid", "proba:high"} and max(stable.values()) < 0.05
    assert window.last_chi_square < 20
    shifted = close([0.2, 0.3, 0.5])  # low and high swap
    assert shifted["label"] > 0.3 and window.last_chi_square > 100
    assert label_psi(shares, {"low": 200, "mid": 300, "high": 500}) == pytest.approx(shifted["label"], rel=0.3)
