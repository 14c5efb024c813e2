"""Benchmark: featurization speed and hpo's tracking overhead, measured side by side.

1. Featurization at about 3 million rows (the real TLC months repeated): the project's
   vectorised ``Featurizer`` (fit + transform) against the textbook path, DictVectorizer
   fitted on ``df[["PU_DO", "trip_distance"]].to_dict(orient="records")``, with a check that
   both CSR matrices are equal array for array.
2. Tracking overhead of ``hpo``: one XGBoost trial with fixed params, trained untracked and
   trained as hpo runs it (a nested MLflow run in a SQLite store, params, metrics, tags).

Runs alternate (A, B, A, B, ...) so that machine noise hits both; the table shows medians.
Prints a table and writes JSON to ``benchmarks/results/benchmark-<UTC time>.json``.

    python scripts/benchmark.py [--rows 3000000] [--repeats 3] [--trials 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps import tlc  # noqa: E402
from steps.features import Featurizer, records_path_matrix  # noqa: E402
from steps.models import Split, XGBoostSettings, train_and_evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TLC = Path(os.environ.get("NYC_TAXI_TLC_DIR", REPO.parent / "shared" / "data" / "tlc"))


def load_rows(tlc_dir: Path, n_rows: int) -> pd.DataFrame:
    months = sorted(tlc_dir.glob("green_tripdata_*.parquet"))
    if not months:
        sys.exit(f"no green_tripdata_*.parquet in {tlc_dir} (set --tlc-dir)")
    frames = [tlc.clean(tlc.read_month(p, "green").frame, "green") for p in months]
    base = pd.concat(frames, ignore_index=True)
    reps = -(-n_rows // len(base))
    return pd.concat([base] * reps, ignore_index=True).iloc[:n_rows].reset_index(drop=True)


def same_csr(a, b) -> bool:
    return a.shape == b.shape and all(
        np.array_equal(getattr(a, n), getattr(b, n)) for n in ("indptr", "indices", "data")
    )


def bench_featurization(frame: pd.DataFrame, repeats: int) -> dict:
    ours, textbook, equal = [], [], True
    for _ in range(repeats):
        t = time.perf_counter()
        featurizer = Featurizer.fit(frame)
        a = featurizer.transform(frame)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        b, _ = records_path_matrix(frame)
        textbook.append(time.perf_counter() - t)
        equal = equal and same_csr(a, b)
        del a, b
    return {
        "rows": len(frame),
        "repeats": repeats,
        "project_seconds": ours,
        "dictvectorizer_seconds": textbook,
        "project_median_seconds": statistics.median(ours),
        "dictvectorizer_median_seconds": statistics.median(textbook),
        "speedup": statistics.median(textbook) / statistics.median(ours),
        "matrices_equal": equal,
    }


def bench_tracking(tlc_dir: Path, trials: int) -> dict:
    import mlflow
    from mlflow.tracking import MlflowClient

    from steps.hpo import TrialLogger

    frames = [
        tlc.clean(
            tlc.read_month(tlc_dir / f"green_tripdata_2023-0{m}.parquet", "green").frame, "green"
        )
        for m in (1, 2)
    ]
    featurizer = Featurizer.fit(frames[0])
    train, val = (Split(featurizer.transform(f), f["duration"].to_numpy()) for f in frames)
    params = {
        "max_depth": 6,
        "learning_rate": 0.3,
        "reg_alpha": 0.1,
        "reg_lambda": 0.01,
        "min_child_weight": 1.0,
        "objective": "reg:squarederror",
        "seed": 42,
    }
    settings = XGBoostSettings(num_boost_round=20, early_stopping_rounds=5)
    untracked, tracked = [], []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        experiment_id = MlflowClient().create_experiment("bench", Path(tmp, "a").as_uri())
        parent = MlflowClient().create_run(experiment_id).info.run_id
        logger = TrialLogger(parent, experiment_id, "xgboost")
        train_and_evaluate("xgboost", params, train, val, settings)  # warm-up: DMatrix, caches
        for i in range(trials):
            t = time.perf_counter()
            train_and_evaluate("xgboost", params, train, val, settings)
            untracked.append(time.perf_counter() - t)
            t = time.perf_counter()
            logger.run_trial(i, {}, params, train, val, settings)
            tracked.append(time.perf_counter() - t)
        mlflow.set_tracking_uri(None)
    overhead = [b - a for a, b in zip(untracked, tracked, strict=True)]
    return {
        "trials": trials,
        "backend": "sqlite",
        "untracked_seconds": untracked,
        "tracked_seconds": tracked,
        "untracked_median_seconds": statistics.median(untracked),
        "tracked_median_seconds": statistics.median(tracked),
        "overhead_median_seconds": statistics.median(overhead),
        "tracked_over_untracked": statistics.median(tracked) / statistics.median(untracked),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tlc-dir", type=Path, default=DEFAULT_TLC)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    frame = load_rows(args.tlc_dir, args.rows)
    feat = bench_featurization(frame, args.repeats)
    del frame
    track = bench_tracking(args.tlc_dir, args.trials)

    rows = [
        ("featurize: project (fit+transform)", f"{feat['project_median_seconds']:.3f} s"),
        ("featurize: DictVectorizer on records", f"{feat['dictvectorizer_median_seconds']:.3f} s"),
        ("featurize: speed-up", f"{feat['speedup']:.1f}x"),
        ("featurize: matrices equal", str(feat["matrices_equal"])),
        ("hpo trial: untracked", f"{track['untracked_median_seconds']:.3f} s"),
        ("hpo trial: tracked (SQLite)", f"{track['tracked_median_seconds']:.3f} s"),
        ("hpo trial: tracking overhead", f"{track['overhead_median_seconds'] * 1000:.0f} ms"),
        ("hpo trial: tracked / untracked", f"{track['tracked_over_untracked']:.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"rows={feat['rows']:,} repeats={feat['repeats']} trials={track['trials']} (medians)")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")

    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "featurization": feat,
        "tracking": track,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"benchmark-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    if not feat["matrices_equal"]:
        sys.exit("featurization matrices differ")


if __name__ == "__main__":
    main()
