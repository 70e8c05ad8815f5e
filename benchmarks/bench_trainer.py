"""Training and ONNX export time for every allow-listed estimator: all-numeric and mixed-type tables.

* numeric: 50,000 rows x 20 features from scikit-learn's make_classification (generated,
  nothing downloaded), fed as the ``[N, F]`` matrix all-numeric models take.
* regression: the same for every allowed regressor, on make_regression's targets moved to a
  price's scale (around 2,000); parity as a share of the predictions' scale, and the MAE.
* mixed: 50,000 rows x 18 typed features (10 numeric, 6 categorical of 3 to 300 categories
  with a Zipf-like spread, 2 boolean; about 5 % missing in each), generated with a seeded
  numpy generator, fed one column per feature as typed models take them. Parity is checked on
  2,000 holdout rows plus the probes of unseen categories and missing values the runner adds.

Default parameters as a spec without ``params`` would get them, and the trainer's own build,
fit, export and parity code.

    .venv/bin/python benchmarks/bench_trainer.py [ROWS] [--case numeric|regression|mixed|all]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import make_classification, make_regression

from services.trainer.estimators import build_estimator
from services.trainer.export import TypedColumns, check_parity, to_onnx
from services.trainer.runner import fit_pipeline, predict_onnx
from shared.spec import CLASSIFIERS, REGRESSORS, FeatureSpec, LabelSpec, ModelSpec, TrainingSpec

HOLDOUT = 2000
CARDINALITIES = (3, 5, 10, 20, 60, 300)


def fit_and_export(name: str, X: np.ndarray, y: np.ndarray) -> tuple[Any, float, bytes, float]:
    """The allow-listed estimator fitted on ``X``, its fit seconds, its ONNX and the export seconds."""
    pipeline = build_estimator(name, {}, seed=42)
    started = time.perf_counter()
    pipeline.fit(X, y)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    onnx, _ = to_onnx(pipeline, X.shape[1])
    return pipeline, fit_s, onnx, time.perf_counter() - started


def numeric(rows: int) -> None:
    X, y = make_classification(n_samples=rows, n_features=20, n_informative=12, n_classes=2, random_state=0)
    X_test = X[-HOLDOUT:]
    print(f"trainer: {rows:,} rows x 20 numeric features, 2 classes (sklearn make_classification)")
    print(f"{'estimator':<32} {'fit s':>8} {'export s':>9} {'onnx KiB':>9} {'max |p diff|':>13}")
    for name in CLASSIFIERS:
        pipeline, fit_s, onnx, export_s = fit_and_export(name, X, y)
        parity = check_parity(onnx, pipeline, np.asarray(X_test))
        print(f"{name:<32} {fit_s:>8.2f} {export_s:>9.2f} {len(onnx) / 1024:>9.0f} {parity.max_abs_diff:>13.2e}")


def regression(rows: int) -> None:
    X, y = make_regression(n_samples=rows, n_features=20, n_informative=12, noise=10.0, random_state=0)
    y = y + 2000.0
    X_train, y_train, X_test, y_test = X[:-HOLDOUT], y[:-HOLDOUT], X[-HOLDOUT:], y[-HOLDOUT:]
    print(f"\ntrainer: {rows:,} rows x 20 numeric features, a number near 2,000 (sklearn make_regression)")
    print(f"{'estimator':<32} {'fit s':>8} {'export s':>9} {'onnx KiB':>9} {'rel |diff|':>11} {'mae':>9}")
    for name in REGRESSORS:
        pipeline, fit_s, onnx, export_s = fit_and_export(name, X_train, y_train)
        parity = check_parity(onnx, pipeline, np.asarray(X_test))
        values, _ = predict_onnx(onnx, X_test)
        relative = parity.max_abs_diff / max(1.0, float(np.max(np.abs(values))))
        mae = float(np.mean(np.abs(values - y_test)))
        print(
            f"{name:<32} {fit_s:>8.2f} {export_s:>9.2f} {len(onnx) / 1024:>9.0f} {relative:>11.1e} {mae:>9.2f}"
            + ("" if parity.passed else f"  PARITY FAILED: {parity.reason}")
        )


def mixed_table(rows: int, seed: int = 0) -> tuple[TypedColumns, NDArray[np.int64]]:
    """10 numeric, 6 categorical and 2 boolean features, ~5 % missing each, and a label that uses all three kinds."""
    rng = np.random.default_rng(seed)
    columns: dict[str, NDArray[np.float64] | NDArray[np.object_]] = {}
    names: list[str] = []
    types: list[str] = []
    score = np.zeros(rows)
    for i in range(10):
        values = rng.normal(size=rows)
        score += values * (1.0 if i < 3 else 0.1)
        values[rng.random(rows) < 0.05] = np.nan
        names.append(f"num{i}")
        types.append("numeric")
        columns[f"num{i}"] = values
    for j, cardinality in enumerate(CARDINALITIES):
        codes = rng.zipf(1.5, rows) % cardinality
        effect = rng.normal(size=cardinality)
        score += effect[codes]
        texts = np.array([f"c{code}" for code in codes], dtype=object)
        texts[rng.random(rows) < 0.05] = None
        names.append(f"cat{j}")
        types.append("categorical")
        columns[f"cat{j}"] = texts
    for k in range(2):
        flags = rng.random(rows) < 0.4
        score += flags * (1.0 if k == 0 else 0.2)
        values = np.array(flags.tolist(), dtype=object)
        values[rng.random(rows) < 0.05] = None
        names.append(f"flag{k}")
        types.append("boolean")
        columns[f"flag{k}"] = values
    noisy = score + rng.normal(size=rows)
    y = (noisy > np.median(noisy)).astype(np.int64)
    return TypedColumns.of(names, types, columns), y


def mixed(rows: int) -> None:
    table, y = mixed_table(rows)
    split = rows - HOLDOUT
    train, test = table.take(slice(0, split)), table.take(slice(split, rows))
    probed = test.with_probes()
    features = [
        FeatureSpec.model_validate({"name": n, "type": t, "allow_missing": True})
        for n, t in zip(table.names, table.types, strict=True)
    ]
    spread = "/".join(map(str, CARDINALITIES))
    print(f"\ntrainer: {rows:,} rows x 18 typed features (10 numeric, 6 categorical of {spread} categories,")
    print(f"2 boolean; ~5 % missing), 2 classes; parity on {len(probed):,} rows incl. unseen / missing probes")
    header = ["fit s", "export s", "parity s", "onnx KiB", "max |p diff|", "accuracy"]
    print(f"{'estimator':<32} " + " ".join(f"{h:>{max(9, len(h))}}" for h in header))
    for name in CLASSIFIERS:
        spec = ModelSpec(
            name="bench",
            features=features,
            label=LabelSpec(values=[0, 1]),
            training=TrainingSpec.model_validate({"estimator": name, "seed": 42}),
        )
        started = time.perf_counter()
        pipeline, _ = fit_pipeline(spec, train, y[:split])
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        onnx, _ = to_onnx(pipeline, spec.feature_names, spec.feature_types)
        export_s = time.perf_counter() - started
        started = time.perf_counter()
        parity = check_parity(onnx, pipeline, probed)
        parity_s = time.perf_counter() - started
        labels, _ = predict_onnx(onnx, test)
        accuracy = float(np.mean(labels == y[split:]))
        print(
            f"{name:<32} {fit_s:>9.2f} {export_s:>9.2f} {parity_s:>9.2f} {len(onnx) / 1024:>9.0f} "
            f"{parity.max_abs_diff:>12.2e} {accuracy:>9.4f}"
            + ("" if parity.passed else f"  PARITY FAILED: {parity.reason}")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("rows", nargs="?", type=int, default=50_000)
    parser.add_argument("--case", choices=["numeric", "regression", "mixed", "all"], default="all")
    args = parser.parse_args()
    if args.case in ("numeric", "all"):
        numeric(args.rows)
    if args.case in ("regression", "all"):
        regression(args.rows)
    if args.case in ("mixed", "all"):
        mixed(args.rows)


if __name__ == "__main__":
    main()
