"""A search killed mid-trial (SIGKILL to the whole `mlflow run` process group) and resumed
with `resume_run_id` ends exactly like an uninterrupted search with the same seed, also when
killed after TPE's 20 random trials (its later suggestions depend on the reloaded losses); a
resume is refused while the search runs, and of two resumes at once exactly one proceeds."""

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
SEARCH = {"max_evals": 5, "num_boost_round": 3, "early_stopping_rounds": 1, "seed": 3}
# lasso trials take ~0.5 s; TPE suggests at random for 20 trials (n_startup_jobs), then learns
TPE_SEARCH = {"model": "lasso", "max_evals": 26, "seed": 11}


def trials_of(tracking, parent_run_id):
    children = tracking.runs(f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return sorted(children, key=lambda r: (int(r.data.tags["trial_id"]), r.info.start_time))


def start_search(tracking, params, log_path: Path | None = None) -> subprocess.Popen:
    """`mlflow run -e hpo` in a process group of its own, its output to ``log_path``."""
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
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=tracking.root,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("w") if log_path else subprocess.DEVNULL,
    )


def wait_for_trials(tracking, proc, before, min_finished, timeout=300):
    """The new search's parent ID, finished trials and a running one, once `min_finished`
    trials have finished and the next one runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended too early"
        parents = [r for r in tracking.runs("tags.step = 'hpo'") if r.info.run_id not in before]
        if parents:
            trials = trials_of(tracking, parents[0].info.run_id)
            finished = [t for t in trials if t.info.status == "FINISHED"]
            running = [t for t in trials if t.info.status == "RUNNING"]
            if len(finished) >= min_finished and running:
                return parents[0].info.run_id, finished, running[0]
        time.sleep(0.05)
    raise AssertionError("no trial was running in time")


def kill_mid_trial(tracking, params, min_finished=2, timeout=300):
    """Start `mlflow run -e hpo`, SIGKILL it while a trial runs after `min_finished` trials."""
    before = {r.info.run_id for r in tracking.runs()}
    proc = start_search(tracking, params)
    try:
        found = wait_for_trials(tracking, proc, before, min_finished, timeout)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return found
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def resume_process(tracking, parent_id) -> subprocess.Popen:
    """`python -m steps.hpo --resume-run-id` (what `mlflow run` starts), output to pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "steps.hpo", "--resume-run-id", parent_id],
        cwd=REPO,
        env=tracking.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def trial_summary(tracking, parent_id) -> list[tuple]:
    """A search's finished trials in order: id, hyperopt's vals, params, val_rmse."""
    return [
        (t.data.tags["trial_id"], t.data.tags["trial.vals"], t.data.params)
        + (t.data.metrics["val_rmse"],)
        for t in trials_of(tracking, parent_id)
        if t.info.status == "FINISHED"
    ]


def best_payload(tracking, run_id, dest: Path) -> dict:
    """``best_params.json`` of a search less the run IDs in it, and ``best_val_rmse``."""
    path = tracking.client.download_artifacts(run_id, "best_params.json", str(dest / run_id))
    data = json.loads(Path(path).read_text())
    data = {k: v for k, v in data.items() if k not in ("trial_run_id", "hpo_run_id")}
    return {**data, "best_val_rmse": tracking.client.get_run(run_id).data.metrics["best_val_rmse"]}


def assert_same_search(tracking, parent_id, reference_id, n_trials, dest: Path):
    """Finished trials 0..n-1, each once, equal to the reference's; the same best."""
    assert tracking.client.get_run(parent_id).info.status == "FINISHED"
    resumed = trial_summary(tracking, parent_id)
    assert [r[0] for r in resumed] == [str(i) for i in range(n_trials)]
    assert resumed == trial_summary(tracking, reference_id)
    live = [t for t in trials_of(tracking, parent_id) if t.info.status in ("RUNNING", "FINISHED")]
    assert len(live) == n_trials  # no trial number was used twice
    assert best_payload(tracking, parent_id, dest) == best_payload(tracking, reference_id, dest)


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


@pytest.fixture(scope="module")
def tpe_params(preprocess_run):
    return {"preprocess_run_id": preprocess_run, **TPE_SEARCH}


@pytest.fixture(scope="module")
def tpe_reference(shared_tracking, tpe_params):
    """An uninterrupted lasso search of 26 trials."""
    return assert_ok(mlflow_run(shared_tracking, "hpo", tpe_params))


def test_killed_after_tpe_startup_resumes_to_the_uninterrupted_result(
    shared_tracking, tpe_params, tpe_reference, tmp_path
):
    tracking = shared_tracking
    parent_id, finished_before, in_flight = kill_mid_trial(tracking, tpe_params, min_finished=22)
    assert len(finished_before) >= 22  # past the 20 random trials: TPE uses the losses

    # the killed process's heartbeat names a pid of this host that is gone: no wait
    completed = mlflow_run(tracking, "hpo", {**tpe_params, "resume_run_id": parent_id})
    assert_ok(completed)
    assert f"reusing {len(finished_before)} finished trials" in completed.output
    assert tracking.client.get_run(in_flight.info.run_id).info.status == "KILLED"
    done = [t for t in trials_of(tracking, parent_id) if t.info.status == "FINISHED"]
    assert [t.info.run_id for t in done[: len(finished_before)]] == [
        t.info.run_id for t in finished_before
    ]
    assert_same_search(tracking, parent_id, tpe_reference, TPE_SEARCH["max_evals"], tmp_path)
    assert not {
        k for k in tracking.client.get_run(parent_id).data.tags if k.startswith("hpo.")
    }  # heartbeat and claim released


def test_resume_refused_while_the_search_runs(shared_tracking, tpe_params, tpe_reference, tmp_path):
    tracking = shared_tracking
    before = {r.info.run_id for r in tracking.runs()}
    longer = {**tpe_params, "max_evals": 60}  # keeps running while the resumer starts
    search = start_search(tracking, longer, tmp_path / "search.log")
    try:
        parent_id, _, _ = wait_for_trials(tracking, search, before, min_finished=1)
        resumer = resume_process(tracking, parent_id)
        _, err = resumer.communicate(timeout=300)
        still_running = search.poll() is None
        assert search.wait(timeout=600) == 0, (tmp_path / "search.log").read_text()[-3000:]
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
            search.wait()
    assert still_running, "the search ended before the resumer was refused: make it longer"
    assert resumer.returncode != 0
    assert f"Error: search {parent_id} is being run by {parent_id}" in err, err[-2000:]
    (refused,) = tracking.runs(f"tags.resumed_from = '{parent_id}'")
    assert refused.info.status == "FAILED"
    # the search finished undisturbed: trials 0..59 once each, the first 26 the reference's
    trials = trial_summary(tracking, parent_id)
    assert [t[0] for t in trials] == [str(i) for i in range(60)]
    assert {t.info.status for t in trials_of(tracking, parent_id)} == {"FINISHED"}
    assert trials[:26] == trial_summary(tracking, tpe_reference)
    assert tracking.client.get_run(parent_id).info.status == "FINISHED"


def test_two_resumes_at_once_one_proceeds(shared_tracking, tpe_params, tpe_reference, tmp_path):
    tracking = shared_tracking
    parent_id, _, _ = kill_mid_trial(tracking, tpe_params, min_finished=3)
    resumers = [resume_process(tracking, parent_id) for _ in range(2)]
    outputs = [r.communicate(timeout=600) for r in resumers]
    results = [(r.returncode, out, err) for r, (out, err) in zip(resumers, outputs, strict=True)]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, [err[-2000:] for _, _, err in results]
    (refusal,) = [err for code, _, err in results if code != 0]
    assert f"Error: search {parent_id} is being r" in refusal, refusal[-2000:]
    statuses = sorted(r.info.status for r in tracking.runs(f"tags.resumed_from = '{parent_id}'"))
    assert statuses == ["FAILED", "FINISHED"]
    assert_same_search(tracking, parent_id, tpe_reference, TPE_SEARCH["max_evals"], tmp_path)


# XGBoost with pruning, past TPE's 20 random trials: 6 rounds, so rungs at 1 and 2 rounds
PRUNE_SEARCH = {"max_evals": 24, "num_boost_round": 6, "early_stopping_rounds": 2, "seed": 3}


def pruning_summary(tracking, parent_id) -> list[tuple]:
    """Each finished trial's pruning: the tag, the round, the recorded validation curve."""
    client = tracking.client
    return [
        (
            t.data.tags.get("pruned"),
            t.data.metrics.get("pruned_round"),
            [(m.step, m.value) for m in client.get_metric_history(t.info.run_id, "val_rmse_curve")],
        )
        for t in trials_of(tracking, parent_id)
        if t.info.status == "FINISHED"
    ]


def test_pruned_search_is_deterministic_and_resumes_to_the_uninterrupted_result(
    shared_tracking, preprocess_run, tmp_path
):
    """Run twice with the same seed: once uninterrupted, once killed after 21 trials (which it
    ran afresh: the same trials, pruned the same) and resumed from the reloaded curves."""
    tracking = shared_tracking
    params = {"preprocess_run_id": preprocess_run, **PRUNE_SEARCH}
    reference = assert_ok(mlflow_run(tracking, "hpo", params))
    pruning = pruning_summary(tracking, reference)
    pruned = [i for i, (tag, _, _) in enumerate(pruning) if tag == "true"]
    assert len(pruned) >= 5, pruned
    assert not {0, 1, 2} & set(pruned)  # the warm-up: a rung needs 3 earlier trials
    for trial in trials_of(tracking, reference):
        assert trial.info.status == "FINISHED"
        if trial.data.tags.get("pruned") == "true":
            assert trial.data.metrics["pruned_round"] in (1, 2)
            assert "rung threshold" in trial.data.tags["pruned.reason"]
    for tag, round_, curve in pruning:
        assert [step for step, _ in curve] == list(range(1, len(curve) + 1))
        assert len(curve) == round_ if tag == "true" else 2 < len(curve) <= 6

    parent_id, finished_before, _ = kill_mid_trial(tracking, params, min_finished=21)
    n_before = len(finished_before)
    assert pruning_summary(tracking, parent_id)[:n_before] == pruning[:n_before]
    completed = mlflow_run(tracking, "hpo", {**params, "resume_run_id": parent_id})
    assert_ok(completed)
    assert f"reusing {n_before} finished trials" in completed.output
    # the reloaded curves gave the resumed trials the same rungs as the uninterrupted search
    assert_same_search(tracking, parent_id, reference, PRUNE_SEARCH["max_evals"], tmp_path)
    assert pruning_summary(tracking, parent_id) == pruning
