"""scripts/reproduce.py: the pipeline on real data with small budgets, then its train_best run
re-executed from a clone at the recorded commit, in an environment uv builds from that
commit's python_env.yaml, compared metric for metric and byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_ok, fresh_clone, mlflow_run

pytestmark = [pytest.mark.slow, pytest.mark.envmanager]


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


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tlc_dir):
    from tests.conftest import make_tracking

    tracking = make_tracking(tmp_path_factory.mktemp("repro-tracking"))
    project, commit = fresh_clone(tmp_path_factory.mktemp("repro") / "project")
    params = {
        "raw_data_path": tlc_dir,
        "max_evals": 2,
        "num_boost_round": 10,
        "early_stopping_rounds": 3,
    }
    main_id = assert_ok(mlflow_run(tracking, "main", params, project=project))
    tags = tracking.client.get_run(main_id).data.tags
    return tracking, tags, commit


def test_train_best_reproduces_bit_for_bit(pipeline):
    tracking, tags, _ = pipeline
    result = reproduce(tracking, tags["train_best.run_id"])
    assert result.returncode == 0, result.stderr[-4000:]
    table = result.stdout.splitlines()
    assert table[0].split() == ["name", "original", "rerun", "equal"]
    rows = {line.rsplit(None, 1)[0].split("  ")[0]: line.rsplit(None, 1)[1] for line in table[1:]}
    for name in (
        "metric best_val_rmse",
        "candidate 1 metric test_rmse",
        "candidate 1 artifacts/booster.ubj",
        "candidate 1 artifacts/featurizer.json",
        "candidate 1 signature",
        "candidate 1 requirements.txt",
        "candidate 1 xgboost flavor model.ubj",
    ):
        assert rows[name] == "True", name
    assert not any(n.endswith("_seconds") for n in rows)  # wall clock is not compared
    assert "all" in result.stderr and "equal" in result.stderr
    experiment = tracking.client.get_experiment_by_name("tests-reproductions")
    rerun = tracking.client.search_runs(
        [experiment.experiment_id], f"tags.reproduces = '{tags['train_best.run_id']}'"
    )
    assert len(rerun) == 1 and rerun[0].data.tags["mlflow.project.env"] == "uv"


def test_a_difference_fails_the_check(pipeline):
    tracking, tags, _ = pipeline
    hpo_id = tags["hpo.run_id"]
    tracking.client.log_metric(hpo_id, "n_trials", 99)  # the record no longer matches a rerun
    result = reproduce(tracking, hpo_id, env_manager="local")
    assert result.returncode == 1
    assert "metric n_trials" in result.stderr and "differ" in result.stderr


def test_runs_that_cannot_be_reproduced(pipeline):
    tracking, tags, _ = pipeline
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
