"""Search spaces and single trials (pure functions, tiny real data)."""

from __future__ import annotations

import numpy as np
import pytest
from hyperopt.pyll import stochastic

from steps import tlc
from steps.features import Featurizer
from steps.models import (
    Split,
    XGBoostSettings,
    predict_estimator,
    search_space,
    train_and_evaluate,
)
from tests.conftest import tlc_file


@pytest.fixture(scope="module")
def small_splits():
    frames = [
        tlc.clean(tlc.read_month(tlc_file(m), "green").frame, "green").iloc[:5000]
        for m in ("2023-01", "2023-02")
    ]
    featurizer = Featurizer.fit(frames[0])
    return [Split(featurizer.transform(f), f["duration"].to_numpy()) for f in frames]


def _samples(kind, n=300):
    rng = np.random.default_rng(0)
    return [stochastic.sample(search_space(kind, 7), rng=rng) for _ in range(n)]


def test_xgboost_space_is_the_lectures():
    samples = _samples("xgboost")
    assert {s["objective"] for s in samples} == {"reg:squarederror"}
    assert {s["seed"] for s in samples} == {7}
    depths = [s["max_depth"] for s in samples]
    assert all(isinstance(d, int) and 4 <= d <= 100 for d in depths)
    for name, low, high in [
        ("learning_rate", -3, 0),
        ("reg_alpha", -5, -1),
        ("reg_lambda", -6, -1),
        ("min_child_weight", -1, 3),
    ]:
        values = np.array([s[name] for s in samples])
        assert np.exp(low) <= values.min() and values.max() <= np.exp(high), name


def test_random_forest_space_is_the_homeworks():
    samples = _samples("random_forest")
    bounds = {
        "max_depth": (1, 20),
        "n_estimators": (10, 50),
        "min_samples_split": (2, 10),
        "min_samples_leaf": (1, 4),
    }
    for name, (low, high) in bounds.items():
        values = [s[name] for s in samples]
        assert all(isinstance(v, int) for v in values)
        assert min(values) == low and max(values) == high, name
    assert {s["random_state"] for s in samples} == {7}


def test_baseline_spaces():
    assert search_space("linear", 1) is None
    alphas = np.array([s["alpha"] for s in _samples("lasso")])
    assert np.exp(-7) <= alphas.min() and alphas.max() <= 1.0
    with pytest.raises(ValueError, match="model must be one of"):
        search_space("catboost", 1)


def test_xgboost_keeps_trees_up_to_the_best_iteration(small_splits):
    train, val = small_splits
    params = {"max_depth": 6, "learning_rate": 0.9, "objective": "reg:squarederror", "seed": 1}
    result = train_and_evaluate("xgboost", params, train, val, XGBoostSettings(60, 3))
    assert result.best_iteration < 59  # a learning rate this high stops early
    assert result.model.num_boosted_rounds() == result.best_iteration + 1
    pred = result.model.predict(val.dmatrix())
    assert result.val_rmse == float(np.sqrt(np.mean((val.y - pred.astype(np.float64)) ** 2)))


def test_xgboost_without_early_stopping_keeps_every_round(small_splits):
    train, val = small_splits
    params = {"max_depth": 3, "learning_rate": 0.3, "seed": 1}
    result = train_and_evaluate("xgboost", params, train, val, XGBoostSettings(7, 0))
    assert result.best_iteration == 6 and result.model.num_boosted_rounds() == 7


def test_forest_does_not_depend_on_core_count(small_splits):
    train, val = small_splits
    params = {
        "max_depth": 8,
        "n_estimators": 12,
        "min_samples_split": 2,
        "min_samples_leaf": 1,
        "random_state": 42,
    }
    parallel = train_and_evaluate("random_forest", params, train, val)
    serial_model = parallel.model.__class__(**params, n_jobs=1).fit(train.X, train.y)
    np.testing.assert_array_equal(
        predict_estimator(parallel.model, val.X), serial_model.predict(val.X)
    )
    assert parallel.model.n_jobs == -1


@pytest.mark.parametrize(("kind", "params"), [("linear", {}), ("lasso", {"alpha": 0.01})])
def test_baselines_train(small_splits, kind, params):
    train, val = small_splits
    result = train_and_evaluate(kind, params, train, val)
    assert 3 < result.val_rmse < 15
