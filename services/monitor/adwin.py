"""ADWIN behind the detector protocol, with an exact checkpoint by replay.

ADWIN is implemented in Rust in River 0.26 and is neither picklable nor inspectable. The
wrapper keeps a replay buffer of the samples the River object has seen since its last reset
and restores by replaying them into a fresh ADWIN (same parameters, so the same clock phase
and buckets). The buffer is bounded by ``max_window``: when it fills, the wrapper
deterministically *rebases* -- it restarts ADWIN on the newest half. That caps ADWIN's window
(and memory, and the checkpoint) at ``max_window`` samples, which only makes ADWIN forget very
old data; since the uninterrupted and the restored detector rebase at the same sample, they
stay identical. The buffer also gives the evidence River does not expose (old and new means,
a change-point estimate): ``change_samples`` is ``min(detector.width after the drift, a
binary-segmentation estimate on the buffer)`` -- ADWIN's width alone over-estimates when it
fires quickly after a large change (it drops whole buckets, e.g. width 866 for a change 18
samples back), and an over-estimate would let the trainer mix old-regime rows into a "since
change" window; the split maximising the standardised mean difference corrects that.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from river import drift

from services.monitor.signals import (
    BatchSignals,
    DriftSignal,
    check_state_header,
    finite_or_none,
    pack_floats,
    state_header,
    unpack_floats,
)

_ADWIN: Any = drift.ADWIN


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
        window.append(value)  # the buffer and its running sums, inline: this runs for every feature value
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

    def _extend(self, values: Sequence[float]) -> None:
        """Append ``values`` to the buffer and its running sums (the same float additions, in the
        same order, as :meth:`update` makes one at a time)."""
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
        state = state_header(self.name, self._params(), self._samples)
        state["window"] = pack_floats(self._window)
        state["statistic"] = self._statistic
        state["threshold"] = finite_or_none(self._threshold)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AdwinDetector:
        """Rebuild by replaying the buffer into a fresh ADWIN: valid across River versions."""
        check_state_header(state, cls.name, same_river=False)
        detector = cls(**state["params"])
        detector._replay(unpack_floats(state["window"]))
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
