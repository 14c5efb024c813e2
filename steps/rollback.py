"""Entry point ``rollback``: move alias ``champion`` to a named version, usually an earlier one.

The course's registry lets an archived model go to production again; here that is one alias
move, recorded like a promotion. Moving to an older version than the current champion is a
rollback; moving to a newer one (undoing a rollback, say) is allowed and said as such, "moved
forward"; naming the current champion changes nothing. Writes to its run: params
``model_name``, ``version``, ``reason``; tags ``step=rollback``, ``decision``,
``previous_champion_version``, ``champion_version``. Tags the version
``promoted_at``/``promotion_reason`` (``rollback: <reason>`` or ``move forward: <reason>``)
and the replaced one ``replaced_at``/``replaced_by_version``. Reads and moves the champion
holding the champion lock, like ``register`` (``steps/registry.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import click
import mlflow
from mlflow.tracking import MlflowClient

from steps.cli import StepCommand, setup_logging
from steps.errors import UserError
from steps.options import model_name_option
from steps.registry import (
    champion_lock,
    champion_version,
    check_model_name,
    get_version,
    promote,
)
from steps.tracking import log_params_missing, step_run


@dataclass(frozen=True)
class ChampionMove:
    moves: bool  # whether the alias changes
    decision: str  # what happens, for the log and the run's ``decision`` tag
    promotion_reason: str | None  # the new champion's ``promotion_reason`` tag


def decide_move(current: str | None, target: str, reason: str) -> ChampionMove:
    """What moving ``champion`` from version ``current`` (None: no champion) to ``target`` is."""
    if current is None:
        return ChampionMove(
            True, f"set: there was no champion; champion -> {target} ({reason})", f"set: {reason}"
        )
    if int(target) == int(current):
        return ChampionMove(False, f"kept: version {target} is already the champion", None)
    if int(target) < int(current):
        return ChampionMove(
            True, f"rolled back: champion {current} -> {target} ({reason})", f"rollback: {reason}"
        )
    return ChampionMove(
        True,
        f"moved forward: champion {current} -> {target}, a newer version ({reason})",
        f"move forward: {reason}",
    )


def run_rollback(model_name: str, version: str, reason: str) -> tuple[str, str | None]:
    """Returns (decision, previous champion version)."""
    check_model_name(model_name)
    if not reason.strip():
        raise UserError("reason must say why the champion is moved")
    client = MlflowClient()
    target = get_version(client, model_name, version)  # fails before any run starts
    with step_run("rollback", f"rollback {model_name} to {target.version}") as run:
        log_params_missing({"model_name": model_name, "version": version, "reason": reason})
        # under the lock a concurrent register neither decides against a champion this moves
        # away, nor overwrites this move with a decision made before it
        with champion_lock(client, model_name, run.info.run_id):
            current = champion_version(client, model_name)
            previous = None if current is None else str(current.version)
            move = decide_move(previous, str(target.version), reason)
            if move.moves:
                promote(client, model_name, str(target.version), move.promotion_reason)
        mlflow.set_tags(
            {
                "decision": move.decision,
                "previous_champion_version": str(previous),
                "champion_version": target.version,
            }
        )
        return move.decision, previous


@click.command(cls=StepCommand, params=[model_name_option()])
@click.option("--version", required=True, help="The registered version to make champion.")
@click.option("--reason", required=True, help="Why (kept in the version's tags).")
def main(model_name, version, reason):
    """Point @champion at another version (usually an earlier one), with a reason."""
    setup_logging()
    decision, _ = run_rollback(model_name, version, reason)
    click.echo(f"{model_name}: {decision}")


if __name__ == "__main__":
    main()
