"""The Click commands run directly (no `mlflow run`): they create their own runs in the
experiment that MLFLOW_EXPERIMENT_ID names, and fail with one line when input is bad."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from steps import hpo, preprocess


@pytest.mark.slow
def test_steps_run_directly(tracking, tlc_dir):
    runner = CliRunner()
    result = runner.invoke(preprocess.main, ["--raw-data-path", str(tlc_dir)])
    assert result.exit_code == 0, result.output
    (pre,) = tracking.runs("tags.step = 'preprocess'")
    assert pre.info.status == "FINISHED"
    assert pre.info.experiment_id == tracking.experiment_id
    assert pre.data.params["train_month"] == "2023-01"

    result = runner.invoke(hpo.main, ["--max-evals", "2", "--num-boost-round", "5"])
    assert result.exit_code == 0, result.output
    (search,) = tracking.runs("tags.step = 'hpo'")
    assert search.info.status == "FINISHED"
    assert search.data.tags["preprocess_run_id"] == pre.info.run_id
    assert search.data.params["preprocess_run_id"] == ""
    assert len(tracking.runs(f"tags.mlflow.parentRunId = '{search.info.run_id}'")) == 2


def test_direct_errors_are_one_line_and_leave_failed_runs(tracking):
    runner = CliRunner()
    result = runner.invoke(preprocess.main, ["--train-month", "2023-13"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: Invalid value for '--train-month': month must be YYYY-MM (for example "
        "2023-01), got '2023-13'"
    ]
    assert tracking.runs() == []  # rejected before any run started

    result = runner.invoke(hpo.main, ["--resume-run-id", "0" * 32])
    assert result.exit_code == 1
    assert (
        result.output.strip() == f"Error: resume_run_id '{'0' * 32}': no such run in the "
        "tracking store"
    )
    assert [r.info.status for r in tracking.runs()] == ["FAILED"]
