"""Benchmarks, each side by side with what it replaces, one sub-command each.

``featurize`` (the default): 1. featurization at about 3 million rows (the real TLC months
repeated): the project's vectorised ``Featurizer`` (fit + transform) against the textbook
path, DictVectorizer fitted on ``df[["PU_DO", "trip_distance"]].to_dict(orient="records")``,
with a check that both CSR matrices are equal array for array. 2. Tracking overhead of
``hpo``: one XGBoost trial with fixed params, trained untracked and trained as hpo runs it (a
nested MLflow run in a SQLite store, params, metrics, tags).

``preprocess``: the whole step end to end, ``mlflow run . -e preprocess --env-manager local``
(a throw-away SQLite store), against the course's textbook script (``textbook_preprocess``:
per-row ``apply``, ``astype(str)``, a list of dicts, ``DictVectorizer``, pickles), each in its
own process, on the 2023 months repeated to about ``--rows`` rows in all (files written to a
temporary folder) and at 1x. Extra cost per row = (t(N) - t(1x)) / (N - n(1x)); peak memory is
the largest process's maximum RSS, CPU the user + system seconds of the process tree.

Any other sub-command NAME runs ``scripts/bench_NAME.py`` (``-`` read as ``_``) with the
options that follow (``--help`` lists them): ``score`` (``bench_score.py``), ``search``
(``bench_search.py``), ``spark-search`` (``bench_spark_search.py``).

Runs alternate (A, B, A, B, ...) so that machine noise hits both; the tables show medians.
Each prints a table and writes JSON to ``benchmarks/results/``.

    python scripts/benchmark.py [featurize] [--rows 3000000] [--repeats 3] [--trials 7]
    python scripts/benchmark.py preprocess [--rows 3000000 6000000] [--repeats 3]
    python scripts/benchmark.py score [...]     # scripts/bench_score.py
    python scripts/benchmark.py search [...]    # scripts/bench_search.py
    python scripts/benchmark.py spark-search [...]  # scripts/bench_spark_search.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import pickle
import platform
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def write_result(out: Path, name: str, result: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


def print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")


def featurize_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmark.py [featurize]", description="featurization")
    parser.add_argument("--tlc-dir", type=Path, default=DEFAULT_TLC)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

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
    print(f"rows={feat['rows']:,} repeats={feat['repeats']} trials={track['trials']} (medians)")
    print_rows(rows)
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "featurization": feat,
        "tracking": track,
    }
    write_result(args.out, "benchmark", result)
    if not feat["matrices_equal"]:
        sys.exit("featurization matrices differ")


# --- preprocess, end to end ----------------------------------------------------------------

PREPROCESS_MONTHS = ("2023-01", "2023-02", "2023-03")


def textbook_preprocess(raw_data_path: Path, dest_path: Path, months=PREPROCESS_MONTHS) -> None:
    """The course's ``preprocess_data.py`` (homework 2), as written there: per-row ``apply``,
    location IDs as strings, a list of dicts per split into ``DictVectorizer``, pickles."""
    from sklearn.feature_extraction import DictVectorizer

    def read_dataframe(filename):
        df = pd.read_parquet(filename)
        df["duration"] = df["lpep_dropoff_datetime"] - df["lpep_pickup_datetime"]
        df.duration = df.duration.apply(lambda td: td.total_seconds() / 60)
        df = df[(df.duration >= 1) & (df.duration <= 60)]
        categorical = ["PULocationID", "DOLocationID"]
        df[categorical] = df[categorical].astype(str)
        return df

    def preprocess(df, dv, fit_dv=False):
        df["PU_DO"] = df["PULocationID"] + "_" + df["DOLocationID"]
        dicts = df[["PU_DO", "trip_distance"]].to_dict(orient="records")
        return (dv.fit_transform(dicts) if fit_dv else dv.transform(dicts)), dv

    def dump_pickle(obj, filename):
        with open(filename, "wb") as f_out:
            pickle.dump(obj, f_out)

    frames = [read_dataframe(raw_data_path / tlc.file_name("green", m)) for m in months]
    dv = DictVectorizer()
    X_train, dv = preprocess(frames[0], dv, fit_dv=True)
    X_val, _ = preprocess(frames[1], dv)
    X_test, _ = preprocess(frames[2], dv)
    dest_path.mkdir(parents=True, exist_ok=True)
    dump_pickle(dv, dest_path / "dv.pkl")
    for name, X, df in (("train", X_train, frames[0]), ("val", X_val, frames[1])):
        dump_pickle((X, df["duration"].values), dest_path / f"{name}.pkl")
    dump_pickle((X_test, frames[2]["duration"].values), dest_path / "test.pkl")


def repeated_months(tlc_dir: Path, factor: int, dest: Path, months=PREPROCESS_MONTHS) -> int:
    """Write each month's file ``factor`` times over into ``dest`` (same columns, one file per
    month); return the rows in all."""
    dest.mkdir(parents=True, exist_ok=True)
    rows = 0
    for month in months:
        table = pq.read_table(tlc_dir / tlc.file_name("green", month))
        pq.write_table(pa.concat_tables([table] * factor), dest / tlc.file_name("green", month))
        rows += table.num_rows * factor
    return rows


# Runs a command and prints its wait4 usage. A launcher process of its own: a child forked
# straight from this (large) process would count this process's memory in its peak RSS.
_LAUNCHER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=sys.stderr)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"exit_code": os.waitstatus_to_exitcode(status),
    "seconds": time.perf_counter() - started,
    "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


def measured(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``; its wall seconds, CPU seconds (its process tree) and peak RSS (MB, the
    largest process), as ``/usr/bin/time`` counts them (``wait4``)."""
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *cmd], cwd=REPO, env=env, capture_output=True, text=True
    )
    result = json.loads(proc.stdout)
    if proc.returncode != 0 or result.pop("exit_code") != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return result


def preprocess_commands(tmp: Path) -> tuple[Callable[[Path], dict], Callable[[Path], dict]]:
    """Two functions raw folder -> measurement: the project's step and the textbook script."""
    import mlflow

    store = tmp / "tracking"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    experiment_id = mlflow.MlflowClient(uri).create_experiment(
        "bench-preprocess", artifact_location=(store / "artifacts").as_uri()
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_ID": experiment_id}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("MLFLOW_RUN_ID", None)
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")

    def project(raw: Path) -> dict:
        cmd = [mlflow_bin, "run", str(REPO), "-e", "preprocess", "--env-manager", "local"]
        cmd += ["--experiment-id", experiment_id, "-P", f"raw_data_path={raw}"]
        return measured(cmd, env)

    def textbook(raw: Path) -> dict:
        dest = tmp / "textbook-output"
        shutil.rmtree(dest, ignore_errors=True)
        cmd = [sys.executable, __file__, "textbook-preprocess", str(raw), str(dest)]
        result = measured(cmd)
        shutil.rmtree(dest, ignore_errors=True)
        return result

    return project, textbook


def extra_per_row(points: dict[int, dict], base: int, key: str = "seconds") -> dict[int, float]:
    """(t(N) - t(base)) / (N - base) for every row count N above ``base``: the cost of a row."""
    return {
        n: (p[f"median_{key}"] - points[base][f"median_{key}"]) / (n - base)
        for n, p in points.items()
        if n > base
    }


def ratios(per_row: dict[str, dict[int, float]]) -> dict[int, float | None]:
    """Textbook over project per row count; ``None`` where the project's extra cost is not
    above zero (lost in the noise: more rows, more repeats or an idle machine)."""
    textbook, project = per_row["textbook"], per_row["project"]
    return {n: textbook[n] / project[n] if project[n] > 0 else None for n in project}


def microseconds(per_row: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    return {name: {n: s * 1e6 for n, s in points.items()} for name, points in per_row.items()}


def bench_preprocess(tlc_dir: Path, targets: list[int], repeats: int) -> dict:
    paths = {"project": {}, "textbook": {}}
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        tmp = Path(tmp)
        project, textbook = preprocess_commands(tmp)
        base_rows = repeated_months(tlc_dir, 1, tmp / "x1")
        factors = sorted({1, *(math.ceil(t / base_rows) for t in targets)})
        for factor in factors:
            raw = tmp / f"x{factor}"
            rows = repeated_months(tlc_dir, factor, raw)
            runs = {"project": [], "textbook": []}
            for _ in range(repeats):
                runs["textbook"].append(textbook(raw))
                runs["project"].append(project(raw))
            for name, measurements in runs.items():
                paths[name][rows] = {
                    "factor": factor,
                    "runs": measurements,
                    **{
                        f"median_{k}": statistics.median(m[k] for m in measurements)
                        for k in ("seconds", "cpu_seconds", "peak_rss_mb")
                    },
                }
                print(
                    f"  {factor:>3}x {rows:>10,} rows  {name:<9}"
                    f"{paths[name][rows]['median_seconds']:8.2f} s"
                    f"{paths[name][rows]['median_peak_rss_mb']:8.0f} MB",
                    flush=True,
                )
            shutil.rmtree(raw)
    base = min(paths["project"])
    extra = {name: extra_per_row(points, base) for name, points in paths.items()}
    extra_cpu = {name: extra_per_row(points, base, "cpu_seconds") for name, points in paths.items()}
    return {
        "months": list(PREPROCESS_MONTHS),
        "repeats": repeats,
        "base_rows": base,
        "project": paths["project"],
        "textbook": paths["textbook"],
        "extra_us_per_row": microseconds(extra),
        "extra_cpu_us_per_row": microseconds(extra_cpu),
        "textbook_over_project": ratios(extra),
        "textbook_over_project_cpu": ratios(extra_cpu),
    }


def preprocess_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmark.py preprocess", description="preprocess end to end against the textbook"
    )
    parser.add_argument("--tlc-dir", type=Path, default=DEFAULT_TLC)
    parser.add_argument("--rows", type=int, nargs="+", default=[3_000_000, 6_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    print(f"preprocess, 2023-01..03 repeated; medians of {args.repeats}:", flush=True)
    result = bench_preprocess(args.tlc_dir, args.rows, args.repeats)
    rows = []
    for name in ("textbook", "project"):
        for n, point in result[name].items():
            rows.append(
                (
                    f"{name} {point['factor']}x ({n:,} rows)",
                    f"{point['median_seconds']:.2f} s, {point['median_cpu_seconds']:.1f} "
                    f"CPU-s, {point['median_peak_rss_mb']:.0f} MB",
                )
            )
    for kind, suffix in (("wall", ""), ("CPU", "_cpu")):
        per_row = result[f"extra{suffix}_us_per_row"]
        for n, ratio in result[f"textbook_over_project{suffix}"].items():
            rows.append(
                (
                    f"extra {kind} per row at {n:,}: textbook / project",
                    f"{per_row['textbook'][n]:.2f} / {per_row['project'][n]:.2f} us = "
                    + (f"{ratio:.1f}x" if ratio else "n/a (project's within noise)"),
                )
            )
    print_rows(rows)
    write_result(
        args.out,
        "benchmark-preprocess",
        {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine()}
        | {"preprocess": result},
    )


def run_script(name: str, argv: list[str]) -> None:
    """Another benchmark script, run as ``python scripts/<name> <argv>`` would run it."""
    path = REPO / "scripts" / name
    sys.argv = [str(path), *argv]
    runpy.run_path(str(path), run_name="__main__")


COMMANDS = {
    "featurize": featurize_main,
    "preprocess": preprocess_main,
    # the textbook script, in a process of its own (measured by `preprocess`)
    "textbook-preprocess": lambda argv: textbook_preprocess(Path(argv[0]), Path(argv[1])),
}


def script_command(name: str) -> str | None:
    """``scripts/bench_<name>.py`` (``-`` read as ``_``) when it exists: ``score``,
    ``search``, ``spark-search``, ..."""
    script = f"bench_{name.replace('-', '_')}.py"
    return script if name and (REPO / "scripts" / script).is_file() else None


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:])
    elif argv and script_command(argv[0]):
        run_script(script_command(argv[0]), argv[1:])
    elif argv and argv[0] in ("-h", "--help"):
        print(__doc__)
    else:  # no sub-command: featurize, as before
        featurize_main(argv)


if __name__ == "__main__":
    main()
