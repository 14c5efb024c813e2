"""Tracking helpers: the step run, finding upstream runs, downloading their artifacts.

The MLflow run ID is the handle between steps. Every step run carries the tag ``step``
(``preprocess``, ``hpo``, ...); trial and candidate child runs do not, so "the latest finished
hpo run" never finds a child. Every step run is named after what it is (``preprocess
2023-01..03``, ``hpo xgboost``, ...), and its experiment is tagged ``mlflow.experimentKind`` =
``custom_model_development`` unless it already has a kind.

Every step run also records where its code and environment came from, so that a cache never
hands back a run made from code no commit holds: ``source.clean`` (``true`` when no tracked
file of the project's git checkout differed from HEAD, at the step's start and at its end;
``false``; ``unknown`` when git is absent or the project is not a checkout) and ``env.digest``
(sha256 of the environment definition: ``python_env.yaml`` and the files its ``-r`` lines
install, i.e. the runtime ``requirements.lock``; ``unknown`` when one is missing).
``requirements-dev.lock`` is not part of it: ``mlflow run`` never builds it, so a changed test
tool changes no step's result.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_RUN_NAME

from steps.errors import UserError

STEP_TAG = "step"
RESUMED_FROM_TAG = "resumed_from"
# MLflow 3's UI opens an experiment in the view its kind names; without this tag it may guess
# GenAI and show an empty "Traces" page instead of the training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SOURCE_CLEAN_TAG = "source.clean"
ENV_DIGEST_TAG = "env.digest"
# What each trial run of an ``hpo`` search carries (written by steps/hpo.py; read by
# train_best, the benchmarks and the tests).
TRIAL_ID_TAG = "trial_id"
TRIAL_VALS_TAG = "trial.vals"
TRIAL_PARAMS_TAG = "trial.params"
TRIAL_ERROR_TAG = "trial.error"  # a FAILED trial's error (``type: message``)
PRUNED_TAG = "pruned"
PRUNE_REASON_TAG = "pruned.reason"
CURVE_METRIC = "val_rmse_curve"
PRUNED_ROUND_METRIC = "pruned_round"
SPARK_TASK_TAG = "spark.task"  # "<stage id>.<partition id>" of the task that ran a trial
SPARK_ATTEMPT_TAG = "spark.task.attempt"  # its attempt: Spark's retry of a task is attempt 1, 2...
CLEAN, DIRTY, UNKNOWN = "true", "false", "unknown"
ENV_DEFINITION = "python_env.yaml"
# A dependency line of python_env.yaml that installs a requirements file: "  - -r FILE".
REQUIREMENT_FILE_LINE = re.compile(r"^\s*-\s+(?:-r|--requirement)[\s=]+(\S+)\s*$")
# The project the running steps package belongs to: under `mlflow run` from git, the clone
# MLflow made; run directly, the checkout (or wherever the package was copied).
PROJECT_DIR = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceState:
    """Whether the project's tracked files match HEAD: CLEAN, DIRTY or UNKNOWN (and why)."""

    clean: str
    changed: tuple[str, ...] = ()
    reason: str = ""


def source_state(project_dir: Path = PROJECT_DIR) -> SourceState:
    """One ``git status`` of tracked files (untracked ones are not code that ran from HEAD).

    ``--no-optional-locks``: a read-only look that never takes the index lock another git
    command may hold.
    """
    try:
        status = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(project_dir), "status", "--porcelain"]
            + ["--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return SourceState(UNKNOWN, reason=f"git could not be run ({exc})")
    if status.returncode != 0:
        return SourceState(UNKNOWN, reason=f"{project_dir} is not a git checkout")
    changed = tuple(line[3:] for line in status.stdout.splitlines() if line.strip())  # "XY path"
    return SourceState(DIRTY if changed else CLEAN, changed)


def env_files(project_dir: Path = PROJECT_DIR) -> list[Path] | None:
    """``python_env.yaml`` and the requirement files it installs (``-r FILE``), if all exist."""
    definition = project_dir / ENV_DEFINITION
    try:
        lines = definition.read_text().splitlines()
    except OSError:
        return None
    files = [definition]
    for line in lines:
        if match := REQUIREMENT_FILE_LINE.match(line):
            files.append(project_dir / match.group(1).strip("'\""))
    return files if all(f.is_file() for f in files) else None


def env_digest(project_dir: Path = PROJECT_DIR) -> str:
    """sha256 over the environment definition's files (name and bytes), or UNKNOWN."""
    files = env_files(project_dir)
    if files is None:
        return UNKNOWN
    digest = hashlib.sha256()
    for path in files:
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{os.path.relpath(path, project_dir)}\0{content}\n".encode())
    return digest.hexdigest()


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
    Tags ``source.clean`` and ``env.digest`` say what the run was made from; a tree that
    changes while the step runs makes it not clean.
    """
    with mlflow.start_run() as run:
        mlflow.set_tag(STEP_TAG, step)
        set_run_name(name or step)
        source = source_state()
        mlflow.set_tags({SOURCE_CLEAN_TAG: source.clean, ENV_DIGEST_TAG: env_digest()})
        ensure_experiment_kind(run.info.experiment_id)
        yield run
        if source.clean == CLEAN and (after := source_state()).clean != CLEAN:
            log.warning("tracked files changed while %s ran: its run is not clean", step)
            mlflow.set_tag(SOURCE_CLEAN_TAG, after.clean)


SOURCE_TAGS = (MLFLOW_GIT_COMMIT, SOURCE_CLEAN_TAG, ENV_DIGEST_TAG)


def source_differs(run_tags: dict[str, str], other_tags: dict[str, str]) -> str | None:
    """Why two runs were not made from the same source (commit, clean tree, environment
    definition); None when they were. A resumed search that another source finished must not
    pass for a clean run of its original commit."""
    changed = [k for k in SOURCE_TAGS if run_tags.get(k) != other_tags.get(k)]
    if not changed:
        return None
    return ", ".join(f"{k} {other_tags.get(k)!r} -> {run_tags.get(k)!r}" for k in changed)


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
