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

* **ADWIN** is implemented in Rust in River 0.26 and is neither picklable nor inspectable. The
  wrapper keeps a replay buffer of the samples the River object has seen since its last reset
  and restores by replaying them into a fresh ADWIN (same parameters, so the same clock phase
  and buckets). The buffer is bounded by ``max_window``: when it fills, the wrapper deterministically
  *rebases* -- it restarts ADWIN on the newest half. That caps ADWIN's window (and memory, and the
  checkpoint) at ``max_window`` samples, which only makes ADWIN forget very old data; since the
  uninterrupted and the restored detector rebase at the same sample, they stay identical. The
  buffer also gives the evidence River does not expose (old and new means, a change-point estimate).
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

import base64
import math
import random
import sys
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import version as _package_version
from itertools import accumulate
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from river import drift, stats
from river.drift import binary

__all__ = [
    "CONCEPT_DETECTORS",
    "DATA_DETECTORS",
    "AdwinDetector",
    "BatchSignals",
    "ConceptDetectorName",
    "DataDetectorName",
    "DdmDetector",
    "Detector",
    "DriftSignal",
    "HddmADetector",
    "HddmWDetector",
    "IncompatibleState",
    "KswinDetector",
    "concept_detector",
    "data_detector",
    "detector_from_state",
    "update_many",
]

STATE_VERSION = 1
"""Bumped whenever a wrapper's ``to_state`` layout changes."""

RIVER_VERSION = _package_version("river")
"""Recorded in every state: internal-attribute states are only trusted by the same River."""

# River's classes are untyped; going through ``Any`` keeps mypy strict about our own code.
_ADWIN: Any = drift.ADWIN
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


class IncompatibleState(ValueError):
    """A checkpoint cannot be restored by this code (unknown type, layout or River version)."""


class DriftSignal(NamedTuple):
    """What a detector says after one sample (immutable; a named tuple because one is built for
    every feature value the monitor sees, and a frozen dataclass costs three times as much).

    Attributes
    ----------
    drifted
        The detector flagged a change on this very sample.
    statistic, threshold
        The detector's own evidence and the bound it is compared with (same units; a drift
        means the statistic crossed the threshold). Between drifts they show how close the
        stream is to an alarm, for the dashboards.
    samples
        Samples this detector has seen in its lifetime (monotonic, survives checkpoints and
        resets after drifts).
    change_samples
        On a drift, how many of the most recent samples belong to the new regime (see the
        module docstring for each detector's estimate); None otherwise.
    reference_mean, reference_samples
        On a drift, the mean of the stream before the change and how many samples it rests on,
        so a confirmation step can test fresh samples against it; None / 0 otherwise.
    """

    drifted: bool
    statistic: float
    threshold: float
    samples: int
    change_samples: int | None = None
    reference_mean: float | None = None
    reference_samples: int = 0


@dataclass(frozen=True, slots=True)
class BatchSignals:
    """What a detector says after many samples: each drift with the index of the sample that
    caused it, and the signal after the last sample (None for no samples)."""

    drifts: list[tuple[int, DriftSignal]]
    last: DriftSignal | None


@runtime_checkable
class Detector(Protocol):
    """A streaming change detector: one value in, one :class:`DriftSignal` out."""

    name: str
    """River's name for the method (``ADWIN``, ``KSWIN``, ``DDM``, ``HDDM_A``, ``HDDM_W``)."""

    def update(self, x: float) -> DriftSignal:
        """Feed one sample; the signal is final (read right after River's update)."""
        ...

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue identically, as JSON-serialisable data."""
        ...


def update_many(detector: Detector, values: Sequence[float]) -> BatchSignals:
    """Feed ``values`` in order: the detector's own ``update_many`` when it has one (ADWIN),
    else :meth:`Detector.update` one by one -- the same signals either way."""
    batch = getattr(detector, "update_many", None)
    if batch is not None:
        result: BatchSignals = batch(values)
        return result
    drifts: list[tuple[int, DriftSignal]] = []
    last: DriftSignal | None = None
    for i, value in enumerate(values):
        last = detector.update(value)
        if last.drifted:
            drifts.append((i, last))
    return BatchSignals(drifts, last)


# --- shared helpers --------------------------------------------------------------------------


def _pack(values: Iterable[float]) -> str:
    """Float64 values as base64 (exact, and about 3x smaller than JSON numbers)."""
    buf = array("d", values)
    if sys.byteorder != "little":  # pragma: no cover - every platform we run on is little-endian
        buf.byteswap()
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _unpack(text: str) -> array[float]:
    buf = array("d")
    buf.frombytes(base64.b64decode(text.encode("ascii")))
    if sys.byteorder != "little":  # pragma: no cover
        buf.byteswap()
    return buf


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinity: River's "not yet set" infinities are stored as null."""
    return value if math.isfinite(value) else None


def _header(name: str, params: dict[str, Any], samples: int) -> dict[str, Any]:
    return {
        "type": name,
        "state_version": STATE_VERSION,
        "river": RIVER_VERSION,
        "params": params,
        "samples": samples,
    }


def _check_header(state: dict[str, Any], name: str, *, same_river: bool) -> None:
    if state.get("type") != name:
        raise IncompatibleState(f"state is for {state.get('type')!r}, not {name}")
    if state.get("state_version") != STATE_VERSION:
        raise IncompatibleState(f"{name} state version {state.get('state_version')!r} is not {STATE_VERSION}")
    if same_river and state.get("river") != RIVER_VERSION:
        raise IncompatibleState(
            f"{name} state was written with River {state.get('river')}, this is {RIVER_VERSION}: "
            "its internal attributes may differ"
        )


def _mean_shift_bound(n_old: int, n_new: int, variance: float, delta: float, n_total: int) -> float:
    """ADWIN's cut threshold ``eps_cut`` for sub-windows of ``n_old`` and ``n_new`` samples.

    ``eps = sqrt(2/m * var * ln(2/d')) + 2/(3m) * ln(2/d')`` with ``m = 1/(1/n0 + 1/n1)`` and
    ``d' = delta / ln(n)`` (Bifet & Gavaldà 2007, as River's implementation computes it).
    """
    if n_old <= 0 or n_new <= 0:
        return math.inf
    m = 1.0 / (1.0 / n_old + 1.0 / n_new)
    dd = math.log(2.0 * math.log(max(n_total, 3)) / delta)
    return math.sqrt(2.0 / m * max(variance, 0.0) * dd) + 2.0 / (3.0 * m) * dd


def _best_split(values: array[float], most: int) -> int:
    """Binary segmentation: how many trailing samples (<= ``most``) form the new regime.

    Picks the split maximising ``|mean_new - mean_old| * sqrt(m)`` (the standardised mean
    difference; ``m`` the harmonic size), the maximum-likelihood single change point for a
    shift in mean. Only run when a drift fires, so O(n) is fine.
    """
    n = len(values)
    most = min(most, n - 1)
    if most < 1:
        return max(1, min(most, n))
    total = math.fsum(values)
    best_k, best_score = most, -1.0
    tail = 0.0
    for k in range(1, most + 1):
        tail += values[n - k]
        mean_new = tail / k
        mean_old = (total - tail) / (n - k)
        score = abs(mean_new - mean_old) * math.sqrt(k * (n - k) / n)
        if score > best_score:
            best_k, best_score = k, score
    return best_k


# --- ADWIN -----------------------------------------------------------------------------------


class AdwinDetector:
    """River's ADWIN (Rust) with a bounded replay buffer for exact JSON checkpoints.

    Parameters are River's (``delta``, ``clock``, ``max_buckets``, ``min_window_length``,
    ``grace_period``) plus ``max_window``, the cap on the window and on the replay buffer
    (see the module docstring). Between drifts, every ``clock`` samples the statistic is the
    mean difference between the older and the newer half of the window, against ADWIN's bound
    for that split -- the same quantity ADWIN tests, at one split, cheaply.

    >>> import random
    >>> rng = random.Random(7)
    >>> d = AdwinDetector(delta=0.002)
    >>> hits = [i for i in range(3000) if d.update(rng.gauss(0.0 if i < 2000 else 1.0, 1.0)).drifted]
    >>> 2000 < hits[0] < 2100
    True
    """

    name = "ADWIN"

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
        max_window: int = 8192,
    ) -> None:
        if max_window < 4 * clock:
            raise ValueError(f"max_window {max_window} must be at least 4 x clock ({4 * clock})")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self.max_window = max_window
        self._samples = 0
        self._window: array[float] = array("d")
        self._cumulative: array[float] = array("d")  # running sums: O(1) statistics between drifts
        self._total = 0.0
        self._squares = 0.0
        self._river: Any = None
        self._step: Any = None
        self._restart()
        self._statistic = 0.0
        self._threshold = math.inf

    def _fresh(self) -> Any:
        return _ADWIN(
            delta=self.delta,
            clock=self.clock,
            max_buckets=self.max_buckets,
            min_window_length=self.min_window_length,
            grace_period=self.grace_period,
        )

    def _restart(self) -> None:
        """A fresh River ADWIN; ``_step`` feeds it one value and says whether it drifted.

        ``_step`` is River's Rust core (``_helper.update``) when present: River's Python
        ``update`` adds only the reset-on-next-update, which this wrapper does eagerly, and costs
        as much again as the Rust call (a third of the monitor's time per feature value).
        """
        self._river = self._fresh()
        helper = getattr(self._river, "_helper", None)
        update = getattr(helper, "update", None)
        self._step = update if callable(update) else self._river_step

    def _river_step(self, value: float) -> bool:
        self._river.update(value)
        return bool(self._river.drift_detected)

    def _params(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window_length": self.min_window_length,
            "grace_period": self.grace_period,
            "max_window": self.max_window,
        }

    @property
    def samples(self) -> int:
        """Samples seen in this detector's lifetime."""
        return self._samples

    @property
    def width(self) -> int:
        """Samples in ADWIN's current window (equal to the replay buffer's length)."""
        return len(self._window)

    def update(self, x: float) -> DriftSignal:
        """Feed one value; on a drift the River object is replaced by a fresh one (as River would)."""
        value = float(x)
        self._samples = samples = self._samples + 1
        window = self._window
        window.append(value)  # _append, inlined: this runs for every feature of every prediction
        self._total = total = self._total + value
        self._cumulative.append(total)
        self._squares += value * value
        if self._step(value):
            return self._on_drift()
        if len(window) >= self.max_window:
            self._rebase()
        if samples % self.clock == 0:
            self._refresh_statistic()
        return DriftSignal(False, self._statistic, self._threshold, samples)

    def update_many(self, values: Sequence[float]) -> BatchSignals:
        """Feed many values; the same drifts, statistics and state as :meth:`update` one by one.

        Cheaper because the per-sample work is only River's Rust update: the window arrays grow
        a chunk at a time and the statistic is refreshed at the clock ticks, where ``update``
        would refresh it (chunks end at ticks, at rebases and after a drift).
        """
        drifts: list[tuple[int, DriftSignal]] = []
        n = len(values)
        i = 0
        while i < n:
            to_tick = self.clock - self._samples % self.clock
            to_rebase = self.max_window - len(self._window)  # >= 1: a full window rebased at once
            end = min(n, i + min(to_tick, to_rebase))
            step = self._step
            hit = -1
            for j in range(i, end):
                if step(values[j]):
                    hit = j
                    break
            stop = end if hit < 0 else hit + 1
            self._samples += stop - i
            self._extend(values[i:stop])
            if hit >= 0:
                drifts.append((hit, self._on_drift()))
            else:
                if len(self._window) >= self.max_window:
                    self._rebase()
                if self._samples % self.clock == 0:
                    self._refresh_statistic()
            i = stop
        last = None if n == 0 else DriftSignal(False, self._statistic, self._threshold, self._samples)
        if drifts and drifts[-1][0] == n - 1:
            last = drifts[-1][1]
        return BatchSignals(drifts, last)

    def _on_drift(self) -> DriftSignal:
        window = self._window
        n = len(window)
        width = int(self._river.width)
        change = max(1, min(width, _best_split(window, max(1, width)), n - 1))
        old, new = window[: n - change], window[n - change :]
        mean_old = math.fsum(old) / len(old) if len(old) else 0.0
        mean_new = math.fsum(new) / len(new)
        variance = _variance(window)
        statistic = abs(mean_new - mean_old)
        threshold = _mean_shift_bound(len(old), len(new), variance, self.delta, n)
        self._restart()
        self._clear()
        self._statistic, self._threshold = 0.0, math.inf
        return DriftSignal(
            True,
            statistic,
            threshold,
            self._samples,
            change_samples=change,
            reference_mean=mean_old,
            reference_samples=len(old),
        )

    def _refresh_statistic(self) -> None:
        n = len(self._window)
        if n < 2 * self.min_window_length:
            self._statistic, self._threshold = 0.0, math.inf
            return
        half = n // 2
        total = self._cumulative[-1]
        older_sum = self._cumulative[half - 1]
        older = older_sum / half
        newer = (total - older_sum) / (n - half)
        variance = max(0.0, (self._squares - total * total / n) / (n - 1))
        self._statistic = abs(newer - older)
        self._threshold = _mean_shift_bound(half, n - half, variance, self.delta, n)

    def _append(self, value: float) -> None:
        self._window.append(value)
        self._total += value
        self._cumulative.append(self._total)
        self._squares += value * value

    def _extend(self, values: Sequence[float]) -> None:
        """:meth:`_append` for many values (the same float additions, in the same order)."""
        if len(values) == 0:
            return
        self._window.extend(values)
        sums = accumulate(values, initial=self._total)
        next(sums)  # the initial value itself
        self._cumulative.extend(sums)
        self._total = self._cumulative[-1]
        squares = self._squares
        for value in values:
            squares += value * value
        self._squares = squares

    def _clear(self) -> None:
        self._window = array("d")
        self._cumulative = array("d")
        self._total = 0.0
        self._squares = 0.0

    def _rebase(self) -> None:
        """Restart ADWIN on the newest half of the window (bounded memory, deterministic)."""
        keep = self._window[len(self._window) - self.max_window // 2 :]
        self._replay(keep)

    def _replay(self, values: Sequence[float]) -> None:
        """A fresh ADWIN fed ``values``; a drift inside them restarts it after that sample,
        exactly as River's own reset-on-next-update would."""
        self._restart()
        self._clear()
        start = 0
        step = self._step
        for j, value in enumerate(values):
            if step(value):
                self._restart()
                step = self._step
                start = j + 1
        self._extend(values[start:])

    def to_state(self) -> dict[str, Any]:
        """Parameters, lifetime count, the replay buffer (base64 float64) and the cached statistic."""
        state = _header(self.name, self._params(), self._samples)
        state["window"] = _pack(self._window)
        state["statistic"] = self._statistic
        state["threshold"] = _finite_or_none(self._threshold)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AdwinDetector:
        """Rebuild by replaying the buffer into a fresh ADWIN: valid across River versions."""
        _check_header(state, cls.name, same_river=False)
        detector = cls(**state["params"])
        detector._replay(_unpack(state["window"]))
        detector._samples = int(state["samples"])
        detector._statistic = float(state["statistic"])
        threshold = state["threshold"]
        detector._threshold = math.inf if threshold is None else float(threshold)
        return detector


def _variance(values: array[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean = math.fsum(values) / n
    return math.fsum((v - mean) ** 2 for v in values) / (n - 1)


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
        state = _header(
            self.name,
            {"alpha": self.alpha, "window_size": self.window_size, "stat_size": self.stat_size, "seed": self.seed},
            self._samples,
        )
        state["window"] = _pack(float(v) for v in self._river.window)
        state["n"] = int(self._river.n)
        state["p_value"] = float(self._river.p_value)
        state["rng"] = [version, list(internal), gauss_next]
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> KswinDetector:
        """Set River's attributes back (same River version only)."""
        _check_header(state, cls.name, same_river=True)
        detector = cls(**state["params"])
        kswin = detector._river
        kswin.window = deque(_unpack(state["window"]).tolist(), maxlen=detector.window_size)
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
        state = _header(
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
        state["ps_min"] = _finite_or_none(float(ddm._ps_min))
        state["warning"] = bool(ddm._warning_detected)
        state["run"] = self._run.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DdmDetector:
        """Set River's attributes back (same River version only)."""
        _check_header(state, cls.name, same_river=True)
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
        state = _header(
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
        _check_header(state, cls.name, same_river=True)
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
        state = _header(
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
        state["incr_cutpoint"] = _finite_or_none(float(h._incr_cutpoint))
        state["decr_cutpoint"] = _finite_or_none(float(h._decr_cutpoint))
        state["warning"] = bool(h._warning_detected)
        state["run"] = self._run.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HddmWDetector:
        """Set River's attributes back (same River version only)."""
        _check_header(state, cls.name, same_river=True)
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


def data_detector(name: DataDetectorName) -> Detector:
    """A detector for one feature's values, tuned for many features x long stable streams."""
    if name == "ADWIN":
        return AdwinDetector(delta=DATA_ADWIN_DELTA)
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
