"""A small COLUMNS-layout model for the inference tests: numeric, categorical and boolean features.

Built as the trainer builds one (scikit-learn ``ColumnTransformer`` + ``OneHotEncoder`` in front
of a ``HistGradientBoostingClassifier``, exported by skl2onnx with one ``[N, 1]`` input per
feature) but here, so the tests do not depend on the trainer's pipeline; registered through
:class:`shared.registry.Registry` with a card whose ``InputSchema`` has types, layout and the
training categories.

The concept is sharp so tests can assert labels: a row is 1 exactly when ``city`` is
``"Oslo"``, or when ``member`` is true and ``age`` is over 50.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from services.trainer.export import TARGET_OPSET
from shared.features import CATEGORICAL, COLUMNS, frame_columns
from shared.reference import PredictionReference, Reference
from shared.registry import InputSchema, Registry
from shared.store import ObjectStore

FEATURES = ("age", "income", "city", "plan", "member")
TYPES = ("numeric", "numeric", "categorical", "categorical", "boolean")
OPTIONAL = frozenset({"income", "plan"})
"""The features the spec lets be missing (``allow_missing``)."""
CITIES = ("Oslo", "Rome", "Lima")
PLANS = ("basic", "gold")
SPEC = """
name: {name}
features:
  - {{name: age, type: numeric}}
  - {{name: income, type: numeric, allow_missing: true}}
  - {{name: city, type: categorical}}
  - {{name: plan, type: categorical, allow_missing: true}}
  - {{name: member, type: boolean}}
label: {{values: [0, 1]}}
training: {{estimator: HistGradientBoostingClassifier}}
deployment: {{strategy: canary, canary_traffic: 0.5}}
"""

HIGH = {"age": 30.0, "income": 1000.0, "city": "Oslo", "plan": "gold", "member": False}
LOW = {"age": 20.0, "income": None, "city": "Lima", "plan": None, "member": False}
"""Rows the model labels 1 and 0."""


def training_columns(n: int, seed: int) -> tuple[dict[str, list[Any]], np.ndarray]:
    """Event-form values (numbers, strings, booleans, None) of ``n`` rows, and their labels."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    income = rng.normal(3000, 800, n)
    city = rng.choice(CITIES, n)
    plan = rng.choice(PLANS, n)
    member = rng.random(n) < 0.5
    y = ((city == "Oslo") | (member & (age > 50))).astype(np.int64)
    columns: dict[str, list[Any]] = {
        "age": age.tolist(),
        "income": [None if i % 7 == 0 else float(v) for i, v in enumerate(income)],
        "city": city.tolist(),
        "plan": [None if i % 5 == 0 else str(v) for i, v in enumerate(plan)],
        "member": member.tolist(),
    }
    return columns, y


@dataclass(frozen=True)
class TypedModel:
    """A fitted typed pipeline, its ONNX bytes and the training categories."""

    pipeline: Pipeline
    onnx: bytes
    categories: dict[str, list[str]]


def build(n: int = 600, seed: int = 0) -> TypedModel:
    """Fit and export the model."""
    columns, y = training_columns(n, seed)
    frame = pd.DataFrame(frame_columns(FEATURES, TYPES, columns))
    categorical = [f for f, t in zip(FEATURES, TYPES, strict=True) if t == CATEGORICAL]
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)],
        remainder="passthrough",
    )
    estimator = HistGradientBoostingClassifier(max_iter=30, random_state=0)
    pipeline = Pipeline([("encode", encode), ("model", estimator)]).fit(frame, y)
    inputs = [
        (f, StringTensorType([None, 1]) if t == CATEGORICAL else FloatTensorType([None, 1]))
        for f, t in zip(FEATURES, TYPES, strict=True)
    ]
    onx = to_onnx(pipeline, initial_types=inputs, options={id(estimator): {"zipmap": False}}, target_opset=TARGET_OPSET)
    categories = {f: sorted({v for v in columns[f] if v is not None}) for f in categorical}
    return TypedModel(pipeline, onx.SerializeToString(), categories)


def build_numeric(n: int = 400, seed: int = 0) -> TypedModel:
    """An all-numeric model of ``age`` and ``income`` in the MATRIX layout (one ``input`` ``[N, 2]``)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.uniform(18, 80, n), rng.normal(3000, 800, n)]).astype(np.float32)
    estimator = LogisticRegression(max_iter=500).fit(X, (X[:, 0] > 50).astype(np.int64))
    onx = to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, 2]))],
        options={id(estimator): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    return TypedModel(Pipeline([("model", estimator)]), onx.SerializeToString(), {})


NUMERIC_SCHEMA = InputSchema(features=["age", "income"], label_values=[0, 1])
"""The card's input schema of :func:`build_numeric` (as cards were before features had types)."""


def card_schema(model: TypedModel) -> InputSchema:
    """The card's input schema of a typed model."""
    return InputSchema(
        features=list(FEATURES),
        label_values=[0, 1],
        types=list(TYPES),  # type: ignore[arg-type]
        layout=COLUMNS,
        categories=model.categories,
    )


def register(store: ObjectStore, name: str, model: TypedModel, schema: InputSchema | None = None) -> int:
    """Register ``model`` as the next version of ``name`` (a minimal card) and return its number."""
    reference = Reference(
        features={},
        predictions=PredictionReference(label_distribution={"0": 0.5, "1": 0.5}, probability_histograms={}),
    )
    card = Registry(store).register_built(
        name,
        model.onnx,
        schema or card_schema(model),
        reference,
        "HistGradientBoostingClassifier",
        "tests",
        training_rows=600,
        onnx_opset=int(TARGET_OPSET[""]),
    )
    return card.version
