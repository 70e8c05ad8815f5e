"""Training and ONNX export time for every allow-listed estimator, 50,000 rows x 20 features.

Uses scikit-learn's make_classification (generated, nothing downloaded), default parameters
as a spec without ``params`` would get them, and the trainer's own build and export code.

    .venv/bin/python benchmarks/bench_trainer.py [ROWS]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from sklearn.datasets import make_classification

from services.trainer.estimators import ALLOWED, build_estimator
from services.trainer.export import check_parity, to_onnx


def main(rows: int) -> None:
    X, y = make_classification(n_samples=rows, n_features=20, n_informative=12, n_classes=2, random_state=0)
    X_test = X[-2000:]
    print(f"trainer: {rows:,} rows x 20 features, 2 classes (sklearn make_classification)")
    print(f"{'estimator':<32} {'fit s':>8} {'export s':>9} {'onnx KiB':>9} {'max |p diff|':>13}")
    for name in ALLOWED:
        pipeline = build_estimator(name, {}, seed=42)
        started = time.perf_counter()
        pipeline.fit(X, y)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        onnx, _ = to_onnx(pipeline, X.shape[1])
        export_s = time.perf_counter() - started
        parity = check_parity(onnx, pipeline, np.asarray(X_test))
        print(f"{name:<32} {fit_s:>8.2f} {export_s:>9.2f} {len(onnx) / 1024:>9.0f} {parity.max_abs_diff:>13.2e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
