"""Wide models (issue #23): block ADWINs, features updated as columns, PSI binned for all features
at once, and the fast decoder of numeric ``PredictionsLogged`` -- each the same, exactly, as the
per-sample, per-feature or pydantic path it replaces, through checkpoints and any batch split."""

from __future__ import annotations

import json
import math
import random
from collections import deque
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from services.monitor.adwin import AdwinDetector, block_sums, update_columns
from services.monitor.categorical import CategoryBuckets, category_of
from services.monitor.detectors import DATA_ADWIN_BLOCK, data_detector, detector_from_state
from services.monitor.handlers import MonitorHandlers
from services.monitor.psi import PsiWindowState, WindowedPsi
from services.monitor.signals import DriftSignal
from services.monitor.watch import RECENT_VALUES
from shared import topics
from shared.errors import InvalidEvent
from shared.events import PredictionsLogged, _decode_numeric_predictions, decode_as, decode_event
from shared.reference import CategoryReference, ReferenceHistogram, column_counts


def _gauss(seed: int, n: int, shift_at: int, shift: float) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(shift if i >= shift_at else 0.0, 1.0) for i in range(n)]


def _block_adwin() -> AdwinDetector:
    """A data ADWIN (blocks of 16) with a small window: many rebases."""
    return AdwinDetector(delta=1e-4, block=16, clock=2, min_window_length=1, grace_period=1, max_window=64)


# --- ADWIN on block sums -------------------------------------------------------------------------


def test_a_block_sums_to_the_same_float_however_the_stream_is_cut() -> None:
    values = np.random.default_rng(1).normal(size=4096) * 1e6
    whole = block_sums(values, 16)
    pieces = np.concatenate([block_sums(values[s : s + 16 * k], 16) for s, k in [(0, 1), (16, 7), (128, 248)]])
    assert pieces.tolist() == whole.tolist()
    sequential = []
    for i in range(0, 4096, 16):
        total = 0.0
        for v in values[i : i + 16].tolist():
            total += v
        sequential.append(total)
    assert whole.tolist() == sequential, "a left-to-right sum, not numpy's pairwise one"


def test_block_adwin_update_many_gives_the_signals_and_state_of_update_one_by_one() -> None:
    stream = _gauss(seed=6, n=9000, shift_at=6000, shift=1.0)
    one = _block_adwin()
    expected = [one.update(x) for x in stream]
    batched = _block_adwin()
    drifts: list[tuple[int, DriftSignal]] = []
    start, sizes, last = 0, iter([1, 15, 16, 17, 5, 500, 2000, 977] * 5), None
    while start < len(stream):
        chunk = np.asarray(stream[start : start + next(sizes)])
        result = batched.update_many(chunk)
        drifts += [(start + i, signal) for i, signal in result.drifts]
        last, start = result.last, start + len(chunk)
    assert drifts == [(i, s) for i, s in enumerate(expected) if s.drifted] and drifts
    assert last == expected[-1]
    assert batched.to_state() == one.to_state()
    assert [s.samples for s in expected[:20]] == list(range(1, 21))


def test_a_restored_block_adwin_continues_identically_at_every_phase_of_its_block() -> None:
    stream = _gauss(seed=5, n=9000, shift_at=6000, shift=1.0)
    uninterrupted = _block_adwin()
    expected = [uninterrupted.update(x) for x in stream]
    detector, signals = _block_adwin(), []
    for i, x in enumerate(stream):
        if i % 331 == 0:  # prime: inside blocks, on clock ticks, before and after rebases and drifts
            state = json.loads(json.dumps(detector.to_state(), allow_nan=False))
            restored = detector_from_state(state)
            assert isinstance(restored, AdwinDetector) and restored.width == detector.width
            detector = restored
        signals.append(detector.update(x))
    assert signals == expected and sum(s.drifted for s in expected) >= 1


def test_block_adwin_reports_in_samples_and_in_the_values_units() -> None:
    detector = AdwinDetector(delta=0.002, block=16, clock=2, min_window_length=1, grace_period=1, max_window=512)
    stream = _gauss(seed=8, n=6000, shift_at=4000, shift=1.0)
    signal = next(s for s in (detector.update(x) for x in stream) if s.drifted)
    since_change = signal.samples - 4000
    assert signal.samples % 16 == 0, "a drift is seen when a block finishes"
    assert signal.change_samples is not None and signal.change_samples % 16 == 0
    assert abs(signal.change_samples - since_change) <= max(32, since_change // 3)
    assert signal.reference_mean is not None and abs(signal.reference_mean) < 0.15, "a mean, not a block sum"
    assert signal.reference_samples >= 3000 and signal.statistic > signal.threshold > 0
    assert 0.5 < signal.statistic < 1.5, "the mean difference in the values' units"


def test_the_data_detector_keeps_its_power_on_block_sums() -> None:
    """Per sample and on blocks of 16, the same shifts are found in about the same samples."""
    assert DATA_ADWIN_BLOCK > 1
    for shift, most in [(0.5, 400), (1.0, 160), (3.0, 48)]:
        delays = []
        for seed in range(5):
            detector = data_detector("ADWIN")
            stream = np.asarray(_gauss(seed=100 + seed, n=5000, shift_at=3000, shift=shift))
            batch = detector.update_many(stream)
            delays.append(min(i for i, _ in batch.drifts if i >= 3000) - 3000 + 1)
        assert max(delays) <= most, (shift, delays)


def test_an_old_per_sample_state_restores_as_it_was_written() -> None:
    """A checkpoint written before blocks (no ``block`` parameter) continues per sample, exactly."""
    old = AdwinDetector(delta=1e-4)
    for x in _gauss(seed=3, n=500, shift_at=10_000, shift=0.0):
        old.update(x)
    state = old.to_state()
    assert "block" not in state["params"] and "pending" not in state
    restored = detector_from_state(json.loads(json.dumps(state)))
    assert isinstance(restored, AdwinDetector) and restored.block == 1
    assert [restored.update(x) for x in range(50)] == [old.update(x) for x in range(50)]


def test_columns_through_their_detectors_together_as_one_by_one() -> None:
    rng = np.random.default_rng(4)
    matrix = rng.normal(size=(7000, 6))
    matrix[4000:, 2] += 1.5
    together = [_block_adwin() for _ in range(6)]
    apart = [_block_adwin() for _ in range(6)]
    together.append(AdwinDetector(delta=1e-4, max_window=256))  # per sample: one column at a time
    apart.append(AdwinDetector(delta=1e-4, max_window=256))
    matrix = np.column_stack([matrix, rng.normal(size=7000)])
    start, sizes = 0, iter([3, 16, 165, 1, 1000, 77, 2000] * 5)
    while start < len(matrix):
        end = min(len(matrix), start + next(sizes))
        if start == 500:  # one detector's unfinished block out of line with the others'
            together[0].update(0.25)
            apart[0].update(0.25)
        got = update_columns(together, matrix[start:end])
        for j, detector in enumerate(apart):
            assert got[j] == detector.update_many(matrix[start:end, j])
        start = end
    assert [d.to_state() for d in together] == [d.to_state() for d in apart]
    assert together[2].samples == 7000 and update_columns(together, matrix[:0])[0].last is None


# --- PSI binned for every feature at once ----------------------------------------------------------


def test_windowed_psi_bins_like_column_counts_feature_by_feature() -> None:
    rng = np.random.default_rng(2)
    references = {
        "a": ReferenceHistogram(edges=[0.0, 1.0, 2.0, 3.0], proportions=[0.2, 0.5, 0.3]),
        "b": ReferenceHistogram(
            edges=np.quantile(rng.normal(size=999), np.linspace(0, 1, 11)).tolist(), proportions=[0.1] * 10
        ),
        "c": ReferenceHistogram(edges=[0.0, 1.0], proportions=[1.0]),
        "d": ReferenceHistogram(edges=[-1.0, 0.0, 1.0], proportions=[0.5, 0.5]),
    }
    windowed = WindowedPsi(references, window=10_000)
    expected = {name: np.zeros(len(h.proportions), dtype=np.int64) for name, h in references.items()}
    for _ in range(5):
        columns = {name: rng.normal(size=300) * 2 for name in ("a", "b", "c")}  # "d": no column
        columns["a"][:20] = [0.0, 1.0, 2.0, 3.0, -5.0, 9.0, math.nan, math.inf, -math.inf, *([1.0] * 11)]
        columns["b"][::7] = math.nan
        assert windowed.add_columns(columns, rows=300) is None
        for name, column in columns.items():
            expected[name] += column_counts(references[name].inner, len(references[name].proportions), column)
    assert windowed.state.counts == {name: counts.tolist() for name, counts in expected.items()}
    restored = WindowedPsi(references, 10_000, PsiWindowState.model_validate_json(windowed.state.model_dump_json()))
    assert restored.state == windowed.state and restored.remaining == 10_000 - 1500


# --- decoding numeric PredictionsLogged -------------------------------------------------------------


def _message(rows_of: Any, **changes: Any) -> dict[str, Any]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    features = rows_of
    rows = len(features)
    fields: dict[str, Any] = {
        "event_id": "7d1f0c52-55b9-4c59-a1a4-1b1f52a4f9a0",
        "occurred_at": "2026-01-01T00:00:00+01:00",
        "model": "m",
        "version": 1,
        "variant": "champion",
        "feature_names": ["a", "b", "c"],
        "classes": ["0", "1"],
        "inference_ids": [f"id{i}" for i in range(rows)],
        "features": features,
        "labels": [1] * rows,
        "probabilities": [[0.25, 0.75]] * rows,
        "latency_ms": [0.5] * rows,
        "predicted_at": [(at + timedelta(seconds=i)).isoformat() for i in range(rows)],
    }
    return {**fields, **changes}


@pytest.mark.parametrize(
    ("features", "fast"),
    [
        ([[1.5, -2.0, 3e300], [None, 0.0, 1e-300]], True),
        ([[1, 2, 3], [4.0, None, 6]], True),  # integers read as floats, as FeatureValue reads them
        ([[1.5, True, "x"], [None, False, ""]], False),  # categories and flags: the full path
        ([[10**30, 1.0, 2.0], [1.0, 2.0, 3.0]], True),  # a large integer: its nearest float, either way
    ],
)
def test_the_fast_decoder_gives_the_event_pydantic_gives(features: list[list[Any]], fast: bool) -> None:
    data = json.dumps(_message(features)).encode()
    assert (_decode_numeric_predictions(data) is not None) is fast
    expected = PredictionsLogged.model_validate_json(data)
    got = decode_event(topics.PREDICTIONS, data)
    assert type(got) is PredictionsLogged and got == expected
    assert got.features == expected.features and [type(v) for v in got.features[0]] == [
        type(v) for v in expected.features[0]
    ]
    assert got.model_fields_set == expected.model_fields_set
    assert got.model_dump_json() == expected.model_dump_json()


@pytest.mark.parametrize(
    "changes",
    [
        {"features": [[1.0, 2.0], [1.0, 2.0, 3.0]]},  # a short row
        {"features": [[1.0, 2.0, 3.0]]},  # fewer rows than ids
        {"features": [[1.0, [2.0], 3.0], [1.0, 2.0, 3.0]]},  # not a value
        {"latency_ms": [-1.0, 0.5]},
        {"inference_ids": ["", "x"]},
        {"extra": 1},
    ],
)
def test_bad_predictions_are_refused_with_the_events_own_message(changes: dict[str, Any]) -> None:
    data = json.dumps(_message([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], **changes)).encode()
    with pytest.raises(InvalidEvent) as fast:
        decode_as(PredictionsLogged, data)
    with pytest.raises(Exception) as full:
        PredictionsLogged.model_validate_json(data)
    assert fast.value.message.startswith("invalid PredictionsLogged: ")
    first = full.value.errors()[0]  # type: ignore[attr-defined]
    assert str(first["msg"]) in fast.value.message


# --- recent values for the report, a column at a time -------------------------------------------------


def _remembered_cell_by_cell(watch: Any, event: PredictionsLogged, rows: list[int]) -> None:
    """What ``_remember_values`` did before it worked in columns (the reference behaviour)."""
    kept = rows[-RECENT_VALUES:]
    for k, name in enumerate(event.feature_names):
        values = [event.features[i][k] for i in kept]
        buckets = watch.drift.categorical.get(name)
        if buckets is None and not any(isinstance(v, str | bool) for v in values):
            recent = watch.recent.setdefault(name, deque(maxlen=RECENT_VALUES))
            recent.extend(v for v in values if isinstance(v, int | float) and not isinstance(v, bool))
            continue
        boolean = buckets is not None and buckets.boolean
        categories = watch.recent_categories.setdefault(name, deque(maxlen=RECENT_VALUES))
        categories.extend(key for key in (category_of(v, boolean) for v in values) if key is not None)


def test_recent_values_are_kept_a_column_at_a_time_as_cell_by_cell() -> None:
    flags = CategoryBuckets.of(CategoryReference(shares={"true": 0.5, "false": 0.5}, rows=100, missing=0.0))

    def watch() -> Any:
        return SimpleNamespace(drift=SimpleNamespace(categorical={"flag": flags}), recent={}, recent_categories={})

    rng = np.random.default_rng(9)
    names = ["x", "y", "flag", "text"]
    n = 2500
    rows = [
        [
            None if i % 5 == 0 else float(rng.normal()),
            1.0 * i,
            bool(i % 2) if i % 3 else None,
            "a" if i % 7 == 0 else float(i),  # a numeric-looking column that carries text
        ]
        for i in range(n)
    ]
    event = PredictionsLogged.model_validate(_message(rows, feature_names=names))
    fresh, reference = watch(), watch()
    for kept in (list(range(n)), list(range(0, n, 3)), [5, 6, 7]):
        MonitorHandlers._remember_values(fresh, event, kept)
        _remembered_cell_by_cell(reference, event, kept)
        assert fresh.recent == reference.recent and fresh.recent_categories == reference.recent_categories
    assert sorted(fresh.recent) == ["x", "y"] and sorted(fresh.recent_categories) == ["flag", "text"]
