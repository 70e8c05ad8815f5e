"""The allow-list of scikit-learn estimators a spec may name, built with their preprocessing. Pure.

Linear models (``LogisticRegression``, ``SGDClassifier``, ``Ridge``, ``SGDRegressor``) get a
``StandardScaler`` in front (they are scale-sensitive); tree ensembles do not need one, and
HistGradientBoosting must not have one: with a scaler in front, the float32 graph of a
``HistGradientBoostingRegressor`` was off by up to 148 on targets near 1,900 (the scaled
float32 inputs fall on the other side of its bin thresholds), without it by 5e-4. Regressors
and classifiers are built alike; only ``SGDClassifier``'s loss must give probabilities. Every
estimator that takes a ``random_state`` gets the spec's seed, so the same data, params and seed
always give the same model.

A spec with categorical or boolean features (:attr:`shared.spec.ModelSpec.typed`) gets one
pipeline that takes a ``pandas.DataFrame`` with a column per feature
(:func:`build_typed_estimator`): a ``ColumnTransformer`` selecting columns by feature name, then
the estimator, so the whole of it exports as one ONNX graph with one input per feature.

* Numeric and boolean columns (booleans as 0.0 / 1.0, missing as NaN) reach
  HistGradientBoosting untouched: it takes NaN natively, and imputing or scaling in front of
  it broke float32 ONNX parity. Every other estimator gets a median ``SimpleImputer``; the
  linear ones then a ``StandardScaler``.
* Categorical columns (text, missing as ``""``: a category like any other) are one-hot encoded
  with ``handle_unknown="ignore"``, so a category never seen in training encodes as all zeros
  and is a valid input. The encoder keeps the :data:`MAX_ONE_HOT_CATEGORIES` most frequent
  categories of each feature (:func:`one_hot_categories`); rarer ones encode as unseen ones do.
* One-hot rather than ordinal codes: on a mixed table it was more accurate for every
  estimator measured (at a longer fit for HistGradientBoosting), and HistGradientBoosting's
  native categorical splits do not survive skl2onnx 1.20 (probabilities off by up to 0.98).
  The cap is given as explicit ``categories`` rather than ``max_categories``: skl2onnx 1.20
  cannot convert an encoder with infrequent categories and a single input column, and keeping
  the top 64 by name was as accurate as ``max_categories=64`` on that table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier, SGDRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from shared.errors import InvalidSpec
from shared.features import CATEGORICAL, MISSING_CATEGORY
from shared.spec import REGRESSORS

ESTIMATORS: dict[str, Any] = {
    "LogisticRegression": LogisticRegression,
    "SGDClassifier": SGDClassifier,
    "RandomForestClassifier": RandomForestClassifier,
    "ExtraTreesClassifier": ExtraTreesClassifier,
    "GradientBoostingClassifier": GradientBoostingClassifier,
    "HistGradientBoostingClassifier": HistGradientBoostingClassifier,
    "Ridge": Ridge,
    "SGDRegressor": SGDRegressor,
    "RandomForestRegressor": RandomForestRegressor,
    "ExtraTreesRegressor": ExtraTreesRegressor,
    "GradientBoostingRegressor": GradientBoostingRegressor,
    "HistGradientBoostingRegressor": HistGradientBoostingRegressor,
}
ALLOWED = tuple(ESTIMATORS)
"""Every estimator a spec may name: :data:`shared.spec.CLASSIFIERS` and :data:`shared.spec.REGRESSORS`."""
NEEDS_SCALING = frozenset({"LogisticRegression", "SGDClassifier", "Ridge", "SGDRegressor"})
PROBABILISTIC_SGD_LOSSES = frozenset({"log_loss", "modified_huber"})
TAKES_MISSING = frozenset({"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"})
"""Estimators that take NaN as they are (and get no imputer, nor a scaler, in front)."""
MAX_ONE_HOT_CATEGORIES = 64
"""One-hot columns per categorical feature at most: its most frequent training categories."""


def regresses(name: str) -> bool:
    """True when the allow-listed estimator ``name`` predicts a number (a regressor).

    >>> regresses("Ridge"), regresses("LogisticRegression")
    (True, False)
    """
    return name in REGRESSORS


def build_estimator(name: str, params: dict[str, Any], seed: int) -> Pipeline:
    """The pipeline for an allow-listed estimator with the spec's params and seed.

    Unknown parameter names and invalid values raise :class:`InvalidSpec` naming them, before
    any data is touched.
    """
    if name not in ESTIMATORS:
        raise InvalidSpec(f"estimator {name!r} is not allowed; use one of {', '.join(ALLOWED)}")
    estimator = ESTIMATORS[name]()
    known = estimator.get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InvalidSpec(
            f"training.params: {name} has no parameter {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    settings = dict(params)
    if "random_state" in known:
        settings.setdefault("random_state", seed)
    if name == "SGDClassifier":
        loss = settings.setdefault("loss", "log_loss")
        if loss not in PROBABILISTIC_SGD_LOSSES:
            raise InvalidSpec(
                f"training.params.loss: SGDClassifier with loss {loss!r} gives no probabilities; "
                f"use {' or '.join(sorted(PROBABILISTIC_SGD_LOSSES))}"
            )
    estimator.set_params(**settings)
    try:
        clone(estimator)._validate_params()
    except InvalidParameterError as err:
        raise InvalidSpec(f"training.params: {name}: {err}") from None
    steps: list[tuple[str, Any]] = [("scale", StandardScaler())] if name in NEEDS_SCALING else []
    steps.append(("model", estimator))
    return Pipeline(steps)


def one_hot_categories(
    columns: Mapping[str, Iterable[Any]],
    names: Sequence[str],
    types: Sequence[str],
    cap: int = MAX_ONE_HOT_CATEGORIES,
) -> dict[str, list[str]]:
    """Per categorical feature, the categories the encoder gives a column: the ``cap`` most
    frequent in ``columns`` (training-frame text, :func:`shared.features.frame_columns`), ties
    broken by text, sorted. Missing (``""``) counts as a category.

    >>> one_hot_categories({"c": ["b", "a", "b", "", "c"]}, ["c"], ["categorical"], cap=2)
    {'c': ['', 'b']}
    """
    kept: dict[str, list[str]] = {}
    for name, kind in zip(names, types, strict=True):
        if kind != CATEGORICAL:
            continue
        counts = Counter(str(v) for v in columns[name])
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept[name] = sorted(text for text, _ in ranked[:cap]) or [MISSING_CATEGORY]
    return kept


def empty_features(columns: Mapping[str, Any], names: Sequence[str], types: Sequence[str]) -> list[str]:
    """Numeric and boolean features whose training-frame column holds no value at all (all NaN).

    >>> frame = {"a": [float("nan")], "b": [1.0], "c": [""]}
    >>> empty_features(frame, ["a", "b", "c"], ["numeric", "boolean", "categorical"])
    ['a']
    """
    return [
        name
        for name, kind in zip(names, types, strict=True)
        if kind != CATEGORICAL and bool(np.all(np.isnan(np.asarray(columns[name], dtype=np.float64))))
    ]


def build_typed_estimator(
    name: str,
    params: dict[str, Any],
    seed: int,
    names: Sequence[str],
    types: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    empty: Collection[str] = (),
) -> Pipeline:
    """The pipeline of a typed spec: per-feature preprocessing by column name, then the estimator.

    It is fitted on (and predicts from) a ``pandas.DataFrame`` of the training frame's columns
    (:func:`shared.features.frame_columns`). ``categories`` are the one-hot categories of each
    categorical feature (:func:`one_hot_categories` of the training rows). ``empty`` names
    numeric or boolean features missing in every training row (:func:`empty_features`):
    HistGradientBoosting cannot bin an all-NaN column, so there they are filled with 0, a
    constant it never splits on. Parameters are validated as :func:`build_estimator` does.
    """
    estimator = build_estimator(name, params, seed).steps[-1][1]
    floats = [n for n, kind in zip(names, types, strict=True) if kind != CATEGORICAL]
    texts = [n for n, kind in zip(names, types, strict=True) if kind == CATEGORICAL]
    missing = sorted(set(texts) - set(categories))
    if missing:
        raise ValueError(f"no one-hot categories given for {', '.join(missing)}")
    blank = [n for n in floats if n in empty] if name in TAKES_MISSING else []
    filled = [n for n in floats if n not in blank]
    transformers: list[tuple[str, Any, list[str]]] = []
    if filled:
        transformers.append(("numeric", _numeric_step(name), filled))
    if blank:
        transformers.append(
            ("empty", SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True), blank)
        )
    if texts:
        encoder = OneHotEncoder(
            categories=[np.array(list(categories[n]) or [MISSING_CATEGORY], dtype=object) for n in texts],
            handle_unknown="ignore",
            sparse_output=False,
        )
        transformers.append(("categorical", encoder, texts))
    return Pipeline([("prep", ColumnTransformer(transformers, remainder="drop")), ("model", estimator)])


def _numeric_step(name: str) -> Any:
    """What numeric and boolean columns go through in front of estimator ``name``."""
    if name in TAKES_MISSING:
        return "passthrough"
    impute = SimpleImputer(strategy="median", keep_empty_features=True)
    if name in NEEDS_SCALING:
        return Pipeline([("impute", impute), ("scale", StandardScaler())])
    return impute
