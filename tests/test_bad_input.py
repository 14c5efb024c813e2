"""Every bad input: a one-line error naming the problem, non-zero exit, no run left
FINISHED or RUNNING (`mlflow run` marks the step's run FAILED)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tests.conftest import copy_months, mlflow_run, tlc_file

pytestmark = pytest.mark.slow


def assert_rejected(tracking, entry_point, params, message, extra_env=None):
    before = {r.info.run_id for r in tracking.runs()}
    completed = mlflow_run(tracking, entry_point, params, extra_env=extra_env)
    assert completed.returncode != 0
    errors = [line for line in completed.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, completed.output[-3000:]
    assert message in errors[0], errors[0]
    new = [r for r in tracking.runs() if r.info.run_id not in before]
    assert all(r.info.status == "FAILED" for r in new), [r.info.status for r in new]
    return errors[0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"train_month": "2023-1"}, "month must be YYYY-MM"),
        ({"test_month": "March"}, "'--test-month'"),
        ({"val_month": "2023-01"}, "train, val and test months must be distinct"),
        ({"color": "blue"}, "'blue' is not one of 'green', 'yellow'"),
    ],
)
def test_bad_preprocess_params(tracking, tlc_dir, params, message):
    assert_rejected(tracking, "preprocess", {"raw_data_path": tlc_dir, **params}, message)


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


def test_file_that_is_not_parquet(tracking, tmp_path):
    raw = copy_months(tmp_path / "raw")
    (raw / "green_tripdata_2023-02.parquet").write_text("not, parquet\n")
    assert_rejected(
        tracking,
        "preprocess",
        {"raw_data_path": raw},
        "green_tripdata_2023-02.parquet is not a readable parquet file",
    )


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


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "catboost"}, "'catboost' is not one of 'xgboost'"),
        ({"max_evals": 0}, "'--max-evals': 0 is not in the range x>=1"),
        ({"preprocess_run_id": "0123456789abcdef0123456789abcdef"}, "no such run"),
    ],
)
def test_bad_hpo_params(tracking, params, message):
    assert_rejected(tracking, "hpo", params, message)


def test_preprocess_run_id_that_is_not_a_preprocess_run(tracking):
    other = tracking.client.create_run(tracking.experiment_id, tags={"step": "hpo"})
    tracking.client.set_terminated(other.info.run_id)
    assert_rejected(
        tracking,
        "hpo",
        {"preprocess_run_id": other.info.run_id},
        "is a hpo run, not a preprocess run",
    )


def test_no_preprocess_run_to_default_to(tracking):
    assert_rejected(tracking, "hpo", {}, "no finished preprocess run in experiment")


def _fake_run(tracking, step, **params):
    run = tracking.client.create_run(tracking.experiment_id, tags={"step": step})
    for key, value in params.items():
        tracking.client.log_param(run.info.run_id, key, value)
    tracking.client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.mark.parametrize(
    ("entry_point", "params", "message"),
    [
        ("train_best", {"top_n": 0}, "'--top-n': 0 is not in the range x>=1"),
        ("train_best", {"hpo_run_id": "f" * 32}, "no such run"),
        ("register", {"select_by": "mae"}, "'mae' is not one of 'val_rmse', 'test_rmse'"),
        ("register", {"model_name": "bad/name"}, "invalid model name 'bad/name'"),
        ("register", {}, "no finished train_best run in experiment"),
        ("rollback", {"version": 1, "reason": "x"}, "model 'nyc-taxi-regressor' has no version"),
        ("score", {"model_uri": "models:/nope@champion"}, "model 'nope' has no alias"),
    ],
)
def test_bad_model_step_params(tracking, entry_point, params, message):
    assert_rejected(tracking, entry_point, params, message)
    assert tracking.client.search_registered_models() == []


def test_hpo_run_id_that_is_not_an_hpo_run(tracking):
    other = _fake_run(tracking, "preprocess")
    assert_rejected(
        tracking, "train_best", {"hpo_run_id": other}, "is a preprocess run, not a hpo run"
    )


def test_hpo_run_without_finished_trials(tracking):
    search = _fake_run(
        tracking, "hpo", model="xgboost", num_boost_round="5", early_stopping_rounds="2"
    )
    assert_rejected(
        tracking, "train_best", {"hpo_run_id": search}, f"hpo run {search} has no finished trials"
    )


def test_train_run_id_that_is_not_a_train_best_run(tracking):
    other = _fake_run(tracking, "hpo")
    assert_rejected(
        tracking, "register", {"train_run_id": other}, "is a hpo run, not a train_best run"
    )
    assert tracking.client.search_registered_models() == []
