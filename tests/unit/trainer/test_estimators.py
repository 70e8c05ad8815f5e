"""The estimator allow-list: preprocessing, seeds, parameter validation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from services.trainer.estimators import ALLOWED, NEEDS_SCALING, build_estimator
from shared.errors import InvalidSpec
from shared.spec import TrainingSpec


def test_allow_list_matches_the_spec_schema() -> None:
    assert set(ALLOWED) == set(TrainingSpec.model_fields["estimator"].annotation.__args__)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ALLOWED)
def test_builds_fits_and_is_deterministic(name: str) -> None:
    X, y = make_classification(300, 6, random_state=0)
    params = {"n_estimators": 10} if "Forest" in name or "Trees" in name or name == "GradientBoostingClassifier" else {}
    first = build_estimator(name, params, seed=5).fit(X, y)
    second = build_estimator(name, params, seed=5).fit(X, y)
    assert np.array_equal(first.predict_proba(X), second.predict_proba(X))
    assert isinstance(first.steps[0][1], StandardScaler) == (name in NEEDS_SCALING)
    model = first.steps[-1][1]
    if "random_state" in model.get_params():
        assert model.random_state == 5


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(InvalidSpec, match="RandomForestClassifier has no parameter n_trees"):
        build_estimator("RandomForestClassifier", {"n_trees": 10}, seed=0)


def test_invalid_value_is_refused_before_fitting() -> None:
    with pytest.raises(InvalidSpec, match="n_estimators"):
        build_estimator("RandomForestClassifier", {"n_estimators": -1}, seed=0)


def test_sgd_needs_a_probabilistic_loss() -> None:
    assert build_estimator("SGDClassifier", {}, seed=0).steps[-1][1].loss == "log_loss"
    with pytest.raises(InvalidSpec, match="gives no probabilities"):
        build_estimator("SGDClassifier", {"loss": "hinge"}, seed=0)


def test_unknown_estimator() -> None:
    with pytest.raises(InvalidSpec, match="not allowed"):
        build_estimator("SVC", {}, seed=0)
