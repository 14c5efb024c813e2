"""A search killed mid-trial (SIGKILL to the whole `mlflow run` process group) and resumed
with `resume_run_id` ends exactly like an uninterrupted search with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_ok, mlflow_run

pytestmark = pytest.mark.slow
SEARCH = {"max_evals": 5, "num_boost_round": 20, "early_stopping_rounds": 5, "seed": 3}


def trials_of(tracking, parent_run_id):
    children = tracking.runs(f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return sorted(children, key=lambda r: (int(r.data.tags["trial_id"]), r.info.start_time))


def kill_mid_trial(tracking, params, min_finished=2, timeout=300):
    """Start `mlflow run -e hpo`, SIGKILL it while a trial runs after `min_finished` trials."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(REPO),
        "-e",
        "hpo",
        "--env-manager",
        "local",
        "--experiment-id",
        tracking.experiment_id,
    ]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    env = tracking.env()
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"
    before = {r.info.run_id for r in tracking.runs()}
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=tracking.root,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the search ended before it could be killed"
            parents = [r for r in tracking.runs("tags.step = 'hpo'") if r.info.run_id not in before]
            if parents:
                trials = trials_of(tracking, parents[0].info.run_id)
                finished = [t for t in trials if t.info.status == "FINISHED"]
                running = [t for t in trials if t.info.status == "RUNNING"]
                if len(finished) >= min_finished and running:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return parents[0].info.run_id, finished, running[0]
            time.sleep(0.05)
        raise AssertionError("no trial was running in time")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_killed_search_resumes_to_the_uninterrupted_result(
    shared_tracking, preprocess_run, tmp_path
):
    params = {"preprocess_run_id": preprocess_run, **SEARCH}
    tracking = shared_tracking
    uninterrupted = assert_ok(mlflow_run(tracking, "hpo", params))

    parent_id, finished_before, in_flight = kill_mid_trial(tracking, params)
    assert tracking.client.get_run(parent_id).info.status == "RUNNING"  # killed, not ended

    completed = mlflow_run(tracking, "hpo", {**params, "resume_run_id": parent_id})
    resuming = assert_ok(completed)
    assert f"reusing {len(finished_before)} finished trials" in completed.output

    parent = tracking.client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    trials = trials_of(tracking, parent_id)
    done = [t for t in trials if t.info.status == "FINISHED"]
    assert [t.data.tags["trial_id"] for t in done] == ["0", "1", "2", "3", "4"]
    assert tracking.client.get_run(in_flight.info.run_id).info.status == "KILLED"
    assert {t.info.status for t in trials} == {"FINISHED", "KILLED"}
    # the finished trials were reloaded, not retrained
    assert [t.info.run_id for t in done[: len(finished_before)]] == [
        t.info.run_id for t in finished_before
    ]

    reference = trials_of(tracking, uninterrupted)
    assert [(t.data.tags["trial.vals"], t.data.metrics["val_rmse"]) for t in done] == [
        (t.data.tags["trial.vals"], t.data.metrics["val_rmse"]) for t in reference
    ]
    best = tracking.client.get_run(uninterrupted).data.metrics["best_val_rmse"]
    assert parent.data.metrics["best_val_rmse"] == best
    resumer = tracking.client.get_run(resuming)
    assert resumer.data.tags["resumed_from"] == parent_id
    assert resumer.data.metrics["best_val_rmse"] == best

    def payload(run_id):
        path = tracking.client.download_artifacts(
            run_id, "best_params.json", str(tmp_path / run_id)
        )
        data = json.loads(Path(path).read_text())
        return {k: v for k, v in data.items() if k not in ("trial_run_id", "hpo_run_id")}

    assert payload(parent_id) == payload(uninterrupted)
