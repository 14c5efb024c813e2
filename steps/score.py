"""Entry point ``score``: batch predictions for one TLC month with a given model.

Reads ``{color}_tripdata_{month}.parquet`` from ``raw_data_path`` (downloaded if missing) and
the model ``model_uri`` (default ``models:/nyc-taxi-regressor@champion``). Writes
``output_path`` (parquet, atomically): one row per trip of the file, in file order, with
``pickup_datetime``, ``PULocationID``, ``DOLocationID``, ``trip_distance``,
``predicted_duration`` (minutes), ``model_name``, ``model_version`` and ``model_uri``.

Writes to its run: params ``model_uri``, ``raw_data_path``, ``color``, ``month``,
``output_path``; tags ``step=score``, ``model_name``, ``model_version``, ``data.sha256``;
metric ``rows_scored``; the predictions as artifact ``predictions/<file name>``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps import tlc
from steps.cli import StepCommand, month_option, setup_logging
from steps.errors import UserError
from steps.predictor import INPUT_COLUMNS
from steps.registry import DEFAULT_MODEL_NAME, describe_model_uri
from steps.tracking import log_params_missing, step_run

DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@champion"


def score_frame(
    model, raw: pd.DataFrame, color: str, name: str, version: str, model_uri: str
) -> pd.DataFrame:
    pickup, _ = tlc.PICKUP_DROPOFF[color]
    pred = np.asarray(model.predict(raw.loc[:, list(INPUT_COLUMNS)]), dtype=np.float64)
    return pd.DataFrame(
        {
            "pickup_datetime": raw[pickup].to_numpy(),
            "PULocationID": raw["PULocationID"].to_numpy(dtype=np.int64),
            "DOLocationID": raw["DOLocationID"].to_numpy(dtype=np.int64),
            "trip_distance": raw["trip_distance"].to_numpy(dtype=np.float64),
            "predicted_duration": pred,
            "model_name": name,
            "model_version": version,
            "model_uri": model_uri,
        }
    )


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def run_score(
    model_uri: str, raw_data_path: Path, color: str, month: str, output_path: Path
) -> tuple[str, int]:
    if color not in tlc.COLORS:
        raise UserError(f"color must be one of {', '.join(tlc.COLORS)}, got {color!r}")
    with step_run("score") as run:
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
        mlflow.set_tags({"model_name": name, "model_version": version, "data.sha256": raw.sha256})
        mlflow.log_metric("rows_scored", len(scored))
        mlflow.log_artifact(str(output_path), "predictions")
        return run.info.run_id, len(scored)


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
@click.option("--output-path", default="", help="Default: predictions/<color>_<month>.parquet")
def main(model_uri, raw_data_path, color, month, output_path):
    """Predict every trip of one TLC month with a model; write parquet."""
    setup_logging()
    output = Path(output_path or f"predictions/{color}_tripdata_{month}.parquet")
    run_id, rows = run_score(model_uri, raw_data_path, color, month, output)
    click.echo(f"score run {run_id}: {rows} trips scored with {model_uri} -> {output}")


if __name__ == "__main__":
    main()
