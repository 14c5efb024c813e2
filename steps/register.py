"""Entry point ``register``: register a train_best run's best candidate and set its aliases.

Reads the train_best run ``train_run_id`` (default: the latest finished one): its candidate
child runs (tags ``model_uri``, ``hpo_trial_run_id``; metrics ``val_rmse``, ``test_rmse``),
its tags ``hpo_run_id``, ``preprocess_run_id``; from the preprocess run its ``data.*`` tags and
``data/test.parquet``.

Registers the candidate with the lowest ``select_by`` as a version of ``model_name`` (or reuses
the version already registered from that candidate), with a description and tags
``val_rmse``, ``test_rmse`` (full precision), ``git_commit``, ``data.<split>.month``,
``data.<split>.sha256``, ``hpo_run_id``, ``preprocess_run_id``, ``train_best_run_id``,
``candidate_run_id``, ``model_kind``. Sets alias ``challenger`` on it, and ``champion`` when
there is none yet or when it beats the current champion on this run's test month (both
re-evaluated here).

Writes to its run, named ``register <model_name>``: params ``train_run_id``, ``model_name``,
``select_by``; tags ``step=register``, ``registered_model``, ``registered_version``, ``decision``,
``champion_version``; metrics ``candidate_test_rmse`` and, when there was one,
``champion_test_rmse``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import click
import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from steps import options
from steps.artifacts import load_preprocessed
from steps.cli import StepCommand, setup_logging
from steps.errors import UserError
from steps.models import rmse
from steps.predictor import INPUT_COLUMNS
from steps.registry import (
    CHALLENGER,
    DEFAULT_MODEL_NAME,
    champion_version,
    check_model_name,
    promote,
)
from steps.tracking import (
    finished_children,
    get_step_run,
    log_params_missing,
    resolve_upstream,
    step_run,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterConfig:
    train_run_id: str | None = None
    model_name: str = DEFAULT_MODEL_NAME
    select_by: str = "val_rmse"

    def validate(self) -> None:
        check_model_name(self.model_name)
        if self.select_by not in options.SELECT_BY:
            raise UserError(
                f"select_by must be one of {', '.join(options.SELECT_BY)}, got {self.select_by!r}"
            )


@dataclass(frozen=True)
class RegisterResult:
    run_id: str
    name: str
    version: str
    decision: str
    candidate_test_rmse: float
    champion_test_rmse: float | None
    champion: str


@dataclass(frozen=True)
class ChampionVerdict:
    promote: bool
    reason: str


def decide_champion(
    version: str, candidate_rmse: float, champion: str | None, champion_rmse: float | None
) -> ChampionVerdict:
    """Does ``version`` (test RMSE ``candidate_rmse``) become champion? ``champion`` is the
    current champion's version (None: there is none) and ``champion_rmse`` its test RMSE on the
    same month (not needed when there is no champion or it is ``version`` itself)."""
    if champion is None:
        return ChampionVerdict(
            True, f"promoted: there was no champion (test_rmse {candidate_rmse!r})"
        )
    if champion == version:
        return ChampionVerdict(
            False,
            f"kept: version {version} is already the champion (test_rmse {candidate_rmse!r}; "
            "nothing to compare it with)",
        )
    if candidate_rmse < champion_rmse:
        return ChampionVerdict(
            True,
            f"promoted: test_rmse {candidate_rmse!r} < champion version {champion}'s "
            f"{champion_rmse!r}",
        )
    return ChampionVerdict(
        False,
        f"not promoted: test_rmse {candidate_rmse!r} >= champion version {champion}'s "
        f"{champion_rmse!r}",
    )


def outcome_line(result: RegisterResult) -> str:
    """What the register step did, in one line: the version, the decision, the champion."""
    return (
        f"{result.name} version {result.version} (@challenger): {result.decision}; "
        f"@champion = version {result.champion}"
    )


def candidates_of(train_run: Run) -> list[Run]:
    children = finished_children(train_run)
    return [c for c in children if "model_uri" in c.data.tags and "test_rmse" in c.data.metrics]


def existing_version(client: MlflowClient, name: str, candidate: Run):
    """The version already registered from this candidate's model, if any."""
    try:
        versions = client.search_model_versions(
            f"name = '{name}' and run_id = '{candidate.info.run_id}'"
        )
    except MlflowException:
        return None
    model_uri = candidate.data.tags["model_uri"]
    model_id = model_uri.removeprefix("models:/")
    for version in sorted(versions, key=lambda v: int(v.version)):
        if version.source == model_uri or getattr(version, "model_id", None) == model_id:
            return version
    return None


def version_tags(candidate: Run, train_run: Run, preprocess: Run) -> dict[str, str]:
    tags = {
        "val_rmse": repr(candidate.data.metrics["val_rmse"]),
        "test_rmse": repr(candidate.data.metrics["test_rmse"]),
        "git_commit": candidate.data.tags.get(
            MLFLOW_GIT_COMMIT, train_run.data.tags.get(MLFLOW_GIT_COMMIT, "unknown")
        ),
        "hpo_run_id": train_run.data.tags["hpo_run_id"],
        "preprocess_run_id": train_run.data.tags["preprocess_run_id"],
        "train_best_run_id": train_run.info.run_id,
        "candidate_run_id": candidate.info.run_id,
        "model_kind": candidate.data.tags.get("model", "unknown"),
    }
    for split in ("train", "val", "test"):
        for field in ("month", "file", "sha256"):
            key = f"data.{split}.{field}"
            tags[key] = preprocess.data.tags.get(key, "unknown")
    return tags


def test_rmse_of(model_uri: str, test_frame) -> float:
    model = mlflow.pyfunc.load_model(model_uri)
    pred = np.asarray(model.predict(test_frame[list(INPUT_COLUMNS)]), dtype=np.float64)
    return rmse(test_frame["duration"].to_numpy(), pred)


def run_register(config: RegisterConfig) -> RegisterResult:
    config.validate()
    client = MlflowClient()
    with step_run("register", f"register {config.model_name}") as run:
        log_params_missing(
            {
                "train_run_id": config.train_run_id or "",
                "model_name": config.model_name,
                "select_by": config.select_by,
            }
        )
        train_run = resolve_upstream(
            config.train_run_id, "train_best", "train_run_id", run.info.experiment_id
        )
        candidates = candidates_of(train_run)
        if not candidates:
            raise UserError(f"train_best run {train_run.info.run_id} has no finished candidates")
        chosen = min(
            candidates,
            key=lambda c: (c.data.metrics[config.select_by], c.data.metrics["val_rmse"]),
        )
        preprocess = get_step_run(
            train_run.data.tags["preprocess_run_id"], "preprocess", "preprocess_run_id"
        )
        tags = version_tags(chosen, train_run, preprocess)
        name = config.model_name

        version = existing_version(client, name, chosen)
        if version is None:
            try:
                client.get_registered_model(name)
            except MlflowException:
                client.create_registered_model(
                    name,
                    description="NYC taxi trip duration (minutes) from raw trip records; "
                    "built by the nyc-taxi-duration MLflow Project.",
                )
            version = client.create_model_version(
                name,
                source=chosen.data.tags["model_uri"],
                model_id=chosen.data.tags["model_uri"].removeprefix("models:/"),
                run_id=chosen.info.run_id,
                tags=tags,
                description=(
                    f"{tags['model_kind']} from hpo trial {chosen.data.tags.get('hpo_trial_id')}"
                    f" (run {tags['hpo_run_id']}); val_rmse {tags['val_rmse']}, test_rmse "
                    f"{tags['test_rmse']}; train/val/test months {tags['data.train.month']}/"
                    f"{tags['data.val.month']}/{tags['data.test.month']}; commit "
                    f"{tags['git_commit']}"
                ),
            )
            log.info(
                "registered %s version %s from %s",
                name,
                version.version,
                chosen.data.tags["model_uri"],
            )
        else:
            log.info(
                "%s version %s already holds candidate %s: not registering again",
                name,
                version.version,
                chosen.info.run_id,
            )
        client.set_registered_model_alias(name, CHALLENGER, version.version)

        _, frames = load_preprocessed(preprocess.info.run_id, ("test",))
        test = frames["test"]
        candidate_rmse = test_rmse_of(f"models:/{name}/{version.version}", test)
        current = champion_version(client, name)
        current_version = None if current is None else str(current.version)
        champion_rmse = None
        if current_version not in (None, str(version.version)):
            champion_rmse = test_rmse_of(f"models:/{name}/{current_version}", test)
        verdict = decide_champion(
            str(version.version), candidate_rmse, current_version, champion_rmse
        )
        decision = verdict.reason
        if verdict.promote:
            promote(client, name, version.version, f"register run {run.info.run_id}: {decision}")
        champion = str(champion_version(client, name).version)

        metrics = {"candidate_test_rmse": candidate_rmse}
        if champion_rmse is not None:
            metrics["champion_test_rmse"] = champion_rmse
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                "registered_model": name,
                "registered_version": version.version,
                "decision": decision,
                "champion_version": champion,
                "candidate_run_id": chosen.info.run_id,
            }
        )
        return RegisterResult(
            run.info.run_id,
            name,
            version.version,
            decision,
            candidate_rmse,
            champion_rmse,
            champion,
        )


@click.command(cls=StepCommand, params=options.register_options())
@click.option("--train-run-id", default="", help="Default: the latest finished train_best run.")
def main(train_run_id, model_name, select_by):
    """Register the best candidate; set challenger, and champion if it wins on test."""
    setup_logging()
    result = run_register(RegisterConfig(train_run_id or None, model_name, select_by))
    click.echo(outcome_line(result))


if __name__ == "__main__":
    main()
