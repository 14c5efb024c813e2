"""Every bad input: a one-line error naming the problem, non-zero exit, no run left
FINISHED or RUNNING.

Argument checks run in process (the step's Click command through CliRunner; the same options
in ``main`` are in test_options.py). A few real `mlflow run`s check what `mlflow run` leaves
behind (it marks the step's run FAILED), and the data-file checks run there too.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from steps import hpo, preprocess, register, rollback, score, train_best
from tests.conftest import (
    Tracking,
    ambient,
    copy_months,
    make_tracking,
    mlflow_run,
    tlc_file,
)

COMMANDS = {
    "preprocess": preprocess.main,
    "hpo": hpo.main,
    "train_best": train_best.main,
    "register": register.main,
    "rollback": rollback.main,
    "score": score.main,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Tracking:
    return make_tracking(tmp_path_factory.mktemp("bad-input"))


@pytest.fixture
def tracking(store, tmp_path, monkeypatch) -> Tracking:
    """A fresh experiment in the module's store (a fresh SQLite store costs seconds)."""
    experiment_id = store.client.create_experiment(
        tmp_path.name, artifact_location=(tmp_path / "artifacts").as_uri()
    )
    yield from ambient(Tracking(store.uri, experiment_id, tmp_path), monkeypatch)


def _check_rejected(tracking, before, returncode, stderr, message):
    assert returncode != 0
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert message in errors[0], errors[0]
    new = [r for r in tracking.runs() if r.info.run_id not in before]
    assert all(r.info.status == "FAILED" for r in new), [r.info.status for r in new]
    return errors[0]


def assert_rejected(tracking, entry_point, params, message, extra_env=None):
    """Through a real `mlflow run`."""
    before = {r.info.run_id for r in tracking.runs()}
    completed = mlflow_run(tracking, entry_point, params, extra_env=extra_env)
    return _check_rejected(tracking, before, completed.returncode, completed.stderr, message)


def assert_rejected_in_process(tracking, entry_point, params, message):
    """The step's Click command in this process, parameters as `mlflow run` passes them."""
    before = {r.info.run_id for r in tracking.runs()}
    args = [a for k, v in params.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    result = CliRunner().invoke(COMMANDS[entry_point], args)
    return _check_rejected(tracking, before, result.exit_code, result.output, message)


@pytest.mark.slow
def test_bad_parameter_under_mlflow_run(tracking, tlc_dir):
    assert_rejected(
        tracking,
        "preprocess",
        {"raw_data_path": tlc_dir, "color": "blue"},
        "'blue' is not one of 'green', 'yellow'",
    )


@pytest.mark.slow
def test_missing_file_that_cannot_be_downloaded(tracking, tmp_path):
    message = assert_rejected(
        tracking,
        "preprocess",
        {"raw_data_path": tmp_path / "raw"},
        "cannot download green_tripdata_2023-01.parquet from http://127.0.0.1:9/",
        extra_env={"TLC_BASE_URL": "http://127.0.0.1:9"},
    )
    assert "green_tripdata_2023-01.parquet" in message
    assert not list((tmp_path / "raw").glob("*"))


@pytest.mark.slow
def test_file_that_is_not_parquet(tracking, tmp_path):
    raw = copy_months(tmp_path / "raw")
    (raw / "green_tripdata_2023-02.parquet").write_text("not, parquet\n")
    assert_rejected(
        tracking,
        "preprocess",
        {"raw_data_path": raw},
        "green_tripdata_2023-02.parquet is not a readable parquet file",
    )


@pytest.mark.slow
def test_file_missing_a_column(tracking, tmp_path):
    raw = copy_months(tmp_path / "raw")
    table = pq.read_table(tlc_file("2023-03")).drop_columns(["DOLocationID"])
    pq.write_table(table, raw / "green_tripdata_2023-03.parquet")
    assert_rejected(
        tracking,
        "preprocess",
        {"raw_data_path": raw},
        "green_tripdata_2023-03.parquet has no column 'DOLocationID'",
    )


@pytest.mark.slow
def test_month_with_no_rows_left(tracking, tmp_path):
    raw = copy_months(tmp_path / "raw")
    table = pq.read_table(tlc_file("2023-02"))
    i = table.column_names.index("lpep_dropoff_datetime")
    table = table.set_column(i, "lpep_dropoff_datetime", table.column("lpep_pickup_datetime"))
    pq.write_table(table, raw / "green_tripdata_2023-02.parquet")
    assert_rejected(
        tracking,
        "preprocess",
        {"raw_data_path": raw},
        "no val rows left after keeping durations of 1-60 minutes",
    )


def _fake_run(tracking, step, **params):
    run = tracking.client.create_run(tracking.experiment_id, tags={"step": step})
    for key, value in params.items():
        tracking.client.log_param(run.info.run_id, key, value)
    tracking.client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.mark.parametrize(
    ("entry_point", "params", "message"),
    [
        ("hpo", {"preprocess_run_id": "0123456789abcdef0123456789abcdef"}, "no such run"),
        ("hpo", {}, "no finished preprocess run in experiment"),
        ("train_best", {"hpo_run_id": "f" * 32}, "no such run"),
        ("register", {}, "no finished train_best run in experiment"),
        ("rollback", {"version": 1, "reason": "x"}, "model 'nyc-taxi-regressor' has no version"),
        ("rollback", {"version": 1, "reason": " "}, "reason must say why"),
        ("score", {"model_uri": "models:/nope@champion"}, "model 'nope' has no alias"),
    ],
)
def test_upstream_that_is_not_there(tracking, entry_point, params, message):
    assert_rejected_in_process(tracking, entry_point, params, message)
    assert tracking.client.search_registered_models() == []


def test_preprocess_run_id_that_is_not_a_preprocess_run(tracking):
    other = _fake_run(tracking, "hpo")
    assert_rejected_in_process(
        tracking, "hpo", {"preprocess_run_id": other}, "is a hpo run, not a preprocess run"
    )


def test_hpo_run_id_that_is_not_an_hpo_run(tracking):
    other = _fake_run(tracking, "preprocess")
    assert_rejected_in_process(
        tracking, "train_best", {"hpo_run_id": other}, "is a preprocess run, not a hpo run"
    )


def test_hpo_run_without_finished_trials(tracking):
    search = _fake_run(
        tracking, "hpo", model="xgboost", num_boost_round="5", early_stopping_rounds="2"
    )
    assert_rejected_in_process(
        tracking, "train_best", {"hpo_run_id": search}, f"hpo run {search} has no finished trials"
    )


@pytest.mark.slow
def test_train_run_id_that_is_not_a_train_best_run(tracking):
    other = _fake_run(tracking, "hpo")
    assert_rejected(
        tracking, "register", {"train_run_id": other}, "is a hpo run, not a train_best run"
    )
    assert tracking.client.search_registered_models() == []


def test_a_folder_that_cannot_be_created_is_one_line(tracking, tmp_path):
    """A path through a regular file (root may write anywhere, so no permission case): the
    OSError is the one-line error, and the run ends FAILED."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    message = assert_rejected_in_process(
        tracking, "preprocess", {"raw_data_path": blocker / "raw"}, "Not a directory"
    )
    assert str(blocker) in message
