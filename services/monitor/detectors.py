"""Streaming drift detectors behind one small protocol, with JSON checkpoints.

The monitor runs River's detectors (ADWIN and KSWIN on feature values; ADWIN, DDM, HDDM_A
and HDDM_W on the 0/1 error stream of joined predictions). Each is wrapped so that:

* ``update(x)`` returns a :class:`DriftSignal` read **right after** River's own update --
  River clears ``drift_detected`` on the next call (``river/drift/adwin.py``), so a flag read
  later is lost;
* after a drift the wrapper replaces the River object with a fresh one, which is exactly what
  River does itself on the next ``update`` (every detector in River 0.26 fully resets after a
  detection). Doing it eagerly means the state between two updates is always "a detector that
  has seen the samples since its last reset", which is what makes checkpoints exact;
* ``to_state()`` is plain JSON and ``detector_from_state(state)`` rebuilds a detector that
  continues *identically* to the uninterrupted one (a unit test checks signal by signal).

How each one is checkpointed:

* **ADWIN** is implemented in Rust in River 0.26 and is neither picklable nor inspectable: its
  wrapper (:mod:`services.monitor.adwin`) restores by replaying a bounded buffer of samples (on
  features, of block sums: :data:`DATA_ADWIN_BLOCK`).
* **KSWIN, DDM, HDDM_A, HDDM_W** are pure Python: their few internal attributes (window, random
  generator state, running means) are written out and set back. ``state_version`` and the River
  version are recorded; :func:`detector_from_state` refuses a state it cannot trust
  (:class:`IncompatibleState`) and the caller starts a fresh detector instead.

``DriftSignal.change_samples`` -- how many of the most recent samples belong to the new regime:

* ADWIN: ``min(detector.width after the drift, a binary-segmentation estimate on the buffer)``.
  ADWIN's width alone over-estimates when it fires quickly after a large change (it drops
  whole buckets, e.g. width 866 for a change 18 samples back), and an over-estimate would let
  the trainer mix old-regime rows into a "since change" window; the split maximising the
  standardised mean difference corrects that.
* HDDM_A: the samples since its cut point (``z.n - x_min.n``), which is its own change estimate.
* DDM, HDDM_W: the samples since the start of the warning run that preceded the drift (the
  warning zone opens when the error starts rising), else the samples since the last reset.
* KSWIN: ``stat_size`` -- the recent window whose distribution differed.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Any, Literal

from river import drift, stats
from river.drift import binary

from services.monitor.adwin import AdwinDetector
from services.monitor.signals import (
    Detector,
    DriftSignal,
    IncompatibleState,
    check_state_header,
    finite_or_none,
    pack_floats,
    state_header,
    unpack_floats,
)

__all__ = [
    "CONCEPT_DETECTORS",
    "DATA_ADWIN_BLOCK",
    "DATA_DETECTORS",
    "ConceptDetectorName",
    "DataDetectorName",
    "DdmDetector",
    "HddmADetector",
    "HddmWDetector",
    "KswinDetector",
    "concept_detector",
    "data_detector",
    "detector_from_state",
]

# River's classes are untyped; going through ``Any`` keeps mypy strict about our own code.
_KSWIN: Any = drift.KSWIN
_DDM: Any = binary.DDM
_HDDMA: Any = binary.HDDMA
_HDDMW: Any = binary.HDDMW
_SAMPLE_INFO: Any = binary.hddm_w.SampleInfo
_MEAN: Any = stats.Mean

DataDetectorName = Literal["ADWIN", "KSWIN"]
ConceptDetectorName = Literal["ADWIN", "DDM", "HDDM_A", "HDDM_W"]
DATA_DETECTORS: tuple[DataDetectorName, ...] = ("ADWIN", "KSWIN")
CONCEPT_DETECTORS: tuple[ConceptDetectorName, ...] = ("ADWIN", "DDM", "HDDM_A", "HDDM_W")


# --- KSWIN -----------------------------------------------------------------------------------


class KswinDetector:
    """River's KSWIN (two-sample Kolmogorov-Smirnov on a sliding window).

    The statistic is ``-log10(p)`` of the last test and the threshold ``-log10(alpha)``, so
    "past the threshold" reads the same way as for the other detectors. KSWIN runs a scipy
    KS test on every sample once the window is full: it costs about 0.3 ms per update, so it
    suits low-rate models; use ADWIN for thousands of predictions per second. The default
    ``alpha`` is 1e-4 (River's 0.005 fires about once per 1,000 stable samples).
    """

    name = "KSWIN"

    def __init__(self, alpha: float = 1e-4, window_size: int = 100, stat_size: int = 30, seed: int = 42) -> None:
        self.alpha = alpha
        self.window_size = window_size
        self.stat_size = stat_size
        self.seed = seed
        self._samples = 0
        self._river = self._fresh()

    def _fresh(self) -> Any:
        return _KSWIN(alpha=self.alpha, window_size=self.window_size, stat_size=self.stat_size, seed=self.seed)

    @property
    def samples(self) -> int:
        """Samples seen in this detector's lifetime."""
        return self._samples

    def _evidence(self) -> tuple[float, float]:
        p_value = float(self._river.p_value)
        if len(self._river.window) < self.window_size:
            return 0.0, -math.log10(self.alpha)
        return -math.log10(max(p_value, 1e-300)), -math.log10(self.alpha)

    def update(self, x: float) -> DriftSignal:
        """Feed one value."""
        self._samples += 1
        self._river.update(float(x))
        statistic, threshold = self._evidence()
        if self._river.drift_detected:
            self._river = self._fresh()
            return DriftSignal(True, statistic, threshold, self._samples, change_samples=self.stat_size)
        return DriftSignal(False, statistic, threshold, self._samples)

    def to_state(self) -> dict[str, Any]:
        """The sliding window, the test count, the last p-value and the random generator's state."""
        version, internal, gauss_next = self._river._rng.getstate()
        state = state_header(
            self.name,
            {"alpha": self.alpha, "window_size": self.window_size, "stat_size": self.stat_size, "seed": self.seed},
            self._samples,
        )
        state["window"] = pack_floats(float(v) for v in self._river.window)
        state["n"] = int(self._river.n)
        state["p_value"] = float(self._river.p_value)
        state["rng"] = [version, list(internal), gauss_next]
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> KswinDetector:
        """Set River's attributes back (same River version only)."""
        check_state_header(state, cls.name, same_river=True)
        detector = cls(**state["params"])
        kswin = detector._river
        kswin.window = deque(unpack_floats(state["window"]).tolist(), maxlen=detector.window_size)
        kswin.n = int(state["n"])
        kswin.p_value = float(state["p_value"])
        version, internal, gauss_next = state["rng"]
        rng = random.Random()
        rng.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
        kswin._rng = rng
        detector._samples = int(state["samples"])
        return detector


# --- binary detectors (0/1 error streams) ----------------------------------------------------


def _mean_state(mean: Any) -> list[float]:
    return [float(mean.n), float(mean._mean)]


def _mean_from(values: list[float]) -> Any:
    mean = _MEAN()
    mean.n, mean._mean = float(values[0]), float(values[1])
    return mean


class _WarningRun:
    """Counts the samples (and their sum) since the last reset and since a detector's warning
    zone opened: the change-point estimate, and the baseline mean before it."""

    def __init__(self) -> None:
        self.since_reset = 0
        self.total = 0.0
        self.in_warning = 0
        self.warning_total = 0.0

    def step(self, x: float, warning: bool) -> None:
        self.since_reset += 1
        self.total += x
        if warning:
            self.in_warning += 1
            self.warning_total += x
        else:
            self.in_warning, self.warning_total = 0, 0.0

    def change_samples(self) -> int:
        return self.in_warning if self.in_warning > 0 else self.since_reset

    def baseline(self) -> tuple[float | None, int]:
        """Mean and count of the samples before the warning run (None when there are none)."""
        n = self.since_reset - self.in_warning
        if n <= 0 or self.in_warning == 0:
            return None, 0
        return (self.total - self.warning_total) / n, n

    def to_state(self) -> list[float]:
        return [self.since_reset, self.total, self.in_warning, self.warning_total]

    def restore(self, values: list[float]) -> None:
        self.since_reset, self.total = int(values[0]), float(values[1])
        self.in_warning, self.warning_total = int(values[2]), float(values[3])


class DdmDetector:
    """River's DDM on a 0/1 error stream.

    Statistic: how many of the best-seen standard deviations the error is above the best-seen
    error, ``(p + s - p_min) / s_min``; threshold ``drift_threshold`` (3 by default). The
    reference mean is the plain error rate before the warning run, not ``p_min``: ``p_min`` is
    the minimum of a noisy running estimate, biased low, and fresh samples at the old rate
    would look like a rise against it.
    """

    name = "DDM"

    def __init__(self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0) -> None:
        self.warm_start = warm_start
        self.warning_threshold = warning_threshold
        self.drift_threshold = drift_threshold
        self._samples = 0
        self._run = _WarningRun()
        self._river = self._fresh()

    def _fresh(self) -> Any:
        return _DDM(
            warm_start=self.warm_start, warning_threshold=self.warning_threshold, drift_threshold=self.drift_threshold
        )

    @property
    def samples(self) -> int:
        """Samples seen in this detector's lifetime."""
        return self._samples

    def update(self, x: float) -> DriftSignal:
        """Feed 1 for an error, 0 for a correct prediction."""
        self._samples += 1
        ddm = self._river
        ddm.update(x)
        p = float(ddm._p.get())
        n = float(ddm._p.n)
        s = math.sqrt(p * (1.0 - p) / n) if n else 0.0
        statistic = 0.0
        if ddm._p_min is not None and ddm._s_min:
            statistic = (p + s - float(ddm._p_min)) / float(ddm._s_min)
        if ddm.drift_detected:
            change = min(self._run.change_samples() + 1, int(n))
            reference, reference_n = self._run.baseline()
            if reference is None:  # no warning run: the mean of everything, new regime included
                reference, reference_n = p, int(n)
            self._river, self._run = self._fresh(), _WarningRun()
            return DriftSignal(
                True,
                statistic,
                self.drift_threshold,
                self._samples,
                change_samples=change,
                reference_mean=reference,
                reference_samples=reference_n,
            )
        self._run.step(float(x), bool(ddm.warning_detected))
        return DriftSignal(False, statistic, self.drift_threshold, self._samples)

    def to_state(self) -> dict[str, Any]:
        """The running error mean, the best-seen point and the warning run."""
        ddm = self._river
        state = state_header(
            self.name,
            {
                "warm_start": self.warm_start,
                "warning_threshold": self.warning_threshold,
                "drift_threshold": self.drift_threshold,
            },
            self._samples,
        )
        state["p"] = _mean_state(ddm._p)
        state["p_min"] = ddm._p_min
        state["s_min"] = ddm._s_min
        state["ps_min"] = finite_or_none(float(ddm._ps_min))
        state["warning"] = bool(ddm._warning_detected)
        state["run"] = self._run.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DdmDetector:
        """Set River's attributes back (same River version only)."""
        check_state_header(state, cls.name, same_river=True)
        detector = cls(**state["params"])
        ddm = detector._river
        ddm._p = _mean_from(state["p"])
        ddm._p_min = state["p_min"]
        ddm._s_min = state["s_min"]
        ddm._ps_min = math.inf if state["ps_min"] is None else float(state["ps_min"])
        ddm._warning_detected = bool(state["warning"])
        detector._run.restore(state["run"])
        detector._samples = int(state["samples"])
        return detector


class HddmADetector:
    """River's HDDM_A (Hoeffding bound on moving averages) on a 0/1 error stream.

    Statistic: the rise of the overall mean over the mean at the cut point, ``z - x_min``;
    threshold: the Hoeffding bound HDDM_A compares it with at ``drift_confidence``.
    """

    name = "HDDM_A"

    def __init__(
        self, drift_confidence: float = 0.001, warning_confidence: float = 0.005, two_sided_test: bool = False
    ) -> None:
        self.drift_confidence = drift_confidence
        self.warning_confidence = warning_confidence
        self.two_sided_test = two_sided_test
        self._samples = 0
        self._river = self._fresh()

    def _fresh(self) -> Any:
        return _HDDMA(
            drift_confidence=self.drift_confidence,
            warning_confidence=self.warning_confidence,
            two_sided_test=self.two_sided_test,
        )

    @property
    def samples(self) -> int:
        """Samples seen in this detector's lifetime."""
        return self._samples

    def _evidence(self) -> tuple[float, float]:
        h = self._river
        z_n, cut_n = float(h._z.n), float(h._x_min.n)
        statistic = float(h._z.get()) - float(h._x_min.get())
        if cut_n == 0 or z_n == cut_n:
            return statistic, math.inf
        m = (z_n - cut_n) / cut_n * (1.0 / z_n)
        return statistic, math.sqrt(m / 2.0 * math.log(2.0 / self.drift_confidence))

    def update(self, x: float) -> DriftSignal:
        """Feed 1 for an error, 0 for a correct prediction."""
        self._samples += 1
        h = self._river
        h.update(x)
        statistic, threshold = self._evidence()
        if h.drift_detected:
            change = max(1, int(h._z.n - h._x_min.n))
            reference, reference_n = float(h._x_min.get()), int(h._x_min.n)
            self._river = self._fresh()
            return DriftSignal(
                True,
                statistic,
                threshold,
                self._samples,
                change_samples=change,
                reference_mean=reference,
                reference_samples=reference_n,
            )
        return DriftSignal(False, statistic, threshold, self._samples)

    def to_state(self) -> dict[str, Any]:
        """The three running means (overall, at the increase cut, at the decrease cut)."""
        h = self._river
        state = state_header(
            self.name,
            {
                "drift_confidence": self.drift_confidence,
                "warning_confidence": self.warning_confidence,
                "two_sided_test": self.two_sided_test,
            },
            self._samples,
        )
        state["z"] = _mean_state(h._z)
        state["x_min"] = _mean_state(h._x_min)
        state["x_max"] = _mean_state(h._x_max)
        state["warning"] = bool(h._warning_detected)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HddmADetector:
        """Set River's attributes back (same River version only)."""
        check_state_header(state, cls.name, same_river=True)
        detector = cls(**state["params"])
        h = detector._river
        h._z, h._x_min, h._x_max = _mean_from(state["z"]), _mean_from(state["x_min"]), _mean_from(state["x_max"])
        h._warning_detected = bool(state["warning"])
        detector._samples = int(state["samples"])
        return detector


def _sample_info_state(info: Any) -> list[Any]:
    return [float(info._ewma.get()), bool(info._is_init), float(info._ibc)]


def _sample_info_from(values: list[Any], lambda_val: float) -> Any:
    info = _SAMPLE_INFO(lambda_val)
    if values[1]:
        info._ewma.update(float(values[0]))  # River's EWMean takes its first value as the mean
    info._is_init = bool(values[1])
    info._ibc = float(values[2])
    return info


_HDDMW_INFOS = ("_total", "_s1_decr", "_s1_incr", "_s2_decr", "_s2_incr")


class HddmWDetector:
    """River's HDDM_W (McDiarmid bound on EWMA) on a 0/1 error stream.

    Statistic: ``ewma(after cut) - ewma(before cut)`` of the increase test; threshold: the
    McDiarmid bound HDDM_W compares it with at ``drift_confidence``. The reference mean is the
    plain mean before the warning run (HDDM_W's own EWMA at its cut point follows the last ~20
    samples and is too noisy to test fresh samples against).
    """

    name = "HDDM_W"

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        lambda_val: float = 0.05,
        two_sided_test: bool = False,
    ) -> None:
        self.drift_confidence = drift_confidence
        self.warning_confidence = warning_confidence
        self.lambda_val = lambda_val
        self.two_sided_test = two_sided_test
        self._samples = 0
        self._run = _WarningRun()
        self._river = self._fresh()

    def _fresh(self) -> Any:
        return _HDDMW(
            drift_confidence=self.drift_confidence,
            warning_confidence=self.warning_confidence,
            lambda_val=self.lambda_val,
            two_sided_test=self.two_sided_test,
        )

    @property
    def samples(self) -> int:
        """Samples seen in this detector's lifetime."""
        return self._samples

    def _evidence(self) -> tuple[float, float]:
        h = self._river
        s1, s2 = h._s1_incr, h._s2_incr
        if not (s1._is_init and s2._is_init):
            return 0.0, math.inf
        bound = math.sqrt((s1._ibc + s2._ibc) * math.log(1.0 / self.drift_confidence) / 2.0)
        return float(s2._ewma.get()) - float(s1._ewma.get()), bound

    def update(self, x: float) -> DriftSignal:
        """Feed 1 for an error, 0 for a correct prediction."""
        self._samples += 1
        h = self._river
        h.update(x)
        statistic, threshold = self._evidence()
        if h.drift_detected:
            change = self._run.change_samples() + 1
            reference, reference_n = self._run.baseline()
            self._river, self._run = self._fresh(), _WarningRun()
            return DriftSignal(
                True,
                statistic,
                threshold,
                self._samples,
                change_samples=change,
                reference_mean=reference,
                reference_samples=reference_n,
            )
        self._run.step(float(x), bool(h.warning_detected))
        return DriftSignal(False, statistic, threshold, self._samples)

    def to_state(self) -> dict[str, Any]:
        """The five EWMA sample summaries, the cut points and the warning run."""
        h = self._river
        state = state_header(
            self.name,
            {
                "drift_confidence": self.drift_confidence,
                "warning_confidence": self.warning_confidence,
                "lambda_val": self.lambda_val,
                "two_sided_test": self.two_sided_test,
            },
            self._samples,
        )
        state["infos"] = {name: _sample_info_state(getattr(h, name)) for name in _HDDMW_INFOS}
        state["incr_cutpoint"] = finite_or_none(float(h._incr_cutpoint))
        state["decr_cutpoint"] = finite_or_none(float(h._decr_cutpoint))
        state["warning"] = bool(h._warning_detected)
        state["run"] = self._run.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HddmWDetector:
        """Set River's attributes back (same River version only)."""
        check_state_header(state, cls.name, same_river=True)
        detector = cls(**state["params"])
        h = detector._river
        for name in _HDDMW_INFOS:
            setattr(h, name, _sample_info_from(state["infos"][name], detector.lambda_val))
        incr, decr = state["incr_cutpoint"], state["decr_cutpoint"]
        h._incr_cutpoint = math.inf if incr is None else float(incr)
        h._decr_cutpoint = -math.inf if decr is None else float(decr)
        h._warning_detected = bool(state["warning"])
        detector._run.restore(state["run"])
        detector._samples = int(state["samples"])
        return detector


# --- construction ----------------------------------------------------------------------------

_CLASSES: dict[str, Any] = {
    AdwinDetector.name: AdwinDetector,
    KswinDetector.name: KswinDetector,
    DdmDetector.name: DdmDetector,
    HddmADetector.name: HddmADetector,
    HddmWDetector.name: HddmWDetector,
}

DATA_ADWIN_DELTA = 1e-4
"""ADWIN's delta on feature values. River's 0.002 fired about once per 600,000 stable samples of a
normal or exponential feature (20 features x 30,000 samples); 1e-4 fired never in the same runs
and still catches a 0.5-sigma mean shift in 55-215 samples."""


DATA_ADWIN_BLOCK = 16
"""Feature values summed into each value a data ADWIN sees (:mod:`services.monitor.adwin`: the
mean-shift test at 1/16 of River's updates, which were most of the monitor's cost per feature
value; with the features' columns through their detectors together, one ``ModelDrift`` at 300
features went from about 9,700 to 40,000 predictions/s, ``benchmarks/bench_monitor.py``). Its River
parameters are the per-sample ones in blocks -- a clock of 2 blocks (a test every 32 samples, as
River's default), sub-windows of at least one block (16 samples, River's 5), a grace period of
one block and a window of 512 blocks (8,192 samples, as before; the checkpoint 16 times smaller).
Measured on 30 stable features x 30,000 samples (normal, exponential, uniform) and 20 seeds of
each shift, per sample -> blocks of 16: false alarms 0 -> 0; median / worst delay of a 0.25-sigma
shift 520 / 1,208 -> 440 / 1,208 samples, 0.5 sigma 152 / 280 -> 152 / 280, 1 sigma 56 / 88 ->
56 / 120, 3 sigma 24 -> 24; the update cost per sample 230 -> 42 ns."""


def data_detector(name: DataDetectorName) -> Detector:
    """A detector for one feature's values, tuned for many features x long stable streams."""
    if name == "ADWIN":
        return AdwinDetector(
            delta=DATA_ADWIN_DELTA,
            block=DATA_ADWIN_BLOCK,
            clock=2,
            min_window_length=1,
            grace_period=1,
            max_window=8192 // DATA_ADWIN_BLOCK,
        )
    if name == "KSWIN":
        return KswinDetector()
    raise ValueError(f"unknown data detector {name!r}; use one of {', '.join(DATA_DETECTORS)}")


CONCEPT_ADWIN_DELTA = 0.02
"""ADWIN's delta on the 0/1 error stream: ten times River's 0.002, so a small rise becomes a
candidate sooner (a 5-point rise from 11% error: confirmed after 540-850 samples instead of
900-1,800, or missed). The extra fluke candidates are what the confirmation on fresh samples
is for: 41 candidates in 24 million stable errors (rates 2-40%), none confirmed."""


def concept_detector(name: ConceptDetectorName) -> Detector:
    """A detector for the 0/1 error stream (ADWIN sensitive, its candidates confirmed by the
    alarm policy; DDM and HDDM with River's defaults, which stay quiet on stable errors)."""
    if name == "ADWIN":
        return AdwinDetector(delta=CONCEPT_ADWIN_DELTA)
    if name == "DDM":
        return DdmDetector()
    if name == "HDDM_A":
        return HddmADetector()
    if name == "HDDM_W":
        return HddmWDetector()
    raise ValueError(f"unknown concept detector {name!r}; use one of {', '.join(CONCEPT_DETECTORS)}")


def detector_from_state(state: dict[str, Any]) -> Detector:
    """Rebuild any detector from its ``to_state()``; :class:`IncompatibleState` if it cannot."""
    kind = state.get("type")
    cls = _CLASSES.get(str(kind))
    if cls is None:
        raise IncompatibleState(f"unknown detector type {kind!r}")
    try:
        detector: Detector = cls.from_state(state)
    except IncompatibleState:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise IncompatibleState(f"cannot restore {kind}: {err}") from err
    return detector
