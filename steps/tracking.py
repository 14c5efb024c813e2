"""Tracking helpers: the step run, finding upstream runs, downloading their artifacts.

The MLflow run ID is the handle between steps. Every step run carries the tag ``step``
(``preprocess``, ``hpo``, ...); trial and candidate child runs do not, so "the latest finished
hpo run" never finds a child. Every step run is named after what it is (``preprocess
2023-01..03``, ``hpo xgboost``, ...), and its experiment is tagged ``mlflow.experimentKind`` =
``custom_model_development`` unless it already has a kind.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from steps.errors import UserError

STEP_TAG = "step"
RESUMED_FROM_TAG = "resumed_from"
# MLflow 3's UI opens an experiment in the view its kind names; without this tag it may guess
# GenAI and show an empty "Traces" page instead of the training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
log = logging.getLogger(__name__)


def set_run_name(name: str) -> None:
    """Rename the active run (``mlflow run`` created it under a random name)."""
    mlflow.set_tag(MLFLOW_RUN_NAME, name)


def ensure_experiment_kind(experiment_id: str) -> None:
    """Tag the experiment as model development unless it already has a kind."""
    client = MlflowClient()
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


@contextlib.contextmanager
def step_run(step: str, name: str | None = None) -> Iterator[Run]:
    """Start (or, under ``mlflow run``, continue) the step's run; FAILED if the body raises.

    ``mlflow.start_run`` picks up ``MLFLOW_RUN_ID`` set by ``mlflow run``; run directly, it
    creates a run in the experiment that ``MLFLOW_EXPERIMENT_ID``/``_NAME`` names, if any.
    ``name`` (default: ``step``) becomes the run's name, so that the UI says what each run is.
    """
    with mlflow.start_run() as run:
        mlflow.set_tag(STEP_TAG, step)
        set_run_name(name or step)
        ensure_experiment_kind(run.info.experiment_id)
        yield run


def get_step_run(run_id: str, step: str, what: str) -> Run:
    """The run ``run_id``, checked to be a run of ``step``; ``what`` names the parameter."""
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        raise UserError(f"{what} {run_id!r}: no such run in the tracking store") from None
    actual = run.data.tags.get(STEP_TAG)
    if actual != step:
        kind = f"a {actual} run" if actual else "not a step run of this project"
        raise UserError(f"{what} {run_id!r} is {kind}, not a {step} run")
    return run


def latest_finished_run(experiment_id: str, step: str) -> Run:
    """The most recent FINISHED run of ``step`` in the experiment (not a resuming run)."""
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.{STEP_TAG} = '{step}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        original = run.data.tags.get(RESUMED_FROM_TAG)
        return MlflowClient().get_run(original) if original else run
    raise UserError(
        f"no finished {step} run in experiment {experiment_id}: run the {step} step first "
        f"or pass its run ID"
    )


def resolve_upstream(run_id: str | None, step: str, what: str, experiment_id: str) -> Run:
    if run_id:
        return get_step_run(run_id, step, what)
    run = latest_finished_run(experiment_id, step)
    log.info("%s not given: using the latest finished %s run %s", what, step, run.info.run_id)
    return run


def log_params_missing(params: dict[str, object]) -> None:
    """Log the params the active run lacks.

    ``mlflow run`` logs an entry point's params itself, as the strings it was given; logging
    them again with another spelling ("data/raw/" vs "data/raw") would be an error.
    """
    run = mlflow.active_run()
    have = MlflowClient().get_run(run.info.run_id).data.params
    missing = {k: str(v) for k, v in params.items() if k not in have}
    if missing:
        mlflow.log_params(missing)


def finished_children(parent: Run) -> list[Run]:
    """The FINISHED runs nested under ``parent`` (trials, candidates, steps)."""
    return MlflowClient().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
        "and attributes.status = 'FINISHED'",
        max_results=50000,
    )
