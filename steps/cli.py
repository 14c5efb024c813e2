"""Click plumbing shared by the entry points: one-line errors and logging set-up."""

from __future__ import annotations

import logging
import sys

import click
from mlflow.exceptions import MlflowException

from steps.errors import UserError
from steps.tlc import parse_month


class StepCommand(click.Command):
    """A command whose failures print one ``Error: ...`` line and exit non-zero.

    Click's usage errors normally print the usage block too; MLflow's runner shows the last
    lines of a failed step, so the reason must be on one line.
    """

    def main(self, args=None, prog_name=None, complete_var=None, **extra):
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code if exc.exit_code else 1)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except MlflowException as exc:
            click.echo(f"Error: MLflow: {exc.message}", err=True)
            sys.exit(1)
        except OSError as exc:  # a folder or file the user named cannot be read or written
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


def _check_month(ctx, param, value):
    try:
        return parse_month(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _month_decls(name: str, default: str) -> tuple[list[str], dict]:
    attrs = dict(
        default=default, show_default=True, callback=_check_month, help="Month as YYYY-MM."
    )
    return [f"--{name.replace('_', '-')}", name], attrs


def month_param(name: str, default: str) -> click.Option:
    """A ``YYYY-MM`` option, as an Option object (for shared option lists)."""
    decls, attrs = _month_decls(name, default)
    return click.Option(decls, **attrs)


def month_option(name: str, default: str):
    """A ``YYYY-MM`` option, as a decorator."""
    decls, attrs = _month_decls(name, default)
    return click.option(*decls, **attrs)


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # hyperopt logs two INFO lines per trial; its progress bar already says what matters.
    logging.getLogger("hyperopt").setLevel(logging.WARNING)
