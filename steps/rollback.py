"""Entry point ``rollback``: move alias ``champion`` back to a named earlier version.

The course's registry lets an archived model go to production again; here that is one alias
move, recorded like a promotion. Writes to its run: params ``model_name``, ``version``,
``reason``; tags ``step=rollback``, ``decision``, ``previous_champion_version``,
``champion_version``. Tags the version ``promoted_at``/``promotion_reason`` and the replaced
one ``replaced_at``/``replaced_by_version``.
"""

from __future__ import annotations

import click
import mlflow
from mlflow.tracking import MlflowClient

from steps.cli import StepCommand, setup_logging
from steps.errors import UserError
from steps.registry import (
    DEFAULT_MODEL_NAME,
    champion_version,
    check_model_name,
    get_version,
    promote,
)
from steps.tracking import log_params_missing, step_run


def run_rollback(model_name: str, version: str, reason: str) -> tuple[str, str | None]:
    """Returns (decision, previous champion version)."""
    check_model_name(model_name)
    if not reason.strip():
        raise UserError("reason must say why the champion is rolled back")
    client = MlflowClient()
    target = get_version(client, model_name, version)  # fails before any run starts
    with step_run("rollback"):
        log_params_missing({"model_name": model_name, "version": version, "reason": reason})
        current = champion_version(client, model_name)
        previous = None if current is None else str(current.version)
        if previous == str(target.version):
            decision = f"kept: version {target.version} is already the champion"
        else:
            promote(client, model_name, str(target.version), f"rollback: {reason}")
            decision = f"rolled back: champion {previous} -> {target.version} ({reason})"
        mlflow.set_tags(
            {
                "decision": decision,
                "previous_champion_version": str(previous),
                "champion_version": target.version,
            }
        )
        return decision, previous


@click.command(cls=StepCommand)
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--version", required=True, help="The registered version to make champion.")
@click.option("--reason", required=True, help="Why (kept in the version's tags).")
def main(model_name, version, reason):
    """Point @champion at an earlier version, with a reason."""
    setup_logging()
    decision, _ = run_rollback(model_name, version, reason)
    click.echo(f"{model_name}: {decision}")


if __name__ == "__main__":
    main()
