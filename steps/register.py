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

The gate (``run_gate``; decisions in the pure ``unfair_comparison`` and ``decide_champion``):

- Fair months: this run's test month (``data.test.month``) must be neither the train nor the
  val month of the new version (its version tags, copied from its preprocess run) nor of the
  champion (its version tags). Otherwise the comparison is refused: the version is still
  registered and gets ``challenger``, ``champion`` does not move, the run finishes with
  ``decision`` = ``refused: ...`` naming the months and versions (a warning too). A version
  without month tags cannot be shown fair, so it is refused as well; ``rollback`` moves the
  champion by hand.
- Ties: the new version wins only with a strictly lower RMSE (``<`` on the float64 values, no
  tolerance): an exact tie keeps the champion; one ulp lower promotes.
- Concurrent registers: MLflow has no transaction or compare-and-set on aliases, so each
  register holds the champion lock (``steps/registry.py``; rollback too) from reading the
  champion to writing it. Without it, two registers A and B could both read champion C, A
  (better) write A, then B (read C, beats C) write B: the better A is lost. With it, the
  read-decide-write sections of A and B run one after the other in some order, and every
  interleaving of the rest (registering versions, setting ``challenger``, scoring the new
  version on the test month) touches no champion. Order A then B: B reads A and is promoted
  only if it beats A. Order B then A: A reads B and replaces it if better. Either way
  ``champion`` ends as the better of A, B and the champion before them (on a shared test
  month; a tie keeps the earlier holder), as if the two runs had never overlapped. The same
  holds for more processes, by induction over the lock order (with different test months,
  each decision is judged on its own run's month, in that order). Mutual exclusion rests on
  creating the lock model being atomic in the store. A process that dies holding the lock is
  waited for until its run is no longer RUNNING or ``LOCK_STALE_S`` has passed; a live holder
  slower than that would lose its exclusion (a decision takes seconds). Two first registers
  of a new model both create it; the second's "already exists" is not an error. Two registers
  of the same candidate at once may still give it two versions (both find none): harmless to
  the champion, which one of them holds.
  ``$NYC_TAXI_TEST_GATE_PAUSE_S`` (tests only) pauses between the read and the write, to make
  two registers overlap there.

Writes to its run, named ``register <model_name>``: params ``train_run_id``, ``model_name``,
``select_by``; tags ``step=register``, ``registered_model``, ``registered_version``, ``decision``,
``champion_version``; metrics ``candidate_test_rmse`` and, when there was one,
``champion_test_rmse``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import click
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
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
    champion_lock,
    champion_version,
    check_model_name,
    is_not_found,
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
GATE_PAUSE_ENV = "NYC_TAXI_TEST_GATE_PAUSE_S"  # tests only: see pause_for_tests
UNKNOWN_MONTH = "unknown"


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


@dataclass(frozen=True)
class TrainedOn:
    """The months a model saw while it was made: fitted on ``train``, selected on ``val``."""

    model: str  # how the message names it, e.g. "champion version 2"
    train: str
    val: str


def trained_on(model: str, version_tags: Mapping[str, str]) -> TrainedOn:
    """The months a registered version's tags ``data.train.month``/``data.val.month`` name."""
    return TrainedOn(
        model,
        version_tags.get("data.train.month", UNKNOWN_MONTH),
        version_tags.get("data.val.month", UNKNOWN_MONTH),
    )


def unfair_comparison(test_month: str, models: Sequence[TrainedOn]) -> str | None:
    """Why comparing ``models`` on ``test_month`` would not be fair, or None when it is: the
    test month must be known and be neither the train nor the val month of any of them (a
    model that saw its test month scores better than it will on a month it has not seen).
    A model whose months are unknown (a version registered by hand) cannot be shown fair."""
    problems = []
    for m in models:
        months = {"train": m.train, "val": m.val}
        unknown = [split for split, month in months.items() if month in ("", UNKNOWN_MONTH)]
        if unknown:
            problems.append(
                f"{m.model} has no data.{unknown[0]}.month tag, so it may have seen it "
                "(tag the version with the months it saw)"
            )
        elif overlap := [split for split, month in months.items() if month == test_month]:
            problems.append(
                f"it is {m.model}'s {' and '.join(overlap)} month (train {m.train}, val {m.val})"
            )
    if test_month in ("", UNKNOWN_MONTH):
        problems.insert(0, "this run's test month is unknown (no data.test.month tag)")
    if not problems:
        return None
    return (
        f"refused: comparing on test month {test_month} is not fair: "
        + "; ".join(problems)
        + "; @champion unchanged"
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
    # no model of that name: an empty list; any error is real (not "no version")
    versions = client.search_model_versions(
        f"name = '{name}' and run_id = '{candidate.info.run_id}'"
    )
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


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create ``name`` unless it exists (a concurrent register may create it first)."""
    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
    try:
        client.create_registered_model(
            name,
            description="NYC taxi trip duration (minutes) from raw trip records; "
            "built by the nyc-taxi-duration MLflow Project.",
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def register_version(client: MlflowClient, name: str, chosen: Run, tags: dict[str, str]):
    """The version holding ``chosen``'s model: the existing one, or a new one."""
    version = existing_version(client, name, chosen)
    if version is not None:
        log.info(
            "%s version %s already holds candidate %s: not registering again",
            name,
            version.version,
            chosen.info.run_id,
        )
        return version
    ensure_registered_model(client, name)
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
        "registered %s version %s from %s", name, version.version, chosen.data.tags["model_uri"]
    )
    return version


@dataclass(frozen=True)
class GateOutcome:
    verdict: ChampionVerdict
    champion_rmse: float | None  # the previous champion's, when it was evaluated
    champion: str  # the champion's version after the gate


def pause_for_tests() -> None:
    """Test hook: sleep ``$NYC_TAXI_TEST_GATE_PAUSE_S`` seconds between reading the champion
    and writing it, so that a test can force two registers to overlap there. Unset: no pause."""
    pause = os.environ.get(GATE_PAUSE_ENV)
    if pause:
        time.sleep(float(pause))


def run_gate(
    client: MlflowClient,
    name: str,
    version: ModelVersion,
    candidate_rmse: float,
    test: pd.DataFrame,
    owner_run_id: str,
) -> GateOutcome:
    """Compare ``version`` (its test RMSE ``candidate_rmse`` on ``test``, the month its tag
    ``data.test.month`` names) with the current champion and move ``champion`` if it wins,
    holding the champion lock from reading the champion to writing it."""
    this = str(version.version)
    with champion_lock(client, name, owner_run_id):
        current = champion_version(client, name)
        current_version = None if current is None else str(current.version)
        champion_rmse = None
        refusal = None
        if current_version != this:
            models = [trained_on(f"challenger version {this}", version.tags)]
            if current is not None:
                models.append(trained_on(f"champion version {current_version}", current.tags))
            refusal = unfair_comparison(version.tags.get("data.test.month", "unknown"), models)
        if refusal is not None:
            verdict = ChampionVerdict(False, refusal)
        else:
            if current_version not in (None, this):
                champion_rmse = test_rmse_of(f"models:/{name}/{current_version}", test)
            verdict = decide_champion(this, candidate_rmse, current_version, champion_rmse)
        pause_for_tests()
        if verdict.promote:
            promote(client, name, this, f"register run {owner_run_id}: {verdict.reason}")
            current_version = this
    if refusal is not None:
        log.warning("%s", refusal)
    return GateOutcome(verdict, champion_rmse, str(current_version))


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
        name = config.model_name
        version = register_version(
            client, name, chosen, version_tags(chosen, train_run, preprocess)
        )
        client.set_registered_model_alias(name, CHALLENGER, version.version)

        _, frames = load_preprocessed(preprocess.info.run_id, ("test",))
        test = frames["test"]
        candidate_rmse = test_rmse_of(f"models:/{name}/{version.version}", test)
        gate = run_gate(client, name, version, candidate_rmse, test, run.info.run_id)

        metrics = {"candidate_test_rmse": candidate_rmse}
        if gate.champion_rmse is not None:
            metrics["champion_test_rmse"] = gate.champion_rmse
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                "registered_model": name,
                "registered_version": version.version,
                "decision": gate.verdict.reason,
                "champion_version": gate.champion,
                "candidate_run_id": chosen.info.run_id,
            }
        )
        return RegisterResult(
            run.info.run_id,
            name,
            version.version,
            gate.verdict.reason,
            candidate_rmse,
            gate.champion_rmse,
            gate.champion,
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
