"""Detectors: signals read right after River's update, change-point estimates, exact JSON checkpoints."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest

from services.monitor.adwin import AdwinDetector
from services.monitor.detectors import (
    CONCEPT_DETECTORS,
    ConceptDetectorName,
    KswinDetector,
    concept_detector,
    data_detector,
    detector_from_state,
)
from services.monitor.signals import BatchSignals, Detector, DriftSignal, IncompatibleState, update_many


def _errors(seed: int, n: int, before: float, after: float, switch: int) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < (before if i < switch else after)) for i in range(n)]


def _gauss(seed: int, n: int, shift_at: int, shift: float) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(shift if i >= shift_at else 0.0, 1.0) for i in range(n)]


def _checkpointed(make: Callable[[], Detector], stream: list[float], every: int) -> list[DriftSignal]:
    """Run ``stream`` through a detector that is saved to JSON and rebuilt every ``every`` samples."""
    detector = make()
    signals = []
    for i, x in enumerate(stream):
        if i % every == 0:
            text = json.dumps(detector.to_state(), allow_nan=False)
            detector = detector_from_state(json.loads(text))
        signals.append(detector.update(x))
    return signals


@pytest.mark.parametrize("name", CONCEPT_DETECTORS)
def test_restored_concept_detector_continues_identically(name: ConceptDetectorName) -> None:
    stream = _errors(seed=3, n=6000, before=0.1, after=0.35, switch=3000)
    uninterrupted = concept_detector(name)
    expected = [uninterrupted.update(x) for x in stream]
    # 997 is prime: checkpoints land at every phase of ADWIN's clock, inside and right after drifts.
    assert _checkpointed(lambda: concept_detector(name), stream, every=997) == expected
    assert any(s.drifted for s in expected[3000:]), f"{name} should see the error rate jump"


def test_restored_adwin_continues_identically_through_rebases_and_drifts() -> None:
    stream = _gauss(seed=5, n=9000, shift_at=6000, shift=1.0)

    def make() -> Detector:
        return AdwinDetector(delta=1e-4, max_window=1024)  # small window: many rebases

    uninterrupted = make()
    expected = [uninterrupted.update(x) for x in stream]
    assert _checkpointed(make, stream, every=331) == expected
    assert sum(s.drifted for s in expected) >= 1


@pytest.mark.parametrize("make", [lambda: AdwinDetector(delta=1e-4, max_window=1024), lambda: concept_detector("DDM")])
def test_update_many_gives_the_signals_and_state_of_update_one_by_one(make: Callable[[], Detector]) -> None:
    stream = _gauss(seed=6, n=9000, shift_at=6000, shift=1.0)
    if not isinstance(make(), AdwinDetector):
        stream = _errors(seed=6, n=9000, before=0.1, after=0.4, switch=6000)
    one = make()
    expected = [one.update(x) for x in stream]
    batched = make()
    drifts: list[tuple[int, DriftSignal]] = []
    start, sizes, last = 0, iter([1, 31, 32, 33, 500, 2000, 977] * 5), None
    while start < len(stream):
        chunk = stream[start : start + next(sizes)]
        result = update_many(batched, chunk)
        drifts += [(start + i, signal) for i, signal in result.drifts]
        last, start = result.last, start + len(chunk)
    assert drifts == [(i, s) for i, s in enumerate(expected) if s.drifted] and drifts
    assert last == expected[-1]
    assert batched.to_state() == one.to_state()
    assert update_many(batched, []) == BatchSignals([], None)


def test_restored_kswin_continues_identically() -> None:
    stream = _gauss(seed=2, n=500, shift_at=250, shift=3.0)
    uninterrupted = KswinDetector(seed=4)
    expected = [uninterrupted.update(x) for x in stream]
    assert _checkpointed(lambda: KswinDetector(seed=4), stream, every=97) == expected
    after = [i for i, s in enumerate(expected) if s.drifted and i >= 250]
    assert after and after[0] < 300
    assert expected[after[0]].change_samples == 30  # KSWIN's estimate: its recent window


def test_a_drift_is_reported_on_the_sample_that_caused_it_and_only_once() -> None:
    detector = AdwinDetector(delta=0.002)
    signals = [detector.update(x) for x in _gauss(seed=1, n=4000, shift_at=2000, shift=2.0)]
    drifts = [i for i, s in enumerate(signals) if s.drifted]
    assert len(drifts) == 1
    assert 2000 < drifts[0] < 2100
    assert signals[drifts[0] + 1].drifted is False
    assert [s.samples for s in signals[:3]] == [1, 2, 3]


def test_adwin_change_estimate_and_evidence_match_the_change() -> None:
    detector = AdwinDetector(delta=0.002)
    stream = _gauss(seed=8, n=4000, shift_at=2500, shift=1.0)
    signal = next(s for s in (detector.update(x) for x in stream) if s.drifted)
    since_change = signal.samples - 2500
    assert signal.change_samples is not None
    assert abs(signal.change_samples - since_change) <= max(10, since_change // 3)
    assert signal.statistic > signal.threshold > 0
    assert signal.reference_mean is not None and abs(signal.reference_mean) < 0.15
    assert signal.reference_samples >= 2000


@pytest.mark.parametrize("name", CONCEPT_DETECTORS)
def test_concept_detectors_report_a_baseline_before_the_change(name: ConceptDetectorName) -> None:
    stream = _errors(seed=11, n=8000, before=0.1, after=0.5, switch=4000)
    detector = concept_detector(name)
    signal = next(s for s in (detector.update(x) for x in stream) if s.drifted and s.samples > 4000)
    assert signal.change_samples is not None and 1 <= signal.change_samples <= signal.samples
    if signal.reference_mean is not None:
        assert signal.reference_mean < 0.2


def test_data_adwin_is_quiet_on_stable_features() -> None:
    # 20 features x 3,000 samples of three shapes: the tuned delta (1e-4) never fires.
    rng = random.Random(0)
    shapes: list[Callable[[], float]] = [rng.random, lambda: rng.gauss(0, 1), lambda: rng.expovariate(1.0)]
    fired = 0
    for feature in range(20):
        detector = data_detector("ADWIN")
        draw = shapes[feature % 3]
        fired += sum(detector.update(draw()).drifted for _ in range(3000))
    assert fired == 0


def test_detectors_follow_the_protocol_and_reject_foreign_states() -> None:
    detector = data_detector("KSWIN")
    assert isinstance(detector, Detector)
    state = detector.to_state()
    with pytest.raises(IncompatibleState):
        detector_from_state({**state, "river": "0.0.1"})  # internal attributes: same River only
    with pytest.raises(IncompatibleState):
        detector_from_state({**state, "type": "PageHinkley"})
    with pytest.raises(IncompatibleState):
        detector_from_state({**state, "state_version": 99})
    adwin = AdwinDetector()
    adwin.update(1.0)
    # ADWIN replays its buffer through River's public API, so another River version is fine.
    restored = detector_from_state({**adwin.to_state(), "river": "0.0.1"})
    assert isinstance(restored, AdwinDetector) and restored.width == 1 and restored.samples == 1
    with pytest.raises(ValueError):
        data_detector("DDM")  # type: ignore[arg-type]
