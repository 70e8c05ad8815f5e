"""Export a fitted pipeline to ONNX (skl2onnx) and check that ONNX answers as scikit-learn does.

The ONNX graph of an all-numeric model takes one float32 tensor ``input`` of shape ``[N, F]``
(features in spec order, :data:`shared.features.MATRIX`); a typed model's graph takes one
``[N, 1]`` tensor per feature, named as the feature (:data:`shared.features.COLUMNS`): float32
for numeric and boolean features, string for categorical ones. A classifier's graph gives two
plain tensors: ``label`` ``[N]`` (int64 or string, as the classes are) and ``probabilities``
``[N, C]`` float32, whose columns follow ``pipeline.classes_``; a regressor's graph gives one,
``prediction`` ``[N, 1]`` float32 (:data:`shared.features.REGRESSION_OUTPUTS`). float32, because
onnxruntime's tree ensembles compute in float32; the parity check therefore feeds scikit-learn
the same float32-rounded values (for a typed model, the frame
:func:`shared.features.frame_columns` builds from the very values
:func:`shared.features.onnx_feeds` sends), and holds a regressor's predictions to a tolerance
relative to their scale (:data:`REGRESSION_RTOL`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from numpy.typing import NDArray
from skl2onnx import to_onnx as skl_to_onnx
from skl2onnx.common import tree_ensemble
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import is_regressor

from shared.features import (
    CATEGORICAL,
    GRAPH_OUTPUTS,
    MATRIX,
    NUMERIC,
    REGRESSION_OUTPUTS,
    frame_columns,
    graph_outputs,
    layout_of,
    onnx_feeds,
)

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


OUTPUTS = GRAPH_OUTPUTS
PROBE_ROWS = 32
"""Rows of each kind of probe :meth:`TypedColumns.with_probes` adds to a parity check."""
UNSEEN_CATEGORY = "driftloop:unseen-category"
"""The category the parity probes put in every categorical feature (no training row has it)."""


@dataclass(frozen=True)
class TypedColumns:
    """Rows of a typed model as one column per feature, the form datasets and serving have them.

    ``columns`` maps each feature to its values as ``DatasetRepository.load`` returns them
    (numeric float64 with NaN for missing, boolean ``True`` / ``False`` / ``None``, categorical
    text or ``None``); event values work too. The graph gets :meth:`feeds`, scikit-learn
    :meth:`frame`: the same values, by :mod:`shared.features`.
    """

    names: tuple[str, ...]
    types: tuple[str, ...]
    columns: Mapping[str, NDArray[Any]]

    @classmethod
    def of(
        cls, names: Sequence[str], types: Sequence[str], columns: Mapping[str, Sequence[Any] | NDArray[Any]]
    ) -> TypedColumns:
        """Rows from per-feature values (every feature of ``names`` needs a column of one length)."""
        if len(names) != len(types):
            raise ValueError(f"{len(names)} feature names but {len(types)} types")
        arrays = {name: _array(columns[name], kind) for name, kind in zip(names, types, strict=True)}
        if len({len(a) for a in arrays.values()}) > 1:
            lengths = {name: len(a) for name, a in arrays.items()}
            raise ValueError(f"columns of different lengths: {lengths}")
        return cls(tuple(names), tuple(types), arrays)

    @classmethod
    def of_matrix(cls, names: Sequence[str], X: NDArray[np.float64]) -> TypedColumns:
        """Rows of an all-numeric matrix (columns in ``names`` order) as columns."""
        return cls.of(names, [NUMERIC] * len(names), {name: X[:, i] for i, name in enumerate(names)})

    def __len__(self) -> int:
        return len(self.columns[self.names[0]]) if self.names else 0

    def take(self, rows: slice | NDArray[np.intp]) -> TypedColumns:
        """These rows only (a slice or an index array)."""
        return TypedColumns(self.names, self.types, {name: self.columns[name][rows] for name in self.names})

    def feeds(self) -> dict[str, NDArray[Any]]:
        """The inputs of a :data:`shared.features.COLUMNS` graph."""
        return onnx_feeds(self.names, self.types, self.columns)

    def frame(self) -> pd.DataFrame:
        """What the pipeline fits on and predicts from: one column per feature, by name.

        Categorical columns stay ``object`` dtype (text, missing as ``""``), as the encoder's
        categories are; numeric and boolean ones are float64 of float32-rounded values.
        """
        frame = frame_columns(self.names, self.types, self.columns)
        return pd.DataFrame(
            {
                name: pd.Series(frame[name], dtype=object if kind == CATEGORICAL else np.float64, copy=False)
                for name, kind in zip(self.names, self.types, strict=True)
            }
        )

    def matrix(self) -> NDArray[np.float64]:
        """The rows as the ``[N, F]`` matrix of a :data:`shared.features.MATRIX` graph (all numeric)."""
        if layout_of(self.types) != MATRIX:
            raise ValueError("only all-numeric rows make a matrix")
        return np.column_stack([self.columns[name] for name in self.names]).astype(np.float64).reshape(len(self), -1)

    def with_probes(self, rows: int = PROBE_ROWS, seed: int = 0) -> TypedColumns:
        """These rows, then probes of what serving may send that the training rows may lack.

        From the first ``rows`` rows (repeated when there are fewer): the same rows with every
        categorical feature set to :data:`UNSEEN_CATEGORY`; with every feature missing; with
        each value missing at random (seeded), so both paths see unseen categories and missing
        values of every type.
        """
        n = len(self)
        if n == 0 or rows <= 0:
            return self
        base = np.arange(rows) % n
        drop = np.random.default_rng(seed).random((rows, len(self.names))) < 0.5
        columns: dict[str, NDArray[Any]] = {}
        for j, (name, kind) in enumerate(zip(self.names, self.types, strict=True)):
            values = self.columns[name]
            head = values[base]
            gap: Any = math.nan if kind == NUMERIC else None
            unseen = np.full(rows, UNSEEN_CATEGORY, dtype=object) if kind == CATEGORICAL else head
            missing = np.full(rows, gap, dtype=np.float64 if kind == NUMERIC else object)
            some = np.array(head, dtype=np.float64 if kind == NUMERIC else object)
            some[drop[:, j]] = gap
            columns[name] = np.concatenate([_array(part, kind) for part in (values, unseen, missing, some)])
        return TypedColumns(self.names, self.types, columns)


def _array(values: Sequence[Any] | NDArray[Any], kind: str) -> NDArray[Any]:
    """A column as an array: float64 (NaN for missing) when numeric, else an object array."""
    if kind == NUMERIC:
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
            return values.astype(np.float64, copy=False)
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    if isinstance(values, np.ndarray) and values.dtype == object:
        return values
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def input_types(
    features: int | Sequence[str], types: Sequence[str] | None = None, outputs: Sequence[str] = OUTPUTS
) -> list[tuple[str, Any]]:
    """The graph inputs of a model: one ``input`` matrix, or one ``[N, 1]`` tensor per feature.

    ``features`` is the number of features (a matrix) or their names; with ``types`` of which
    any is not numeric, each feature gets its own input named as the feature, which must not be
    one of the graph's ``outputs`` (a classifier's, or :data:`shared.features.REGRESSION_OUTPUTS`).
    """
    if isinstance(features, int):
        return [("input", FloatTensorType([None, features]))]
    kinds = list(types) if types is not None else [NUMERIC] * len(features)
    if layout_of(kinds) == MATRIX:
        return [("input", FloatTensorType([None, len(features)]))]
    clashing = sorted(set(features) & set(outputs))
    if clashing:
        raise ValueError(f"feature names {clashing} clash with the graph's outputs {list(outputs)}")
    return [
        (name, StringTensorType([None, 1]) if kind == CATEGORICAL else FloatTensorType([None, 1]))
        for name, kind in zip(features, kinds, strict=True)
    ]


def to_onnx(pipeline: Any, features: int | Sequence[str], types: Sequence[str] | None = None) -> tuple[bytes, int]:
    """The fitted pipeline as ONNX bytes, and the opset used.

    ``features`` is the number of features of an all-numeric model (one ``input`` matrix) or
    the feature names; with ``types`` holding a categorical or boolean feature, the graph takes
    one input per feature (see :func:`input_types`), and the pipeline must be the one
    :func:`services.trainer.estimators.build_typed_estimator` builds. A classifier's graph
    answers :data:`shared.features.GRAPH_OUTPUTS`, a regressor's
    :data:`shared.features.REGRESSION_OUTPUTS`, whichever layout it takes.
    """
    model = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    regression = is_regressor(model)
    inputs = input_types(features, types, graph_outputs(regression))
    onx = skl_to_onnx(
        pipeline,
        initial_types=inputs,
        options=None if regression else {id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    outputs = [o.name for o in onx.graph.output]
    if regression:
        if len(outputs) != 1:
            raise ValueError(f"unexpected ONNX outputs {outputs} for a regressor; expected one")
        _rename_output(onx.graph, outputs[0], REGRESSION_OUTPUTS[0])
    elif outputs != list(OUTPUTS):
        raise ValueError(f"unexpected ONNX outputs {outputs}; expected label and probabilities")
    _name_inputs(onx.graph, [name for name, _ in inputs])
    return onx.SerializeToString(), int(TARGET_OPSET[""])


def _rename_output(graph: Any, old: str, new: str) -> None:
    """A regressor's one output (skl2onnx calls it ``variable``) takes driftloop's name."""
    for output in graph.output:
        if output.name == old:
            output.name = new
    for node in graph.node:
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new


def _name_inputs(graph: Any, wanted: list[str]) -> None:
    """Give the graph's inputs the feature names skl2onnx rewrote (``a.b`` and ``a-b`` become ``a_b``).

    All names are substituted at once, so a feature whose name skl2onnx gave to another
    (``x.a`` took ``x_a``, the real ``x_a`` got ``x_a1``) still gets its own. skl2onnx's own
    variable names are kept apart from every input's name, so none is hit.
    """
    found = [i.name for i in graph.input]
    if len(found) != len(wanted):
        raise ValueError(f"unexpected ONNX inputs {found}; expected {wanted}")
    renamed = {old: new for old, new in zip(found, wanted, strict=True) if old != new}
    if not renamed:
        return
    for graph_input in graph.input:
        graph_input.name = renamed.get(graph_input.name, graph_input.name)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
    for info in graph.value_info:
        info.name = renamed.get(info.name, info.name)


def feeds_for(X: NDArray[np.float64] | TypedColumns) -> dict[str, NDArray[Any]]:
    """The graph inputs for these rows: the ``input`` matrix, or one tensor per feature."""
    if isinstance(X, TypedColumns):
        return X.feeds()
    return {"input": np.asarray(X, dtype=np.float32)}


def session_for(onnx: bytes) -> ort.InferenceSession:
    """An onnxruntime session with one thread, as the inference service runs it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX matched scikit-learn on a set of rows.

    ``max_abs_diff`` is the largest difference of a probability (a classifier) or of a
    prediction, in the target's units (a regressor); ``label_mismatches`` is 0 for a regressor.
    """

    max_abs_diff: float
    label_mismatches: int
    rows: int
    passed: bool
    reason: str


REGRESSION_RTOL = 1e-5
"""How far a regressor's graph may be from scikit-learn: ``max |diff| <= REGRESSION_RTOL *
max(1, max |prediction|)``. float32 carries about 7 significant digits, so the tolerance follows
the predictions' scale. Measured on the six allowed regressors with default parameters (targets
of scale 1, ~2,000 and ~200,000; all-numeric, and typed with unseen-category and missing-value
probes): at most 7.2e-7 of the scale (forests, which sum 100 float32 trees), 1.6e-7 for
Ridge and SGDRegressor; a different model is off by orders of magnitude more."""


def is_regression_graph(outputs: Sequence[str]) -> bool:
    """True when a graph's outputs are a regressor's (:data:`shared.features.REGRESSION_OUTPUTS`)."""
    return tuple(outputs) == REGRESSION_OUTPUTS


def run_graph(onnx: bytes, X: NDArray[Any] | TypedColumns) -> tuple[NDArray[Any], NDArray[np.float32]]:
    """What the graph answers for these rows, as serving computes it, for either task.

    A classifier's graph gives its labels ``[N]`` and class probabilities ``[N, C]``; a
    regressor's its predictions as float64 ``[N]`` in the first place and an empty ``[N, 0]``
    probability matrix, as a regressor's ``PredictionsLogged`` row carries a number and no
    probabilities. ``X`` is a matrix for a :data:`shared.features.MATRIX` graph,
    :class:`TypedColumns` for a :data:`shared.features.COLUMNS` one.
    """
    session = session_for(onnx)
    outputs = [o.name for o in session.get_outputs()]
    if is_regression_graph(outputs):
        (prediction,) = session.run(list(REGRESSION_OUTPUTS), feeds_for(X))
        values = np.asarray(prediction, dtype=np.float64).reshape(-1)
        return values, np.zeros((len(values), 0), dtype=np.float32)
    label, proba = session.run(list(OUTPUTS), feeds_for(X))
    return np.asarray(label), np.asarray(proba, dtype=np.float32)


def check_parity(
    onnx: bytes,
    pipeline: Any,
    X: NDArray[np.float64] | TypedColumns,
    tolerance: float = 1e-4,
    relative_tolerance: float = REGRESSION_RTOL,
) -> ParityReport:
    """Compare ONNX and scikit-learn on ``X``: probabilities and labels, or a regressor's predictions.

    ``X`` is a matrix for a :data:`shared.features.MATRIX` graph, :class:`TypedColumns` for a
    typed one (add :meth:`TypedColumns.with_probes` to cover unseen categories and missing
    values). Both see the same float32-rounded inputs (what serving will send).

    A classifier passes when no probability differs by more than ``tolerance`` and labels
    agree, except where the two best probabilities are within ``tolerance`` of each other (a
    tie). A regressor passes when every prediction is finite on both sides and no prediction
    differs by more than ``relative_tolerance`` of the predictions' scale (see
    :data:`REGRESSION_RTOL`): a model that answers NaN or infinity is refused here, before its
    metrics reach an event.
    """
    model = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    if is_regressor(model):
        return _regression_parity(onnx, pipeline, X, relative_tolerance)
    if isinstance(X, TypedColumns):
        rows = len(X)
        label, proba = run_graph(onnx, X)
        expected = pipeline.predict_proba(X.frame()) if rows else np.zeros((0, len(pipeline.classes_)))
    else:
        X32 = np.asarray(X, dtype=np.float32)
        rows = len(X32)
        label, proba = run_graph(onnx, X32)
        expected = pipeline.predict_proba(X32.astype(np.float64))
    expected_labels = pipeline.classes_[np.argmax(expected, axis=1)]
    diff = float(np.max(np.abs(np.asarray(proba, dtype=np.float64) - expected))) if rows else 0.0
    top2 = np.sort(expected, axis=1)[:, -2:] if expected.shape[1] > 1 else np.zeros((rows, 2))
    ties = (top2[:, 1] - top2[:, 0]) <= tolerance
    mismatched = (np.asarray(label).astype(str) != expected_labels.astype(str)) & ~ties
    mismatches = int(mismatched.sum())
    passed = diff <= tolerance and mismatches == 0
    reason = (
        "ok"
        if passed
        else f"max probability difference {diff:.2e} (tolerance {tolerance:.0e}), {mismatches} of {rows} labels differ"
    )
    return ParityReport(max_abs_diff=diff, label_mismatches=mismatches, rows=rows, passed=passed, reason=reason)


def _regression_parity(
    onnx: bytes, pipeline: Any, X: NDArray[np.float64] | TypedColumns, relative_tolerance: float
) -> ParityReport:
    """:func:`check_parity` of a regressor: ``pipeline.predict`` against the graph's ``prediction``."""
    if isinstance(X, TypedColumns):
        rows = len(X)
        expected = np.asarray(pipeline.predict(X.frame()), dtype=np.float64).reshape(-1) if rows else np.zeros(0)
        got, _ = run_graph(onnx, X)
    else:
        X32 = np.asarray(X, dtype=np.float32)
        rows = len(X32)
        expected = np.asarray(pipeline.predict(X32.astype(np.float64)), dtype=np.float64).reshape(-1)
        got, _ = run_graph(onnx, X32)
    if not np.all(np.isfinite(expected)):
        bad = int(np.sum(~np.isfinite(expected)))
        return ParityReport(
            math.inf, 0, rows, False, f"scikit-learn predicts non-finite values for {bad} of {rows} rows"
        )
    if not np.all(np.isfinite(got)):
        bad = int(np.sum(~np.isfinite(got)))
        return ParityReport(math.inf, 0, rows, False, f"the graph predicts non-finite values for {bad} of {rows} rows")
    diff = float(np.max(np.abs(got - expected))) if rows else 0.0
    scale = max(1.0, float(np.max(np.abs(expected)))) if rows else 1.0
    limit = relative_tolerance * scale
    passed = diff <= limit
    reason = (
        "ok"
        if passed
        else f"max prediction difference {diff:.3g} on predictions up to {scale:.3g} in size: {diff / scale:.1e} of it "
        f"(tolerance {relative_tolerance:.0e}, {limit:.3g})"
    )
    return ParityReport(max_abs_diff=diff, label_mismatches=0, rows=rows, passed=passed, reason=reason)
