"""Entry point ``preprocess``: TLC months -> cleaned splits and a fitted featurizer.

Reads ``{color}_tripdata_{YYYY-MM}.parquet`` for the train, val and test months from
``raw_data_path`` (downloading a missing month from ``$TLC_BASE_URL``), keeps trips of 1 to
60 minutes, and fits the ``PU_DO`` + ``trip_distance`` vocabulary on the train month.

Writes to its run:
- params ``raw_data_path``, ``color``, ``train_month``, ``val_month``, ``test_month``
- metrics ``rows_read_<split>``, ``rows_kept_<split>`` for split in train, val, test;
  ``n_features``; ``preprocess_seconds``
- dataset inputs, one per raw file, context ``train``/``val``/``test``, digest = the first 36
  hex digits of the file's sha256 (input tag ``sha256`` holds all of it), source = its absolute
  path, schema and profile (``num_rows``) of the columns read (``RawFileDataset``: no data)
- run name ``preprocess 2023-01..03`` (train..test month; the color when not green)
- tags ``step=preprocess``, ``data.<split>.sha256``, ``data.<split>.file``, ``data.<split>.month``
- artifacts ``data/train.parquet``, ``data/val.parquet``, ``data/test.parquet`` (columns
  ``pickup_datetime``, ``dropoff_datetime``, ``PULocationID``, ``DOLocationID``,
  ``trip_distance``, ``duration``; file row order) and ``featurizer/featurizer.json``
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types import ColSpec, Schema
from mlflow.types.utils import _infer_numpy_dtype, _infer_pandas_column

from steps import options, tlc
from steps.artifacts import FEATURIZER_PATH, split_path
from steps.cli import StepCommand, setup_logging
from steps.errors import DataError, UserError
from steps.features import Featurizer
from steps.tracking import log_params_missing, step_run

SPLITS = ("train", "val", "test")
DIGEST_CHARS = 36  # MLflow caps a dataset digest at 36 characters
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessConfig:
    raw_data_path: Path
    color: str = "green"
    train_month: str = "2023-01"
    val_month: str = "2023-02"
    test_month: str = "2023-03"

    def months(self) -> dict[str, str]:
        return {"train": self.train_month, "val": self.val_month, "test": self.test_month}

    def run_name(self) -> str:
        """``preprocess 2023-01..03`` (train..test month); the color when not green."""
        train, test = self.train_month, self.test_month
        span = f"{train}..{test[5:]}" if train[:4] == test[:4] else f"{train}..{test}"
        color = "" if self.color == "green" else f" {self.color}"
        return f"preprocess{color} {span}"

    def validate(self) -> None:
        if self.color not in tlc.COLORS:
            raise UserError(f"color must be one of {', '.join(tlc.COLORS)}, got {self.color!r}")
        months = self.months()
        for split, month in months.items():
            try:
                tlc.parse_month(month)
            except ValueError as exc:
                raise UserError(f"{split}_month: {exc}") from None
        options.check_distinct_months(months)


@dataclass(frozen=True)
class PreprocessResult:
    run_id: str
    rows_read: dict[str, int]
    rows_kept: dict[str, int]
    n_features: int


class RawFileDataset(MetaDataset):
    """A raw TLC file as an MLflow dataset: source, name, digest, schema and profile, no data.

    ``mlflow.data.from_pandas`` would infer the schema by visiting every value in Python
    (``_infer_required``): 23 of 31 s of a 3-million-row preprocess. The schema here comes from
    the dtypes and vectorised null checks instead, and says the same thing.
    """

    def __init__(
        self, source: DatasetSource, name: str, digest: str, schema: Schema, num_rows: int
    ):
        self._num_rows = num_rows
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, int]:
        return {"num_rows": self._num_rows, "num_elements": self._num_rows * len(self.schema)}

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def frame_schema(frame: pd.DataFrame) -> Schema:
    """The MLflow schema ``from_pandas`` would infer for ``frame``, without a per-value loop:
    the type from the column's dtype, ``required`` unless the column holds a null."""
    specs = []
    for name, column in frame.items():
        if column.dtype.kind == "O":  # not a TLC column type: MLflow has to look at values
            dtype = _infer_pandas_column(column)
        else:
            dtype = _infer_numpy_dtype(column.dtype)
        specs.append(ColSpec(dtype, name, required=not column.isna().to_numpy().any()))
    return Schema(specs)


def raw_file_dataset(raw: tlc.RawMonth) -> RawFileDataset:
    """The dataset input logged for a raw file: digest = its sha256 (as much as MLflow
    keeps), source = its absolute path, schema and row count of the columns read."""
    with warnings.catch_warnings():
        # A local path matches two equivalent source types (local, file): noise here.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(raw.path.resolve()))
    return RawFileDataset(
        source,
        name=raw.path.name,
        digest=raw.sha256[:DIGEST_CHARS],
        schema=frame_schema(raw.frame),
        num_rows=len(raw.frame),
    )


def load_split(config: PreprocessConfig, split: str, month: str):
    path = tlc.ensure_local_file(config.raw_data_path, config.color, month)
    raw = tlc.read_month(path, config.color)
    cleaned = tlc.clean(raw.frame, config.color)
    if cleaned.empty:
        raise DataError(
            f"{path}: no {split} rows left after keeping durations of "
            f"{tlc.MIN_DURATION_MINUTES:g}-{tlc.MAX_DURATION_MINUTES:g} minutes "
            f"({len(raw.frame)} rows read)"
        )
    return raw, cleaned


def run_preprocess(config: PreprocessConfig) -> PreprocessResult:
    config.validate()
    started = time.perf_counter()
    with step_run("preprocess", config.run_name()) as run:
        log_params_missing(
            {
                "raw_data_path": str(config.raw_data_path),
                "color": config.color,
                **{f"{s}_month": m for s, m in config.months().items()},
            }
        )
        # A raw month is kept only as its dataset (no data) and file: peak memory holds the
        # cleaned splits, not the raw ones too.
        datasets, files, rows_read, cleaned = {}, {}, {}, {}
        for split, month in config.months().items():
            raw, cleaned[split] = load_split(config, split, month)
            datasets[split], files[split] = raw_file_dataset(raw), (raw.path, raw.sha256)
            rows_read[split] = len(raw.frame)
            kept = len(cleaned[split])
            log.info("%s %s: %d rows read, %d kept", split, raw.path, rows_read[split], kept)
            del raw
        featurizer = Featurizer.fit(cleaned["train"])

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            for split in SPLITS:
                path = out / split_path(split)
                path.parent.mkdir(exist_ok=True)
                cleaned[split].to_parquet(path, index=False)
            (out / FEATURIZER_PATH).parent.mkdir()
            featurizer.save(out / FEATURIZER_PATH)
            mlflow.log_artifacts(str(out))

        for split, month in config.months().items():
            path, sha256 = files[split]
            mlflow.log_input(datasets[split], context=split, tags={"sha256": sha256})
            mlflow.set_tags(
                {
                    f"data.{split}.sha256": sha256,
                    f"data.{split}.file": path.name,
                    f"data.{split}.month": month,
                }
            )
        rows_kept = {s: len(cleaned[s]) for s in SPLITS}
        mlflow.log_metrics(
            {
                **{f"rows_read_{s}": n for s, n in rows_read.items()},
                **{f"rows_kept_{s}": n for s, n in rows_kept.items()},
                "n_features": len(featurizer.feature_names),
                "preprocess_seconds": time.perf_counter() - started,
            }
        )
        return PreprocessResult(
            run.info.run_id, rows_read, rows_kept, len(featurizer.feature_names)
        )


@click.command(cls=StepCommand, params=options.preprocess_options())
def main(raw_data_path, color, train_month, val_month, test_month):
    """Clean three TLC months and fit the featurizer on the train month."""
    setup_logging()
    result = run_preprocess(
        PreprocessConfig(raw_data_path, color, train_month, val_month, test_month)
    )
    click.echo(
        f"preprocess run {result.run_id}: rows kept "
        + ", ".join(f"{s}={n}" for s, n in result.rows_kept.items())
        + f"; {result.n_features} features"
    )


if __name__ == "__main__":
    main()
