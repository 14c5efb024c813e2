"""``train_best -P autolog=true`` for scikit-learn: the same record as MLflow's autolog."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import scipy.sparse as sp

from steps.autolog import ESTIMATOR_HTML, estimator_record, log_estimator_record
from steps.models import make_estimator
from steps.predictor import int32_indices

PARAMS = {
    "random_forest": {"max_depth": 4, "n_estimators": 7, "min_samples_split": 3, "random_state": 1},
    "lasso": {"alpha": 0.01},
    "linear": {},
}


def sparse_problem(rows=300, columns=40):
    rng = np.random.default_rng(0)
    X = sp.random(rows, columns, density=0.1, format="csr", random_state=1, dtype=np.float64)
    y = 10 + X @ rng.normal(size=columns) + rng.normal(size=rows)
    return X, y


def recorded(client, run_id):
    run = client.get_run(run_id)
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return run.data.params, tags, run.data.metrics, artifacts


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_estimator_record_logs_what_sklearn_autolog_logs(kind, tracking):
    """On a matrix small enough for MLflow to densify: params, tags, metrics and artifacts of
    the run equal those ``mlflow.sklearn.autolog`` gives the same fit."""
    X, y = sparse_problem()
    mlflow.sklearn.autolog(
        log_models=False,
        log_datasets=False,
        log_input_examples=False,
        log_model_signatures=False,
        log_post_training_metrics=False,
        silent=True,
    )
    try:
        with mlflow.start_run() as run:
            make_estimator(kind, PARAMS[kind]).fit(int32_indices(X), y)
    finally:
        mlflow.sklearn.autolog(disable=True)
    theirs = recorded(tracking.client, run.info.run_id)

    estimator = make_estimator(kind, PARAMS[kind]).fit(int32_indices(X), y)
    with mlflow.start_run() as run:
        log_estimator_record(estimator_record(estimator, X, y))
    ours = recorded(tracking.client, run.info.run_id)

    assert ours[0] == theirs[0]  # params, as strings
    assert (
        ours[1]
        == theirs[1]
        == {
            "estimator_name": type(estimator).__name__,
            "estimator_class": f"{type(estimator).__module__}.{type(estimator).__name__}",
        }
    )
    assert (
        ours[2].keys()
        == theirs[2].keys()
        == {
            "training_mean_squared_error",
            "training_mean_absolute_error",
            "training_r2_score",
            "training_root_mean_squared_error",
            "training_score",
        }
    )
    for name, value in theirs[2].items():  # autolog predicts on all cores, we on one
        assert ours[2][name] == pytest.approx(value, rel=1e-12), name
    assert ours[3] == theirs[3] == [ESTIMATOR_HTML]


def test_estimator_record_never_densifies(monkeypatch):
    X, y = sparse_problem()
    estimator = make_estimator("random_forest", PARAMS["random_forest"]).fit(X, y)

    def refuse(self, *args, **kwargs):
        raise AssertionError("densified")

    monkeypatch.setattr(sp.csr_matrix, "toarray", refuse)
    monkeypatch.setattr(sp.csr_matrix, "todense", refuse)
    record = estimator_record(estimator, X, y)
    assert record.metrics["training_r2_score"] == record.metrics["training_score"]
