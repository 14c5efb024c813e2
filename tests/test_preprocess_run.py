"""`mlflow run . -e preprocess` on the real TLC months: what the run records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from steps.features import Featurizer, records_path_matrix
from tests.conftest import (
    MONTHS_2023,
    assert_ok,
    copy_months,
    manifest,
    mlflow_run,
    write_yellow_copy,
)

pytestmark = pytest.mark.slow
KEPT_2023 = {"train": 65946, "val": 62574, "test": 69392}


def test_preprocess_run_records_params_metrics_inputs_and_artifacts(
    shared_tracking, preprocess_run, tlc_dir, tmp_path
):
    client = shared_tracking.client
    run = client.get_run(preprocess_run)
    assert run.info.status == "FINISHED"
    assert run.data.tags["step"] == "preprocess"
    assert run.data.params == {
        "raw_data_path": str(tlc_dir),
        "color": "green",
        "train_month": "2023-01",
        "val_month": "2023-02",
        "test_month": "2023-03",
    }
    for split, month in zip(("train", "val", "test"), MONTHS_2023, strict=True):
        entry = manifest()[f"green_tripdata_{month}.parquet"]
        assert run.data.metrics[f"rows_read_{split}"] == int(entry["rows"])
        assert run.data.metrics[f"rows_kept_{split}"] == KEPT_2023[split]
        assert run.data.tags[f"data.{split}.sha256"] == entry["sha256"]
        assert run.data.tags[f"data.{split}.month"] == month

    inputs = {
        {t.key: t.value for t in i.tags}["mlflow.data.context"]: i
        for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"train", "val", "test"}
    for split, month in zip(("train", "val", "test"), MONTHS_2023, strict=True):
        entry = manifest()[f"green_tripdata_{month}.parquet"]
        dataset_input = inputs[split]
        assert dataset_input.dataset.digest == entry["sha256"][:36]
        assert {t.key: t.value for t in dataset_input.tags}["sha256"] == entry["sha256"]
        assert dataset_input.dataset.name == f"green_tripdata_{month}.parquet"
        source = json.loads(dataset_input.dataset.source)
        assert source["uri"].endswith(f"green_tripdata_{month}.parquet")
        assert json.loads(dataset_input.dataset.profile)["num_rows"] == int(entry["rows"])
        location = "integer" if month >= "2023-02" else "long"  # the TLC's int32 from 2023-02
        assert json.loads(dataset_input.dataset.schema)["mlflow_colspec"] == [
            {"type": "datetime", "name": "lpep_pickup_datetime", "required": True},
            {"type": "datetime", "name": "lpep_dropoff_datetime", "required": True},
            {"type": location, "name": "PULocationID", "required": True},
            {"type": location, "name": "DOLocationID", "required": True},
            {"type": "double", "name": "trip_distance", "required": True},
        ]

    local = client.download_artifacts(preprocess_run, "", str(tmp_path))
    names = sorted(str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file())
    assert names == [
        "data/test.parquet",
        "data/train.parquet",
        "data/val.parquet",
        "featurizer/featurizer.json",
    ]
    train = pd.read_parquet(f"{local}/data/train.parquet")
    assert len(train) == KEPT_2023["train"]
    assert train["duration"].between(1, 60).all()
    _, vectorizer = records_path_matrix(train)
    featurizer = Featurizer.load(f"{local}/featurizer/featurizer.json")
    assert list(featurizer.feature_names) == list(vectorizer.feature_names_)
    assert run.data.metrics["n_features"] == len(featurizer.feature_names)


def test_yellow_months(tracking, tmp_path):
    raw = tmp_path / "yellow"
    raw.mkdir()
    for month in MONTHS_2023:
        write_yellow_copy(month, raw)
    run_id = assert_ok(
        mlflow_run(tracking, "preprocess", {"raw_data_path": raw, "color": "yellow"})
    )
    metrics = tracking.client.get_run(run_id).data.metrics
    assert {s: metrics[f"rows_kept_{s}"] for s in KEPT_2023} == KEPT_2023


def test_missing_months_are_downloaded(tracking, tmp_path, tlc_server, tlc_dir):
    served = copy_months(tmp_path / "served", ("2021-01", "2021-02", "2021-03"))
    raw = tmp_path / "raw"  # does not exist yet
    completed = mlflow_run(
        tracking,
        "preprocess",
        {
            "raw_data_path": raw,
            "train_month": "2021-01",
            "val_month": "2021-02",
            "test_month": "2021-03",
        },
        extra_env={"TLC_BASE_URL": tlc_server(served)},
    )
    run = tracking.client.get_run(assert_ok(completed))
    assert sorted(p.name for p in raw.iterdir()) == [
        f"green_tripdata_2021-0{m}.parquet" for m in (1, 2, 3)
    ]
    assert (
        run.data.tags["data.train.sha256"] == manifest()["green_tripdata_2021-01.parquet"]["sha256"]
    )
    assert run.data.metrics["rows_kept_train"] == 73908
    assert run.data.metrics["rows_kept_val"] == 61921
