"""``train_best -P autolog=true``: MLflow's autologging, kept sparse.

XGBoost: ``mlflow.xgboost.autolog`` as the course turns it on, without datasets (they are
built from a dense copy of the matrix) and without models (ours are logged, not pickled).

scikit-learn: ``mlflow.sklearn.autolog`` cannot be used on a sparse matrix. In the pinned
MLflow (3.17), after every ``fit`` it builds a dataset from the training data to tag its
training metrics with, and for a sparse ``X`` that is ``X.toarray()`` (``_create_dataset`` in
``_log_posttraining_metadata``), whatever ``log_datasets`` and ``log_post_training_metrics``
say: on the homework's months a dense float64 copy of the train month (74k rows x 13k
features, 7.8 GB). So for scikit-learn estimators this module logs what that autolog logs
(params, estimator tags, training metrics, ``estimator.html``; compared field by field in
``tests/test_autolog.py``) from the sparse matrix itself; the one thing missing is the link
from those metrics to a dataset.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import scipy.sparse as sp
from sklearn.base import is_regressor
from sklearn.metrics import (
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    root_mean_squared_error,
)

from steps.predictor import predict_estimator
from steps.tracking import log_params_missing

TRAINING_PREFIX = "training_"  # mlflow.sklearn's prefix for metrics on the data fitted on
ESTIMATOR_HTML = "estimator.html"


@contextlib.contextmanager
def xgboost_autolog(enabled: bool) -> Iterator[None]:
    """``mlflow.xgboost.autolog`` around the block when ``enabled``, minus datasets and models."""
    if not enabled:
        yield
        return
    mlflow.xgboost.autolog(
        log_models=False,
        log_datasets=False,
        log_input_examples=False,
        log_model_signatures=False,
        silent=True,
    )
    try:
        yield
    finally:
        mlflow.xgboost.autolog(disable=True)


@dataclass(frozen=True)
class EstimatorRecord:
    """What ``mlflow.sklearn.autolog(log_models=False, log_datasets=False,
    log_post_training_metrics=False)`` records for a fitted regressor."""

    params: dict[str, Any]
    tags: dict[str, str]
    metrics: dict[str, float]
    html: str


def estimator_record(estimator, X: sp.csr_matrix, y: np.ndarray) -> EstimatorRecord:
    """The autolog record of ``estimator``, fitted on ``X``, ``y``, computed on sparse ``X``
    (predictions on one thread, as everywhere in this project)."""
    from sklearn.utils import estimator_html_repr

    cls = type(estimator)
    y_pred = predict_estimator(estimator, X)
    metrics = {
        "mean_squared_error": mean_squared_error(y, y_pred),
        "mean_absolute_error": mean_absolute_error(y, y_pred),
        "r2_score": r2_score(y, y_pred),
        "root_mean_squared_error": root_mean_squared_error(y, y_pred),
    }
    # A regressor's score is R² of its predictions; computing it from those avoids a second,
    # multi-threaded predict.
    metrics["score"] = metrics["r2_score"] if is_regressor(estimator) else estimator.score(X, y)
    html = (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="UTF-8"/></head>\n'
        f"<body>\n{estimator_html_repr(estimator)}\n</body>\n</html>\n"
    )
    return EstimatorRecord(
        params=estimator.get_params(deep=True),
        tags={
            "estimator_name": cls.__name__,
            "estimator_class": f"{cls.__module__}.{cls.__name__}",
        },
        metrics={TRAINING_PREFIX + k: float(v) for k, v in metrics.items()},
        html=html,
    )


def log_estimator_record(record: EstimatorRecord) -> None:
    """Log ``record`` on the active run, as autolog would (params it already has are kept)."""
    log_params_missing(record.params)
    mlflow.set_tags(record.tags)
    mlflow.log_metrics(record.metrics)
    mlflow.log_text(record.html, ESTIMATOR_HTML)
