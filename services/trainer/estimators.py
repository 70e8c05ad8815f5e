"""The allow-list of scikit-learn estimators a spec may name, built with their preprocessing. Pure.

Linear models get a ``StandardScaler`` in front (they are scale-sensitive); tree ensembles do
not need one. Every estimator that takes a ``random_state`` gets the spec's seed, so the same
data, params and seed always give the same model.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import clone
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from shared.errors import InvalidSpec

ESTIMATORS: dict[str, Any] = {
    "LogisticRegression": LogisticRegression,
    "SGDClassifier": SGDClassifier,
    "RandomForestClassifier": RandomForestClassifier,
    "ExtraTreesClassifier": ExtraTreesClassifier,
    "GradientBoostingClassifier": GradientBoostingClassifier,
    "HistGradientBoostingClassifier": HistGradientBoostingClassifier,
}
ALLOWED = tuple(ESTIMATORS)
NEEDS_SCALING = frozenset({"LogisticRegression", "SGDClassifier"})
PROBABILISTIC_SGD_LOSSES = frozenset({"log_loss", "modified_huber"})


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
