"""Categorical and boolean features: category shares against the training reference. Pure: no I/O.

A categorical (or boolean, as the two categories ``"true"`` / ``"false"``) feature is watched by
two signals, each over windows of as many rows as numeric PSI's (:mod:`services.monitor.psi`),
which close every half window (:class:`CategoryWindow`: no River detector proposes early
candidates for these features, as it does for numeric ones):

* **Category drift** -- the window's category counts against the reference shares
  (:class:`~shared.reference.CategoryReference`), by two statistics: their PSI, which sees a
  change spread over many buckets, and the largest **share z** -- per bucket, the standardised
  difference of the window's share from the reference share,
  ``(p_live - p_ref) / sqrt(p_ref (1 - p_ref) (1 / n + 1 / N))`` (:func:`share_z`) -- which
  sees the change of one bucket that the PSI dilutes over its degrees of freedom: doubling a 5 %
  share among 11 buckets is a PSI of 0.037 where a stable window's own is about 0.01, but a
  share z of 6.6 against an alert of 3.9. Buckets: every category of at least
  :data:`RARE_SHARE` of the training values is its own bucket (any key is a category,
  :data:`~shared.reference.OTHER_CATEGORIES` included); the rarer ones are pooled into one, so
  that a tail of categories seen a handful of times cannot make the statistic noisy (a pool
  under :data:`RARE_SHARE` itself joins the smallest bucket). An empty bucket counts as half a
  value (not as a fixed tiny share, which would make one empty bucket of a few expected values
  look like a collapse).
* **Unseen categories** -- the share of values whose category is not a key of the reference's
  shares (or a key of share 0: training never met it). They are counted apart, out of the PSI
  (which compares the categories the model knows) -- except when the reference sums its tail
  under :data:`~shared.reference.OTHER_CATEGORIES`: a value it does not name may be one of
  those, so the "other" bucket counts them, and the unseen rate is held against that share.

Thresholds follow the sampling noise. Under "no change" ``n x PSI`` of ``n`` values over ``k``
buckets is close to a chi-square with ``k - 1`` degrees of freedom (PSI is the symmetrised KL
divergence, whose second-order term is Pearson's statistic over ``n``), so the alert of a
window of ``n`` values is that chi-square's ``1 - alpha`` quantile over ``n`` -- a 3-category
feature and a 12-category one have the same false-alarm rate, and fewer values need more
evidence -- floored at a minimum PSI so a large window does not alarm on a negligible shift.
The reference's shares were counted from a training sample of ``N`` values, itself noisy, so
``1 / n`` is ``1 / n + 1 / N`` (without it a 5,000-row reference makes stable windows cross a
1e-3 alert eight times as often, measured). The largest share z of ``k`` buckets has the same
allowance ``alpha``, split over both sides of every bucket (Bonferroni: the normal quantile of
``alpha / 2k``, :func:`share_z_alert`); its confirmation tests only the bucket and side the window
named, on fresh values, so there only the looks divide the allowance
(:class:`~services.monitor.alarms.CategoryPsiAbove`).
The unseen rate is held against what training itself saw: the share of its unnamed tail, plus
the Good-Turing estimate of the chance that the next value is a new category (categories seen
exactly once, over the non-missing training rows), plus a minimum rise and ``z`` binomial
standard errors. ``benchmarks/bench_categorical_drift.py`` measures false alarms and detection
delays: none on 100,000 stable samples of each mix; a doubled share of 5 % or more, or a new
category at 3 %, confirmed within 2,000 samples (a 5 % share's doubling took up to 3,500 with the
PSI alone). A 2 % share's doubling takes about 2,150 (median of 40 runs; some over 4,000),
close to what any test can do at this false-alarm rate (by the allowances, about one per 10
million stable values): even a test told which category will double needs about
``ln(10 million) / KL`` = 2,000 values on average (Lorden's bound; KL is 0.008 per value for
2 % -> 4 %).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.monitor.state import State
from shared.features import BOOLEAN, CATEGORICAL, MISSING_CATEGORY, category_key
from shared.reference import OTHER_CATEGORIES, CategoryReference

RARE_SHARE = 0.01
"""Categories below this share of the training values are pooled into one bucket."""

RARE_BUCKET = "(rare)"
"""The name of the pooled bucket (for the report)."""

MISSING = -2
"""Code of a missing value (null, NaN, or the empty category)."""

UNSEEN = -1
"""Code of a value whose category is not in the reference."""

BOOLEAN_KEYS = frozenset({"true", "false"})


def unseen_stream(feature: str) -> str:
    """The alarm policy's cause of the unseen-category signal of ``feature``.

    Feature names cannot hold ``:`` (the spec's pattern), so this never names a feature.
    """
    return f"unseen:{feature}"


# --- the chi-square tail, for thresholds ------------------------------------------------------


def _upper_gamma(a: float, x: float) -> float:
    """The regularised upper incomplete gamma function Q(a, x) (series, or Lentz's continued fraction)."""
    if x <= 0.0:
        return 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        k = a
        while abs(term) > abs(total) * 1e-15:
            k += 1.0
            term *= x / k
            total += term
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return math.exp(log_front) * h


def chi_square_tail(x: float, df: int) -> float:
    """P(X > x) for X chi-square with ``df`` degrees of freedom.

    >>> round(chi_square_tail(3.841458820694124, 1), 6), round(chi_square_tail(9.21034037197618, 2), 6)
    (0.05, 0.01)
    """
    return _upper_gamma(df / 2.0, x / 2.0)


@lru_cache(maxsize=256)
def chi_square_quantile(df: int, tail: float) -> float:
    """The x with ``P(X > x) = tail`` for X chi-square with ``df`` degrees of freedom (bisection).

    >>> round(chi_square_quantile(1, 0.001), 3), round(chi_square_quantile(8, 0.001), 3)
    (10.828, 26.124)
    """
    if not 0.0 < tail < 1.0:
        raise ValueError("tail must be in (0, 1)")
    low, high = 0.0, max(1.0, float(df))
    while chi_square_tail(high, df) > tail:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if chi_square_tail(middle, df) > tail:
            low = middle
        else:
            high = middle
        if high - low < 1e-9 * high:
            break
    return (low + high) / 2.0


# --- values, buckets and the statistic ---------------------------------------------------------


def category_of(value: Any, boolean: bool) -> str | None:
    """The category a live value counts under (:func:`shared.features.category_key`); None when missing.

    Missing: null, NaN and the empty category (how a missing value enters the graph). A boolean
    feature also reads 0 / 1 as false / true (a logger that wrote the graph's float input); a
    value that is no category at all keeps its text, so it counts as unseen.

    >>> category_of(True, True), category_of(1.0, True), category_of(3, False), category_of("", False)
    ('true', 'true', '3', None)
    """
    if isinstance(value, str):
        return None if value == MISSING_CATEGORY else value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if boolean and not isinstance(value, bool) and isinstance(value, int | float) and value in (0, 1):
        value = bool(value)
    key = category_key(value, BOOLEAN if isinstance(value, bool) else CATEGORICAL)
    return key if key is not None else str(value)


def category_psi(expected: Sequence[float], counts: Sequence[int]) -> float:
    """PSI of bucket ``counts`` against ``expected`` shares; an empty bucket counts as half a value.

    >>> category_psi([0.5, 0.5], [50, 50]), round(category_psi([0.5, 0.5], [80, 20]), 4)
    (0.0, 0.4159)
    """
    total = sum(counts)
    if total == 0:
        return 0.0
    value = 0.0
    for e, c in zip(expected, counts, strict=True):
        actual = max(c, 0.5) / total
        ref = max(e, 1e-6)
        value += (actual - ref) * math.log(actual / ref)
    return value


def psi_alert(quantile: float, n: int, floor: float, reference_rows: float = 0.0) -> float:
    """The PSI of ``n`` values that is a drift: ``quantile`` -- the chi-square quantile of the
    buckets' degrees of freedom at the chance ``alpha`` allowed a stable stream,
    ``chi_square_quantile(df, alpha)`` -- over ``n``, and at least ``floor``; infinite without values.

    ``reference_rows``: the training values the reference shares were counted from (0: exact
    shares). Those shares are a sample too, so the noise is that of ``1 / n + 1 / reference_rows``
    (a two-sample comparison), not of ``1 / n`` alone.

    >>> q = chi_square_quantile(2, 1e-3)
    >>> round(psi_alert(q, 1000, 0.0), 4), round(psi_alert(q, 1000, 0.0, 5000), 4), psi_alert(q, 1000, 0.02)
    (0.0138, 0.0166, 0.02)
    """
    if n <= 0:
        return math.inf
    noise = 1.0 / n + (1.0 / reference_rows if reference_rows >= 1 else 0.0)
    return max(floor, quantile * noise)


def share_z(count: int, n: int, share: float, reference_rows: float = 0.0) -> float:
    """How far ``count`` of ``n`` values sits from a bucket's reference ``share``, in standard errors:
    ``(count / n - share) / sqrt(share (1 - share) (1 / n + 1 / reference_rows))`` (the reference's
    own noise as in :func:`psi_alert`); 0 without values or for a share of 0 or 1.

    >>> round(share_z(100, 1000, 0.05), 2), round(share_z(100, 1000, 0.05, 5000), 2), share_z(0, 0, 0.5)
    (7.25, 6.62, 0.0)
    """
    if n <= 0 or not 0.0 < share < 1.0:
        return 0.0
    noise = 1.0 / n + (1.0 / reference_rows if reference_rows >= 1 else 0.0)
    return (count / n - share) / math.sqrt(share * (1.0 - share) * noise)


def share_z_alert(alpha: float, tests: int) -> float:
    """The z a standard normal exceeds with chance ``alpha / tests``: ``tests`` one-sided tests
    that together cross it with chance ``alpha`` at most (Bonferroni).

    >>> round(share_z_alert(1e-3, 2), 3), round(share_z_alert(1e-3, 22), 3)
    (3.291, 3.914)
    """
    return NormalDist().inv_cdf(1.0 - alpha / max(tests, 1))


def unseen_alert(expected: float, n: int, z: float, rise: float) -> float:
    """The unseen rate of ``n`` values that is well above ``expected``: by ``rise`` and by ``z``
    binomial standard errors (the rate floored at one in ``n``, so a zero baseline is not
    infinitely sure); infinite without values."""
    if n <= 0:
        return math.inf
    p = min(max(expected, 1.0 / n), 0.5)
    return expected + max(rise, z * math.sqrt(p * (1.0 - p) / n))


@dataclass(frozen=True)
class CategoryBuckets:
    """A feature's reference categories as PSI buckets, and what training says about unseen ones."""

    names: tuple[str, ...]
    """Bucket labels: the category, or :data:`RARE_BUCKET` for the pool (for the report)."""
    expected: tuple[float, ...]
    """Each bucket's share of the training values whose category is known (sums to 1)."""
    index: Mapping[str, int]
    """Category key -> bucket."""
    boolean: bool
    """A boolean feature (its keys are ``"true"`` / ``"false"``): 0 and 1 read as false and true."""
    unseen_expected: float
    """The unseen rate training saw: the share of :data:`~shared.reference.OTHER_CATEGORIES` (not
    named, so unseen to the monitor) plus Good-Turing's chance of a new category (categories seen
    once, over the non-missing training rows)."""
    reference_rows: float = 0.0
    """Training values the shares were counted from (non-missing rows; 0 when unknown)."""
    unseen_bucket: int | None = None
    """The bucket of :data:`~shared.reference.OTHER_CATEGORIES` (the training categories beyond
    those the reference names), which also counts the unseen values in the PSI: a value not
    named may well be one of them. None without it: unseen values stay out of the PSI."""

    @classmethod
    def of(cls, reference: CategoryReference, rare_share: float = RARE_SHARE) -> CategoryBuckets:
        """Buckets of ``reference`` (see the module docstring for the pooling rule)."""
        boolean = bool(reference.shares) and set(reference.shares) <= BOOLEAN_KEYS
        # A zero share is a category training never met (a boolean lists both flags): unseen.
        shares = {key: float(share) for key, share in reference.shares.items() if share > 0.0}
        total = sum(shares.values())
        ordered = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
        if total <= 0.0:
            return cls((), (), {}, boolean, 0.0, 0.0)
        cut = rare_share * (1.0 - 1e-9)  # shares summed from floats: 0.007 + 0.003 is a 1 % pool
        common = [(k, s / total) for k, s in ordered if s / total >= cut]
        rare = [(k, s / total) for k, s in ordered if s / total < cut]
        names = [k for k, _ in common]
        expected = [s for _, s in common]
        index = {k: i for i, (k, _) in enumerate(common)}
        pooled = sum(s for _, s in rare)
        if rare and (pooled >= cut or not common):
            index.update({k: len(names) for k, _ in rare})
            names.append(RARE_BUCKET)
            expected.append(pooled)
        elif rare:  # a pool that small would be the noisy bucket itself: it joins the smallest one
            smallest = len(names) - 1
            index.update({k: smallest for k, _ in rare})
            names[smallest] = f"{names[smallest]} {RARE_BUCKET}"
            expected[smallest] += pooled
        known = reference.rows * (1.0 - min(max(reference.missing, 0.0), 1.0))
        named = [s for k, s in ordered if k != OTHER_CATEGORIES]
        singletons = sum(1 for s in named if 0.5 <= s / total * known < 1.5) if known >= 1 else 0
        tail = shares.get(OTHER_CATEGORIES, 0.0) / total
        return cls(
            names=tuple(names),
            expected=tuple(expected),
            index=index,
            boolean=boolean,
            unseen_expected=tail + (singletons / known if known >= 1 else 0.0),
            reference_rows=max(known, 0.0),
            unseen_bucket=index.get(OTHER_CATEGORIES),
        )

    @property
    def df(self) -> int:
        """Degrees of freedom of the PSI's noise (buckets - 1)."""
        return max(len(self.expected) - 1, 0)

    def code(self, value: Any) -> int:
        """A live value's bucket, or :data:`UNSEEN` / :data:`MISSING`."""
        key = category_of(value, self.boolean)
        if key is None:
            return MISSING
        return self.index.get(key, UNSEEN)

    def codes(self, values: Iterable[Any]) -> NDArray[np.int64]:
        """:meth:`code` of each value."""
        return np.fromiter((self.code(v) for v in values), dtype=np.int64)

    def counts(self, codes: NDArray[np.int64]) -> tuple[list[int], int]:
        """Bucket counts (the PSI's) and unseen count of coded values (missing ones are not counted)."""
        known = codes[codes >= 0]
        counts = np.bincount(known, minlength=len(self.expected)).tolist() if self.expected else []
        unseen = int(np.count_nonzero(codes == UNSEEN))
        if self.unseen_bucket is not None:
            counts[self.unseen_bucket] += unseen
        return counts, unseen

    def psi_code(self, code: int) -> int | None:
        """The PSI bucket of a coded value (None: not in the PSI -- missing, or unseen without
        an :data:`~shared.reference.OTHER_CATEGORIES` bucket)."""
        if code >= 0:
            return code
        return self.unseen_bucket if code == UNSEEN else None

    def psi(self, counts: Sequence[int]) -> float:
        """:func:`category_psi` against the bucket shares."""
        return category_psi(self.expected, counts) if self.expected else 0.0

    @property
    def share_z_tests(self) -> int:
        """The one-sided tests behind :meth:`largest_share_z`: both sides of every bucket."""
        return 2 * len(self.expected)

    def largest_share_z(self, counts: Sequence[int]) -> tuple[int, float]:
        """The bucket whose share of ``counts`` is furthest from its reference share (first of
        equals), and its :func:`share_z` -- signed: above 0 the share rose; (0, 0.0) without buckets."""
        n = sum(counts)
        best, best_z = 0, 0.0
        for bucket, (count, share) in enumerate(zip(counts, self.expected, strict=True)):
            z = share_z(count, n, share, self.reference_rows)
            if abs(z) > abs(best_z):
                best, best_z = bucket, z
        return best, best_z


# --- tumbling windows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryWindowResult:
    """One feature's closed window: PSI and the largest share z over the known values, and the unseen ones."""

    psi: float
    known: int
    """Values the PSI rests on (the unseen ones too when the reference has an "other" bucket)."""
    unseen: int
    present: int
    """Values that were not missing."""
    share_bucket: int = 0
    share_z: float = 0.0
    """The bucket whose share moved most, and by how many standard errors
    (:meth:`CategoryBuckets.largest_share_z`; above 0: it rose)."""

    @property
    def unseen_rate(self) -> float:
        """Unseen values over the values present (0 without any)."""
        return self.unseen / self.present if self.present else 0.0


class CategoryHop(State):
    """The category counts of one hop of a :class:`CategoryWindow`."""

    counts: dict[str, list[int]] = {}
    unseen: dict[str, int] = {}


class CategoryWindowState(State):
    """The open window of :class:`CategoryWindow` (the buckets come from the model card)."""

    window: int
    hops: int = 1
    """The window closes every ``window // hops`` rows, over the last ``hops`` of them."""
    rows: int = 0
    """Rows of the open hop."""
    counts: dict[str, list[int]] = {}
    unseen: dict[str, int] = {}
    earlier: list[CategoryHop] = []
    """The window's closed hops before the open one, oldest first (``hops - 1`` at most)."""


def _kept(hop: CategoryHop, fresh: dict[str, list[int]]) -> CategoryHop:
    """A saved hop's counts of the features whose buckets are unchanged (the others empty)."""
    counts = {name: list(zeros) for name, zeros in fresh.items()}
    unseen: dict[str, int] = {}
    for name, values in hop.counts.items():
        if name in counts and len(values) == len(counts[name]):
            counts[name] = list(values)
            if name in hop.unseen:
                unseen[name] = hop.unseen[name]
    return CategoryHop(counts=counts, unseen=unseen)


class CategoryWindow:
    """Per-feature category counts over windows of ``window`` rows that hop every ``window // hops``
    rows (``hops=1``: tumbling windows, as numeric PSI's).

    Categorical features have no River detector to raise an early candidate, so with tumbling
    windows a change late in a window waits for the next whole one; hopping by half a window
    cuts that wait by half (``benchmarks/bench_categorical_drift.py --hops``).

    >>> buckets = CategoryBuckets.of(CategoryReference(shares={"a": 0.5, "b": 0.5}, rows=100))
    >>> w = CategoryWindow({"x": buckets}, window=4, hops=2)
    >>> w.add({"x": buckets.codes(["a", "b"])}, rows=2)
    {'x': CategoryWindowResult(psi=0.0, known=2, unseen=0, present=2, share_bucket=0, share_z=0.0)}
    >>> w.add({"x": buckets.codes(["c", None])}, rows=2)
    {'x': CategoryWindowResult(psi=0.0, known=2, unseen=1, present=3, share_bucket=0, share_z=0.0)}
    >>> w.add({"x": buckets.codes(["a", "a"])}, rows=2)["x"].known
    2
    """

    def __init__(
        self,
        buckets: Mapping[str, CategoryBuckets],
        window: int = 1000,
        state: CategoryWindowState | None = None,
        hops: int = 1,
    ) -> None:
        """``state``: an open window to continue (features whose buckets changed start empty; its
        window and hops are kept)."""
        if window < 1 or not 1 <= hops <= window:
            raise ValueError("window must be at least 1, hops between 1 and window")
        self.buckets = dict(buckets)
        fresh = self._fresh()
        if state is None:
            self.state = CategoryWindowState(window=window, hops=hops, counts=fresh)
            return
        current = _kept(CategoryHop(counts=state.counts, unseen=state.unseen), fresh)
        self.state = CategoryWindowState(
            window=state.window,
            hops=state.hops,
            rows=state.rows,
            counts=current.counts,
            unseen=current.unseen,
            earlier=[_kept(hop, fresh) for hop in state.earlier[-(state.hops - 1) :]] if state.hops > 1 else [],
        )

    def _fresh(self) -> dict[str, list[int]]:
        return {name: [0] * len(b.expected) for name, b in self.buckets.items()}

    @property
    def hop(self) -> int:
        """Rows between two closes."""
        return max(1, self.state.window // self.state.hops)

    @property
    def remaining(self) -> int:
        """Rows until the open hop closes a window (at least 1)."""
        return self.hop - self.state.rows

    def add(self, codes: Mapping[str, NDArray[np.int64]], rows: int) -> dict[str, CategoryWindowResult] | None:
        """Count ``rows`` rows at once, one coded column per feature (a feature without a column
        counts as missing); the rows must fit in the open hop."""
        if not 0 < rows <= self.remaining:
            raise ValueError(f"{rows} rows do not fit the {self.remaining} left in the window")
        state = self.state
        for name, column in codes.items():
            buckets = self.buckets.get(name)
            if buckets is None:
                continue
            counts, unseen = buckets.counts(column)
            state.counts[name] = [a + b for a, b in zip(state.counts[name], counts, strict=True)]
            state.unseen[name] = state.unseen.get(name, 0) + unseen
        state.rows += rows
        if state.rows < self.hop:
            return None
        hops = [*state.earlier, CategoryHop(counts=state.counts, unseen=state.unseen)]
        result = {}
        for name, b in self.buckets.items():
            counts = [sum(column) for column in zip(*(h.counts[name] for h in hops), strict=True)]
            known, unseen = sum(counts), sum(h.unseen.get(name, 0) for h in hops)
            present = known if b.unseen_bucket is not None else known + unseen
            bucket, z = b.largest_share_z(counts)
            result[name] = CategoryWindowResult(
                psi=b.psi(counts), known=known, unseen=unseen, present=present, share_bucket=bucket, share_z=z
            )
        self.state = CategoryWindowState(
            window=state.window,
            hops=state.hops,
            counts=self._fresh(),
            earlier=hops[1 - state.hops :] if state.hops > 1 else [],
        )
        return result
