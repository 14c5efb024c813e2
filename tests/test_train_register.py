"""train_best -> register -> load by alias, serve over HTTP, batch-score: on the real months
with tiny budgets, through real `mlflow run`s, a real SQLite registry and a real server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
import yaml

from steps import tlc
from steps.contract import clip_minutes
from steps.features import Featurizer
from tests.conftest import assert_ok, manifest, mlflow_run, tlc_file, write_yellow_copy
from tests.test_serving import post, served

pytestmark = pytest.mark.slow
INPUT = ["PULocationID", "DOLocationID", "trip_distance"]


@pytest.fixture(autouse=True)
def _ambient_store(shared_tracking):
    """In-process loads (``models:/...``) read the same store as the `mlflow run`s."""
    mlflow.set_tracking_uri(shared_tracking.uri)
    yield
    mlflow.set_tracking_uri(None)


def children(tracking, run_id):
    return tracking.runs(f"tags.mlflow.parentRunId = '{run_id}'")


def test_rmse(model, month="2023-03"):
    cleaned = tlc.clean(tlc.read_month(tlc_file(month), "green").frame, "green")
    pred = np.asarray(model.predict(cleaned[INPUT]), dtype=np.float64)
    return float(np.sqrt(np.mean((cleaned["duration"].to_numpy() - pred) ** 2)))


test_rmse.__test__ = False  # a helper, not a test


def test_candidates_are_retrained_trials(shared_tracking, tiny_search, train_run, tmp_path):
    client = shared_tracking.client
    parent = client.get_run(train_run)
    assert parent.data.tags["hpo_run_id"] == tiny_search
    trials = {t.info.run_id: t for t in children(shared_tracking, tiny_search)}
    best_two = sorted(trials.values(), key=lambda t: t.data.metrics["val_rmse"])[:2]
    candidates = sorted(
        children(shared_tracking, train_run), key=lambda c: int(c.data.tags["candidate_rank"])
    )
    assert [c.data.tags["hpo_trial_run_id"] for c in candidates] == [
        t.info.run_id for t in best_two
    ]
    for candidate in candidates:
        trial = trials[candidate.data.tags["hpo_trial_run_id"]]
        m = candidate.data.metrics
        assert candidate.info.status == "FINISHED"
        # same params, same data, same trees: the trial's RMSE to the last digit
        assert m["val_rmse"] == trial.data.metrics["val_rmse"]
        assert m["best_iteration"] == trial.data.metrics["best_iteration"]
        assert candidate.data.params == trial.data.params
        assert m["test_rmse"] > 0 and m["model_size_bytes"] > 0 and m["train_seconds"] > 0
        assert parent.data.metrics["best_val_rmse"] <= m["val_rmse"]

        local = Path(client.download_artifacts(candidate.info.run_id, "", str(tmp_path)))
        files = {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()}
        assert {
            "plots/val_predicted_vs_actual.png",
            "plots/test_predicted_vs_actual.png",
            "plots/val_residuals.png",
            "plots/test_residuals.png",
            "plots/feature_importance.png",
            "model_card.md",
        } <= files
        card = (local / "model_card.md").read_text()
        assert candidate.data.tags["model_uri"] in card
        assert parent.data.tags["mlflow.source.git.commit"] in card
        assert manifest()["green_tripdata_2023-03.parquet"]["sha256"] in card


def test_saved_model_agrees_with_logged_metrics(shared_tracking, train_run, tmp_path):
    (best,) = [
        c for c in children(shared_tracking, train_run) if c.data.tags["candidate_rank"] == "1"
    ]
    model_uri = best.data.tags["model_uri"]
    model = mlflow.pyfunc.load_model(model_uri)
    assert test_rmse(model) == best.data.metrics["test_rmse"]

    # the xgboost flavor gives the course's Booster, with the same trees
    booster = mlflow.xgboost.load_model(best.data.tags["xgboost_model_uri"])
    assert isinstance(booster, xgb.Booster)
    raw = pd.read_parquet(tlc_file("2023-03"))
    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path)))
    featurizer = Featurizer.load(next(local.rglob("featurizer.json")))
    np.testing.assert_array_equal(
        clip_minutes(booster.predict(xgb.DMatrix(featurizer.transform(raw)))),
        model.predict(raw),
    )
    # nothing pickled; the signature names the contract's columns (IDs "any": steps/packaging.py)
    assert not [p for p in local.rglob("*") if p.suffix in {".pkl", ".pickle", ".cloudpickle"}]
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert {c["name"]: c["type"] for c in inputs} == {
        "PULocationID": "any",
        "DOLocationID": "any",
        "trip_distance": "double",
    }
    assert (local / "input_example.json").exists()


def test_model_reads_raw_tlc_frames_int32_and_int64_green_and_yellow(
    shared_tracking, train_run, tmp_path
):
    (best,) = [
        c for c in children(shared_tracking, train_run) if c.data.tags["candidate_rank"] == "1"
    ]
    model = mlflow.pyfunc.load_model(best.data.tags["model_uri"])
    int64_month = pd.read_parquet(tlc_file("2021-01"))
    int32_month = pd.read_parquet(tlc_file("2023-03"))
    assert int64_month["PULocationID"].dtype == np.int64
    assert int32_month["PULocationID"].dtype == np.int32
    for frame in (
        int64_month,
        int32_month,
        pd.read_parquet(write_yellow_copy("2023-03", tmp_path)),
    ):
        pred = model.predict(frame)
        assert len(pred) == len(frame) and np.isfinite(pred).all()


def test_register_promote_keep_and_rollback(shared_tracking, train_run, worse_train_run):
    client = shared_tracking.client
    name = "registry-flow"

    # 1. a linear baseline first: no champion yet, so it becomes champion
    completed = mlflow_run(
        shared_tracking, "register", {"train_run_id": worse_train_run, "model_name": name}
    )
    first = client.get_run(assert_ok(completed))
    assert "promoted: there was no champion" in completed.output
    v1 = client.get_model_version(name, "1")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    # 2. XGBoost beats it on the test month: promoted, v1 tagged as replaced
    completed = mlflow_run(
        shared_tracking, "register", {"train_run_id": train_run, "model_name": name}
    )
    second = client.get_run(assert_ok(completed))
    assert second.data.tags["decision"].startswith("promoted: test_rmse")
    assert second.data.metrics["candidate_test_rmse"] < second.data.metrics["champion_test_rmse"]
    assert second.data.metrics["champion_test_rmse"] == first.data.metrics["candidate_test_rmse"]
    v2 = client.get_model_version(name, "2")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    assert client.get_model_version(name, "1").tags["replaced_by_version"] == "2"
    best = client.get_run(second.data.tags["candidate_run_id"])
    assert best.data.tags["candidate_rank"] == "1"  # selected by val_rmse
    assert v2.tags["test_rmse"] == repr(best.data.metrics["test_rmse"])
    assert v2.tags["val_rmse"] == repr(best.data.metrics["val_rmse"])
    assert v2.tags["hpo_run_id"] == client.get_run(train_run).data.tags["hpo_run_id"]
    assert v2.tags["data.test.sha256"] == manifest()["green_tripdata_2023-03.parquet"]["sha256"]
    assert v2.tags["git_commit"] == best.data.tags["mlflow.source.git.commit"]
    assert v2.description and "val_rmse" in v2.description
    assert v1.run_id == first.data.tags["candidate_run_id"]

    # 3. the worse candidate again: no new version, champion stays
    completed = mlflow_run(
        shared_tracking, "register", {"train_run_id": worse_train_run, "model_name": name}
    )
    third = client.get_run(assert_ok(completed))
    assert third.data.tags["registered_version"] == "1"
    assert third.data.tags["decision"].startswith("not promoted")
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "1"

    # 4. registering the same candidate twice gives one version, and says it is champion
    completed = mlflow_run(
        shared_tracking, "register", {"train_run_id": train_run, "model_name": name}
    )
    fourth = client.get_run(assert_ok(completed))
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    assert f"{name} version 2 (@challenger): kept: version 2 is already the champion" in (
        completed.output
    )
    assert "champion_test_rmse" not in fourth.data.metrics  # nothing to compare with
    assert "test_rmse none" not in completed.output

    # 5. rollback to v1, with a reason
    completed = mlflow_run(
        shared_tracking, "rollback", {"model_name": name, "version": 1, "reason": "v2 drifts"}
    )
    rollback = client.get_run(assert_ok(completed))
    assert f"{name}: rolled back: champion 2 -> 1 (v2 drifts)" in completed.output
    assert rollback.info.run_name == f"rollback {name} to 1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert client.get_model_version(name, "1").tags["promotion_reason"] == "rollback: v2 drifts"
    assert client.get_model_version(name, "2").tags["replaced_by_version"] == "1"


def test_select_by_test_rmse(shared_tracking, train_run):
    client = shared_tracking.client
    run_id = assert_ok(
        mlflow_run(
            shared_tracking,
            "register",
            {"train_run_id": train_run, "model_name": "by-test", "select_by": "test_rmse"},
        )
    )
    chosen = client.get_run(client.get_run(run_id).data.tags["candidate_run_id"])
    others = children(shared_tracking, train_run)
    assert chosen.data.metrics["test_rmse"] == min(c.data.metrics["test_rmse"] for c in others)


@pytest.fixture(scope="module")
def champion(shared_tracking, train_run):
    name = "served"
    assert_ok(
        mlflow_run(shared_tracking, "register", {"train_run_id": train_run, "model_name": name})
    )
    return name


def test_champion_loads_by_alias_and_serves_over_http(shared_tracking, champion):
    uri = f"models:/{champion}@champion"
    model = mlflow.pyfunc.load_model(uri)
    raw = pd.read_parquet(tlc_file("2023-03")).head(5)
    expected = model.predict(raw)

    with served(shared_tracking, uri) as base:
        records = json.loads(raw.to_json(orient="records", date_format="iso"))  # all columns
        status, body = post(f"{base}/invocations", {"dataframe_records": records})
        assert status == 200, body
        np.testing.assert_allclose(body["predictions"], expected, rtol=1e-6)

        bad = [{k: v for k, v in r.items() if k != "trip_distance"} for r in records]
        status, body = post(f"{base}/invocations", {"dataframe_records": bad})
        assert status == 400
        assert "trip_distance" in body["message"]


def month_with_bad_rows(dest_dir: Path, month: str = "2023-03") -> tuple[Path, dict[int, str]]:
    """A copy of a real month with a few rows that break the input contract; their reasons."""
    table = pq.read_table(tlc_file(month))
    frame = table.to_pandas()
    frame["PULocationID"] = frame["PULocationID"].astype("float64")
    bad = {
        5: ("trip_distance", None, "trip_distance is null or NaN"),
        7: ("trip_distance", -2.0, "trip_distance is negative"),
        9: ("trip_distance", np.inf, "trip_distance is infinite"),
        11: ("PULocationID", None, "PULocationID is null"),
        13: ("PULocationID", 43.5, "PULocationID is not an integer"),
    }
    for row, (column, value, _) in bad.items():
        frame.loc[row, column] = value
    dest = dest_dir / tlc.file_name("green", month)
    frame.to_parquet(dest, index=False)
    return dest, {row: reason for row, (_, _, reason) in bad.items()}


def test_batch_scoring_a_month(shared_tracking, champion, tmp_path):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    source, reasons = month_with_bad_rows(raw_dir)
    out = tmp_path / "scored" / "march.parquet"
    completed = mlflow_run(
        shared_tracking,
        "score",
        {
            "model_uri": f"models:/{champion}@champion",
            "raw_data_path": raw_dir,
            "month": "2023-03",
            "output_path": out,
        },
    )
    run_id = assert_ok(completed)
    scored = pd.read_parquet(out)
    raw = pd.read_parquet(source)
    rows = int(manifest()["green_tripdata_2023-03.parquet"]["rows"])
    assert len(scored) == len(raw) == rows  # every row kept, bad ones too
    assert list(scored.columns) == [
        "pickup_datetime",
        "PULocationID",
        "DOLocationID",
        "trip_distance",
        "predicted_duration",
        "rejected_reason",
        "model_name",
        "model_version",
        "model_uri",
    ]
    version = str(shared_tracking.client.get_model_version_by_alias(champion, "champion").version)
    assert set(scored["model_version"]) == {version}
    assert (scored["pickup_datetime"].to_numpy() == raw["lpep_pickup_datetime"].to_numpy()).all()

    rejected = scored["rejected_reason"].notna().to_numpy()
    assert dict(scored.loc[rejected, "rejected_reason"]) == reasons
    assert pq.read_table(out).column("predicted_duration").null_count == len(reasons)
    model = mlflow.pyfunc.load_model(f"models:/{champion}/{version}")
    np.testing.assert_array_equal(
        scored.loc[~rejected, "predicted_duration"].to_numpy(), model.predict(raw[~rejected])
    )
    metrics = shared_tracking.client.get_run(run_id).data.metrics
    assert metrics["rows_rejected"] == len(reasons)
    assert metrics["rows_scored"] == rows - len(reasons)
    assert f"{rows - len(reasons)} of {rows} trips scored, {len(reasons)} rejected" in (
        completed.output
    )
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_autolog_without_densifying_or_pickles(shared_tracking, tiny_search):
    completed = mlflow_run(
        shared_tracking,
        "train_best",
        {"hpo_run_id": tiny_search, "autolog": "true"},
        measure_peak=True,
    )
    run_id, peak_kib = assert_ok(completed), completed.peak_rss_kib
    (candidate,) = children(shared_tracking, run_id)
    # autolog's per-iteration metric is there ...
    history = shared_tracking.client.get_metric_history(candidate.info.run_id, "validation-rmse")
    assert len(history) >= 2
    # ... but no dataset logged (that is what densifies) and no model beside ours
    assert candidate.inputs.dataset_inputs == []
    models = mlflow.search_logged_models(
        experiment_ids=[shared_tracking.experiment_id],
        filter_string=f"source_run_id = '{candidate.info.run_id}'",
        output_format="list",
    )
    assert sorted(m.name for m in models) == ["model", "xgboost_model"]
    # a dense float64 copy of the train month alone would be 66k x 5.7k x 8 B = 3 GB
    assert peak_kib < 2_000_000, f"a step peaked at {peak_kib / 1e6:.1f} GB"


def test_random_forest_autolog_stays_sparse(shared_tracking, preprocess_run):
    """mlflow.sklearn.autolog would densify the train month after every fit (3 GB here, 16 GB
    peak on the 2021 homework); train_best logs the same record from the sparse matrix."""
    search = assert_ok(
        mlflow_run(
            shared_tracking,
            "hpo",
            {"preprocess_run_id": preprocess_run, "model": "random_forest", "max_evals": 2},
        )
    )
    completed = mlflow_run(
        shared_tracking, "train_best", {"hpo_run_id": search, "autolog": "true"}, measure_peak=True
    )
    run_id, peak_kib = assert_ok(completed), completed.peak_rss_kib
    (candidate,) = children(shared_tracking, run_id)
    data = candidate.data
    assert data.tags["estimator_class"] == "sklearn.ensemble._forest.RandomForestRegressor"
    assert data.params["n_jobs"] == "-1" and data.params["criterion"] == "squared_error"
    assert 0 < data.metrics["training_root_mean_squared_error"] < data.metrics["val_rmse"]
    assert data.metrics["training_score"] == data.metrics["training_r2_score"]
    artifacts = [a.path for a in shared_tracking.client.list_artifacts(candidate.info.run_id)]
    assert "estimator.html" in artifacts
    assert candidate.inputs.dataset_inputs == []
    assert peak_kib < 2_000_000, f"a step peaked at {peak_kib / 1e6:.1f} GB"
