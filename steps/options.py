"""The Click options of the steps that ``main`` chains, defined once.

Entry points never import each other, yet ``main`` must reject a bad step parameter before the
first step runs, with the message the step itself would give. So each step's options (name,
type, range, default, help) and the checks that span several options live here: the step's
command and ``main`` build their options from the same functions, and Click words the errors
the same way for both. The upstream run IDs (``preprocess_run_id``, ...) and
``resume_run_id`` are not here: ``main`` sets those itself.
"""

from __future__ import annotations

from pathlib import Path

import click
import mlflow

from steps import tlc
from steps.cli import month_param
from steps.errors import UserError
from steps.models import MODEL_KINDS
from steps.registry import DEFAULT_MODEL_NAME, check_model_name
from steps.spark import validate_master
from steps.spark_search import check_spark_settings, unreachable_tracking

SELECT_BY = ("val_rmse", "test_rmse")
PIPELINE_STEPS = ("preprocess", "hpo", "train_best", "register")


def check_distinct_months(months: dict[str, str]) -> None:
    """``months``: split -> month. The three splits must be three different months."""
    if len(set(months.values())) != len(months):
        raise UserError(
            "train, val and test months must be distinct, got "
            + ", ".join(f"{s}={m}" for s, m in months.items())
        )


def _check_model_name(ctx, param, value):
    try:
        return check_model_name(value)
    except UserError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def model_name_option() -> click.Option:
    return click.Option(
        ["--model-name"],
        default=DEFAULT_MODEL_NAME,
        show_default=True,
        callback=_check_model_name,
        help="Registered model name.",
    )


def _check_spark_master(ctx, param, value):
    if value:
        try:
            validate_master(value)
        except UserError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def _check_parallelism(ctx, param, value):
    """``""`` (the cluster's cores) -> None; otherwise a whole number >= 1."""
    if value is None or str(value).strip() == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise click.BadParameter(
            f"must be a whole number >= 1 (or empty: the cluster's cores), got {value!r}",
            ctx=ctx,
            param=param,
        )
    return number


def preprocess_options() -> list[click.Option]:
    return [
        click.Option(
            ["--raw-data-path"],
            default="data/raw",
            show_default=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="Folder of TLC parquet files; missing months are downloaded into it.",
        ),
        click.Option(
            ["--color"], type=click.Choice(tlc.COLORS), default="green", show_default=True
        ),
        month_param("train_month", "2023-01"),
        month_param("val_month", "2023-02"),
        month_param("test_month", "2023-03"),
    ]


def hpo_options() -> list[click.Option]:
    return [
        click.Option(
            ["--model"], type=click.Choice(MODEL_KINDS), default="xgboost", show_default=True
        ),
        click.Option(
            ["--max-evals"],
            type=click.IntRange(min=1),
            default=50,
            show_default=True,
            help="Number of trials.",
        ),
        click.Option(["--seed"], type=int, default=42, show_default=True),
        click.Option(
            ["--num-boost-round"],
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            help="XGBoost only.",
        ),
        click.Option(
            ["--early-stopping-rounds"],
            type=click.IntRange(min=0),
            default=50,
            show_default=True,
            help="XGBoost only; 0 turns early stopping off.",
        ),
        click.Option(
            ["--prune"],
            type=click.BOOL,
            default=True,
            show_default=True,
            help="XGBoost only: stop trials that trail earlier ones at rungs of 3%, 10% and "
            "30% of num_boost_round (false: the course's search exactly).",
        ),
        click.Option(
            ["--spark-master"],
            default="",
            callback=_check_spark_master,
            help="Run the trials on Spark (hyperopt's SparkTrials): local[N], "
            "spark://host:port, yarn, k8s://...; empty (default): in this process.",
        ),
        click.Option(
            ["--parallelism"],
            default="",
            callback=_check_parallelism,
            help="With spark_master: trials at once, a whole number >= 1; "
            "empty (default): the cluster's cores.",
        ),
    ]


def train_best_options() -> list[click.Option]:
    return [
        click.Option(
            ["--top-n"],
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="How many of the search's best trials (by val_rmse) to retrain.",
        ),
        click.Option(
            ["--autolog"],
            type=click.BOOL,
            default=False,
            show_default=True,
            help="Also turn on MLflow autologging for XGBoost / scikit-learn.",
        ),
    ]


def register_options() -> list[click.Option]:
    return [
        model_name_option(),
        click.Option(
            ["--select-by"],
            type=click.Choice(SELECT_BY),
            default="val_rmse",
            show_default=True,
            help="Metric that picks the candidate (lower is better).",
        ),
    ]


STEP_OPTIONS = {
    "preprocess": preprocess_options,
    "hpo": hpo_options,
    "train_best": train_best_options,
    "register": register_options,
}


def pipeline_options() -> list[click.Option]:
    """Every option of the four steps, in step order (``main``'s options)."""
    return [option for step in PIPELINE_STEPS for option in STEP_OPTIONS[step]()]


def check_pipeline(values: dict[str, object]) -> None:
    """The checks that span several options, as the steps make them (Click did the rest)."""
    check_distinct_months({s: values[f"{s}_month"] for s in ("train", "val", "test")})
    check_spark_settings(values["spark_master"], values["parallelism"], resume=False)
    unreachable = unreachable_tracking(values["spark_master"], mlflow.get_tracking_uri())
    if unreachable:
        raise UserError(unreachable)


def as_param(value: object) -> str:
    """A parsed option value as the string handed to ``mlflow run`` (and stored by MLflow)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:  # an optional value left empty (parallelism)
        return ""
    return str(value)


def step_params(values: dict[str, object]) -> dict[str, dict[str, str]]:
    """Parsed pipeline option values -> each step's parameters, as strings."""
    return {
        step: {option.name: as_param(values[option.name]) for option in STEP_OPTIONS[step]()}
        for step in PIPELINE_STEPS
    }
