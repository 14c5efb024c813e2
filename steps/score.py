"""Entry point ``score``: batch predictions for TLC months with a given model, in pandas or Spark.

Reads ``{color}_tripdata_{month}.parquet`` from ``raw_data_path`` (downloaded if missing; every
month is fetched before any is scored) and the model ``model_uri`` (default
``models:/nyc-taxi-regressor@champion``). ``month`` is one month (``2023-03``) or a range of
months (``2023-01..2023-03``). The alias is resolved to a version once, and that version is
loaded (``models:/<name>/<version>``), so an alias moved meanwhile cannot mix two versions in
one output; ``model_version`` names it.

Each output row is one trip of the files, with ``pickup_datetime``, ``PULocationID``,
``DOLocationID``, ``trip_distance``, ``predicted_duration`` (minutes), ``rejected_reason``,
``model_name``, ``model_version`` and ``model_uri`` (as given). A row that breaks the model's
input contract (``steps.contract``: a null, negative or infinite distance, a missing or
non-integer location ID) is kept with a null ``predicted_duration`` and ``rejected_reason``
saying why (null for scored rows); one bad row never fails the month.

Output (written to a temporary name beside ``output_path`` and renamed at the end: a failure
leaves no partial output; pandas writes with the user's umask, Spark with Hadoop's, 022):

- one month in pandas: the file ``output_path`` (default
  ``predictions/<color>_tripdata_<month>.parquet``), rows in file order;
- a range, or any ``spark_master``: the folder ``output_path`` (default
  ``predictions/<color>_tripdata_<month>/``, ``<month>`` as given), parquet partitioned by
  month (``month=2023-01/...``), one file per month in file order, with one more column,
  ``row_index`` (the trip's row in its month's file).

``spark_master`` (``local[N]``, ``spark://host:port``, ...; empty: pandas) reads the months as
one Spark DataFrame and predicts with ``mlflow.pyfunc.spark_udf`` (``env_manager="local"``: the
executors' Python, see steps/spark.py); the contract check runs on the executors with
``steps.contract`` itself (shipped by value). Its predictions equal the pandas path's, row for
row. On a cluster, ``raw_data_path`` and ``output_path`` must be the same shared folder on
every machine.

Writes to its run (named ``score 2023-03``, ``score 2023-01..2023-03``; ``score yellow ...``
for yellow): params ``model_uri``, ``raw_data_path``, ``color``, ``month``, ``output_path``,
``spark_master``; tags ``step=score``, ``model_name``, ``model_version``,
``data.<month>.sha256`` for every month (and ``data.sha256`` for a single month); metrics
``rows_scored`` (rows with a prediction) and ``rows_rejected``; the predictions as artifacts
under ``predictions/<file or folder name>``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steps import tlc
from steps.cli import StepCommand, setup_logging
from steps.contract import DISTANCE_COLUMN, INPUT_COLUMNS, LOCATION_COLUMNS, row_reasons
from steps.errors import DataError, UserError
from steps.registry import DEFAULT_MODEL_NAME, describe_model_uri
from steps.tracking import log_params_missing, step_run

DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@champion"
DEFAULT_OUTPUT = "predictions/{color}_tripdata_{month}.parquet"
DEFAULT_OUTPUT_FOLDER = "predictions/{color}_tripdata_{month}"
REJECTED_COLUMN = "rejected_reason"
PREDICTION_COLUMN = "predicted_duration"
ROW_INDEX_COLUMN = "row_index"
MONTH_COLUMN = "month"  # the partition column of a folder output
RANGE_SEPARATOR = ".."
DATA_SHA256_TAG = "data.sha256"
log = logging.getLogger(__name__)


def parse_months(value: str) -> list[str]:
    """``2023-03`` -> ``["2023-03"]``; ``2023-01..2023-03`` -> the three months, in order.
    ``ValueError`` for anything else, or a range that ends before it starts."""
    start, sep, end = value.partition(RANGE_SEPARATOR)
    if not sep:
        return [tlc.parse_month(value)]
    try:
        tlc.parse_month(start), tlc.parse_month(end)
    except ValueError:
        raise ValueError(
            f"month must be YYYY-MM or a range YYYY-MM..YYYY-MM (for example "
            f"2023-01..2023-03), got {value!r}"
        ) from None
    if end < start:
        raise ValueError(f"month range {value!r} ends before it starts")
    (y0, m0), (y1, m1) = ((int(p) for p in s.split("-")) for s in (start, end))
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(y0 * 12 + m0 - 1, y1 * 12 + m1)]


def writes_folder(months: list[str], spark_master: str) -> bool:
    """A range, or Spark, writes a folder partitioned by month; one month in pandas, a file."""
    return len(months) > 1 or bool(spark_master)


def default_output_path(color: str, month: str, folder: bool = False) -> Path:
    pattern = DEFAULT_OUTPUT_FOLDER if folder else DEFAULT_OUTPUT
    return Path(pattern.format(color=color, month=month))


def run_name(color: str, month: str) -> str:
    """``score 2023-03``: the month scored; the color when not green (as preprocess names)."""
    return f"score {month}" if color == "green" else f"score {color} {month}"


def sha256_tags(digests: dict[str, str]) -> dict[str, str]:
    """``data.<month>.sha256`` per month; ``data.sha256`` too when there is one month."""
    tags = {f"data.{month}.sha256": digest for month, digest in digests.items()}
    if len(digests) == 1:
        tags[DATA_SHA256_TAG] = next(iter(digests.values()))
    return tags


@dataclass(frozen=True)
class ResolvedModel:
    """What a model URI named when it was resolved: the registered name and version (empty
    for a URI outside the registry) and the URI that loads exactly that."""

    name: str
    version: str
    load_uri: str


def resolve_model(client: MlflowClient, model_uri: str) -> ResolvedModel:
    name, version = describe_model_uri(client, model_uri)
    return ResolvedModel(name, version, f"models:/{name}/{version}" if name else model_uri)


@dataclass(frozen=True)
class ScoreResult:
    run_id: str
    rows: int  # every row of the files, all written
    rows_rejected: int  # rows that break the input contract: no prediction
    model_version: str = ""
    seconds: float = 0.0  # reading, predicting and writing (not the run's bookkeeping)

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
            PREDICTION_COLUMN: pred,
            REJECTED_COLUMN: pd.array(reasons, dtype="string"),
            "model_name": name,
            "model_version": version,
            "model_uri": model_uri,
        }
    )


def _beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write ``path`` through a temporary file beside it, created (like ``path``) with the
    user's umask, not ``mkstemp``'s 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def folder_replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; when the body succeeds it becomes
    ``path`` (an older ``path`` is moved aside first, then deleted), otherwise it is deleted.
    The writer creates it: pandas with the user's umask (``mkdtemp`` would make it 0700),
    Spark with Hadoop's ``fs.permissions.umask-mode`` (022 unless configured)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _beside(path), _beside(path)
    try:
        yield tmp  # the writer creates it (Spark insists on a path that does not exist)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)
            Path(leftover).unlink(missing_ok=True)


def integer_location_ids(files: dict[str, Path]) -> bool:
    """Whether every month stores integer location IDs: then a folder output writes them as
    int64, otherwise as float64 in every month (one schema for the whole folder)."""

    def integers(path: Path, column: str) -> bool:
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path} is not a readable parquet file: {exc}") from exc
        i = schema.get_field_index(column)  # -1: missing, which reading the month reports
        return i >= 0 and pa.types.is_integer(schema.field(i).type)

    return all(integers(path, c) for path in files.values() for c in LOCATION_COLUMNS)


def tidy_spark_output(folder: Path) -> None:
    """Drop Spark's bookkeeping files (``_SUCCESS``, ``.*.crc``): only parquet stays."""
    for path in folder.rglob("*"):
        if path.is_file() and (path.name == "_SUCCESS" or path.name.endswith(".crc")):
            path.unlink()


def log_rejections(reasons: Counter) -> None:
    for reason, count in reasons.most_common():
        log.warning("%d rows rejected: %s", count, reason)


def score_pandas(
    model, files: dict[str, Path], color: str, meta: dict[str, str], output: Path, folder: bool
) -> tuple[int, Counter]:
    """Score each month in turn (one month in memory at a time); the rows and the rejections."""
    rows, rejected = 0, Counter()
    integer_ids = integer_location_ids(files)
    for month, path in files.items():
        raw = tlc.read_month(path, color).frame
        scored = score_frame(
            model, raw, color, meta["model_name"], meta["model_version"], meta["model_uri"]
        )
        rows += len(scored)
        rejected += Counter(scored[REJECTED_COLUMN].dropna())
        if folder:
            scored[ROW_INDEX_COLUMN] = np.arange(len(scored), dtype=np.int64)
            # every month's partition has one type: nullable int64 where every file's IDs are
            # integers (pandas reads an int column holding a null as float), else float64
            kind = "Int64" if integer_ids else np.float64
            scored = scored.astype({c: kind for c in LOCATION_COLUMNS})
            part = output / f"{MONTH_COLUMN}={month}" / "part-00000.parquet"
            part.parent.mkdir(parents=True)
            scored.to_parquet(part, index=False)
        else:
            write_atomically(scored, output)
    return rows, rejected


def _check_spark_schema(path: Path, schema, color: str) -> None:
    """The checks ``tlc.read_month`` makes, on the Spark schema: the columns the model needs,
    timestamps, numeric location IDs."""
    from pyspark.sql import types as T

    needed = tlc.needed_columns(color)
    types = {f.name: f.dataType for f in schema.fields}
    missing = [c for c in needed if c not in types]
    if missing:
        raise DataError(
            f"{path} has no column {missing[0]!r} (a {color} TLC file needs {', '.join(needed)})"
        )
    for column in tlc.PICKUP_DROPOFF[color]:
        if not isinstance(types[column], (T.TimestampType, T.TimestampNTZType)):
            raise DataError(f"{path}: column {column!r} is {types[column]}, not a timestamp")
    for column in (*LOCATION_COLUMNS, DISTANCE_COLUMN):
        if not isinstance(types[column], T.NumericType):
            raise DataError(f"{path}: column {column!r} is {types[column]}, not numeric")


def _reasons_udf():
    """A pandas UDF: per row, ``steps.contract.row_reasons`` on the three input columns (as
    doubles: every value an integer column holds, and any fraction or null, stays what it is).
    ``steps.contract`` travels by value: executors need not have the project on their path."""
    from pyspark import cloudpickle
    from pyspark.sql.functions import pandas_udf

    import steps.contract

    cloudpickle.register_pickle_by_value(steps.contract)
    contract_reasons = steps.contract.row_reasons  # the function itself travels, not `steps`

    def reasons(pu: pd.Series, do: pd.Series, distance: pd.Series) -> pd.Series:
        frame = pd.DataFrame(dict(zip(INPUT_COLUMNS, (pu, do, distance), strict=True)))
        return pd.Series(contract_reasons(frame), dtype=object)

    # Nondeterministic: Spark must not copy the call into each expression that reads it.
    return pandas_udf(reasons, "string").asNondeterministic()


def score_spark(
    spark, load_uri: str, files: dict[str, Path], color: str, meta: dict[str, str], output: Path
) -> tuple[int, Counter]:
    """The months as one DataFrame (each file read alone, its columns cast to common types:
    TLC months differ), predicted by ``spark_udf``, written partitioned by month."""
    from pyspark.sql import functions as F

    pickup, _ = tlc.PICKUP_DROPOFF[color]
    location_type = "long" if integer_location_ids(files) else "double"  # reads every footer
    frames = []
    for month, path in files.items():
        frame = spark.read.parquet(str(path.resolve()))
        _check_spark_schema(path, frame.schema, color)
        frames.append(
            frame.select(
                F.lit(month).alias(MONTH_COLUMN),
                F.col("_metadata.row_index").alias(ROW_INDEX_COLUMN),
                F.col(pickup).cast("timestamp_ntz").alias("pickup_datetime"),
                *(F.col(c).cast("double").alias(c) for c in INPUT_COLUMNS),
            )
        )
    trips = frames[0]
    for frame in frames[1:]:
        trips = trips.unionByName(frame)

    reason = _reasons_udf()(*INPUT_COLUMNS)
    trips = trips.withColumn(REJECTED_COLUMN, reason)
    ok = F.col(REJECTED_COLUMN).isNull()
    # The model sees every row, a rejected one as a harmless (0, 0, 0.0) trip whose prediction
    # is dropped: Spark evaluates a Python UDF on every row even under F.when.
    inputs = [F.when(ok, F.col(c).cast("long")).otherwise(0).alias(c) for c in LOCATION_COLUMNS]
    inputs.append(F.when(ok, F.col(DISTANCE_COLUMN)).otherwise(0.0).alias(DISTANCE_COLUMN))
    model = mlflow.pyfunc.spark_udf(spark, load_uri, result_type="double", env_manager="local")
    scored = trips.select(
        "pickup_datetime",
        *(F.col(c).cast(location_type).alias(c) for c in LOCATION_COLUMNS),
        DISTANCE_COLUMN,
        F.when(ok, model(F.struct(*inputs))).alias(PREDICTION_COLUMN),
        REJECTED_COLUMN,
        *(F.lit(v).alias(k) for k, v in meta.items()),
        ROW_INDEX_COLUMN,
        MONTH_COLUMN,
    )
    (
        scored.repartition(MONTH_COLUMN)
        .sortWithinPartitions(MONTH_COLUMN, ROW_INDEX_COLUMN)
        .write.partitionBy(MONTH_COLUMN)
        .parquet(str(output.resolve()))
    )
    tidy_spark_output(output)
    # Counted from what was written (one column), not by computing the predictions again.
    reasons = pq.read_table(output, columns=[REJECTED_COLUMN]).column(REJECTED_COLUMN)
    counts = reasons.drop_null().value_counts().to_pylist()  # [{"values": .., "counts": ..}]
    return len(reasons), Counter({c["values"]: c["counts"] for c in counts})


def check_request(color: str, month: str, spark_master: str) -> list[str]:
    """The months to score; ``UserError`` before any run starts if an argument is bad."""
    if color not in tlc.COLORS:
        raise UserError(f"color must be one of {', '.join(tlc.COLORS)}, got {color!r}")
    if spark_master:
        from steps.spark import validate_master

        validate_master(spark_master)
    try:
        return parse_months(month)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def score_months(
    model: ResolvedModel,
    files: dict[str, Path],
    color: str,
    meta: dict[str, str],
    output: Path,
    spark_master: str,
) -> tuple[int, Counter]:
    """Write the predictions to ``output`` (in Spark or pandas); the rows and rejections."""
    if spark_master:
        from steps.spark import spark_session

        spark = spark_session(spark_master, "nyc-taxi-duration score")
        try:
            with folder_replaced_atomically(output) as tmp:
                return score_spark(spark, model.load_uri, files, color, meta, tmp)
        finally:
            spark.stop()
    try:
        loaded = mlflow.pyfunc.load_model(model.load_uri)
    except (MlflowException, OSError) as exc:
        raise UserError(f"cannot load model {meta['model_uri']}: {exc}") from None
    if not writes_folder(list(files), spark_master):
        return score_pandas(loaded, files, color, meta, output, folder=False)
    with folder_replaced_atomically(output) as tmp:
        return score_pandas(loaded, files, color, meta, tmp, folder=True)


def run_score(
    model_uri: str,
    raw_data_path: Path,
    color: str,
    month: str,
    output_path: Path | None = None,
    spark_master: str = "",
) -> ScoreResult:
    """Score ``month`` (one month or a range) with ``model_uri``; see the module docstring.
    Every month is fetched (and hashed) before any is scored."""
    months = check_request(color, month, spark_master)
    folder = writes_folder(months, spark_master)
    output = Path(output_path) if output_path else default_output_path(color, month, folder)
    with step_run("score", run_name(color, month)) as run:
        given = {"model_uri": model_uri, "raw_data_path": raw_data_path, "color": color}
        given |= {"month": month, "output_path": output_path or "", "spark_master": spark_master}
        log_params_missing(given)
        model = resolve_model(MlflowClient(), model_uri)
        meta = {"model_name": model.name, "model_version": model.version, "model_uri": model_uri}
        files = {m: tlc.ensure_local_file(raw_data_path, color, m) for m in months}
        digests = {m: tlc.sha256_of(path) for m, path in files.items()}
        started = time.perf_counter()
        rows, rejected = score_months(model, files, color, meta, output, spark_master)
        seconds = time.perf_counter() - started
        log_rejections(rejected)
        result = ScoreResult(run.info.run_id, rows, sum(rejected.values()), model.version, seconds)
        mlflow.set_tags(
            {"model_name": model.name, "model_version": model.version, **sha256_tags(digests)}
        )
        mlflow.log_metrics(
            {"rows_scored": result.rows_scored, "rows_rejected": result.rows_rejected}
        )
        if folder:
            mlflow.log_artifacts(str(output), f"predictions/{output.name}")
        else:
            mlflow.log_artifact(str(output), "predictions")
        return result


def _check_months(ctx, param, value):
    try:
        parse_months(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


@click.command(cls=StepCommand)
@click.option("--model-uri", default=DEFAULT_MODEL_URI, show_default=True)
@click.option(
    "--raw-data-path",
    default="data/raw",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--color", type=click.Choice(tlc.COLORS), default="green", show_default=True)
@click.option(
    "--month",
    default="2023-03",
    show_default=True,
    callback=_check_months,
    help="Month as YYYY-MM, or a range of months YYYY-MM..YYYY-MM.",
)
@click.option(
    "--output-path",
    default="",
    help=(
        f"Default: {default_output_path('<color>', '<month>')} for one month in pandas, "
        f"else the folder {default_output_path('<color>', '<month>', folder=True)}/."
    ),
)
@click.option(
    "--spark-master",
    default="",
    help="Score on Spark: local[N], spark://host:port, yarn, k8s://... (empty: pandas).",
)
def main(model_uri, raw_data_path, color, month, output_path, spark_master):
    """Predict every trip of TLC months with a model; write parquet."""
    setup_logging()
    months = parse_months(month)
    output = Path(output_path) if output_path else None
    result = run_score(model_uri, raw_data_path, color, month, output, spark_master)
    where = output or default_output_path(color, month, writes_folder(months, spark_master))
    click.echo(
        f"score run {result.run_id}: {result.rows_scored} of {result.rows} trips scored, "
        f"{result.rows_rejected} rejected (see {REJECTED_COLUMN}) with {model_uri} -> {where}"
    )


if __name__ == "__main__":
    main()
