"""``score`` over month ranges and on Spark: the same rows, reasons and predictions as pandas.

Fast: the month-range rule, tags, and the bad inputs (refused before a run or a Spark session
starts, or failing with one line and no output). Slow: ``mlflow run -e score`` with
``spark_master=local[2]`` on two real months (one given rows that break the contract) equals
the pandas path row for row; and so does a standalone cluster on loopback started with
scripts/spark-cluster-up.sh (a worker with a bare environment). The model is a tiny XGBoost
trained and registered in process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from steps import packaging, score, tlc
from steps.errors import UserError
from steps.features import Featurizer
from steps.models import Split, XGBoostSettings, train_and_evaluate
from steps.predictor import Predictor
from tests.conftest import (
    REPO,
    TLC_DIR,
    assert_ok,
    copy_months,
    free_port,
    mlflow_run,
    tlc_file,
)
from tests.test_train_register import month_with_bad_rows


def register_tiny_model(name: str) -> str:
    """A 5-round XGBoost model on 3,000 trips of 2023-01, registered as ``name@champion``."""
    train = tlc.clean(tlc.read_month(tlc_file("2023-01"), "green").frame, "green").head(3000)
    featurizer = Featurizer.fit(train)
    split = Split(featurizer.transform(train), train["duration"].to_numpy())
    params = {"max_depth": 3, "learning_rate": 0.3, "seed": 1, "nthread": 1}
    trained = train_and_evaluate("xgboost", params, split, split, XGBoostSettings(5, 0))
    with mlflow.start_run():
        info, _ = packaging.log_predictor(
            Predictor("xgboost", featurizer, trained.model), packaging.input_example(train)
        )
    version = mlflow.register_model(info.model_uri, name).version
    MlflowClient().set_registered_model_alias(name, "champion", version)
    return str(version)


def read_folder(path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    frame["month"] = frame["month"].astype(str)
    return frame.sort_values(["month", "row_index"], ignore_index=True)


# --- the month-range rule (pure) -----------------------------------------------------------


def test_one_month_and_ranges():
    assert score.parse_months("2023-03") == ["2023-03"]
    assert score.parse_months("2023-03..2023-03") == ["2023-03"]
    assert score.parse_months("2022-11..2023-02") == ["2022-11", "2022-12", "2023-01", "2023-02"]


@pytest.mark.parametrize(
    "value, message",
    [
        ("2023-03..2023-01", "ends before it starts"),
        ("2023-1..2023-03", "YYYY-MM..YYYY-MM"),
        ("2023-01..", "YYYY-MM..YYYY-MM"),
        ("2023-01...2023-03", "YYYY-MM..YYYY-MM"),
        ("2023-13", "YYYY-MM"),
    ],
)
def test_bad_months_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        score.parse_months(value)


def test_folder_or_file_and_names():
    assert not score.writes_folder(["2023-03"], "")
    assert score.writes_folder(["2023-03"], "local[2]")
    assert score.writes_folder(["2023-02", "2023-03"], "")
    assert str(score.default_output_path("green", "2023-01..2023-03", folder=True)) == (
        "predictions/green_tripdata_2023-01..2023-03"
    )
    one = {"data.2023-03.sha256": "ab", "data.sha256": "ab"}
    assert score.sha256_tags({"2023-03": "ab"}) == one
    assert score.sha256_tags({"2023-02": "a", "2023-03": "b"}) == {
        "data.2023-02.sha256": "a",
        "data.2023-03.sha256": "b",
    }


# --- bad input, in process ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--month", "2023-03..2023-01"], "ends before it starts"),
        (["--month", "2023-3..2023-04"], "YYYY-MM..YYYY-MM"),
        (["--spark-master", "127.0.0.1:7077"], "spark_master must be local[N], spark://"),
    ],
)
def test_the_command_refuses_bad_input_on_one_line(tracking, args, message):
    result = CliRunner().invoke(score.main, args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert tracking.runs() == []  # refused before a run starts


@pytest.mark.parametrize("spark_master", ["", "local[2]"])
def test_a_missing_month_without_network_writes_nothing(
    tracking, tmp_path, monkeypatch, spark_master
):
    raw = copy_months(tmp_path / "raw", ("2023-02", "2023-03"))
    out = tmp_path / "out" / "scored"
    monkeypatch.setenv("TLC_BASE_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    with pytest.raises(UserError, match=r"cannot download green_tripdata_2023-04\.parquet"):
        score.run_score("runs:/0/model", raw, "green", "2023-02..2023-04", out, spark_master)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    assert sorted(p.name for p in raw.iterdir()) == [
        "green_tripdata_2023-02.parquet",
        "green_tripdata_2023-03.parquet",
    ]
    (run,) = tracking.runs()
    assert run.info.status == "FAILED"


def test_a_month_failing_midway_leaves_the_earlier_output(tracking, tmp_path):
    """pandas over a range: the first month is written (to the temporary folder) before the
    second fails; the output of the earlier run stays as it was, nothing else is left."""
    uri = "models:/tiny@champion"
    register_tiny_model("tiny")
    raw = copy_months(tmp_path / "raw", ("2023-02", "2023-03"))
    out = tmp_path / "out" / "scored"
    first = score.run_score(uri, raw, "green", "2023-02..2023-03", out)
    before = read_folder(out)
    assert len(before) == first.rows and sorted(p.name for p in out.iterdir()) == [
        "month=2023-02",
        "month=2023-03",
    ]
    march = raw / tlc.file_name("green", "2023-03")
    pd.read_parquet(march).drop(columns="trip_distance").to_parquet(march)
    with pytest.raises(UserError, match="has no column 'trip_distance'"):
        score.run_score(uri, raw, "green", "2023-02..2023-03", out)
    pd.testing.assert_frame_equal(read_folder(out), before)
    assert [p.name for p in out.parent.iterdir()] == ["scored"]  # no temporary folder left


# --- Spark equals pandas on real months -----------------------------------------------------


@pytest.mark.slow
def test_spark_scores_like_pandas_row_for_row(tracking, tmp_path):
    version = register_tiny_model("tiny")
    uri = "models:/tiny@champion"
    raw = copy_months(tmp_path / "raw", ("2023-02",))
    _, reasons = month_with_bad_rows(raw, "2023-03")  # float PULocationID, five bad rows
    months = "2023-02..2023-03"

    spark_out = tmp_path / "spark"
    completed = mlflow_run(
        tracking,
        "score",
        {
            "model_uri": uri,
            "raw_data_path": raw,
            "month": months,
            "output_path": spark_out,
            "spark_master": "local[2]",
        },
    )
    spark_run = tracking.client.get_run(assert_ok(completed))
    pandas_run = tracking.client.get_run(
        score.run_score(uri, raw, "green", months, tmp_path / "pandas").run_id
    )
    march_alone = score.run_score(uri, raw, "green", "2023-03", tmp_path / "march.parquet")

    spark, pandas = read_folder(spark_out), read_folder(tmp_path / "pandas")
    assert sorted(p.name for p in spark_out.iterdir()) == ["month=2023-02", "month=2023-03"]
    assert all(len(list(d.iterdir())) == 1 for d in spark_out.iterdir())  # one file per month
    assert (
        list(spark.columns)
        == list(pandas.columns)
        == [
            "pickup_datetime",
            "PULocationID",
            "DOLocationID",
            "trip_distance",
            "predicted_duration",
            "rejected_reason",
            "model_name",
            "model_version",
            "model_uri",
            "row_index",
            "month",
        ]
    )
    pd.testing.assert_frame_equal(spark, pandas, check_dtype=False)  # str vs string nulls
    assert spark.dtypes["PULocationID"] == np.float64  # March's IDs are floats: all months are
    for month in ("2023-02", "2023-03"):
        rows = spark[spark["month"] == month]
        source = raw / tlc.file_name("green", month)
        assert rows["row_index"].tolist() == list(range(len(pd.read_parquet(source))))
    march = spark[spark["month"] == "2023-03"].reset_index(drop=True)
    alone = pd.read_parquet(tmp_path / "march.parquet")  # today's single-file output
    pd.testing.assert_frame_equal(march[alone.columns], alone, check_dtype=False)
    assert dict(march.loc[march["rejected_reason"].notna(), "rejected_reason"]) == reasons
    assert march["predicted_duration"].isna().sum() == len(reasons)
    assert set(spark["model_version"]) == {version} and set(spark["model_uri"]) == {uri}

    assert spark_run.data.metrics == pandas_run.data.metrics
    assert spark_run.data.metrics["rows_rejected"] == march_alone.rows_rejected == len(reasons)
    assert spark_run.data.metrics["rows_scored"] == len(spark) - len(reasons)
    sha_tags = {k: v for k, v in spark_run.data.tags.items() if k.startswith("data.")}
    assert sha_tags == {k: v for k, v in pandas_run.data.tags.items() if k.startswith("data.")}
    assert sha_tags["data.2023-03.sha256"] == tlc.sha256_of(raw / "green_tripdata_2023-03.parquet")
    assert spark_run.data.tags["model_version"] == version
    # (`mlflow run` records the value shell-quoted, as it put it on the command line)
    assert spark_run.data.params["spark_master"] in ("local[2]", "'local[2]'")
    assert spark_run.info.run_name == "score 2023-02..2023-03"
    assert f"-> {spark_out}" in completed.output


@pytest.mark.slow
def test_score_on_a_loopback_standalone_cluster(tracking, tmp_path):
    """The worker has a bare environment (no project on its path): the contract check and
    the model still reach the executors, and the predictions equal pandas's."""
    register_tiny_model("tiny")
    uri = "models:/tiny@champion"
    state = tmp_path / "cluster"
    ports = {
        "SPARK_MASTER_PORT": free_port(),
        "SPARK_MASTER_WEBUI_PORT": free_port(),
        "SPARK_WORKER_WEBUI_PORT": free_port(),
    }
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "SPARK_WORKER_CORES": "2"}
    up = subprocess.run(
        [REPO / "scripts" / "spark-cluster-up.sh", state],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stderr
        master = up.stdout.strip()
        assert master == f"spark://127.0.0.1:{ports['SPARK_MASTER_PORT']}"
        worker_env = Path(f"/proc/{(state / 'worker.pid').read_text().strip()}/environ")
        worker = dict(v.split("=", 1) for v in worker_env.read_text().split("\0") if "=" in v)
        assert worker["PATH"] == "/usr/bin:/bin" and "VIRTUAL_ENV" not in worker

        out = tmp_path / "cluster-out"
        cmd = [sys.executable, "-m", "steps.score", "--model-uri", uri, "--month", "2023-03"]
        cmd += ["--raw-data-path", TLC_DIR, "--output-path", out, "--spark-master", master]
        scored = subprocess.run(
            cmd,
            env={**tracking.env(), "PYTHONPATH": str(REPO)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert scored.returncode == 0, scored.stderr[-5000:]
    finally:
        subprocess.run([REPO / "scripts" / "spark-cluster-down.sh", state], timeout=120)
    assert not (state / "worker.pid").exists() and not (state / "master.pid").exists()

    score.run_score(uri, TLC_DIR, "green", "2023-03", tmp_path / "pandas.parquet")
    pandas = pd.read_parquet(tmp_path / "pandas.parquet")
    cluster = read_folder(out)
    assert cluster["row_index"].tolist() == list(range(len(pandas)))
    np.testing.assert_array_equal(cluster["predicted_duration"], pandas["predicted_duration"])
    assert (cluster["PULocationID"].to_numpy() == pandas["PULocationID"].to_numpy()).all()
