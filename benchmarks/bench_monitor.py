"""Drift detection quality and speed of the monitor's core, on River's drift generators.

Each generator is streamed through :class:`~services.monitor.drift.ModelDrift` as the monitor
service runs it: a scikit-learn model is fitted on the first regime, its reference is built by
the trainer's own ``reference(...)`` (training-window features, holdout predictions), and every
event's features, predicted label and probabilities go to ``observe_predictions`` while the
joined 0/1 error goes to ``observe_outcome`` (default monitoring spec: ADWIN on features and on
errors, PSI windows of 1,000, 200 confirmation samples).

* **False alarms**: every published alarm (data, prediction or concept) on stable streams of the
  first regime -- a long stable run per generator plus the pre-change part of every delay run --
  and every data/prediction alarm after the change (the generators change only the concept, so
  features and predictions never drift). Target 0 per 100,000 stable labelled samples.
* **Detection delay**: labelled samples from an abrupt concept change to the published concept
  alarm, over several seeds. The change is a generator switch at ``--before`` -- what River's
  ``ConceptDriftStream(width=1)`` means, which River 0.26 cannot generate past position ~177
  (``math.exp`` overflows in its sigmoid). Target < 1,000; a change not confirmed within
  ``--after`` samples counts as missed (FAIL).
* **Throughput**: predictions/s of one ``ModelDrift`` on 20-feature rows (River's Hyperplane;
  ``--features 20,100,300`` for wider ones),
  per message (``observe_predictions`` on batches of ``--batch`` rows, as ``handlers.py`` calls
  it for each ``PredictionsLogged``), without and with the outcome stream
  (one ``observe_outcome`` per prediction). Best of ``--repeats``. Target >= 20,000/s.

    .venv/bin/python benchmarks/bench_monitor.py              # about 1-2 minutes
    .venv/bin/python benchmarks/bench_monitor.py --stable 20000 --seeds 3 --rows 10000   # quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from river.datasets import synth
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from services.monitor.drift import ModelDrift
from shared.reference import Reference
from shared.reference import build_reference as reference
from shared.spec import MonitoringSpec

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(milliseconds=10)
"""Event time between predictions (100/s): the 10-minute cooldown spans 60,000 samples."""
TRAIN_ROWS = 5000
HOLDOUT = 0.2
MAX_DELAY = 1000
MIN_RATE = 20_000

Generator = Callable[[int], Any]
"""A seed -> a River dataset of the first regime (or the drift regime)."""


@dataclass(frozen=True)
class Case:
    """One generator: its first regime, the regime after the abrupt change (each from a seed),
    and the model fitted on the first."""

    name: str
    change: str
    before: Generator
    after: Generator
    model: Callable[[], Any]


CASES = [
    Case(
        "SEA",
        "variant 0 -> 2, noise 0.1",
        lambda seed: synth.SEA(variant=0, noise=0.1, seed=seed),
        lambda seed: synth.SEA(variant=2, noise=0.1, seed=seed),
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
    ),
    Case(
        "SEA",
        "variant 0 -> 3, noise 0.1",
        lambda seed: synth.SEA(variant=0, noise=0.1, seed=seed),
        lambda seed: synth.SEA(variant=3, noise=0.1, seed=seed),
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
    ),
    Case(
        "Agrawal",
        "function 0 -> 2",
        lambda seed: synth.Agrawal(classification_function=0, seed=seed),
        lambda seed: synth.Agrawal(classification_function=2, seed=seed),
        lambda: DecisionTreeClassifier(max_depth=8, random_state=0),
    ),
    Case(
        "Hyperplane",
        "another plane (10 features, 5% noise)",
        lambda seed: synth.Hyperplane(seed=seed, n_features=10, n_drift_features=0, noise_percentage=0.05),
        lambda seed: synth.Hyperplane(seed=seed, n_features=10, n_drift_features=0, noise_percentage=0.05),
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
    ),
]


def take(dataset: Any, n: int) -> tuple[list[str], NDArray[np.float64], NDArray[np.int64]]:
    """``n`` samples as a feature matrix (the generator's feature order) and 0/1 labels."""
    rows: list[list[float]] = []
    labels: list[int] = []
    names: list[str] = []
    for x, y in dataset.take(n):
        if not names:
            names = [str(k) for k in x]
        rows.append([float(v) for v in x.values()])
        labels.append(int(y))
    return names, np.asarray(rows, dtype=np.float64), np.asarray(labels, dtype=np.int64)


@dataclass
class Trained:
    """The first regime's model and its model-card reference."""

    names: list[str]
    model: Any
    reference: Reference


def train(names: list[str], X: NDArray[np.float64], y: NDArray[np.int64], make: Callable[[], Any]) -> Trained:
    """Fit on the first regime (time-ordered split) and build the reference like the trainer."""
    split = int(len(X) * (1 - HOLDOUT))
    model = make().fit(X[:split], y[:split])
    proba = model.predict_proba(X[split:])
    y_pred = model.classes_[np.argmax(proba, axis=1)]
    return Trained(names, model, reference(X[:split], names, y_pred, proba, list(model.classes_)))


def first_regime(case: Case, seed: int, samples: int) -> tuple[Trained, NDArray[np.float64], NDArray[np.int64]]:
    """A model trained on the first ``TRAIN_ROWS`` samples of a stream, and its next ``samples``."""
    names, X, y = take(case.before(seed), TRAIN_ROWS + samples)
    return train(names, X[:TRAIN_ROWS], y[:TRAIN_ROWS], case.model), X[TRAIN_ROWS:], y[TRAIN_ROWS:]


@dataclass
class Run:
    """What one stream through ModelDrift published."""

    stable: int = 0
    false_alarms: list[str] = field(default_factory=list)
    delay: int | None = None
    errors_before: float = 0.0
    errors_after: float = 0.0


def stream(trained: Trained, X: NDArray[np.float64], y: NDArray[np.int64], change_at: int | None) -> Run:
    """Every event through the service's calls: the prediction, then its joined outcome."""
    proba = trained.model.predict_proba(X)  # the same answers as predicting event by event
    predicted = trained.model.classes_[np.argmax(proba, axis=1)]
    classes = [str(c) for c in trained.model.classes_]
    drift = ModelDrift("bench", 1, trained.reference, MonitoringSpec())
    run = Run(stable=len(X) if change_at is None else change_at)
    wrong = predicted != y
    run.errors_before = float(np.mean(wrong[:change_at]))
    run.errors_after = float(np.mean(wrong[change_at:])) if change_at is not None else run.errors_before
    for i, (row, label, p, truth) in enumerate(
        zip(X.tolist(), predicted.tolist(), proba.tolist(), y.tolist(), strict=True)
    ):
        at = T0 + i * STEP
        alarms = drift.observe_predictions(trained.names, [row], [label], [p], classes, [at]).alarms
        alarms += drift.observe_outcome(label != truth, at).alarms
        for alarm in alarms:
            after_change = change_at is not None and i >= change_at
            if after_change and alarm.kind == "concept" and run.delay is None:
                run.delay = i - change_at + 1
            elif not after_change or alarm.kind != "concept":
                run.false_alarms.append(f"{alarm.kind}:{alarm.feature or ''}@{i}")
    return run


@dataclass
class Quality:
    """One generator's figures."""

    stable: int = 0
    false_alarms: list[str] = field(default_factory=list)
    delays: list[int | None] = field(default_factory=list)
    errors: list[tuple[float, float]] = field(default_factory=list)
    """Error rate of the model before and after each change."""


def quality(case: Case, stable: int, seeds: int, before: int, after: int) -> Quality:
    """Stable samples, false alarms and per-seed delays for one generator.

    Every run trains its own model on the first ``TRAIN_ROWS`` samples of its stream, which
    then goes on: ``stable`` more samples of the first regime, or ``before`` of them and then
    ``after`` of the second regime (another seed, so another Hyperplane plane).
    """
    result = Quality()
    if stable:
        trained, X, y = first_regime(case, 10_000, stable)
        run = stream(trained, X, y, None)
        result.stable += run.stable
        result.false_alarms += run.false_alarms
    for seed in range(seeds):
        trained, X0, y0 = first_regime(case, seed, before)
        _, X1, y1 = take(case.after(seed + 1000), after)
        run = stream(trained, np.vstack([X0, X1]), np.concatenate([y0, y1]), before)
        result.stable += run.stable
        result.false_alarms += run.false_alarms
        result.delays.append(run.delay)
        result.errors.append((run.errors_before, run.errors_after))
    return result


# --- throughput ------------------------------------------------------------------------------


def throughput(rows: int, batch: int, repeats: int, width: int = 20) -> dict[str, tuple[float, float]]:
    """Predictions/s on ``width``-feature rows per message, without and with outcomes
    (wall clock, and per CPU second of this process -- steadier on a shared machine)."""
    case = Case(
        f"Hyperplane-{width}",
        "",
        lambda seed: synth.Hyperplane(seed=seed, n_features=width, n_drift_features=0, noise_percentage=0.05),
        lambda seed: None,
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
    )
    trained, X, y = first_regime(case, 7, rows)
    proba = trained.model.predict_proba(X)
    predicted = trained.model.classes_[np.argmax(proba, axis=1)].tolist()
    errors = [p != t for p, t in zip(predicted, y.tolist(), strict=True)]
    classes = [str(c) for c in trained.model.classes_]
    times = [T0 + i * STEP for i in range(rows)]
    matrix, proba_rows = X.tolist(), proba.tolist()

    def batched(outcomes: bool) -> tuple[float, float]:
        drift = ModelDrift("bench", 1, trained.reference, MonitoringSpec())
        wall, cpu = time.perf_counter(), time.process_time()
        for s in range(0, rows, batch):
            e = min(rows, s + batch)
            drift.observe_predictions(trained.names, matrix[s:e], predicted[s:e], proba_rows[s:e], classes, times[s:e])
            if outcomes:
                for i in range(s, e):
                    drift.observe_outcome(errors[i], times[i])
        return rows / (time.perf_counter() - wall), rows / (time.process_time() - cpu)

    results: dict[str, tuple[float, float]] = {}
    for label, run, outcomes in [
        (f"observe_predictions (batches of {batch})", batched, False),
        (f"observe_predictions + observe_outcome (batches of {batch})", batched, True),
    ]:
        runs = [run(outcomes) for _ in range(repeats)]
        results[label] = (max(r[0] for r in runs), max(r[1] for r in runs))
    return results


# --- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def delays_text(delays: list[int | None]) -> tuple[str, str, bool]:
    found = [d for d in delays if d is not None]
    missed = len(delays) - len(found)
    if not found:
        return "-", "-", False
    median = f"{statistics.median(found):.0f}"
    worst = f"{max(found)}" + (f" ({missed} missed)" if missed else "")
    return median, worst, missed == 0 and max(found) < MAX_DELAY


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stable", type=int, default=100_000, help="stable labelled samples per generator")
    parser.add_argument("--seeds", type=int, default=5, help="abrupt-change runs per generator")
    parser.add_argument("--before", type=int, default=5000, help="stable samples before each change")
    parser.add_argument("--after", type=int, default=3000, help="samples after each change (later = missed)")
    parser.add_argument("--rows", type=int, default=20_000, help="20-feature rows per throughput run")
    parser.add_argument("--batch", type=int, default=1000, help="rows per observe_predictions call")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per path (best reported)")
    parser.add_argument(
        "--features",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[20],
        help="features of the throughput rows: one count, or several (20,100,300)",
    )
    parser.add_argument(
        "--only", nargs="*", choices=list(dict.fromkeys(c.name for c in CASES)), help="generators to run"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    print(
        f"monitor: ModelDrift with the default MonitoringSpec; {args.stable:,} stable samples per generator + "
        f"{args.seeds} abrupt changes (generator switch) after {args.before:,} samples each"
    )
    header = (
        f"{'generator':<11} {'change':<40} {'error':>11} {'stable':>8} {'false':>6} {'per 100k':>9} {'':>5}"
        f" {'delay med':>9} {'delay max':>15} {'':>5}"
    )
    print(header)
    print("-" * len(header))
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        q = quality(case, args.stable, args.seeds, args.before, args.after)
        per_100k = len(q.false_alarms) * 100_000 / q.stable if q.stable else 0.0
        median, worst, delay_ok = delays_text(q.delays)
        error = "-"
        if q.errors:
            error = f"{statistics.mean(e[0] for e in q.errors):.2f}->{statistics.mean(e[1] for e in q.errors):.2f}"
        print(
            f"{case.name:<11} {case.change:<40} {error:>11} {q.stable:>8,} {len(q.false_alarms):>6} {per_100k:>9.1f}"
            f" {verdict(not q.false_alarms):>5} {median:>9} {worst:>15} {verdict(delay_ok):>5}"
        )
        if q.false_alarms:
            print(f"            false alarms: {', '.join(q.false_alarms[:10])}")
        if q.delays:
            print(f"            delays by seed: {', '.join('missed' if d is None else str(d) for d in q.delays)}")
    print(
        f"  error: the model's error rate before -> after the change; delay: labelled samples from the change to "
        f"the published concept alarm (< {MAX_DELAY:,}; 'missed' = none within --after)"
    )
    print()
    for width in args.features:
        print(f"throughput: one ModelDrift, {width} features (Hyperplane), {args.rows:,} rows, best of {args.repeats}")
        target = f"(target {MIN_RATE:,} predictions/s, wall)" if width == 20 else ""
        print(f"  {'path':<62} {'wall /s':>10} {'CPU /s':>10}  {target}")
        for label, (wall, cpu) in throughput(args.rows, args.batch, args.repeats, width).items():
            shown = verdict(wall >= MIN_RATE) if width == 20 else ""
            print(f"  {label:<62} {wall:>10,.0f} {cpu:>10,.0f} {shown:>5}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
