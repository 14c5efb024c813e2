"""Run names say what each run is; the experiment opens on its training runs in the UI."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.hpo import HpoConfig
from steps.preprocess import PreprocessConfig
from steps.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, step_run
from steps.train_best import candidate_run_name


@pytest.mark.parametrize(
    ("color", "months", "name"),
    [
        ("green", ("2023-01", "2023-02", "2023-03"), "preprocess 2023-01..03"),
        ("yellow", ("2023-01", "2023-02", "2023-03"), "preprocess yellow 2023-01..03"),
        ("green", ("2022-11", "2022-12", "2023-01"), "preprocess 2022-11..2023-01"),
    ],
)
def test_preprocess_run_name(color, months, name):
    assert PreprocessConfig(Path("raw"), color, *months).run_name() == name


def test_hpo_and_candidate_run_names():
    assert HpoConfig(model="xgboost").run_name() == "hpo xgboost"
    assert HpoConfig(model="lasso", resume_run_id="abc").run_name() == "hpo lasso (resume)"
    assert candidate_run_name(1, 7) == "candidate-1 (trial 007)"


def test_step_run_names_the_run_and_tags_the_experiment(tracking):
    client = tracking.client
    with step_run("score", "score 2023-03") as run:
        pass
    assert client.get_run(run.info.run_id).info.run_name == "score 2023-03"
    assert client.get_run(run.info.run_id).data.tags["step"] == "score"
    tags = client.get_experiment(tracking.experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"

    # an experiment someone gave another kind keeps it
    client.set_experiment_tag(tracking.experiment_id, EXPERIMENT_KIND_TAG, "genai_development")
    with step_run("main") as run:
        pass
    assert client.get_run(run.info.run_id).info.run_name == "main"
    tags = client.get_experiment(tracking.experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_step_run_renames_the_run_mlflow_run_created(tracking, monkeypatch):
    client = tracking.client
    existing = client.create_run(tracking.experiment_id, run_name="bold-fox-123")
    monkeypatch.setenv("MLFLOW_RUN_ID", existing.info.run_id)
    with step_run("hpo", "hpo xgboost"):
        pass
    renamed = client.get_run(existing.info.run_id)
    assert (renamed.info.run_name, renamed.data.tags["mlflow.runName"]) == ("hpo xgboost",) * 2
