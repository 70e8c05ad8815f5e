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

**Blocks.** With ``block = k > 1`` ADWIN is fed the *sums* of consecutive blocks of ``k``
samples instead of the samples, for a feature's mean-shift test at 1/k of the updates (the
monitor's data detectors, :func:`~services.monitor.detectors.data_detector`: River's per-sample
update was most of the monitor's cost per feature value). Sums, not means: ADWIN's cut bound
``sqrt(2/m var ln(2/d')) + 2/(3m) ln(2/d')`` has a range term that does not scale with the
values, so on block means (``m/k`` points of variance ``var/k``) the variance term is unchanged
but the range term is ``k`` times larger -- a 0.5-sigma shift needed about three times the
samples at ``k = 16``. On block sums both terms, divided by ``k``, are exactly the per-sample
bound at the per-sample harmonic size, so the test keeps its power and its false-alarm rate;
what changes is resolution -- a cut is tested only at block boundaries, and a change is seen
up to ``k`` samples later. Everything exposed stays in samples and in the values' units
(``samples``, ``width``, ``change_samples``, ``reference_samples``; statistics, thresholds and
``reference_mean`` divided by ``k``); the parameters (``clock``, ``min_window_length``,
``grace_period``, ``max_window``) count blocks, as River sees them. A block's sum is
:func:`block_sums`, one sequential sum whatever the batch around it, and the samples of the
unfinished block are part of the checkpoint, so blocks are exact under checkpoint / restore and
under any split of a stream into batches.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Any

import numpy as np
from numpy.typing import NDArray
from river import drift

from services.monitor.signals import (
    BatchSignals,
    Detector,
    DriftSignal,
    check_state_header,
    finite_or_none,
    pack_floats,
    state_header,
    unpack_floats,
    update_many,
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


def block_sums(values: NDArray[np.float64], block: int) -> NDArray[np.float64]:
    """Sums of consecutive blocks of ``block`` values (``len(values)`` a multiple of ``block``).

    Each is the plain left-to-right sum of its block (``np.add.accumulate`` is sequential by
    definition, unlike ``sum``'s pairwise reduction), so a block sums to the same float however
    the stream around it was cut into batches.

    >>> block_sums(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist()
    [3.0, 7.0]
    """
    return np.add.accumulate(values.reshape(-1, block), axis=1)[:, -1]


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
    ``grace_period``) plus ``max_window``, the cap on the window and on the replay buffer, and
    ``block``, the samples summed into each value ADWIN sees (see the module docstring; the
    other counts are of those values). Between drifts, every ``clock`` values the statistic is
    the mean difference between the older and the newer half of the window, against ADWIN's
    bound for that split -- the same quantity ADWIN tests, at one split, cheaply.

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
        block: int = 1,
    ) -> None:
        if max_window < 4 * clock:
            raise ValueError(f"max_window {max_window} must be at least 4 x clock ({4 * clock})")
        if block < 1:
            raise ValueError(f"block {block} must be at least 1")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self.max_window = max_window
        self.block = block
        self._samples = 0
        self._units = 0  # values fed to ADWIN in this detector's lifetime (block sums, or samples)
        self._pending: list[float] = []  # the samples of the unfinished block
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
        params: dict[str, Any] = {
            "delta": self.delta,
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window_length": self.min_window_length,
            "grace_period": self.grace_period,
            "max_window": self.max_window,
        }
        if self.block > 1:  # a per-sample detector's state reads as it did before blocks
            params["block"] = self.block
        return params

    @property
    def samples(self) -> int:
        """Samples seen in this detector's lifetime."""
        return self._samples

    @property
    def width(self) -> int:
        """Samples in ADWIN's current window and the unfinished block (the replay buffer's, in samples)."""
        return len(self._window) * self.block + len(self._pending)

    def _signal(self) -> DriftSignal:
        return DriftSignal(False, self._statistic, self._threshold, self._samples)

    def update(self, x: float) -> DriftSignal:
        """Feed one value; on a drift the River object is replaced by a fresh one (as River would)."""
        value = float(x)
        self._samples += 1
        if self.block > 1:
            pending = self._pending
            pending.append(value)
            if len(pending) < self.block:
                return self._signal()
            value = float(block_sums(np.asarray(pending, dtype=np.float64), self.block)[0])
            pending.clear()
        self._units = units = self._units + 1
        window = self._window
        window.append(value)  # the buffer and its running sums, inline: this runs for every value
        self._total = total = self._total + value
        self._cumulative.append(total)
        self._squares += value * value
        if self._step(value):
            return self._on_drift()
        if len(window) >= self.max_window:
            self._rebase()
        if units % self.clock == 0:
            self._refresh_statistic()
        return self._signal()

    def update_many(self, values: Sequence[float] | NDArray[np.float64]) -> BatchSignals:
        """Feed many values; the same drifts, statistics and state as :meth:`update` one by one.

        Cheaper because the per-value work is only River's Rust update: blocks are summed with
        numpy, the window arrays grow a chunk at a time (chunks end at rebases and after a
        drift), and the statistic is computed once per chunk, at its last clock tick -- the
        refresh :meth:`update` would have made last.
        """
        n = len(values)
        if n == 0:
            return BatchSignals([], None)
        if self.block == 1:
            return self._sums(values.tolist() if isinstance(values, np.ndarray) else values, [], n)
        array_ = np.asarray(values, dtype=np.float64)
        whole = self._finishing(n)
        if whole <= 0:
            return self._sums([], array_.tolist(), n)
        joined = np.concatenate([np.asarray(self._pending, dtype=np.float64), array_[:whole]])
        return self._sums(block_sums(joined, self.block).tolist(), array_[whole:].tolist(), n)

    def _finishing(self, n: int) -> int:
        """How many of ``n`` new samples finish a block (with the unfinished one); <= 0 for none."""
        held = len(self._pending)
        return (held + n) // self.block * self.block - held

    def _sums(self, units: Sequence[float], pending: list[float], n: int) -> BatchSignals:
        """The rest of :meth:`update_many` once its ``n`` samples are summed: ``units``, the sums
        of the blocks they finish (the samples themselves with ``block == 1``), and ``pending``,
        the samples of the new unfinished block."""
        before = self._samples
        offset = before - len(self._pending)  # the sample ending unit u (0-based) is offset + (u + 1) * block
        block = self.block
        if block > 1:
            self._pending = pending if units else self._pending + pending
        drifts = [((u + 1) * block - 1 + offset - before, signal) for u, signal in self._feed(units, offset)]
        self._samples = before + n
        if drifts and drifts[-1][0] == n - 1:
            return BatchSignals(drifts, drifts[-1][1])
        return BatchSignals(drifts, self._signal())

    def _feed(self, units: Sequence[float], offset: int) -> list[tuple[int, DriftSignal]]:
        """``units`` through ADWIN: each drift with the index of the unit that caused it.

        ``offset``: the lifetime sample count before ``units[0]``'s first sample, so that a drift's
        signal counts the samples through the one that finished its unit.
        """
        drifts: list[tuple[int, DriftSignal]] = []
        block, clock = self.block, self.clock
        n = len(units)
        i = 0
        while i < n:
            end = min(n, i + self.max_window - len(self._window))  # >= 1: a full window rebased at once
            step = self._step
            hit = -1
            for j in range(i, end):
                if step(units[j]):
                    hit = j
                    break
            stop = end if hit < 0 else hit + 1
            first = self._units + 1  # the lifetime number of units[i]
            self._units += stop - i
            self._samples = offset + stop * block
            if hit >= 0:
                self._extend(units[i:stop])
                drifts.append((hit, self._on_drift()))
                i = stop
                continue
            tick = self._units - self._units % clock  # the last tick so far; in this chunk if >= first
            rebase = len(self._window) + stop - i >= self.max_window
            if rebase and tick == self._units:  # a tick on the rebasing unit: refreshed after the rebase
                self._extend(units[i:stop])
                self._rebase()
                self._refresh_statistic()
            else:
                at = tick - first if tick >= first else -1
                length = len(self._window) + at + 1
                squares = self._extend(units[i:stop], at)
                if at >= 0:
                    self._refresh_statistic(length, squares)
                if rebase:
                    self._rebase()
            i = stop
        return drifts

    def _on_drift(self) -> DriftSignal:
        window = self._window
        n = len(window)
        width = int(self._river.width)
        change = max(1, min(width, _best_split(window, max(1, width)), n - 1))
        old, new = window[: n - change], window[n - change :]
        mean_old = math.fsum(old) / len(old) if len(old) else 0.0
        mean_new = math.fsum(new) / len(new)
        variance = _variance(window)
        block = self.block
        statistic = abs(mean_new - mean_old) / block
        threshold = _mean_shift_bound(len(old), len(new), variance, self.delta, n) / block
        self._restart()
        self._clear()
        self._statistic, self._threshold = 0.0, math.inf
        return DriftSignal(
            True,
            statistic,
            threshold,
            self._samples,
            change_samples=change * block,
            reference_mean=mean_old / block,
            reference_samples=len(old) * block,
        )

    def _refresh_statistic(self, n: int | None = None, squares: float | None = None) -> None:
        """The statistic of the window's first ``n`` values (all of them by default), whose
        running sum of squares was ``squares``, in the values' units (divided by ``block``)."""
        if n is None or squares is None:
            n, squares = len(self._window), self._squares
        if n < 2 * self.min_window_length:
            self._statistic, self._threshold = 0.0, math.inf
            return
        half = n // 2
        total = self._cumulative[n - 1]
        older_sum = self._cumulative[half - 1]
        older = older_sum / half
        newer = (total - older_sum) / (n - half)
        variance = max(0.0, (squares - total * total / n) / (n - 1))
        self._statistic = abs(newer - older) / self.block
        self._threshold = _mean_shift_bound(half, n - half, variance, self.delta, n) / self.block

    def _extend(self, values: Sequence[float], mark: int = -1) -> float:
        """Append ``values`` to the buffer and its running sums (the same float additions, in the
        same order, as :meth:`update` makes one at a time); returns the running sum of squares
        through ``values[mark]`` (the final one when ``mark`` is -1)."""
        if len(values) == 0:
            return self._squares
        self._window.extend(values)
        sums = accumulate(values, initial=self._total)
        next(sums)  # the initial value itself
        self._cumulative.extend(sums)
        self._total = self._cumulative[-1]
        squares = self._squares
        if mark < 0:
            for value in values:
                squares += value * value
            self._squares = squares
            return squares
        for value in values[: mark + 1]:
            squares += value * value
        marked = squares
        for value in values[mark + 1 :]:
            squares += value * value
        self._squares = squares
        return marked

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
        """Parameters, lifetime count, the replay buffer (base64 float64), the unfinished block's
        samples (with ``block > 1``) and the cached statistic."""
        state = state_header(self.name, self._params(), self._samples)
        state["window"] = pack_floats(self._window)
        if self.block > 1:
            state["pending"] = pack_floats(self._pending)
        state["statistic"] = self._statistic
        state["threshold"] = finite_or_none(self._threshold)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AdwinDetector:
        """Rebuild by replaying the buffer into a fresh ADWIN: valid across River versions."""
        check_state_header(state, cls.name, same_river=False)
        detector = cls(**state["params"])
        detector._replay(unpack_floats(state["window"]))
        detector._pending = unpack_floats(state["pending"]).tolist() if detector.block > 1 else []
        detector._samples = int(state["samples"])
        # Every sample before the unfinished block went into a block (the clock's phase).
        detector._units = (detector._samples - len(detector._pending)) // detector.block
        detector._statistic = float(state["statistic"])
        threshold = state["threshold"]
        detector._threshold = math.inf if threshold is None else float(threshold)
        return detector


def update_columns(detectors: Sequence[AdwinDetector], matrix: NDArray[np.float64]) -> list[BatchSignals]:
    """Column ``j`` of ``matrix`` (samples x detectors) through ``detectors[j]``: the signals and
    states of :meth:`AdwinDetector.update_many` per column, with the blocks of all the columns
    whose unfinished blocks line up (the same block size, as many samples held -- all of them,
    for a model's features without missing values) summed in one numpy call: per column, what is
    left is River's update of its few block sums.
    """
    n = matrix.shape[0]
    results: list[BatchSignals | None] = [None] * len(detectors)
    groups: dict[tuple[int, int], list[int]] = {}
    for j, detector in enumerate(detectors):
        groups.setdefault((detector.block, len(detector._pending)), []).append(j)
    for (block, held), members in groups.items():
        if block == 1 or n == 0:
            for j in members:
                results[j] = detectors[j].update_many(matrix[:, j])
            continue
        columns = matrix[:, members]
        whole = detectors[members[0]]._finishing(n)
        if whole <= 0:
            for j, column in zip(members, columns.T.tolist(), strict=True):
                results[j] = detectors[j]._sums([], column, n)
            continue
        pending = np.asarray([detectors[j]._pending for j in members], dtype=np.float64).reshape(len(members), held)
        joined = np.concatenate([pending, columns[:whole].T], axis=1)  # a row per detector
        sums = np.add.accumulate(joined.reshape(len(members), -1, block), axis=2)[:, :, -1]  # as block_sums
        rest = columns[whole:].T.tolist()
        for j, units, left in zip(members, sums.tolist(), rest, strict=True):
            results[j] = detectors[j]._sums(units, left, n)
    return [r for r in results if r is not None]


def _variance(values: array[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean = math.fsum(values) / n
    return math.fsum((v - mean) ** 2 for v in values) / (n - 1)


def update_features(
    detectors: Mapping[str, Detector], columns: Mapping[str, NDArray[np.float64]], start: int, end: int
) -> dict[str, tuple[BatchSignals, NDArray[np.float64], list[int] | None]]:
    """Rows ``start:end`` of each feature's column through its detector (missing values
    skipped): per feature, the signals, the values fed and their rows (None: every row).

    The block ADWINs of the features whose rows are all present go through
    :func:`update_columns` together -- their blocks summed in one
    numpy call, the per-feature work only River's update of the block sums; the others one
    column at a time. The detectors are independent, so the order does not matter.
    """
    batches: dict[str, tuple[BatchSignals, NDArray[np.float64], list[int] | None]] = {}
    together: list[tuple[str, AdwinDetector, NDArray[np.float64]]] = []
    for name, detector in detectors.items():
        column = columns.get(name)
        if column is None:
            continue
        segment = column[start:end]
        finite = np.isfinite(segment)
        if finite.all():
            if isinstance(detector, AdwinDetector) and detector.block > 1:
                together.append((name, detector, segment))
                continue
            rows: list[int] | None = None
            values = segment
        else:
            rows = np.flatnonzero(finite).tolist()
            values = segment[finite]
        batches[name] = (update_many(detector, values), values, rows)
    if together:
        matrix = np.column_stack([segment for _, _, segment in together])
        signals = update_columns([detector for _, detector, _ in together], matrix)
        for (name, _, segment), batch in zip(together, signals, strict=True):
            batches[name] = (batch, segment, None)
    return batches
