"""Model kinds, their hyperopt search spaces, and one train-and-evaluate trial.

Shared by ``hpo`` (and later steps that retrain a trial). Spaces are the course's:
XGBoost from the lecture, the random forest from the homework, and the first baselines
(linear regression, one trial; lasso). ``train_and_evaluate`` is pure apart from the fit; its
``val_rmse`` is of predictions clipped as the saved model clips them (``contract.clip_minutes``).
An XGBoost trial also returns its validation curve (XGBoost's RMSE after each round) and may be
stopped at a pruning rung (``steps.pruning``); pruning never changes the rounds it does train.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import root_mean_squared_error

from steps.contract import clip_minutes
from steps.predictor import int32_indices, predict_estimator
from steps.pruning import prune_verdict

MODEL_KINDS = ("xgboost", "random_forest", "linear", "lasso")


def search_space(kind: str, seed: int) -> dict[str, Any] | None:
    """The hyperopt space of ``kind``; ``None`` for a kind with nothing to tune (one trial)."""
    from hyperopt import hp  # imported here: loading a model must not need hyperopt
    from hyperopt.pyll import scope

    if kind == "xgboost":
        return {
            "max_depth": scope.int(hp.quniform("max_depth", 4, 100, 1)),
            "learning_rate": hp.loguniform("learning_rate", -3, 0),
            "reg_alpha": hp.loguniform("reg_alpha", -5, -1),
            "reg_lambda": hp.loguniform("reg_lambda", -6, -1),
            "min_child_weight": hp.loguniform("min_child_weight", -1, 3),
            "objective": "reg:squarederror",
            "seed": seed,
        }
    if kind == "random_forest":
        return {
            "max_depth": scope.int(hp.quniform("max_depth", 1, 20, 1)),
            "n_estimators": scope.int(hp.quniform("n_estimators", 10, 50, 1)),
            "min_samples_split": scope.int(hp.quniform("min_samples_split", 2, 10, 1)),
            "min_samples_leaf": scope.int(hp.quniform("min_samples_leaf", 1, 4, 1)),
            "random_state": seed,
        }
    if kind == "lasso":
        return {"alpha": hp.loguniform("alpha", -7, 0)}
    if kind == "linear":
        return None
    raise ValueError(f"model must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")


@dataclass
class Split:
    X: sp.csr_matrix
    y: np.ndarray
    _dmatrix: Any = field(default=None, repr=False)

    def dmatrix(self):
        """XGBoost's DMatrix of this split, built once and reused by every trial."""
        if self._dmatrix is None:
            import xgboost as xgb

            self._dmatrix = xgb.DMatrix(self.X, label=self.y)
        return self._dmatrix


@dataclass(frozen=True)
class XGBoostSettings:
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50  # 0 turns early stopping off


@dataclass
class TrialResult:
    val_rmse: float
    train_seconds: float
    model: Any
    best_iteration: int | None = None  # XGBoost: index of the last tree kept
    curve: tuple[float, ...] = ()  # XGBoost: validation RMSE after each round (1, 2, ...)
    pruned_round: int | None = None  # XGBoost: rounds trained when a rung stopped it
    prune_reason: str = ""


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(root_mean_squared_error(y_true, np.asarray(y_pred, dtype=np.float64)))


def train_and_evaluate(
    kind: str,
    params: dict[str, Any],
    train: Split,
    val: Split,
    xgb_settings: XGBoostSettings = XGBoostSettings(),
    rungs: Mapping[int, float] | None = None,
) -> TrialResult:
    """Fit ``kind`` with resolved ``params`` on ``train``; RMSE on ``val``. ``rungs`` (XGBoost
    only): rung -> threshold, from ``steps.pruning.rung_thresholds``; ``None`` never prunes."""
    started = time.perf_counter()
    if kind == "xgboost":
        return _train_xgboost(params, train, val, xgb_settings, rungs, started)

    model = make_estimator(kind, params)
    model.fit(int32_indices(train.X), train.y)
    train_seconds = time.perf_counter() - started
    pred = clip_minutes(predict_estimator(model, val.X))
    return TrialResult(rmse(val.y, pred), train_seconds, model)


def _pruning_callback(rungs: Mapping[int, float]):
    """An XGBoost callback that stops training at a rung where ``prune_verdict`` says so, and
    keeps that verdict (``.verdict``)."""
    import xgboost as xgb

    class PruneAtRungs(xgb.callback.TrainingCallback):
        verdict = None

        def after_iteration(self, model, epoch: int, evals_log) -> bool:
            verdict = prune_verdict(evals_log["validation"]["rmse"], rungs)
            if verdict.prune:
                self.verdict = verdict
            return verdict.prune

    return PruneAtRungs()


def _train_xgboost(
    params: dict[str, Any],
    train: Split,
    val: Split,
    settings: XGBoostSettings,
    rungs: Mapping[int, float] | None,
    started: float,
) -> TrialResult:
    import xgboost as xgb

    history: dict = {}
    if rungs:
        # The early stopping xgb.train builds from early_stopping_rounds, placed before the
        # pruner: XGBoost skips later callbacks once one says stop, and early stopping must see
        # every round trained (the best iteration).
        pruner = _pruning_callback(rungs)
        callbacks = [pruner]
        if settings.early_stopping_rounds:
            stopping = xgb.callback.EarlyStopping(rounds=settings.early_stopping_rounds)
            callbacks.insert(0, stopping)
        booster = xgb.train(
            params,
            dtrain=train.dmatrix(),
            num_boost_round=settings.num_boost_round,
            evals=[(val.dmatrix(), "validation")],
            verbose_eval=False,
            evals_result=history,
            callbacks=callbacks,
        )
    else:  # the course's search, exactly
        pruner = None
        booster = xgb.train(
            params,
            dtrain=train.dmatrix(),
            num_boost_round=settings.num_boost_round,
            evals=[(val.dmatrix(), "validation")],
            early_stopping_rounds=settings.early_stopping_rounds or None,
            verbose_eval=False,
            evals_result=history,
        )
    if settings.early_stopping_rounds:
        best_iteration = booster.best_iteration
    else:
        best_iteration = booster.num_boosted_rounds() - 1
    # Keep only the trees up to the best iteration: the model a later step saves.
    booster = booster[: best_iteration + 1]
    train_seconds = time.perf_counter() - started
    pred = clip_minutes(booster.predict(val.dmatrix()))
    curve = tuple(float(v) for v in history["validation"]["rmse"])
    verdict = pruner.verdict if pruner else None
    return TrialResult(
        rmse(val.y, pred),
        train_seconds,
        booster,
        best_iteration,
        curve,
        len(curve) if verdict else None,
        verdict.reason if verdict else "",
    )


def make_estimator(kind: str, params: dict[str, Any]):
    if kind == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(**params, n_jobs=-1)
    if kind == "lasso":
        from sklearn.linear_model import Lasso

        return Lasso(**params)
    if kind == "linear":
        from sklearn.linear_model import LinearRegression

        return LinearRegression(**params)
    raise ValueError(f"not a scikit-learn model kind: {kind!r}")
