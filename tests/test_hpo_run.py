"""`mlflow run . -e hpo` on the real data with tiny budgets: structure and determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_SEARCH, assert_ok, mlflow_run

pytestmark = pytest.mark.slow
TINY = TINY_SEARCH


def trials_of(tracking, parent_run_id):
    children = tracking.runs(f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return sorted(children, key=lambda r: int(r.data.tags["trial_id"]))


@pytest.fixture(scope="module")
def xgb_search(tiny_search):
    return tiny_search


def test_parent_and_trials(shared_tracking, preprocess_run, xgb_search, tmp_path):
    client = shared_tracking.client
    parent = client.get_run(xgb_search)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["step"] == "hpo"
    assert parent.data.tags["preprocess_run_id"] == preprocess_run
    assert parent.data.params["model"] == "xgboost"
    assert parent.data.params["max_evals"] == "3"

    trials = trials_of(shared_tracking, xgb_search)
    assert [t.data.tags["trial_id"] for t in trials] == ["0", "1", "2"]
    for trial in trials:
        assert trial.info.status == "FINISHED"
        assert "step" not in trial.data.tags  # never mistaken for a step run
        assert set(trial.data.metrics) == {
            "val_rmse",
            "train_seconds",
            "best_iteration",
            "val_rmse_curve",
        }
        assert "pruned" not in trial.data.tags  # 3 trials: pruning's warm-up
        assert not {"spark.task", "spark.task.attempt"} & set(trial.data.tags)  # in process
        curve = shared_tracking.client.get_metric_history(trial.info.run_id, "val_rmse_curve")
        assert [m.step for m in curve] == list(range(1, len(curve) + 1))
        best_iteration = int(trial.data.metrics["best_iteration"])
        assert min(m.value for m in curve) == curve[best_iteration].value
        assert len(curve) == min(10, best_iteration + 1 + 3)  # early stopping after 3
        typed = json.loads(trial.data.tags["trial.params"])
        vals = json.loads(trial.data.tags["trial.vals"])
        assert isinstance(typed["max_depth"], int) and typed["objective"] == "reg:squarederror"
        assert typed["seed"] == 42
        assert vals["max_depth"] == [float(typed["max_depth"])]
        assert vals["learning_rate"] == [typed["learning_rate"]]
        assert {k: str(v) for k, v in typed.items()} == trial.data.params
        assert trial.data.metrics["best_iteration"] <= 9

    best = min(trials, key=lambda t: t.data.metrics["val_rmse"])
    assert parent.data.metrics["best_val_rmse"] == best.data.metrics["val_rmse"]
    assert parent.data.metrics["n_trials"] == 3
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    path = client.download_artifacts(xgb_search, "best_params.json", str(tmp_path))
    payload = json.loads(Path(path).read_text())
    assert payload["params"] == json.loads(best.data.tags["trial.params"])
    assert payload["vals"] == json.loads(best.data.tags["trial.vals"])
    assert payload["val_rmse"] == best.data.metrics["val_rmse"]
    assert payload["trial_run_id"] == best.info.run_id
    assert payload["settings"]["num_boost_round"] == 10
    assert payload["settings"]["prune"] is True
    assert parent.data.params["prune"] == "true"


def test_same_seed_same_trials(shared_tracking, preprocess_run, xgb_search):
    # default preprocess_run_id: the latest finished preprocess run, named in the log
    completed = mlflow_run(shared_tracking, "hpo", TINY)
    again = assert_ok(completed)
    assert f"using the latest finished preprocess run {preprocess_run}" in completed.output

    def summary(run_id):
        return [
            (t.data.tags["trial.vals"], t.data.metrics["val_rmse"])
            for t in trials_of(shared_tracking, run_id)
        ]

    assert summary(again) == summary(xgb_search)


def test_another_seed_other_trials(shared_tracking, preprocess_run, xgb_search):
    other = assert_ok(
        mlflow_run(shared_tracking, "hpo", {"preprocess_run_id": preprocess_run, **TINY, "seed": 7})
    )
    vals = [t.data.tags["trial.vals"] for t in trials_of(shared_tracking, other)]
    assert vals != [t.data.tags["trial.vals"] for t in trials_of(shared_tracking, xgb_search)]


def threads(n: int) -> dict[str, str]:
    """The environment that limits XGBoost (OpenMP) and scikit-learn's ``n_jobs=-1`` (joblib)
    to ``n`` threads."""
    return {"OMP_NUM_THREADS": str(n), "LOKY_MAX_CPU_COUNT": str(n)}


def test_seed_fixes_the_random_suggestions_whatever_the_thread_count(
    shared_tracking, preprocess_run
):
    """README "Reproducibility": the same seed gives the same hyperopt suggestions everywhere.
    TPE's first 20 trials are random draws from the seed alone, so they must not depend on the
    thread count (later ones follow the losses, and XGBoost's may differ in the last digits
    across thread counts)."""
    params = {
        "preprocess_run_id": preprocess_run,
        "max_evals": 20,
        "num_boost_round": 1,  # the suggestions are the point, not the model
        "early_stopping_rounds": 0,
        "seed": 5,
    }
    runs = [
        assert_ok(mlflow_run(shared_tracking, "hpo", params, extra_env=threads(n))) for n in (1, 2)
    ]
    one, two = (
        [(t.data.tags["trial.vals"], t.data.params) for t in trials_of(shared_tracking, r)]
        for r in runs
    )
    assert len(one) == 20
    assert one == two


def test_seed_fixes_random_forest_trials_whatever_the_thread_count(shared_tracking, preprocess_run):
    """Random forests are fitted in parallel but each tree's seed comes from ``random_state``,
    and they predict on one thread: the same trials and the same val_rmse, bit for bit, with
    one thread or two, in separate processes."""
    params = {"preprocess_run_id": preprocess_run, "model": "random_forest", "max_evals": 3}
    runs = [
        assert_ok(mlflow_run(shared_tracking, "hpo", params, extra_env=threads(n))) for n in (1, 2)
    ]
    one, two = (
        [
            (t.data.tags["trial.vals"], t.data.params, t.data.metrics["val_rmse"])
            for t in trials_of(shared_tracking, r)
        ]
        for r in runs
    )
    assert len(one) == 3
    assert one == two


@pytest.mark.parametrize(
    ("model", "n_trials", "param"),
    [("random_forest", 2, "n_estimators"), ("lasso", 2, "alpha"), ("linear", 1, None)],
)
def test_other_model_kinds(shared_tracking, preprocess_run, model, n_trials, param):
    run_id = assert_ok(
        mlflow_run(
            shared_tracking,
            "hpo",
            {"preprocess_run_id": preprocess_run, "model": model, "max_evals": 2},
        )
    )
    trials = trials_of(shared_tracking, run_id)
    assert len(trials) == n_trials
    assert all(t.info.status == "FINISHED" and "val_rmse" in t.data.metrics for t in trials)
    if param:
        assert param in trials[0].data.params
    if model == "random_forest":
        assert trials[0].data.params["random_state"] == "42"
