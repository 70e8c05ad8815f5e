"""Small regression models for the inference tests: a typed one (COLUMNS layout: numeric,
categorical and boolean features, one that may be missing) and an all-numeric one (MATRIX).

Fitted here, as plain scikit-learn pipelines, and exported with the trainer's
:func:`services.trainer.export.to_onnx` (whose regressor graph has the one output
``prediction``, float32 ``[N, 1]``), so the tests do not depend on how the trainer builds its
estimators; registered through :class:`shared.registry.Registry` with the card a regressor
has: ``task="regression"``, no label values, ``output_names=["prediction"]``, the predicted
values' histogram as its prediction reference.

A house's price is about ``100 * size``, plus 300 in Oslo and 150 with a garden, minus ``age``
(a missing age is a valid value); ``offset`` shifts every price, so two versions of one
model tell apart by the size of their answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from services.trainer.export import to_onnx
from shared.features import CATEGORICAL, COLUMNS, frame_columns, graph_outputs
from shared.reference import Reference, regression_prediction_reference
from shared.registry import InputSchema, Registry
from shared.store import ObjectStore

FEATURES = ("size", "age", "city", "garden")
TYPES = ("numeric", "numeric", "categorical", "boolean")
OPTIONAL = frozenset({"age"})
"""The features the spec lets be missing (``allow_missing``)."""
CITIES = ("Oslo", "Rome", "Lima")
SPEC = """
name: {name}
features:
  - {{name: size, type: numeric, min: 0}}
  - {{name: age, type: numeric, allow_missing: true}}
  - {{name: city, type: categorical}}
  - {{name: garden, type: boolean}}
label: {{type: regression, min: 0}}
training: {{estimator: HistGradientBoostingRegressor}}
gate: {{metric: mae}}
deployment: {{strategy: canary, canary_traffic: 0.5}}
"""
NUMERIC_FEATURES = ("x1", "x2")
NUMERIC_SPEC = """
name: {name}
features: [{{name: x1}}, {{name: x2}}]
label: {{type: regression}}
training: {{estimator: Ridge}}
gate: {{metric: mae}}
"""

BIG: dict[str, Any] = {"size": 9.0, "age": 10.0, "city": "Oslo", "garden": True}
SMALL: dict[str, Any] = {"size": 2.0, "age": None, "city": "Lima", "garden": False}
"""Rows the typed model prices high (about 1,300) and low (about 200)."""


def training_columns(n: int, seed: int, offset: float = 0.0) -> tuple[dict[str, list[Any]], NDArray[np.float64]]:
    """Event-form values (numbers, strings, booleans, None) of ``n`` houses, and their prices."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(1, 10, n)
    age = rng.uniform(0, 60, n)
    city = rng.choice(CITIES, n)
    garden = rng.random(n) < 0.5
    price = 100 * size + 300 * (city == "Oslo") + 150 * garden - age + rng.normal(0, 5, n) + offset
    columns: dict[str, list[Any]] = {
        "size": size.tolist(),
        "age": [None if i % 6 == 0 else float(v) for i, v in enumerate(age)],
        "city": city.tolist(),
        "garden": garden.tolist(),
    }
    return columns, price


@dataclass(frozen=True)
class RegressionModel:
    """A fitted regression pipeline, its ONNX bytes, its card's input schema and reference."""

    pipeline: Pipeline
    onnx: bytes
    schema: InputSchema
    reference: Reference
    estimator: str

    def expected(self, rows: list[dict[str, Any]]) -> NDArray[np.float64]:
        """What scikit-learn predicts for typed rows (event form), as the graph sees them."""
        columns = {f: [r.get(f) for r in rows] for f in FEATURES}
        return np.asarray(self.pipeline.predict(pd.DataFrame(frame_columns(FEATURES, TYPES, columns))), np.float64)


def build(n: int = 600, seed: int = 0, offset: float = 0.0) -> RegressionModel:
    """Fit and export the typed model (``offset``: added to every price)."""
    columns, price = training_columns(n, seed, offset)
    frame = pd.DataFrame(frame_columns(FEATURES, TYPES, columns))
    categorical = [f for f, t in zip(FEATURES, TYPES, strict=True) if t == CATEGORICAL]
    numbers = [f for f, t in zip(FEATURES, TYPES, strict=True) if t != CATEGORICAL]
    encode = ColumnTransformer(
        [
            ("numbers", "passthrough", numbers),
            ("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )
    pipeline = Pipeline(
        [("encode", encode), ("model", HistGradientBoostingRegressor(max_iter=60, random_state=0))]
    ).fit(frame, price)
    onnx, _ = to_onnx(pipeline, list(FEATURES), list(TYPES))
    schema = InputSchema(
        features=list(FEATURES),
        label_values=[],
        types=list(TYPES),  # type: ignore[arg-type]
        layout=COLUMNS,
        categories={f: sorted({v for v in columns[f] if v is not None}) for f in categorical},
        task="regression",
    )
    reference = Reference(features={}, predictions=regression_prediction_reference(pipeline.predict(frame)))
    return RegressionModel(pipeline, onnx, schema, reference, "HistGradientBoostingRegressor")


def build_numeric(n: int = 400, seed: int = 0, offset: float = 0.0) -> RegressionModel:
    """An all-numeric ridge regression of ``y = 3 x1 - 2 x2 + offset`` (one ``input`` ``[N, 2]``)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, size=(n, 2)).astype(np.float32).astype(np.float64)
    y = 3 * X[:, 0] - 2 * X[:, 1] + offset + rng.normal(0, 0.1, n)
    pipeline = Pipeline([("model", Ridge(alpha=1e-3))]).fit(X, y)
    onnx, _ = to_onnx(pipeline, len(NUMERIC_FEATURES))
    schema = InputSchema(features=list(NUMERIC_FEATURES), label_values=[], task="regression")
    reference = Reference(features={}, predictions=regression_prediction_reference(pipeline.predict(X)))
    return RegressionModel(pipeline, onnx, schema, reference, "Ridge")


def register(store: ObjectStore, name: str, model: RegressionModel, schema: InputSchema | None = None) -> int:
    """Register ``model`` as the next version of ``name`` (a regressor's minimal card); its number."""
    card = Registry(store).register_built(
        name,
        model.onnx,
        schema or model.schema,
        model.reference,
        model.estimator,
        "tests",
        training_rows=600,
        output_names=list(graph_outputs(regression=True)),
    )
    return card.version
