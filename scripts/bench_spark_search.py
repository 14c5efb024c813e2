"""Benchmark: the search in process (every core to one trial) against the same search on Spark
``local[N]`` with ``parallelism`` trials at once (threads per trial = cores // parallelism),
same seed and budget, side by side.

``mlflow run -e preprocess`` on the chosen months, then ``mlflow run -e hpo`` in process and
on Spark, alternating (in process, Spark, in process, ...) for ``--repeats`` rounds, in a
throw-away SQLite store. For each: wall time, CPU seconds (this process's children), trials,
trials per hour, best ``val_rmse``; the table shows medians (best RMSE of the first round: the
same seed gives the same search in process; on Spark it may vary with timing after trial 20).
CPU seconds count only the processes reaped as this one's descendants: Spark's Python workers
can escape that count, so on Spark compare wall time.

Prints a table; writes JSON to ``benchmarks/results/bench-spark-search-<UTC time>.json``.

    python scripts/bench_spark_search.py                          # 2021-01/02, 20 x 1000
    python scripts/bench_spark_search.py --train-month 2023-01 --val-month 2023-02 \\
        --test-month 2023-03 --max-evals 4 --num-boost-round 20 --repeats 1   # smoke run
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import DEFAULT_TLC, REPO, children_cpu, mlflow_run  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw-data-path", type=Path, default=DEFAULT_TLC)
    parser.add_argument("--train-month", default="2021-01")
    parser.add_argument("--val-month", default="2021-02")
    parser.add_argument("--test-month", default="2021-03")
    parser.add_argument("--max-evals", type=int, default=20)
    parser.add_argument("--num-boost-round", type=int, default=1000)
    parser.add_argument("--early-stopping-rounds", type=int, default=50)
    parser.add_argument("--prune", default="true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    return parser.parse_args(argv)


def one_search(uri, experiment_id, params) -> dict:
    from mlflow.tracking import MlflowClient

    cpu, started = children_cpu(), time.perf_counter()
    run_id = mlflow_run(uri, experiment_id, "hpo", params)
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu
    run = MlflowClient(uri).get_run(run_id)
    trials = int(run.data.metrics["n_trials"])
    return {
        "run_id": run_id,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "search_seconds": run.data.metrics["search_seconds"],
        "trials": trials,
        "trials_per_hour": trials / wall * 3600,
        "best_val_rmse": run.data.metrics["best_val_rmse"],
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        experiment_id = MlflowClient(uri).create_experiment(
            "bench", artifact_location=Path(tmp, "artifacts").as_uri()
        )
        months = {k: getattr(args, k) for k in ("train_month", "val_month", "test_month")}
        preprocess = mlflow_run(
            uri, experiment_id, "preprocess", {"raw_data_path": args.raw_data_path, **months}
        )
        search = {
            "preprocess_run_id": preprocess,
            "max_evals": args.max_evals,
            "num_boost_round": args.num_boost_round,
            "early_stopping_rounds": args.early_stopping_rounds,
            "prune": args.prune,
            "seed": args.seed,
        }
        spark = {"spark_master": args.spark_master, "parallelism": args.parallelism}
        on_spark = f"{args.spark_master} x{args.parallelism}"
        variants = {"in process": search, on_spark: search | spark}
        results: dict[str, list[dict]] = {name: [] for name in variants}
        for round_ in range(args.repeats):
            for name, params in variants.items():
                result = one_search(uri, experiment_id, params)
                results[name].append(result)
                print(f"round {round_ + 1} {name}: {json.dumps(result)}", flush=True)

    header = f"{'search':<18} {'wall s':>8} {'CPU s':>8} {'trials':>6} {'trials/h':>9}"
    print(f"\n{header} best val_rmse")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall_seconds", "cpu_seconds")}
        print(
            f"{name:<18} {med['wall_seconds']:>8.1f} {med['cpu_seconds']:>8.1f} "
            f"{runs[0]['trials']:>6} {runs[0]['trials'] / med['wall_seconds'] * 3600:>9.1f} "
            f"{runs[0]['best_val_rmse']:.6f}"
        )
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"bench-spark-search-{stamp}.json"
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, "cores": os.cpu_count()}
    meta["machine"] = platform.platform()
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
