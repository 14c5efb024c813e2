"""scripts/reproduce.py: the pipeline on real data with small budgets, then train_best runs of
every model kind re-executed from a clone at the recorded commit and compared metric for metric,
prediction for prediction and payload by payload content.

Per kind: an untouched run reproduces (XGBoost in an environment uv builds from the commit's
python_env.yaml, the others in this one, `local`: still a rerun from the clone); the same run
with its logged payload replaced by another seed's model is caught; a rerun that crashes (its
upstream preprocess artifacts gone from the store) is a difference, exit 1, not exit 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, assert_ok, fresh_clone, mlflow_run

pytestmark = [pytest.mark.slow, pytest.mark.envmanager]

KINDS = ("xgboost", "random_forest", "lasso", "linear")
SEARCH = {"max_evals": 2, "num_boost_round": 10, "early_stopping_rounds": 3}
OTHER_SEED = 7  # the pipeline's seed is MLproject's default, 42


def reproduce(tracking, run_id, env_manager="uv"):
    env = tracking.env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # mlflow and uv
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "reproduce.py"),
            run_id,
            "--env-manager",
            env_manager,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tracking.root,
        timeout=1200,
    )


def table(result) -> dict[str, bool]:
    """The printed table: name -> equal."""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "original", "rerun", "equal"], result.stdout
    return {line.split("  ")[0]: line.rsplit(None, 1)[1] == "True" for line in lines[1:]}


def local_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tlc_dir):
    from tests.conftest import make_tracking

    tracking = make_tracking(tmp_path_factory.mktemp("repro-tracking"))
    project, commit = fresh_clone(tmp_path_factory.mktemp("repro") / "project")
    params = {"raw_data_path": tlc_dir, **SEARCH}
    main_id = assert_ok(mlflow_run(tracking, "main", params, project=project))
    tags = tracking.client.get_run(main_id).data.tags
    return tracking, tags, commit, project


@pytest.fixture(scope="module")
def train_best_runs(pipeline):
    """kind -> a train_best run: XGBoost's is main's; the others come from a 2-trial search on
    main's preprocess run (made the first time a test asks for them)."""
    tracking, tags, _, project = pipeline
    runs = {"xgboost": tags["train_best.run_id"]}

    def get(kind: str) -> str:
        if kind not in runs:
            params = {"preprocess_run_id": tags["preprocess.run_id"], "model": kind, **SEARCH}
            hpo_id = assert_ok(mlflow_run(tracking, "hpo", params, project=project))
            runs[kind] = assert_ok(
                mlflow_run(tracking, "train_best", {"hpo_run_id": hpo_id}, project=project)
            )
        return runs[kind]

    return get


def candidate(tracking, train_best_id: str):
    (run,) = tracking.client.search_runs(
        [tracking.experiment_id], f"tags.mlflow.parentRunId = '{train_best_id}'"
    )
    return run


@pytest.mark.parametrize("kind", KINDS)
def test_an_untouched_train_best_run_reproduces(pipeline, train_best_runs, kind):
    tracking, _, _, _ = pipeline
    run_id = train_best_runs(kind)
    env_manager = "uv" if kind == "xgboost" else "local"
    result = reproduce(tracking, run_id, env_manager)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    rows = table(result)
    expected = [
        "metric best_val_rmse",
        "candidate 1 metric val_rmse",
        "candidate 1 metric test_rmse",
        "candidate 1 predictions val",
        "candidate 1 predictions test",
        "candidate 1 artifacts/featurizer.json",
        "candidate 1 signature",
        "candidate 1 requirements.txt",
    ]
    if kind == "xgboost":
        expected += ["candidate 1 artifacts/booster.ubj", "candidate 1 xgboost flavor model.ubj"]
    else:  # the estimator by content, never the skops file (its member names are object IDs)
        expected += ["candidate 1 estimator class", "candidate 1 estimator params"]
        expected += {
            "random_forest": ["candidate 1 estimator estimators_"],
            "lasso": ["candidate 1 estimator coef_", "candidate 1 estimator intercept_"],
            "linear": ["candidate 1 estimator coef_", "candidate 1 estimator intercept_"],
        }[kind]
        assert "candidate 1 artifacts/estimator.skops" not in rows
    for name in expected:
        assert rows[name], name
    assert all(rows.values())
    assert not any(n.endswith("_seconds") for n in rows)  # wall clock is not compared
    assert "all" in result.stderr and "equal" in result.stderr
    experiment = tracking.client.get_experiment_by_name("tests-reproductions")
    (rerun, *_) = tracking.client.search_runs(
        [experiment.experiment_id],
        f"tags.reproduces = '{run_id}'",
        order_by=["attributes.start_time DESC"],
    )
    assert rerun.data.tags.get("mlflow.project.env", "local") == env_manager  # local: no tag
    assert rerun.info.status == "FINISHED"


def another_seeds_payload(tracking, train_best_id: str, kind: str, dest: Path) -> Path:
    """The payload of a model like the run's but from another seed: the first draw of the
    search space under OTHER_SEED, trained on the same split by the project's own code. A
    linear regression has no seed (any seed gives the same model bit for bit): its other model
    is the original with one coefficient moved by one ulp."""
    from hyperopt.pyll.stochastic import sample

    from steps.features import Featurizer
    from steps.models import Split, XGBoostSettings, search_space, train_and_evaluate
    from steps.predictor import SKOPS_TRUSTED, Predictor

    client = tracking.client
    run = client.get_run(train_best_id)
    if kind == "linear":
        import skops.io

        uri = candidate(tracking, train_best_id).data.tags["model_uri"]
        original = model_payload(tracking, uri)
        estimator = skops.io.load(original, trusted=SKOPS_TRUSTED)
        estimator.coef_[0] = np.nextafter(estimator.coef_[0], np.inf)
        dest.mkdir(parents=True)
        skops.io.dump(estimator, dest / original.name)
        return dest / original.name
    preprocess_id = run.data.tags["preprocess_run_id"]
    files = dest / "preprocess"
    files.mkdir(parents=True)

    def fetch(path: str) -> str:
        return client.download_artifacts(preprocess_id, path, str(files))

    featurizer = Featurizer.load(fetch("featurizer/featurizer.json"))
    splits = {}
    for name in ("train", "val"):
        frame = pd.read_parquet(fetch(f"data/{name}.parquet"))
        splits[name] = Split(featurizer.transform(frame), frame["duration"].to_numpy(np.float64))
    params = sample(search_space(kind, OTHER_SEED), rng=np.random.default_rng(OTHER_SEED))
    settings = XGBoostSettings(SEARCH["num_boost_round"], SEARCH["early_stopping_rounds"])
    model = train_and_evaluate(kind, params, splits["train"], splits["val"], settings).model
    return Predictor(kind, featurizer, model).save(dest / "model")["payload"]


def model_payload(tracking, model_uri: str) -> Path:
    """Where the artifact store keeps a logged model's payload (MLflow 3: the logged model's
    own artifact location, models/<model_id>/artifacts/, with the pyfunc's artifacts/ in it)."""
    model_id = model_uri.removeprefix("models:/")
    location = local_path(tracking.client.get_logged_model(model_id).artifact_location)
    (payload,) = [p for p in (location / "artifacts").iterdir() if p.suffix in (".ubj", ".skops")]
    return payload


@pytest.mark.parametrize("kind", KINDS)
def test_a_payload_replaced_by_another_seeds_model_is_caught(
    pipeline, train_best_runs, kind, tmp_path
):
    tracking, _, _, _ = pipeline
    run_id = train_best_runs(kind)
    payload = model_payload(tracking, candidate(tracking, run_id).data.tags["model_uri"])
    other = another_seeds_payload(tracking, run_id, kind, tmp_path / "other")
    assert other.read_bytes() != payload.read_bytes()
    kept = tmp_path / "kept" / payload.name
    kept.parent.mkdir()
    shutil.copy2(payload, kept)
    shutil.copyfile(other, payload)  # the store now holds another model under the run's record
    try:
        result = reproduce(tracking, run_id, env_manager="local")
    finally:
        shutil.copy2(kept, payload)
    assert result.returncode == 1, result.stdout + result.stderr[-4000:]
    rows = table(result)
    different = {name for name, equal in rows.items() if not equal}
    # The record's metrics are the original model's, and the rerun trains that model again:
    # only what the store now holds differs.
    assert rows["candidate 1 metric val_rmse"] and rows["candidate 1 metric test_rmse"]
    assert all(
        n.startswith(
            ("candidate 1 estimator", "candidate 1 artifacts/booster", "candidate 1 predictions")
        )
        for n in different
    ), different
    if kind == "xgboost":
        assert {"candidate 1 artifacts/booster.ubj", "candidate 1 predictions val"} <= different
    elif kind == "linear":
        assert "candidate 1 estimator coef_" in different
        assert "coef_" in result.stderr  # which attributes differ, by name
    else:
        assert {"candidate 1 estimator params", "candidate 1 predictions val"} <= different
    if kind == "random_forest":
        assert "candidate 1 estimator estimators_" in different
        assert "estimators_[0].params.random_state" in result.stderr
    assert "differ" in result.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_a_rerun_that_crashes_is_a_difference(pipeline, train_best_runs, kind):
    """The rerun reads the preprocess run's splits; with them gone from the artifact store it
    fails: the run is not reproduced (exit 1, the rerun's last lines shown), though its source
    is there (2 is only for a run that cannot be rerun at all)."""
    tracking, tags, _, _ = pipeline
    run_id = train_best_runs(kind)
    artifacts = local_path(tracking.client.get_run(tags["preprocess.run_id"]).info.artifact_uri)
    data, away = artifacts / "data", artifacts.parent / "data-moved-away"
    data.rename(away)
    try:
        result = reproduce(tracking, run_id, env_manager="local")
    finally:
        away.rename(data)
    assert result.returncode == 1, result.stdout + result.stderr[-4000:]
    assert table(result) == {"rerun exit code": False}
    assert "the rerun of train_best failed (exit 1); its last lines:" in result.stderr
    tail = result.stderr.split("its last lines:", 1)[1]
    assert "preprocess run" in tail and "lacks its artifacts" in tail
    assert "failed ===" in tail  # mlflow run's own last report
    experiment = tracking.client.get_experiment_by_name("tests-reproductions")
    failed = tracking.client.search_runs(
        [experiment.experiment_id], f"tags.reproduces = '{run_id}' and attributes.status = 'FAILED'"
    )
    assert len(failed) == 1


def test_a_difference_fails_the_check(pipeline):
    tracking, tags, _, _ = pipeline
    hpo_id = tags["hpo.run_id"]
    tracking.client.log_metric(hpo_id, "n_trials", 99)  # the record no longer matches a rerun
    result = reproduce(tracking, hpo_id, env_manager="local")
    assert result.returncode == 1
    assert "metric n_trials" in result.stderr and "differ" in result.stderr


def test_runs_that_cannot_be_reproduced(pipeline):
    tracking, tags, _, _ = pipeline
    client = tracking.client
    result = reproduce(tracking, "0" * 32)
    assert result.returncode == 2 and f"no run '{'0' * 32}'" in result.stderr

    plain = client.create_run(tracking.experiment_id, tags={"step": "hpo"})
    result = reproduce(tracking, plain.info.run_id)
    assert result.returncode == 2 and "was not made by `mlflow run`" in result.stderr

    original = client.get_run(tags["train_best.run_id"])
    lost = client.create_run(
        tracking.experiment_id,
        tags={**original.data.tags, "mlflow.source.git.commit": "0123456789" * 4},
    )
    result = reproduce(tracking, lost.info.run_id)
    assert result.returncode == 2
    assert "no longer has commit 0123456789012345678901234567890123456789" in result.stderr

    registered = client.get_run(tags["register.run_id"])
    result = reproduce(tracking, registered.info.run_id)
    assert result.returncode == 2 and "only preprocess, hpo, train_best" in result.stderr
