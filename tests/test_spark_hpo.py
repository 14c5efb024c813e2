"""`hpo` on Spark (hyperopt's SparkTrials): real Spark, tiny budgets.

Fast: the refusals (cluster master with a local tracking store, bad master, parallelism,
resume) in process, and the pure helpers. Slow: `mlflow run -e hpo` on local[2] and local[1]
against the in-process search, a failing trial and an all-failing search in process on
local[2], a worker killed in a trial (local[2]: no retry; local[2,2]: Spark's retry trains
it again, or adopts the run its dead attempt finished), speculation refused, and a
standalone cluster on loopback (scripts/spark-cluster-up.sh, bare worker
environment) with tracking on a local `mlflow server`.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from steps import hpo, spark, spark_search
from steps import main as pipeline
from steps.errors import UserError
from steps.models import Split
from tests.conftest import REPO, TINY_SEARCH, ambient, assert_ok, free_port, mlflow_run

SPARK = {"spark_master": "local[2]", "parallelism": 2}


# ---- fast: refusals and pure helpers ---------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///mlflow.db", "sqlite:////abs/mlflow.db", "file:///tmp/mlruns", "./mlruns", ""],
)
def test_cluster_master_with_a_local_store_is_refused(uri):
    reason = spark_search.unreachable_tracking("spark://10.0.0.1:7077", uri)
    assert reason and "team server" in reason and "MLFLOW_TRACKING_URI" in reason
    assert spark_search.unreachable_tracking("yarn", uri)
    assert spark_search.unreachable_tracking("local[2]", uri) is None  # same machine


@pytest.mark.parametrize(
    "uri", ["http://mlflow.internal:5000", "https://x", "postgresql://db/mlflow", "databricks"]
)
def test_cluster_master_with_a_server_is_accepted(uri):
    assert spark_search.unreachable_tracking("spark://10.0.0.1:7077", uri) is None


def test_hpo_refuses_a_cluster_master_on_sqlite_before_any_run(tracking):
    result = CliRunner().invoke(hpo.main, ["--spark-master", "spark://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "team server" in result.output and "local file" in result.output
    assert tracking.runs() == []


def test_main_refuses_a_cluster_master_on_sqlite_before_the_first_step(tracking):
    result = CliRunner().invoke(pipeline.main, ["--spark-master", "spark://127.0.0.1:1"])
    assert result.exit_code == 1 and "team server" in result.output
    assert tracking.runs() == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--spark-master", "spork://x"], "spark_master must be local[N], spark://host:port"),
        (["--spark-master", "local[2]", "--parallelism", "0"], "must be a whole number >= 1"),
        (["--spark-master", "local[2]", "--parallelism", "-3"], "must be a whole number >= 1"),
        (["--spark-master", "local[2]", "--parallelism", "two"], "must be a whole number >= 1"),
        (["--parallelism", "2"], "parallelism applies to a search on Spark"),
        (
            ["--spark-master", "local[2]", "--resume-run-id", "abc"],
            "resume_run_id cannot be combined with spark_master",
        ),
    ],
)
def test_bad_spark_settings_are_refused(tracking, args, message):
    result = CliRunner().invoke(hpo.main, args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert tracking.runs() == []
    if "--resume-run-id" not in args:  # main has no resume_run_id
        by_main = CliRunner().invoke(pipeline.main, args)
        assert by_main.exit_code != 0 and message in by_main.output, by_main.output


@pytest.mark.parametrize(
    "master",
    [
        "local",
        "local[2]",
        "local[*]",
        "local[4,2]",
        "spark://127.0.0.1:7077",
        "spark://a:7077,b:7077",
        "yarn",
        "k8s://https://10.0.0.1:6443",
    ],
)
def test_spark_masters_spark_takes_are_accepted(master):
    spark.validate_master(master)


@pytest.mark.parametrize(
    "master",
    [
        "localhost:7077",
        "local[two]",
        "local[2",
        "local[0]",
        "local[0,1]",
        "yarn-cluster",
        "spark://host",
        "spark://h:p",
        "spark://h:0",
        "spark://h:99999",
        "2",
    ],
)
def test_what_spark_does_not_take_is_refused(master):
    with pytest.raises(UserError, match="spark_master must be local"):
        spark.validate_master(master)


def test_a_spark_search_that_never_got_a_session_cannot_be_resumed(tracking):
    from mlflow.entities import Param

    parent = tracking.client.create_run(tracking.experiment_id, tags={"step": "hpo"})
    parent_id = parent.info.run_id
    # as `mlflow run` logs it (quoted); the session failed: no spark.master tag
    tracking.client.log_batch(parent_id, params=[Param("spark_master", "'local[2]'")])
    tracking.client.set_terminated(parent_id, "FAILED")
    result = CliRunner().invoke(hpo.main, ["--resume-run-id", parent_id])
    assert result.exit_code == 1
    assert f"search {parent_id} ran on Spark (spark_master=local[2])" in result.output


def test_trial_threads_share_the_cores():
    assert [spark_search.trial_threads(2, p) for p in (1, 2, 3)] == [2, 1, 1]
    assert spark_search.trial_threads(16, 4) == 4


def test_params_key_is_canonical():
    a = {"max_depth": np.int64(7), "learning_rate": np.float64(0.1), "objective": "x"}
    b = {"objective": "x", "learning_rate": 0.1, "max_depth": 7}
    assert spark_search.params_key(a) == spark_search.params_key(b)


def test_executors_get_the_tracking_uri_and_credentials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = spark_search.tracking_env(
        "sqlite:///mlflow.db",
        {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p", "HOME": "/root"},
    )
    assert env == {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_TRACKING_USERNAME": "u",
        "MLFLOW_TRACKING_PASSWORD": "p",
    }
    assert spark_search.absolute_tracking_uri("http://h:5000") == "http://h:5000"


class _TakenOnce:
    """An executor trial whose first trial id was already taken by another task."""

    def __init__(self):
        self.calls = []

    def __call__(self, trial_id, vals, params, train, val, finished):
        self.calls.append((trial_id, [r.trial_id for r in finished]))
        if len(self.calls) == 1:
            return None
        return hpo.TrialRecord(trial_id, vals, params, 1.5, f"run-{trial_id}")


def test_two_pending_trials_with_the_same_params_get_one_trial_id_each():
    from hyperopt import Trials
    from hyperopt.base import JOB_STATE_DONE, JOB_STATE_RUNNING

    space = hpo.search_space("random_forest", 42)
    vals = {"max_depth": [5.0], "min_samples_leaf": [2.0], "min_samples_split": [3.0]}
    vals["n_estimators"] = [20.0]
    trials = Trials()
    docs = []
    for tid, state in ((0, JOB_STATE_DONE), (1, JOB_STATE_RUNNING), (2, JOB_STATE_RUNNING)):
        misc = {"tid": tid, "cmd": None, "workdir": None, "vals": vals}
        misc["idxs"] = {k: [tid] for k in vals}
        (doc,) = trials.new_trial_docs([tid], [None], [{"status": "new"}], [misc])
        doc["state"] = state
        if state == JOB_STATE_DONE:
            record = hpo.TrialRecord(0, vals, {}, 2.0, "r0")
            doc["result"] = {"status": "ok", "loss": 2.0, "record": record}
        docs.append(doc)
    trials.insert_trial_docs(docs)
    trials.refresh()
    objective = spark_search.SparkObjective(space, _TakenOnce(), None, {}, 1)
    objective.trials = trials
    shipped = pickle.loads(pickle.dumps(objective))  # what an executor gets
    assert shipped.trials is None
    params = {"max_depth": 5, "min_samples_leaf": 2, "min_samples_split": 3, "n_estimators": 20}
    key = spark_search.params_key(params | {"random_state": 42})
    assert [t.trial_id for t in shipped.pending[key]] == [1, 2]
    assert [r.trial_id for r in shipped.finished] == [0]
    tiny = Split(sp.csr_matrix(np.ones((2, 1))), np.ones(2))
    spark_search._WORKER_SPLITS[shipped.data_key] = (tiny, tiny)
    try:
        result = shipped(params | {"random_state": np.int64(42)})
    finally:
        spark_search._WORKER_SPLITS.clear()
    assert result["status"] == "ok" and result["record"].trial_id == 2
    assert shipped.run.calls == [(1, [0]), (2, [0])]


# ---- slow: real Spark ----------------------------------------------------------------------


def trials_of(tracking, parent_run_id):
    children = tracking.runs(f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return sorted(children, key=lambda r: int(r.data.tags["trial_id"]))


def assert_search_like_serial(tracking, run_id, n):
    """What tests/test_hpo_run.py checks of an in-process search, for a search on Spark."""
    client = tracking.client
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    trials = trials_of(tracking, run_id)
    assert [t.data.tags["trial_id"] for t in trials] == [str(i) for i in range(n)]
    for trial in trials:
        assert trial.info.status == "FINISHED"
        assert trial.info.run_name == f"trial-{int(trial.data.tags['trial_id']):03d}"
        assert {"val_rmse", "train_seconds", "best_iteration"} <= set(trial.data.metrics)
        typed = json.loads(trial.data.tags["trial.params"])
        vals = json.loads(trial.data.tags["trial.vals"])
        assert {k: str(v) for k, v in typed.items()} == trial.data.params
        assert vals["max_depth"] == [float(typed["max_depth"])] and "nthread" not in typed
    best = min(trials, key=lambda t: (t.data.metrics["val_rmse"], int(t.data.tags["trial_id"])))
    assert parent.data.metrics["best_val_rmse"] == best.data.metrics["val_rmse"]
    assert parent.data.metrics["n_trials"] == n
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    return parent, trials


@pytest.fixture(scope="module")
def spark_search_run(shared_tracking, preprocess_run):
    params = {"preprocess_run_id": preprocess_run, **TINY_SEARCH, "max_evals": 4, **SPARK}
    return assert_ok(mlflow_run(shared_tracking, "hpo", params))


@pytest.mark.slow
def test_local2_search_runs_trials_in_parallel(shared_tracking, spark_search_run, tiny_search):
    parent, trials = assert_search_like_serial(shared_tracking, spark_search_run, 4)
    tags = parent.data.tags
    assert tags[spark_search.SPARK_MASTER_TAG] == "local[2]"
    assert tags[spark_search.SPARK_PARALLELISM_TAG] == "2"
    assert tags[spark_search.SPARK_TRIAL_THREADS_TAG] == str(max(1, (os.cpu_count() or 1) // 2))
    spans = [(t.info.start_time, t.info.end_time) for t in trials]
    overlapping = [
        (i, j)
        for i in range(len(spans))
        for j in range(i + 1, len(spans))
        if spans[i][0] < spans[j][1] and spans[j][0] < spans[i][1]
    ]
    assert overlapping, spans
    # TPE's first 20 suggestions are seeded draws, one per trial: the same as in process
    serial = {
        t.data.tags["trial_id"]: t.data.tags["trial.vals"]
        for t in trials_of(shared_tracking, tiny_search)
    }
    assert {t.data.tags["trial_id"]: t.data.tags["trial.vals"] for t in trials[:3]} == serial


@pytest.mark.slow
def test_resuming_a_spark_search_is_refused(shared_tracking, spark_search_run, monkeypatch):
    for _ in ambient(shared_tracking, monkeypatch):
        with pytest.raises(UserError, match="resuming a Spark search is not supported"):
            hpo.run_hpo(hpo.HpoConfig(resume_run_id=spark_search_run, **TINY_SEARCH))
    parent = shared_tracking.client.get_run(spark_search_run)
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_local1_reproduces_the_in_process_search_pruning_included(
    shared_tracking, preprocess_run, monkeypatch
):
    # 7 trials: past the pruning warm-up (3 finished trials), so rungs prune on both sides
    params = {"preprocess_run_id": preprocess_run, **TINY_SEARCH, "max_evals": 7}
    on_spark = assert_ok(
        mlflow_run(shared_tracking, "hpo", params | {"spark_master": "local[1]", "parallelism": 1})
    )
    for _ in ambient(shared_tracking, monkeypatch):
        in_process = hpo.run_hpo(hpo.HpoConfig(**params)).run_id

    def summary(run_id):
        return [
            (
                t.data.tags["trial.vals"],
                t.data.tags["trial.params"],
                t.data.metrics["val_rmse"],
                t.data.tags.get(hpo.PRUNED_TAG),
                t.data.metrics.get(hpo.PRUNED_ROUND_METRIC),
            )
            for t in trials_of(shared_tracking, run_id)
        ]

    assert summary(on_spark) == summary(in_process)
    assert any(pruned == "true" for *_, pruned, _ in summary(in_process))


class _BreakTrial:
    """Runs the real executor trial, but hands trials in ``broken`` a validation matrix with
    one column too many, which XGBoost refuses: a real failure on the executor."""

    def __init__(self, inner, broken):
        self.inner, self.broken = inner, broken

    def __call__(self, trial_id, vals, params, train, val, finished):
        if trial_id in self.broken:
            extra = sp.csr_matrix((val.X.shape[0], 1))
            val = Split(sp.hstack([val.X, extra], format="csr"), val.y)
        return self.inner(trial_id, vals, params, train, val, finished)


def _run_breaking(tracking, preprocess_run, broken, n_trials):
    import pyspark.cloudpickle

    pyspark.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # executors lack tests/
    client = tracking.client
    parent = client.create_run(tracking.experiment_id, run_name="spark failing trials")
    config = hpo.HpoConfig(**TINY_SEARCH, **SPARK)
    train, val = hpo.load_training_data(preprocess_run)
    inner = hpo.ExecutorTrial(config, parent.info.run_id, tracking.experiment_id)
    try:
        return parent.info.run_id, spark_search.run_on_spark(
            "local[2]",
            2,
            hpo.search_space("xgboost", 42),
            _BreakTrial(inner, broken),
            train,
            val,
            n_trials,
            np.random.default_rng(42),
        )
    finally:
        client.set_terminated(parent.info.run_id)


@pytest.mark.slow
def test_a_failing_trial_is_a_failed_run_and_the_search_goes_on(
    shared_tracking, preprocess_run, monkeypatch
):
    for t in ambient(shared_tracking, monkeypatch):
        parent_id, records = _run_breaking(t, preprocess_run, {1}, 3)
    assert [r.trial_id for r in records] == [0, 2]
    by_id = {r.data.tags["trial_id"]: r for r in trials_of(shared_tracking, parent_id)}
    assert by_id["1"].info.status == "FAILED"
    assert "XGBoostError" in by_id["1"].data.tags[hpo.TRIAL_ERROR_TAG]
    assert [by_id[i].info.status for i in ("0", "2")] == ["FINISHED", "FINISHED"]


@pytest.mark.slow
def test_all_trials_failing_is_a_clear_error(shared_tracking, preprocess_run, monkeypatch):
    for t in ambient(shared_tracking, monkeypatch):
        with pytest.raises(UserError, match="all 2 trials failed on Spark; first error: trial 0"):
            _run_breaking(t, preprocess_run, {0, 1}, 2)


class _KillTrial:
    """Runs the real executor trial; for trials in ``killed``, the Python worker dies (os._exit):
    ``when="running"`` once the trial's run exists (a worker lost in the middle of a trial),
    ``when="finished"`` after the trial's run is FINISHED, before its result reaches the driver.
    ``first_attempt_only``: only in the task's first attempt, so Spark's retry of it (local[N,F])
    lives."""

    def __init__(self, inner, killed, first_attempt_only=False, when="running"):
        self.inner, self.killed = inner, killed
        self.first_attempt_only, self.when = first_attempt_only, when

    def __call__(self, trial_id, vals, params, train, val, finished):
        import time

        from pyspark import TaskContext

        retried = TaskContext.get().attemptNumber() > 0
        if trial_id not in self.killed or (self.first_attempt_only and retried):
            return self.inner(trial_id, vals, params, train, val, finished)
        if self.when == "finished":
            self.inner(trial_id, vals, params, train, val, finished)
            os._exit(1)
        import threading

        from mlflow.tracking import MlflowClient

        def die_once_started():
            client = MlflowClient()
            query = (
                f"tags.mlflow.parentRunId = '{self.inner.parent_run_id}' "
                f"and tags.trial_id = '{trial_id}'"
            )
            while not client.search_runs([self.inner.experiment_id], query):
                time.sleep(0.05)
            os._exit(1)

        threading.Thread(target=die_once_started, daemon=True).start()
        record = self.inner(trial_id, vals, params, train, val, finished)
        time.sleep(60)  # the kill lands in this trial, never in a later one on this worker
        return record


def _run_killing(tracking, preprocess_run, master, kill) -> tuple[str, list]:
    """A 3-trial search on ``master`` whose trials go through ``kill(inner)``, then the
    driver's sweep of lost trials, as ``hpo.search`` does."""
    import pyspark.cloudpickle

    pyspark.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    client = tracking.client
    parent_id = client.create_run(tracking.experiment_id, run_name="spark lost worker").info.run_id
    config = hpo.HpoConfig(**TINY_SEARCH, **SPARK)
    train, val = hpo.load_training_data(preprocess_run)
    inner = hpo.ExecutorTrial(config, parent_id, tracking.experiment_id)
    try:
        return parent_id, spark_search.run_on_spark(
            master,
            2,
            hpo.search_space("xgboost", 42),
            kill(inner),
            train,
            val,
            3,
            np.random.default_rng(42),
        )
    finally:
        hpo._fail_lost_trials(client, parent_id, tracking.experiment_id)
        client.set_terminated(parent_id)


@pytest.mark.slow
def test_a_trial_whose_worker_died_is_failed_not_left_running(
    shared_tracking, preprocess_run, monkeypatch
):
    for t in ambient(shared_tracking, monkeypatch):
        parent_id, records = _run_killing(
            t, preprocess_run, "local[2]", lambda inner: _KillTrial(inner, {1})
        )
    assert [r.trial_id for r in records] == [0, 2]
    by_id = {r.data.tags["trial_id"]: r for r in trials_of(shared_tracking, parent_id)}
    assert by_id["1"].info.status == "FAILED"
    assert by_id["1"].data.tags[hpo.TRIAL_ERROR_TAG].startswith("lost")


def _trial_1_by_attempt(tracking, parent_id) -> dict:
    runs = [r for r in trials_of(tracking, parent_id) if r.data.tags["trial_id"] == "1"]
    by_attempt = {r.data.tags[hpo.SPARK_ATTEMPT_TAG]: r for r in runs}
    assert sorted(by_attempt) == ["0", "1"]
    assert len({r.data.tags[hpo.SPARK_TASK_TAG] for r in runs}) == 1  # one task, two attempts
    return by_attempt


@pytest.mark.slow
def test_spark_retrying_a_dead_trial_trains_it_again(shared_tracking, preprocess_run, monkeypatch):
    """local[2,2]: Spark retries a failed task once. The retry finds the dead attempt's RUNNING
    run of the same trial: not a rival (that would fail the retry too) but a dead attempt."""
    for t in ambient(shared_tracking, monkeypatch):
        parent_id, records = _run_killing(
            t,
            preprocess_run,
            "local[2,2]",
            lambda inner: _KillTrial(inner, {1}, first_attempt_only=True),
        )
    assert [r.trial_id for r in records] == [0, 1, 2]
    by_attempt = _trial_1_by_attempt(shared_tracking, parent_id)
    dead, retry = by_attempt["0"], by_attempt["1"]
    assert (dead.info.status, retry.info.status) == ("FAILED", "FINISHED")
    assert dead.data.tags[hpo.TRIAL_ERROR_TAG].startswith("lost: Spark retried its task")
    assert retry.info.run_id == records[1].run_id


@pytest.mark.slow
def test_spark_retry_adopts_a_trial_its_dead_attempt_finished(
    shared_tracking, preprocess_run, monkeypatch
):
    """The worker dies after the trial's run is FINISHED but before the driver has the result:
    the retry takes that run's record instead of training the trial a second time."""
    for t in ambient(shared_tracking, monkeypatch):
        parent_id, records = _run_killing(
            t,
            preprocess_run,
            "local[2,2]",
            lambda inner: _KillTrial(inner, {1}, first_attempt_only=True, when="finished"),
        )
    assert [r.trial_id for r in records] == [0, 1, 2]
    by_attempt = _trial_1_by_attempt(shared_tracking, parent_id)
    done, retry = by_attempt["0"], by_attempt["1"]
    assert (done.info.status, retry.info.status) == ("FINISHED", "KILLED")
    assert records[1].run_id == done.info.run_id
    assert records[1].val_rmse == done.data.metrics["val_rmse"]
    assert records[1].params == json.loads(done.data.tags[hpo.TRIAL_PARAMS_TAG])
    assert len(records[1].curve) > 0  # reloaded from the run: later trials' rungs need it


@pytest.mark.slow
def test_speculative_execution_is_refused():
    """A speculative copy of a trial's task would run beside the original: refused up front."""
    from pyspark.sql import SparkSession

    if (active := SparkSession.getActiveSession()) is not None:
        active.stop()  # getOrCreate would hand it back, without the setting
    session = (
        SparkSession.builder.master("local[1]").config("spark.speculation", "true").getOrCreate()
    )
    try:
        with pytest.raises(UserError, match="spark.speculation is on"):
            spark_search.start_search(session, "local[1]", 1, None, None, None)
    finally:
        session.stop()


# ---- slow: a standalone cluster on loopback, tracking on a local server ----------------------


@pytest.fixture
def loopback_cluster(tmp_path):
    state = tmp_path / "spark-cluster"
    env = {
        **os.environ,
        "SPARK_CLUSTER_DIR": str(state),
        "SPARK_MASTER_PORT": str(free_port()),
        "SPARK_MASTER_WEBUI_PORT": str(free_port()),
        "SPARK_WORKER_WEBUI_PORT": str(free_port()),
        "SPARK_WORKER_CORES": "2",
        "SPARK_WORKER_MEMORY": "2g",
    }
    up = subprocess.run(
        [str(REPO / "scripts/spark-cluster-up.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        worker_pid = (state / "worker.pid").read_text().strip()
        raw = Path(f"/proc/{worker_pid}/environ").read_bytes().split(b"\0")
        worker_env = dict(e.decode().split("=", 1) for e in raw if b"=" in e)
        # a bare worker: nothing of the project's environment on its PATH or Python path
        assert worker_env["PATH"] == "/usr/bin:/bin" and "PYTHONPATH" not in worker_env
        assert "VIRTUAL_ENV" not in worker_env
        yield up.stdout.strip()
    finally:
        subprocess.run([str(REPO / "scripts/spark-cluster-down.sh")], env=env, timeout=120)


@pytest.mark.slow
def test_standalone_cluster_with_a_tracking_server(tmp_path, loopback_cluster, tlc_dir):
    from tests.test_servers import server_tracking, start_mlflow_server

    assert loopback_cluster.startswith("spark://127.0.0.1:")
    server = start_mlflow_server(tmp_path, str(tmp_path / "served"))
    try:
        t = server_tracking(server.url, tmp_path)
        extra = {**t.extra, "SPARK_LOCAL_IP": "127.0.0.1"}
        preprocess = assert_ok(
            mlflow_run(t, "preprocess", {"raw_data_path": tlc_dir}, extra_env=extra)
        )
        params = {
            "preprocess_run_id": preprocess,
            **TINY_SEARCH,
            "max_evals": 4,
            "spark_master": loopback_cluster,
            "parallelism": 2,
        }
        run_id = assert_ok(mlflow_run(t, "hpo", params, extra_env=extra))
        parent, _ = assert_search_like_serial(t, run_id, 4)
        assert parent.data.tags[spark_search.SPARK_MASTER_TAG] == loopback_cluster
        assert parent.data.tags[spark_search.SPARK_APP_ID_TAG].startswith("app-")
    finally:
        server.stop()
