"""Export a fitted pipeline to ONNX (skl2onnx) and check that ONNX answers as scikit-learn does.

The ONNX graph takes one float32 tensor ``input`` of shape ``[N, F]`` (features in spec order)
and gives two plain tensors: ``label`` ``[N]`` (int64 or string, as the classes are) and
``probabilities`` ``[N, C]`` float32, whose columns follow ``pipeline.classes_``. float32,
because onnxruntime's tree ensembles compute in float32; the parity check therefore feeds
scikit-learn the same float32-rounded values.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from skl2onnx import to_onnx as skl_to_onnx
from skl2onnx.common import tree_ensemble
from skl2onnx.common.data_types import FloatTensorType

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
"""ONNX opset 17 with ai.onnx.ml 3: supported by skl2onnx 1.20 for every allowed estimator and by onnxruntime."""


def _patch_tree_thresholds() -> None:
    """Make skl2onnx's tree converters exact for scikit-learn 1.9's histogram gradient boosting.

    scikit-learn compares float32-cast inputs with float64 thresholds; an ONNX tree compares
    float32 with float32, so a threshold must be rounded to the float32 that keeps every
    comparison's outcome (skl2onnx's ``sklearn_threshold``). skl2onnx 1.20 applies this to
    decision trees but not to HistGradientBoosting, and passes a numpy bool where ONNX needs an
    int for ``nodes_missing_value_tracks_true``: without this, 0.5% of rows get another leaf.
    """
    original = tree_ensemble.add_node
    if getattr(original, "_driftloop_patched", False):
        return
    signature = inspect.signature(original)

    def add_node(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        bound.arguments["nodes_missing_value_tracks_true"] = int(bound.arguments["nodes_missing_value_tracks_true"])
        bound.arguments["adjust_threshold_for_sklearn"] = True
        if bound.arguments["dtype"] is None:
            bound.arguments["dtype"] = np.float32
        return original(*bound.args, **bound.kwargs)

    add_node._driftloop_patched = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node


_patch_tree_thresholds()


def to_onnx(pipeline: Any, n_features: int) -> tuple[bytes, int]:
    """The fitted pipeline as ONNX bytes, and the opset used."""
    model = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    onx = skl_to_onnx(
        pipeline,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    outputs = [o.name for o in onx.graph.output]
    if outputs != ["label", "probabilities"]:
        raise ValueError(f"unexpected ONNX outputs {outputs}; expected label and probabilities")
    return onx.SerializeToString(), int(TARGET_OPSET[""])


def session_for(onnx: bytes) -> ort.InferenceSession:
    """An onnxruntime session with one thread, as the inference service runs it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX matched scikit-learn on a set of rows."""

    max_abs_diff: float
    label_mismatches: int
    rows: int
    passed: bool
    reason: str


def check_parity(onnx: bytes, pipeline: Any, X: NDArray[np.float64], tolerance: float = 1e-4) -> ParityReport:
    """Compare ONNX and scikit-learn probabilities and labels on ``X``.

    Both see the same float32-rounded inputs (what serving will send). A label may differ only
    where the two best probabilities are within ``tolerance`` of each other (a tie).
    """
    X32 = np.asarray(X, dtype=np.float32)
    label, proba = session_for(onnx).run(["label", "probabilities"], {"input": X32})
    expected = pipeline.predict_proba(X32.astype(np.float64))
    expected_labels = pipeline.classes_[np.argmax(expected, axis=1)]
    diff = float(np.max(np.abs(np.asarray(proba, dtype=np.float64) - expected))) if len(X32) else 0.0
    top2 = np.sort(expected, axis=1)[:, -2:] if expected.shape[1] > 1 else np.zeros((len(X32), 2))
    ties = (top2[:, 1] - top2[:, 0]) <= tolerance
    mismatched = (np.asarray(label).astype(str) != expected_labels.astype(str)) & ~ties
    mismatches = int(mismatched.sum())
    passed = diff <= tolerance and mismatches == 0
    reason = (
        "ok"
        if passed
        else f"max probability difference {diff:.2e} (tolerance {tolerance:.0e}), "
        f"{mismatches} of {len(X32)} labels differ"
    )
    return ParityReport(max_abs_diff=diff, label_mismatches=mismatches, rows=len(X32), passed=passed, reason=reason)
