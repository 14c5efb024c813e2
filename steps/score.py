"""Entry point ``score``: batch predictions for one TLC month with a given model.

Reads ``{color}_tripdata_{month}.parquet`` from ``raw_data_path`` (downloaded if missing) and
the model ``model_uri`` (default ``models:/nyc-taxi-regressor@champion``). Writes
``output_path`` (default ``predictions/<color>_tripdata_<month>.parquet``; parquet, written
atomically with the user's umask): one row per trip of the file, in file order, with
``pickup_datetime``, ``PULocationID``, ``DOLocationID``, ``trip_distance``,
``predicted_duration`` (minutes), ``rejected_reason``, ``model_name``, ``model_version`` and
``model_uri``. A row that breaks the model's input contract (``steps.contract``: a null,
negative or infinite distance, a missing or non-integer location ID) is kept with a null
``predicted_duration`` and ``rejected_reason`` saying why (null for scored rows); one bad row
never fails the month.

Writes to its run (named ``score 2023-03``; ``score yellow 2023-03`` for yellow): params
``model_uri``, ``raw_data_path``, ``color``, ``month``, ``output_path``; tags ``step=score``,
``model_name``, ``model_version``, ``data.sha256``; metrics ``rows_scored`` (rows with a
prediction) and ``rows_rejected``; the predictions as artifact ``predictions/<file name>``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps import tlc
from steps.cli import StepCommand, month_option, setup_logging
from steps.contract import DISTANCE_COLUMN, INPUT_COLUMNS, LOCATION_COLUMNS, row_reasons
from steps.errors import UserError
from steps.registry import DEFAULT_MODEL_NAME, describe_model_uri
from steps.tracking import log_params_missing, step_run

DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@champion"
DEFAULT_OUTPUT = "predictions/{color}_tripdata_{month}.parquet"
REJECTED_COLUMN = "rejected_reason"
log = logging.getLogger(__name__)


def default_output_path(color: str, month: str) -> Path:
    return Path(DEFAULT_OUTPUT.format(color=color, month=month))


def run_name(color: str, month: str) -> str:
    """``score 2023-03``: the month scored; the color when not green (as preprocess names)."""
    return f"score {month}" if color == "green" else f"score {color} {month}"


@dataclass(frozen=True)
class ScoreResult:
    run_id: str
    rows: int  # every row of the file, all written
    rows_rejected: int  # rows that break the input contract: no prediction

    @property
    def rows_scored(self) -> int:
        return self.rows - self.rows_rejected


def _as_written(values: pd.Series, integer: bool) -> np.ndarray:
    """Location IDs as int64 and distances as float64 where the file's type allows; a column
    holding nulls (a float column) is written as the file has it."""
    if integer and pd.api.types.is_integer_dtype(values):
        return values.to_numpy(dtype=np.int64)
    if not integer and pd.api.types.is_float_dtype(values):
        return values.to_numpy(dtype=np.float64)
    return values.to_numpy()


def score_frame(
    model, raw: pd.DataFrame, color: str, name: str, version: str, model_uri: str
) -> pd.DataFrame:
    """One row per row of ``raw``, in order; rows that break the contract are not predicted."""
    pickup, _ = tlc.PICKUP_DROPOFF[color]
    reasons = row_reasons(raw)
    good = np.array([r is None for r in reasons], dtype=bool)
    pred = np.full(len(raw), np.nan)
    if good.any():
        inputs = raw.loc[good, list(INPUT_COLUMNS)]
        pred[good] = np.asarray(model.predict(inputs), dtype=np.float64)
    return pd.DataFrame(
        {
            "pickup_datetime": raw[pickup].to_numpy(),
            **{c: _as_written(raw[c], integer=True) for c in LOCATION_COLUMNS},
            DISTANCE_COLUMN: _as_written(raw[DISTANCE_COLUMN], integer=False),
            "predicted_duration": pred,
            REJECTED_COLUMN: pd.array(reasons, dtype="string"),
            "model_name": name,
            "model_version": version,
            "model_uri": model_uri,
        }
    )


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write ``path`` through a temporary file beside it, created (like ``path``) with the
    user's umask, not ``mkstemp``'s 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_score(
    model_uri: str, raw_data_path: Path, color: str, month: str, output_path: Path
) -> ScoreResult:
    if color not in tlc.COLORS:
        raise UserError(f"color must be one of {', '.join(tlc.COLORS)}, got {color!r}")
    with step_run("score", run_name(color, month)) as run:
        log_params_missing(
            {
                "model_uri": model_uri,
                "raw_data_path": raw_data_path,
                "color": color,
                "month": month,
                "output_path": output_path,
            }
        )
        name, version = describe_model_uri(MlflowClient(), model_uri)
        try:
            model = mlflow.pyfunc.load_model(model_uri)
        except (MlflowException, OSError) as exc:
            raise UserError(f"cannot load model {model_uri}: {exc}") from None
        raw = tlc.read_month(tlc.ensure_local_file(raw_data_path, color, month), color)
        scored = score_frame(model, raw.frame, color, name, version, model_uri)
        write_atomically(scored, output_path)
        rejected = Counter(scored[REJECTED_COLUMN].dropna())
        for reason, count in rejected.most_common():
            log.warning("%d rows rejected: %s", count, reason)
        result = ScoreResult(run.info.run_id, len(scored), sum(rejected.values()))
        mlflow.set_tags({"model_name": name, "model_version": version, "data.sha256": raw.sha256})
        mlflow.log_metrics(
            {"rows_scored": result.rows_scored, "rows_rejected": result.rows_rejected}
        )
        mlflow.log_artifact(str(output_path), "predictions")
        return result


@click.command(cls=StepCommand)
@click.option("--model-uri", default=DEFAULT_MODEL_URI, show_default=True)
@click.option(
    "--raw-data-path",
    default="data/raw",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--color", type=click.Choice(tlc.COLORS), default="green", show_default=True)
@month_option("month", "2023-03")
@click.option(
    "--output-path",
    default="",
    help=f"Default: {default_output_path('<color>', '<month>')}",
)
def main(model_uri, raw_data_path, color, month, output_path):
    """Predict every trip of one TLC month with a model; write parquet."""
    setup_logging()
    output = Path(output_path) if output_path else default_output_path(color, month)
    result = run_score(model_uri, raw_data_path, color, month, output)
    click.echo(
        f"score run {result.run_id}: {result.rows_scored} of {result.rows} trips scored, "
        f"{result.rows_rejected} rejected (see {REJECTED_COLUMN}) with {model_uri} -> {output}"
    )


if __name__ == "__main__":
    main()
