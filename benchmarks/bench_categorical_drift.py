"""Categorical drift of the monitor's core: false alarms on stable streams, delay to a doubled share.

Each case is a categorical (or boolean) feature with known true category shares. Its reference
is built by the trainer's own :func:`shared.reference.category_reference` from a 5,000-row
training sample -- the shares of its 50 most frequent categories, the rest summed under
``OTHER_CATEGORIES`` -- and live rows go through
:class:`~services.monitor.drift.ModelDrift` as the monitor service feeds it: typed rows
(strings, booleans, nulls) in messages of ``--batch`` predictions, default monitoring spec
(PSI windows of 1,000 rows, 200 confirmation samples, 10-minute cooldown).

* **False alarms**: every published alarm on the feature (category PSI or unseen categories) in
  ``--stable`` samples of the training distribution, plus the pre-change part of every delay run.
  Target 0 per 100,000 stable samples.
* **Detection delay**: samples from the change -- one category's share doubles, the others
  shrink in proportion -- to the published category-share alarm on the feature (its PSI, or one
  bucket's share z: detector ``share-z``). The change falls
  at a different place in the PSI window in each run (a window straddling the change is only
  partly drifted). Target: confirmed within 2,000 samples; none within ``--after`` is a miss.
* **Unseen categories**: the same, when a category training never saw takes 3 % of the values.
* **Throughput**: typed rows per second through ``observe_predictions`` (5 categorical and 5
  numeric features), beside the all-numeric path.

    .venv/bin/python benchmarks/bench_categorical_drift.py            # a few seconds
    .venv/bin/python benchmarks/bench_categorical_drift.py --stable 20000 --seeds 4   # quick
    .venv/bin/python benchmarks/bench_categorical_drift.py --no-share-z   # the category PSI alone
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from services.monitor.category_drift import SHARE_Z
from services.monitor.drift import DriftSettings, ModelDrift
from shared.features import BOOLEAN, CATEGORICAL
from shared.reference import (
    FeatureReference,
    FeatureStats,
    PredictionReference,
    Reference,
    category_reference,
    histogram,
)
from shared.spec import MonitoringSpec

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(milliseconds=10)
"""Event time between predictions (100/s): the 10-minute cooldown spans 60,000 samples."""
TRAIN_ROWS = 5000
MAX_DELAY = 2000
MIN_RATE = 20_000
SHARES = ("PSI", SHARE_Z)
"""The detectors of a category-share alarm (the window's PSI, or one bucket's share z)."""
LABELS = {"a": 0.5, "b": 0.5}
"""Predicted classes (alternating in every stream: no prediction drift)."""


def zipf(n: int, s: float) -> list[float]:
    weights = [1.0 / k**s for k in range(1, n + 1)]
    return [w / sum(weights) for w in weights]


@dataclass(frozen=True)
class Case:
    """A feature: its categories and true shares, and the category whose share doubles."""

    name: str
    categories: list[Any]
    """Live values (strings, or booleans for a boolean feature)."""
    shares: list[float]
    doubled: Any
    boolean: bool = False
    target: bool = True
    """Held to the 2,000-sample target; False: a case past the method's reach, shown for its figures."""

    def after(self) -> list[float]:
        """The shares once ``doubled``'s share has doubled (the others shrink in proportion)."""
        i = self.categories.index(self.doubled)
        p = self.shares[i]
        rest = (1.0 - 2 * p) / (1.0 - p)
        return [2 * p if j == i else s * rest for j, s in enumerate(self.shares)]


TAIL = [0.35, 0.2, 0.12, 0.09, 0.07, 0.05, 0.04, 0.03, 0.025, 0.015, 0.007, 0.003]
TAIL_2 = [0.35, 0.2, 0.12, 0.09, 0.07, 0.05, 0.04, 0.03, 0.02, 0.02, 0.007, 0.003]
"""The same tail with two categories of 2 % (c08 and c09)."""
CASES = [
    Case("3 categories 50/30/20, 20 % -> 40 %", ["a", "b", "c"], [0.5, 0.3, 0.2], "c"),
    Case("12 categories, long tail, 9 % -> 18 %", [f"c{i:02d}" for i in range(12)], TAIL, "c03"),
    Case("12 categories, long tail, 5 % -> 10 %", [f"c{i:02d}" for i in range(12)], TAIL, "c05"),
    Case("12 categories, long tail, 2 % -> 4 % (*)", [f"c{i:02d}" for i in range(12)], TAIL_2, "c08", target=False),
    Case("boolean 10/90, true 10 % -> 20 %", [True, False], [0.1, 0.9], True, boolean=True),
    Case("300 categories, Zipf 1.1, top 19 % -> 38 %", [f"z{i:03d}" for i in range(300)], zipf(300, 1.1), "z000"),
]


def reference_of(case: Case, rng: np.random.Generator) -> Reference:
    """The trainer's reference (:func:`shared.reference.category_reference`) of a training sample:
    the shares of the 50 most frequent categories, the rest summed under ``OTHER_CATEGORIES``."""
    sample = rng.choice(len(case.categories), size=TRAIN_ROWS, p=case.shares)
    kind = BOOLEAN if case.boolean else CATEGORICAL
    return Reference(
        features={},
        predictions=PredictionReference(label_distribution=LABELS, probability_histograms={}),
        categories={"x": category_reference([case.categories[i] for i in sample], kind)},
    )


def values(case: Case, shares: list[float], n: int, rng: np.random.Generator) -> list[Any]:
    picks = rng.choice(len(case.categories), size=n, p=shares)
    return [case.categories[i] for i in picks]


@dataclass
class Run:
    stable: int = 0
    false_alarms: list[str] = field(default_factory=list)
    delay: int | None = None


def stream(
    reference: Reference,
    rows: list[Any],
    change_at: int | None,
    batch: int,
    settings: DriftSettings,
    detectors: tuple[str, ...] = SHARES,
) -> Run:
    """Typed rows through ModelDrift in messages of ``batch`` rows; alarms on the feature are
    false before ``change_at`` (or anywhere without a change), the first one of ``detectors`` after
    it is the detection (a new category flooding in also grows the "other" bucket: a PSI alarm after
    the change is no false one)."""
    drift = ModelDrift("bench", 1, reference, MonitoringSpec(), settings)
    run = Run(stable=len(rows) if change_at is None else change_at)
    for s in range(0, len(rows), batch):
        e = min(len(rows), s + batch)
        update = drift.observe_predictions(
            ["x"],
            [[v] for v in rows[s:e]],
            ["a" if i % 2 else "b" for i in range(s, e)],
            np.empty((e - s, 0)),
            [],
            [T0 + i * STEP for i in range(s, e)],
        )
        for alarm in update.alarms:
            if alarm.kind != "data":
                continue
            i = e - 1
            if change_at is None or i < change_at:
                run.false_alarms.append(f"{alarm.detector}@{i}")
            elif alarm.detector in detectors and run.delay is None:  # after the change any alarm is news
                run.delay = i - change_at + 1
        if run.delay is not None:
            break
    return run


@dataclass
class Quality:
    stable: int = 0
    false_alarms: list[str] = field(default_factory=list)
    delays: list[int | None] = field(default_factory=list)


def quality(
    case: Case,
    stable: int,
    seeds: int,
    before: int,
    after: int,
    batch: int,
    unseen: float,
    settings: DriftSettings,
) -> Quality:
    """False alarms over ``stable`` samples and per-seed delays: ``before`` + an offset (the change
    moves through the PSI window from seed to seed) stable samples, then ``after`` changed ones:
    the doubled share, or (``unseen`` > 0) a category training never saw at that share."""
    result = Quality()
    rng = np.random.default_rng(1)
    if stable:
        run = stream(reference_of(case, rng), values(case, case.shares, stable, rng), None, batch, settings)
        result.stable += run.stable
        result.false_alarms += run.false_alarms
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        reference = reference_of(case, rng)
        change_at = before + (seed * 1000) // max(seeds, 1)
        rows = values(case, case.shares, change_at, rng)
        if unseen:
            changed = values(case, case.shares, after, rng)
            rows += ["never-seen" if u < unseen else v for u, v in zip(rng.random(after), changed, strict=True)]
        else:
            rows += values(case, case.after(), after, rng)
        run = stream(reference, rows, change_at, batch, settings, ("unseen",) if unseen else SHARES)
        result.stable += run.stable
        result.false_alarms += run.false_alarms
        result.delays.append(run.delay)
    return result


def throughput(rows: int, batch: int, repeats: int) -> dict[str, float]:
    """Predictions/s of 10-feature rows: 5 categorical (12-category tail) + 5 numeric, and all numeric."""
    rng = np.random.default_rng(5)
    tail = CASES[1]
    train = rng.normal(size=TRAIN_ROWS)
    numeric = {f"n{i}": FeatureReference(stats=FeatureStats.of(train), histogram=histogram(train)) for i in range(5)}
    categories = reference_of(tail, rng).categories["x"]
    predictions = PredictionReference(label_distribution=LABELS, probability_histograms={})
    typed = Reference(features=numeric, predictions=predictions, categories={f"c{i}": categories for i in range(5)})
    floats = Reference(features={**numeric, **{f"m{i}": numeric["n0"] for i in range(5)}}, predictions=predictions)
    numbers = rng.normal(size=(rows, 5)).tolist()
    cats = [values(tail, tail.shares, rows, rng) for _ in range(5)]
    typed_rows = [[*numbers[r], *(c[r] for c in cats)] for r in range(rows)]
    float_rows = [[*numbers[r], *numbers[r]] for r in range(rows)]
    labels = ["a" if i % 2 else "b" for i in range(rows)]
    times = [T0 + i * STEP for i in range(rows)]

    def rate(reference: Reference, names: list[str], table: list[list[Any]]) -> float:
        best = 0.0
        for _ in range(repeats):
            drift = ModelDrift("bench", 1, reference, MonitoringSpec())
            started = time.perf_counter()
            for s in range(0, rows, batch):
                e = min(rows, s + batch)
                drift.observe_predictions(names, table[s:e], labels[s:e], np.empty((e - s, 0)), [], times[s:e])
            best = max(best, rows / (time.perf_counter() - started))
        return best

    numeric_names = [f"n{i}" for i in range(5)]
    return {
        "5 numeric + 5 categorical": rate(typed, numeric_names + [f"c{i}" for i in range(5)], typed_rows),
        "10 numeric": rate(floats, numeric_names + [f"m{i}" for i in range(5)], float_rows),
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stable", type=int, default=100_000, help="stable samples per case")
    parser.add_argument("--seeds", type=int, default=10, help="change runs per case")
    parser.add_argument("--before", type=int, default=5000, help="stable samples before each change (+ an offset)")
    parser.add_argument("--after", type=int, default=4000, help="samples after each change (later = missed)")
    parser.add_argument("--batch", type=int, default=100, help="predictions per message")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs (best reported)")
    parser.add_argument(
        "--no-share-z",
        action="store_true",
        help="the category PSI alone (no per-bucket share z: the monitor before it)",
    )
    parser.add_argument(
        "--hops",
        type=int,
        default=DriftSettings().category_hops,
        help="categorical windows close every window / hops rows (1: tumbling, as numeric PSI)",
    )
    args = parser.parse_args(argv)
    settings = DriftSettings(category_hops=args.hops, category_share_z=not args.no_share_z)

    started = time.perf_counter()
    print(
        f"categorical drift: ModelDrift with the default MonitoringSpec, reference from {TRAIN_ROWS:,} training "
        f"rows, windows hopping every {settings.psi_window // args.hops:,} rows; {args.stable:,} stable samples "
        f"per case + {args.seeds} changes after ~{args.before:,} samples each"
    )
    header = (
        f"{'case':<46} {'signal':<7} {'stable':>8} {'false':>6} {'per 100k':>9} {'':>5}"
        f" {'delay med':>9} {'delay max':>15} {'':>5}"
    )
    print(header)
    print("-" * len(header))
    plans = [(case.name, case, 0.0, case.target) for case in CASES] + [
        ("3 categories, a new one at 3 %", CASES[0], 0.03, True),
        ("300 categories Zipf, a new one at 3 % (**)", CASES[-1], 0.03, False),
        ("300 categories Zipf, a new one at 10 %", CASES[-1], 0.10, True),
    ]
    for name, case, unseen, target in plans:
        q = quality(
            case, 0 if unseen else args.stable, args.seeds, args.before, args.after, args.batch, unseen, settings
        )
        per_100k = len(q.false_alarms) * 100_000 / q.stable if q.stable else 0.0
        found = [d for d in q.delays if d is not None]
        missed = len(q.delays) - len(found)
        median = f"{statistics.median(found):.0f}" if found else "-"
        worst = (f"{max(found)}" if found else "-") + (f" ({missed} missed)" if missed else "")
        ok = bool(found) and not missed and max(found) <= MAX_DELAY
        delay_verdict = verdict(ok) if target else "info"
        print(
            f"{name:<46} {'unseen' if unseen else 'shares':<7} {q.stable:>8,} {len(q.false_alarms):>6} {per_100k:>9.1f}"
            f" {verdict(not q.false_alarms):>5} {median:>9} {worst:>15} {delay_verdict:>5}"
        )
        if q.false_alarms:
            print(f"{'':<8}false alarms: {', '.join(q.false_alarms[:10])}")
        print(f"{'':<8}delays by seed: {', '.join('missed' if d is None else str(d) for d in q.delays)}")
    print(
        f"  delay: samples from the change to the published alarm on the feature (<= {MAX_DELAY:,}; "
        f"'missed' = none within --after)\n"
        "  (*) at the edge of reach: a 1,000-value window's share z of 2 % -> 4 % is 4.1 +- 1.3 against\n"
        "      an alert of 3.9; even a test told which category doubles needs ~2,000 values on average\n"
        "      at one false alarm per ~10 million stable values (Lorden: ln(1e7) / KL of 0.008)\n"
        "  (**) beyond reach: the trainer names the 50 most frequent of 300 categories, so ~22 % of the values\n"
        "      are not named (the unseen rate training saw); 3 points more is within 2.5 standard errors of a window"
    )
    print()
    print(f"throughput: observe_predictions, batches of {args.batch}, {args.rows:,} rows, best of {args.repeats}")
    for label, rate in throughput(args.rows, args.batch, args.repeats).items():
        print(f"  {label:<40} {rate:>10,.0f} /s {verdict(rate >= MIN_RATE):>5}  (target {MIN_RATE:,}/s)")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
