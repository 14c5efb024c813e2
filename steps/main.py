"""Entry point ``main``: preprocess -> hpo -> train_best -> register, with step caching.

Each step runs through MLflow Projects as a run nested under the main run, in the same
environment (``env_manager="local"``: a nested ``mlflow.projects.run`` does not inherit
``--env-manager``, and ``main`` already runs inside the project's environment), and gets the
previous step's run ID as its upstream parameter.

Every step parameter is parsed and checked before the first step runs, by the step's own
Click options (``steps.options``), so a bad one fails in seconds with the step's message.

Caching: a step is reused, not rerun, when a FINISHED run in the experiment has the same entry
point, the same parameters as MLflow stores them (strings), the same git commit, was made from
a clean tree (tag ``source.clean=true``: no tracked file differed from that commit), with the
same environment definition (tag ``env.digest``) and the same inputs (the raw files' sha256
for preprocess; the upstream run ID, a parameter, for the others); ``reuse_verdict`` decides.
A tree with uncommitted changes to tracked files is not a version: caching is refused for it,
and the runs it makes are tagged not clean, so no later main reuses them. ``register`` is never
reused: it reads and changes the registry (aliases, rollbacks, deleted versions), so it runs
every time (a candidate already registered keeps its version). ``use_cache=false`` reruns
everything.

Writes to its run: params (every step parameter, ``use_cache``); tags ``step=main``,
``<step>.run_id``, ``<step>.cached``, ``cache`` (why caching was on or off),
``registered_model``, ``registered_version``; artifact ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from collections.abc import Mapping
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
from steps.tracking import (
    CLEAN,
    DIRTY,
    ENV_DIGEST_TAG,
    PROJECT_DIR,
    SOURCE_CLEAN_TAG,
    UNKNOWN,
    env_digest,
    log_params_missing,
    source_state,
    step_run,
)

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
# Steps whose result depends on more than their inputs, so a past run is never theirs to reuse.
NEVER_CACHED = {
    "register": "it reads and changes the registry (aliases, rollbacks, deleted versions), "
    "so it runs every time",
}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepOutcome:
    step: str
    run_id: str
    cached: bool
    metric: str
    value: float | None


@dataclass(frozen=True)
class CacheKey:
    """What a reusable run of ``step`` must match, in the form MLflow stores it (strings).

    ``inputs``: tags the run must carry with these values (the raw files' sha256 for
    preprocess); None when they cannot be known yet (a raw month not downloaded).
    """

    step: str
    params: Mapping[str, str]
    commit: str
    env_digest: str
    inputs: Mapping[str, str] | None


@dataclass(frozen=True)
class Verdict:
    reusable: bool
    reason: str


def reuse_verdict(
    key: CacheKey, status: str, params: Mapping[str, str], tags: Mapping[str, str]
) -> Verdict:
    """May a past run (its status, params and tags) stand in for running ``key.step`` now?"""
    if key.step in NEVER_CACHED:
        return Verdict(False, f"{key.step} is never reused: {NEVER_CACHED[key.step]}")
    if status != "FINISHED":
        return Verdict(False, f"the run is {status}, not FINISHED")
    if tags.get(MLFLOW_PROJECT_ENTRY_POINT) != key.step:
        return Verdict(False, f"it is not a run of entry point {key.step}")
    if tags.get(MLFLOW_GIT_COMMIT) != key.commit:
        return Verdict(False, f"it was made at another commit than {key.commit}")
    clean = tags.get(SOURCE_CLEAN_TAG)
    if clean != CLEAN:
        why = {
            DIRTY: "it was made from a tree with uncommitted changes",
            UNKNOWN: "it was made where git could not tell whether the tree was clean",
            None: f"it does not record {SOURCE_CLEAN_TAG} (made before it was recorded)",
        }
        return Verdict(False, why.get(clean, f"its {SOURCE_CLEAN_TAG} is {clean!r}"))
    if key.env_digest == UNKNOWN:
        return Verdict(False, "the environment definition cannot be read now")
    if tags.get(ENV_DIGEST_TAG) != key.env_digest:
        return Verdict(False, "it was made with another environment definition")
    for name, value in key.params.items():
        if params.get(name) != value:
            return Verdict(False, f"its parameter {name} is {params.get(name)!r}, not {value!r}")
    if key.inputs is None:
        return Verdict(False, "the inputs are not known yet (a raw file is missing)")
    for name, value in key.inputs.items():
        if tags.get(name) != value:
            return Verdict(False, f"its input {name} differs")
    return Verdict(
        True, "same entry point, params, commit, clean tree, environment definition and inputs"
    )


def cache_commit(project_dir: Path) -> tuple[str | None, str]:
    """(commit, reason): HEAD when the tree is a clean checkout, else None and why."""
    source = source_state(project_dir)
    if source.clean == UNKNOWN:
        return None, f"{source.reason}: caching is off"
    if source.clean == DIRTY:
        files = ", ".join(source.changed[:5])
        return None, (
            f"the working tree has uncommitted changes ({files}): it is not a "
            "version, so caching is off and every step runs"
        )
    head = subprocess.run(
        ["git", "-C", str(project_dir), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if head.returncode != 0:
        return None, f"{project_dir} has no commit: caching is off"
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


def cache_key(step: str, params: dict[str, str], commit: str, env: str) -> CacheKey:
    inputs: dict[str, str] | None = {}
    if step == "preprocess":
        digests = raw_file_digests(params)
        inputs = None if digests is None else {f"data.{s}.sha256": d for s, d in digests.items()}
    # `mlflow run` logs each entry-point parameter shell-quoted: "" is stored as "''".
    stored = {k: quote(str(v)) for k, v in params.items()}
    return CacheKey(step, stored, commit, env, inputs)


def find_cached(experiment_id: str, key: CacheKey) -> Run | None:
    """The latest run that ``reuse_verdict`` accepts for ``key``, if any."""
    if key.step in NEVER_CACHED:
        return None
    conditions = [
        f"tags.{MLFLOW_PROJECT_ENTRY_POINT} = '{key.step}'",
        f"tags.{MLFLOW_GIT_COMMIT} = '{key.commit}'",
        "attributes.status = 'FINISHED'",
    ]
    runs = MlflowClient().search_runs(
        [experiment_id],
        " and ".join(conditions),
        order_by=["attributes.start_time DESC"],
        max_results=200,
    )
    newest_refused = None
    for run in runs:
        verdict = reuse_verdict(key, run.info.status, run.data.params, run.data.tags)
        if verdict.reusable:
            return run
        newest_refused = newest_refused or (run.info.run_id, verdict.reason)
    if newest_refused:
        run_id, reason = newest_refused
        log.info("%s: no reusable run (newest at this commit: %s, %s)", key.step, run_id, reason)
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
        commit, why = cache_commit(PROJECT_DIR)
        env = env_digest(PROJECT_DIR)
        if commit and env == UNKNOWN:
            commit, why = None, "the environment definition cannot be read: caching is off"
        if not use_cache:
            commit, why = None, "use_cache=false: every step runs"
        log.info("%s", why)
        mlflow.set_tag("cache", why)
        upstream = None
        for step in STEPS:
            params = dict(step_params[step])
            if step in UPSTREAM_PARAM:
                params[UPSTREAM_PARAM[step]] = upstream
            cached = None
            if commit:
                cached = find_cached(experiment_id, cache_key(step, params, commit, env))
            if cached is not None:
                run_id = cached.info.run_id
                log.info(
                    "%s: reusing run %s (same entry point, params, commit, clean tree, "
                    "environment and inputs)",
                    step,
                    run_id,
                )
            elif step in NEVER_CACHED:
                log.info("%s: running (%s) with %s", step, NEVER_CACHED[step], params)
                run_id = run_step(step, params, experiment_id)
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
        cached = "yes" if o.cached else "never" if o.step in NEVER_CACHED else "no"
        click.echo(f"{o.step:<11} {o.run_id:<33} {cached:<7} {o.metric} = {value}")
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
