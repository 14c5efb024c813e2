"""Entry point ``main``: preprocess -> hpo -> train_best -> register, with step caching.

Each step runs through MLflow Projects as a run nested under the main run, in the same
environment (``env_manager="local"``: a nested ``mlflow.projects.run`` does not inherit
``--env-manager``, and ``main`` already runs inside the project's environment), and gets the
previous step's run ID as its upstream parameter.

Every step parameter is parsed and checked before the first step runs, by the step's own
Click options (``steps.options``), so a bad one fails in seconds with the step's message.

Caching: a step is reused, not rerun, when a FINISHED run in the experiment has the same entry
point, the same parameters as MLflow stores them (strings), the same git commit and the same
inputs (the raw files' sha256 for preprocess; the upstream run ID, a parameter, for the
others). A tree with uncommitted changes to tracked files is not a version: caching is refused
for it. ``use_cache=false`` reruns everything.

Writes to its run: params (every step parameter, ``use_cache``); tags ``step=main``,
``<step>.run_id``, ``<step>.cached``, ``cache`` (why caching was on or off),
``registered_model``, ``registered_version``; artifact ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import mlflow
from mlflow.entities import Run
from mlflow.exceptions import ExecutionException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PROJECT_ENTRY_POINT
from mlflow.utils.string_utils import quote

from steps import options, tlc
from steps.cli import StepCommand, setup_logging
from steps.errors import UserError
from steps.tracking import log_params_missing, step_run

PROJECT_DIR = Path(__file__).resolve().parents[1]
STEPS = options.PIPELINE_STEPS
KEY_METRIC = {
    "preprocess": "rows_kept_train",
    "hpo": "best_val_rmse",
    "train_best": "best_val_rmse",
    "register": "candidate_test_rmse",
}
UPSTREAM_PARAM = {
    "hpo": "preprocess_run_id",
    "train_best": "hpo_run_id",
    "register": "train_run_id",
}
SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepOutcome:
    step: str
    run_id: str
    cached: bool
    metric: str
    value: float | None


def git_version(project_dir: Path) -> tuple[str | None, str]:
    """(commit, reason): the commit when the tree is a clean checkout, else None and why."""

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(project_dir), *args], capture_output=True, text=True, check=False
        )

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return None, f"{project_dir} is not a git checkout: caching is off"
    dirty = [
        line
        for line in git("status", "--porcelain", "--untracked-files=no").stdout.splitlines()
        if line.strip()
    ]
    if dirty:
        files = ", ".join(line[3:] for line in dirty[:5])  # "XY path"
        return None, (
            f"the working tree has uncommitted changes ({files}): it is not a "
            "version, so caching is off and every step runs"
        )
    return head.stdout.strip(), f"caching on at commit {head.stdout.strip()}"


def raw_file_digests(params: dict[str, str]) -> dict[str, str] | None:
    """sha256 of each raw month preprocess would read; None if one is not there yet."""
    digests = {}
    for split in SPLITS:
        path = Path(params["raw_data_path"]) / tlc.file_name(
            params["color"], params[f"{split}_month"]
        )
        if not path.is_file():
            return None
        digests[split] = tlc.sha256_of(path)
    return digests


def find_cached(experiment_id: str, step: str, params: dict[str, str], commit: str) -> Run | None:
    """The latest FINISHED run of ``step`` with these params, commit and inputs, if any."""
    conditions = [
        f"tags.{MLFLOW_PROJECT_ENTRY_POINT} = '{step}'",
        f"tags.{MLFLOW_GIT_COMMIT} = '{commit}'",
        "attributes.status = 'FINISHED'",
    ]
    runs = MlflowClient().search_runs(
        [experiment_id],
        " and ".join(conditions),
        order_by=["attributes.start_time DESC"],
        max_results=200,
    )
    digests = raw_file_digests(params) if step == "preprocess" else None
    # `mlflow run` logs each entry-point parameter shell-quoted: "" is stored as "''".
    stored = {k: quote(str(v)) for k, v in params.items()}
    for run in runs:
        if any(run.data.params.get(k) != v for k, v in stored.items()):
            continue
        if step == "preprocess" and (
            digests is None
            or any(run.data.tags.get(f"data.{s}.sha256") != d for s, d in digests.items())
        ):
            continue
        return run
    return None


def run_step(step: str, params: dict[str, str], experiment_id: str) -> str:
    """Run ``step`` as a nested MLflow Project run; its run ID, or UserError naming it."""
    try:
        submitted = mlflow.projects.run(
            str(PROJECT_DIR),
            entry_point=step,
            parameters=params,
            env_manager="local",
            experiment_id=experiment_id,
            synchronous=True,
        )
    except ExecutionException as exc:
        raise UserError(f"step {step} failed: {exc}") from None
    return submitted.run_id


def run_pipeline(step_params: dict[str, dict[str, str]], use_cache: bool) -> list[StepOutcome]:
    client = MlflowClient()
    outcomes: list[StepOutcome] = []
    with step_run("main", "main") as run:
        log_params_missing(
            {k: v for p in step_params.values() for k, v in p.items() if k != "resume_run_id"}
            | {"use_cache": str(use_cache).lower()}
        )
        experiment_id = run.info.experiment_id
        commit, why = git_version(PROJECT_DIR)
        if not use_cache:
            commit, why = None, "use_cache=false: every step runs"
        log.info("%s", why)
        mlflow.set_tag("cache", why)
        upstream = None
        for step in STEPS:
            params = dict(step_params[step])
            if step in UPSTREAM_PARAM:
                params[UPSTREAM_PARAM[step]] = upstream
            cached = find_cached(experiment_id, step, params, commit) if commit else None
            if cached is not None:
                run_id = cached.info.run_id
                log.info(
                    "%s: reusing run %s (same entry point, params, commit and inputs)", step, run_id
                )
            else:
                log.info("%s: running with %s", step, params)
                run_id = run_step(step, params, experiment_id)
            step_run_data = client.get_run(run_id).data
            outcomes.append(
                StepOutcome(
                    step,
                    run_id,
                    cached is not None,
                    KEY_METRIC[step],
                    step_run_data.metrics.get(KEY_METRIC[step]),
                )
            )
            mlflow.set_tags({f"{step}.run_id": run_id, f"{step}.cached": str(cached is not None)})
            upstream = run_id

        register_tags = client.get_run(upstream).data.tags
        name, version = register_tags["registered_model"], register_tags["registered_version"]
        aliases = sorted(client.get_model_version(name, version).aliases)
        mlflow.set_tags({"registered_model": name, "registered_version": version})
        summary = {
            "steps": [asdict(o) for o in outcomes],
            "registered": {"name": name, "version": version, "aliases": aliases},
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "summary.json"
            path.write_text(json.dumps(summary, indent=2))
            mlflow.log_artifact(str(path))
        _print_summary(run.info.run_id, outcomes, name, version, aliases)
        return outcomes


def _print_summary(run_id, outcomes, name, version, aliases) -> None:
    click.echo(f"\nmain run {run_id}")
    click.echo(f"{'step':<11} {'run id':<33} {'cached':<7} key metric")
    for o in outcomes:
        value = "-" if o.value is None else f"{o.value:.6g}"
        click.echo(
            f"{o.step:<11} {o.run_id:<33} {'yes' if o.cached else 'no':<7} {o.metric} = {value}"
        )
    click.echo(
        f"registered: {name} version {version} "
        f"(aliases: {', '.join('@' + a for a in aliases) or 'none'})"
    )


@click.command(cls=StepCommand, params=options.pipeline_options())
@click.option("--use-cache", type=click.BOOL, default=True, show_default=True)
def main(use_cache, **values):
    """Run preprocess, hpo, train_best and register in order, reusing unchanged steps.

    Every step parameter is checked here, with the step's own option and message, before
    the first step runs; the steps get them back as strings (as MLflow stores them).
    """
    options.check_pipeline(values)
    setup_logging()
    step_params = options.step_params(values)
    step_params["hpo"]["resume_run_id"] = ""
    run_pipeline(step_params, use_cache)


if __name__ == "__main__":
    main()
