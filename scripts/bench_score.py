"""Benchmark: batch scoring throughput (rows/s), Spark against pandas, on the same months.

``score``'s own function (``steps.score.run_score``) scores the months twice per repeat, in
pandas (month after month in this process) and on Spark (``--spark-master``, default
``local[2]``: the months as one DataFrame, ``spark_udf``), alternating so machine noise hits
both. Timed: reading, predicting and writing the parquet output (``ScoreResult.seconds``);
not timed: the run's bookkeeping, the Spark session's start (reported on its own) and ``--warmup``
untimed rounds first (Spark's first job starts its Python workers). The
model is an XGBoost model trained here on the first month (``--rounds`` trees of depth 6),
registered in a throw-away SQLite store, so no pipeline has to run first. Checks that both
paths wrote the same predictions.

Prints a table and writes JSON to ``benchmarks/results/bench_score-<UTC time>.json``.

    python scripts/bench_score.py [--months 2023-01..2023-03] [--repeats 3] [--rounds 100]
        [--spark-master local[2]] [--warmup 1]
        [--rows-per-month N (smoke runs: the first N rows of each month only)]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps import packaging, score, tlc  # noqa: E402
from steps.features import Featurizer  # noqa: E402
from steps.models import Split, XGBoostSettings, train_and_evaluate  # noqa: E402
from steps.predictor import Predictor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TLC = Path(os.environ.get("NYC_TAXI_TLC_DIR", REPO.parent / "shared" / "data" / "tlc"))
MODEL_NAME = "bench-score"


def register_model(train_file: Path, rounds: int) -> str:
    """An XGBoost model on one cleaned month, registered as ``bench-score@champion``."""
    train = tlc.clean(tlc.read_month(train_file, "green").frame, "green")
    featurizer = Featurizer.fit(train)
    split = Split(featurizer.transform(train), train["duration"].to_numpy())
    params = {"max_depth": 6, "learning_rate": 0.1, "seed": 1}
    trained = train_and_evaluate("xgboost", params, split, split, XGBoostSettings(rounds, 0))
    with mlflow.start_run(run_name="bench_score model"):
        info, _ = packaging.log_predictor(
            Predictor("xgboost", featurizer, trained.model), packaging.input_example(train)
        )
    version = mlflow.register_model(info.model_uri, MODEL_NAME).version
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", version)
    return f"models:/{MODEL_NAME}@champion"


def months_folder(tlc_dir: Path, months: list[str], rows_per_month: int, dest: Path) -> Path:
    """The months' files, whole (links) or cut to their first ``rows_per_month`` rows."""
    dest.mkdir(parents=True, exist_ok=True)
    for month in months:
        name = tlc.file_name("green", month)
        source, target = tlc_dir / name, dest / name
        if rows_per_month:
            pq.write_table(pq.read_table(source).slice(0, rows_per_month), target)
        else:
            target.symlink_to(source.resolve())
    return dest


def bench_score(
    tlc_dir: Path,
    months: str = "2023-01..2023-03",
    repeats: int = 3,
    spark_master: str = "local[2]",
    rounds: int = 100,
    rows_per_month: int = 0,
    warmup: int = 1,
) -> dict:
    """Medians of ``repeats`` scorings of ``months`` in pandas and on ``spark_master``."""
    month_list = score.parse_months(months)
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        tmp = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        os.environ.pop("MLFLOW_RUN_ID", None)
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        experiment = mlflow.create_experiment("bench_score", (tmp / "artifacts").as_uri())
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment
        raw = months_folder(tlc_dir, month_list, rows_per_month, tmp / "raw")
        model_uri = register_model(raw / tlc.file_name("green", month_list[0]), rounds)

        from steps.spark import spark_session

        started = time.perf_counter()
        spark_session(spark_master, "nyc-taxi-duration bench_score")
        session_seconds = time.perf_counter() - started

        seconds = {"pandas": [], "spark": []}
        rows = 0
        for i in range(-warmup, repeats):  # negative: warm-up rounds, not timed
            for path, master in (("pandas", ""), ("spark", spark_master)):
                out = tmp / f"{path}-{i}"
                result = score.run_score(model_uri, raw, "green", months, out, master)
                if i >= 0:
                    seconds[path].append(result.seconds)
                rows = result.rows
        pandas_out, spark_out = (read_scored(tmp / f"{p}-0") for p in ("pandas", "spark"))
        same = np.array_equal(
            pandas_out["predicted_duration"].to_numpy(),
            spark_out["predicted_duration"].to_numpy(),
            equal_nan=True,
        )
        shutil.rmtree(tmp / "raw")
    median = {p: statistics.median(s) for p, s in seconds.items()}
    return {
        "months": month_list,
        "rows": rows,
        "rows_per_month": rows_per_month or "all",
        "model": f"xgboost, {rounds} rounds, max_depth 6",
        "spark_master": spark_master,
        "spark_session_start_seconds": session_seconds,
        "repeats": repeats,
        "warmup_rounds": warmup,
        "seconds": seconds,
        "median_seconds": median,
        "rows_per_second": {p: rows / s for p, s in median.items()},
        "spark_speedup": median["pandas"] / median["spark"],
        "predictions_equal": bool(same),
    }


def read_scored(path: Path) -> pd.DataFrame:
    """The output in file order: one file as it is, a folder by month and row index."""
    frame = pd.read_parquet(path)
    if path.is_file():
        return frame
    frame["month"] = frame["month"].astype(str)
    return frame.sort_values(["month", "row_index"], ignore_index=True)


def table(result: dict) -> str:
    lines = [
        f"score {result['months'][0]}..{result['months'][-1]}: {result['rows']:,} rows, "
        f"model {result['model']}, medians of {result['repeats']} "
        f"(after {result['warmup_rounds']} untimed)",
        f"{'path':<22}{'seconds':>10}{'rows/s':>14}",
    ]
    for path, label in (("pandas", "pandas"), ("spark", f"spark {result['spark_master']}")):
        lines.append(
            f"{label:<22}{result['median_seconds'][path]:>10.2f}"
            f"{result['rows_per_second'][path]:>14,.0f}"
        )
    lines.append(
        f"spark session start {result['spark_session_start_seconds']:.1f} s (not in the above); "
        f"predictions equal: {result['predictions_equal']}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tlc-dir", type=Path, default=DEFAULT_TLC)
    parser.add_argument("--months", default="2023-01..2023-03")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--rows-per-month", type=int, default=0, help="0: every row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    result = bench_score(
        args.tlc_dir,
        args.months,
        args.repeats,
        args.spark_master,
        args.rounds,
        args.rows_per_month,
        args.warmup,
    )
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    print(table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"bench_score-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
