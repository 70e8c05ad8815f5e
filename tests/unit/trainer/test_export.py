"""ONNX export: every allowed classifier, int and string labels, parity with scikit-learn.

(Regressors: tests/unit/trainer/test_regression.py.)"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from sklearn.datasets import load_breast_cancer, load_wine

from services.trainer.estimators import build_estimator
from services.trainer.export import check_parity, session_for, to_onnx
from shared.spec import CLASSIFIERS

SMALL = {
    "RandomForestClassifier": {"n_estimators": 20},
    "ExtraTreesClassifier": {"n_estimators": 20},
    "GradientBoostingClassifier": {"n_estimators": 20},
    "HistGradientBoostingClassifier": {"max_iter": 30},
    "LogisticRegression": {"max_iter": 500},
    "SGDClassifier": {},
}


def wine() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled wine data: 3 classes, 13 features."""
    data = load_wine()
    return np.asarray(data.data), np.asarray(data.target)


def breast_cancer_text_labels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled breast-cancer data with string labels."""
    data = load_breast_cancer()
    return np.asarray(data.data), np.where(data.target == 1, "benign", "malignant")


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("data", [wine, breast_cancer_text_labels], ids=["wine-int", "cancer-str"])
def test_every_estimator_exports_with_parity(name: str, data: object) -> None:
    X, y = data()  # type: ignore[operator]
    pipeline = build_estimator(name, SMALL[name], seed=3).fit(X, y)
    blob, opset = to_onnx(pipeline, X.shape[1])
    assert opset == 17
    graph = onnx.load_from_string(blob).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["label", "probabilities"]
    report = check_parity(blob, pipeline, X)
    assert report.passed, report.reason
    assert report.max_abs_diff <= 1e-4 and report.label_mismatches == 0 and report.rows == len(X)
    label, proba = session_for(blob).run(["label", "probabilities"], {"input": X[:5].astype(np.float32)})
    assert proba.shape == (5, len(pipeline.classes_))
    assert [str(v) for v in label] == [str(v) for v in pipeline.predict(X[:5].astype(np.float32).astype(float))]


def test_same_fit_exports_identical_bytes() -> None:
    X, y = wine()
    pipeline = build_estimator("RandomForestClassifier", {"n_estimators": 10}, seed=1).fit(X, y)
    assert to_onnx(pipeline, X.shape[1])[0] == to_onnx(pipeline, X.shape[1])[0]


def test_parity_check_catches_a_different_model() -> None:
    X, y = wine()
    fitted = build_estimator("LogisticRegression", {"max_iter": 500}, seed=1).fit(X, y)
    other = build_estimator("RandomForestClassifier", {"n_estimators": 5}, seed=1).fit(X, y)
    report = check_parity(to_onnx(other, X.shape[1])[0], fitted, X)
    assert not report.passed
    assert "max probability difference" in report.reason and "tolerance 1e-04" in report.reason
