"""`mlflow run .` (entry point main): the four steps nested under one run, their names, step
caching (never of register, never of a run made from uncommitted code), a bad parameter
rejected before any step, and a failing step. Runs on a clean clone, as CI and a new user have
it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steps.tracking import ENV_DIGEST_TAG, SOURCE_CLEAN_TAG, env_digest
from tests.conftest import assert_ok, copy_months, fresh_clone, git, mlflow_run

pytestmark = pytest.mark.slow
SMALL = {"max_evals": 1, "num_boost_round": 5, "early_stopping_rounds": 2}
STEPS = ["preprocess", "hpo", "train_best", "register"]


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    return fresh_clone(tmp_path_factory.mktemp("clone") / "project")


def step_runs(tracking, main_run_id):
    runs = tracking.runs(f"tags.mlflow.parentRunId = '{main_run_id}'")
    return {r.data.tags["mlflow.project.entryPoint"]: r for r in runs}


def cached_flags(tracking, main_run_id):
    tags = tracking.client.get_run(main_run_id).data.tags
    return [tags[f"{step}.cached"] for step in STEPS]


def test_main_runs_all_steps_then_reuses_them(tracking, clone, tmp_path, tlc_dir):
    project, commit = clone
    raw = copy_months(tmp_path / "raw")
    params = {"raw_data_path": raw, **SMALL}

    completed = mlflow_run(tracking, "main", params, project=project)
    first = assert_ok(completed)
    main_run = tracking.client.get_run(first)
    assert main_run.data.tags["step"] == "main"
    steps = step_runs(tracking, first)
    names = {step: run.info.run_name for step, run in steps.items()}
    assert names | {"main": main_run.info.run_name} == {
        "main": "main",
        "preprocess": "preprocess 2023-01..03",
        "hpo": "hpo xgboost",
        "train_best": "train_best xgboost",
        "register": "register nyc-taxi-regressor",
    }
    (trial,) = tracking.runs(f"tags.mlflow.parentRunId = '{steps['hpo'].info.run_id}'")
    assert trial.info.run_name == "trial-000"
    (candidate,) = tracking.runs(f"tags.mlflow.parentRunId = '{steps['train_best'].info.run_id}'")
    assert candidate.info.run_name == "candidate-1 (trial 000)"
    kind = tracking.client.get_experiment(tracking.experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"
    assert sorted(steps) == sorted(STEPS)  # each step nested under main
    for step, run in steps.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.source.git.commit"] == commit
        assert run.data.tags[SOURCE_CLEAN_TAG] == "true"
        assert run.data.tags[ENV_DIGEST_TAG] == env_digest(project)
        assert main_run.data.tags[f"{step}.run_id"] == run.info.run_id
    # each step got the previous step's run ID
    assert steps["hpo"].data.tags["preprocess_run_id"] == steps["preprocess"].info.run_id
    assert steps["train_best"].data.tags["hpo_run_id"] == steps["hpo"].info.run_id
    assert steps["register"].data.params["train_run_id"] == steps["train_best"].info.run_id
    assert cached_flags(tracking, first) == ["False"] * 4
    assert "registered: nyc-taxi-regressor version 1 (aliases: @challenger, @champion)" in (
        completed.output
    )
    summary_path = tracking.client.download_artifacts(first, "summary.json", str(tmp_path))
    summary = json.loads(Path(summary_path).read_text())
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert summary["registered"] == {
        "name": "nyc-taxi-regressor",
        "version": "1",
        "aliases": ["challenger", "champion"],
    }

    # same parameters again: nothing trains; register runs again (it reads the registry as it
    # is now) and keeps the version it registered
    n_runs = len(tracking.runs())
    completed = mlflow_run(tracking, "main", params, project=project)
    second = assert_ok(completed)
    assert cached_flags(tracking, second) == ["True", "True", "True", "False"]
    assert len(tracking.runs()) == n_runs + 2  # the new main run and its register run
    for step, run in steps.items():
        if step != "register":
            assert f"{step}: reusing run {run.info.run_id}" in completed.output
            assert tracking.client.get_run(second).data.tags[f"{step}.run_id"] == run.info.run_id
    assert "register: running (it reads and changes the registry" in completed.output
    assert "version 1 (aliases: @challenger, @champion)" in completed.output

    # a changed hpo parameter reruns hpo and everything after it
    third = assert_ok(mlflow_run(tracking, "main", {**params, "seed": 7}, project=project))
    assert cached_flags(tracking, third) == ["True", "False", "False", "False"]

    # a changed data file reruns everything
    table = pq.read_table(raw / "green_tripdata_2023-01.parquet")
    pq.write_table(table.slice(0, table.num_rows - 100), raw / "green_tripdata_2023-01.parquet")
    fourth = assert_ok(mlflow_run(tracking, "main", params, project=project))
    assert cached_flags(tracking, fourth) == ["False"] * 4

    # use_cache=false reruns everything
    fifth = assert_ok(
        mlflow_run(tracking, "main", {**params, "use_cache": "false"}, project=project)
    )
    assert cached_flags(tracking, fifth) == ["False"] * 4

    # everything above is cached now, but a tree with uncommitted changes is not a version
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nlocal edit\n")
    try:
        completed = mlflow_run(tracking, "main", params, project=project)
    finally:
        git("checkout", "README.md", cwd=project)
    sixth = assert_ok(completed)
    assert "uncommitted changes (README.md)" in completed.output
    assert "caching is off" in tracking.client.get_run(sixth).data.tags["cache"]
    assert cached_flags(tracking, sixth) == ["False"] * 4
    made_dirty = step_runs(tracking, sixth)
    assert {run.data.tags[SOURCE_CLEAN_TAG] for run in made_dirty.values()} == {"false"}

    # edit reverted: same commit, params and inputs as the sixth's runs, which are the newest,
    # but no commit holds the code they ran; the fifth's clean runs are reused instead
    seventh = assert_ok(mlflow_run(tracking, "main", params, project=project))
    tags = tracking.client.get_run(seventh).data.tags
    reused = {tags[f"{step}.run_id"] for step in STEPS}
    assert reused.isdisjoint(run.info.run_id for run in made_dirty.values())
    assert cached_flags(tracking, seventh) == ["True", "True", "True", "False"]
    assert {tags[f"{step}.run_id"] for step in STEPS[:3]} == {
        tracking.client.get_run(fifth).data.tags[f"{step}.run_id"] for step in STEPS[:3]
    }


def test_a_bad_step_parameter_fails_main_in_seconds(tracking, clone, tlc_dir):
    project, _ = clone
    params = {"raw_data_path": tlc_dir, **SMALL, "top_n": 0}  # train_best's, the third step
    started = time.monotonic()
    completed = mlflow_run(tracking, "main", params, project=project)
    seconds = time.monotonic() - started
    assert completed.returncode != 0
    errors = [line for line in completed.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: Invalid value for '--top-n': 0 is not in the range x>=1."]
    (main_run,) = tracking.runs()  # no step ran
    assert main_run.info.status == "FAILED"
    print(f"main rejected top_n=0 in {seconds:.1f} s")
    assert seconds < 60  # mlflow run's own start-up; no step, no search


def test_a_failing_step_stops_main_and_keeps_earlier_runs(tracking, clone, tlc_dir, tmp_path):
    """register fails at run time: the champion it must beat cannot be loaded."""
    project, _ = clone
    client = tracking.client
    client.create_registered_model("nyc-taxi-regressor")
    client.create_model_version(
        "nyc-taxi-regressor",
        source=str(tmp_path / "gone"),
        tags={"data.train.month": "2022-01", "data.val.month": "2022-02"},  # a fair comparison
    )
    client.set_registered_model_alias("nyc-taxi-regressor", "champion", "1")
    params = {"raw_data_path": tlc_dir, **SMALL}
    completed = mlflow_run(tracking, "main", params, project=project)
    assert completed.returncode != 0
    assert "Error: step register failed" in completed.stderr
    (main_run,) = tracking.runs("tags.step = 'main'")
    assert main_run.info.status == "FAILED"
    earlier = {}
    for step in STEPS[:3]:
        (earlier[step],) = tracking.runs(f"tags.step = '{step}'")
        assert earlier[step].info.status == "FINISHED"
        assert main_run.data.tags[f"{step}.run_id"] == earlier[step].info.run_id
    (register,) = tracking.runs("tags.step = 'register'")
    assert register.info.status == "FAILED"
    # once the champion is gone, the next main reuses the three earlier runs
    client.delete_registered_model_alias("nyc-taxi-regressor", "champion")
    fixed = assert_ok(mlflow_run(tracking, "main", params, project=project))
    tags = tracking.client.get_run(fixed).data.tags
    for step, run in earlier.items():
        assert tags[f"{step}.run_id"] == run.info.run_id
    assert cached_flags(tracking, fixed) == ["True", "True", "True", "False"]


def test_main_help_lists_every_step_parameter(clone):
    import yaml

    project, _ = clone
    spec = yaml.safe_load((project / "MLproject").read_text())["entry_points"]
    main_params = set(spec["main"]["parameters"])
    upstream = {"preprocess_run_id", "hpo_run_id", "train_run_id", "resume_run_id"}
    for step in STEPS:
        assert set(spec[step]["parameters"]) - upstream <= main_params, step
