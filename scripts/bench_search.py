"""Benchmark: the XGBoost search with pruning (the default) against the same seed with
``prune=false``, side by side, plus an offline replay of pruning policies on the unpruned curves.

1. ``mlflow run -e preprocess`` on the chosen months, then ``mlflow run -e hpo`` twice on it,
   ``prune=false`` then ``prune=true`` (same seed and budget), in a throw-away SQLite store.
   For each: wall time, CPU seconds (this process's children), trials, pruned trials, boosting
   rounds trained, best ``val_rmse``; then the ratios (goal: wall time pruned / unpruned <= 0.5,
   best within 0.005).
2. Replay (CPU-independent): every trial of the unpruned search logged its validation curve,
   so each policy (rungs, keep fraction, warm-up, early-stopping patience) is replayed on those
   curves in trial order, as ``steps.pruning`` decides: rounds trained (and, weighting each
   trial's rounds by its measured seconds per round, seconds) saved, and whether the best trial
   survives. The replay keeps the unpruned search's trials; a real pruned search's TPE sees other
   losses after its 20 random trials, so part 1 is the judge.
3. XGBoost settings for the sparse one-hot input (``--sparse-rounds N``, 0 = skip): the
   lecture's best params for N rounds with ``tree_method`` / ``max_bin`` variants: seconds and
   val RMSE.

Prints tables; writes JSON to ``benchmarks/results/bench-search-<UTC time>.json``.

    python scripts/bench_search.py                      # full: 2021-01/02, 50 trials x 1000
    python scripts/bench_search.py --train-month 2023-01 --val-month 2023-02 \\
        --test-month 2023-03 --max-evals 12 --num-boost-round 200   # cheap check
    python scripts/bench_search.py --replay-store sqlite:///path/mlflow.db --replay-run <id>
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps.pruning import PrunePolicy, RecordedCurve, prune_verdict, rung_thresholds  # noqa: E402
from steps.tracking import CURVE_METRIC, PRUNED_TAG, TRIAL_ID_TAG  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TLC = Path(os.environ.get("NYC_TAXI_TLC_DIR", REPO.parent / "shared" / "data" / "tlc"))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mlflow_run(uri: str, experiment_id: str, entry: str, params: dict) -> str:
    """``mlflow run . -e entry`` in this interpreter's environment; its run ID."""
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry]
    cmd += ["--env-manager", "local", "--experiment-id", experiment_id]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_ID": experiment_id}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"mlflow run -e {entry} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    for line in reversed((proc.stdout + proc.stderr).splitlines()):
        if "=== Run (ID '" in line:
            return line.split("=== Run (ID '")[1].split("'")[0]
    sys.exit(f"no run ID in the output of mlflow run -e {entry}")


@dataclass
class Trial:
    trial_id: int
    val_rmse: float
    train_seconds: float
    pruned: bool
    curve: tuple[float, ...]


def load_trials(client, experiment_id: str, parent_run_id: str) -> list[Trial]:
    runs = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50000
    )
    trials = []
    for run in runs:
        history = client.get_metric_history(run.info.run_id, CURVE_METRIC)
        curve = tuple(m.value for m in sorted(history, key=lambda m: m.step))
        trials.append(
            Trial(
                int(run.data.tags[TRIAL_ID_TAG]),
                run.data.metrics["val_rmse"],
                run.data.metrics["train_seconds"],
                run.data.tags.get(PRUNED_TAG) == "true",
                curve,
            )
        )
    return sorted(trials, key=lambda t: t.trial_id)


def search_summary(trials: list[Trial], wall: float, cpu: float) -> dict:
    best = min(trials, key=lambda t: (t.val_rmse, t.trial_id))
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "trials": len(trials),
        "pruned_trials": sum(t.pruned for t in trials),
        "rounds_trained": sum(len(t.curve) for t in trials),
        "train_seconds": sum(t.train_seconds for t in trials),
        "best_val_rmse": best.val_rmse,
        "best_trial": best.trial_id,
    }


def early_stopped(curve: tuple[float, ...], patience: int) -> tuple[float, ...]:
    """``curve`` as training with early stopping after ``patience`` rounds would leave it
    (exact for a patience up to the one it was recorded with)."""
    best, best_at = float("inf"), 0
    for i, value in enumerate(curve):
        if value < best:
            best, best_at = value, i
        elif i - best_at >= patience:
            return curve[: i + 1]
    return curve


@dataclass(frozen=True)
class Policy:
    rung_fractions: tuple[float, ...]
    keep_fraction: float
    min_trials: int
    patience: int


def replay(trials: list[Trial], policy: Policy | None, num_boost_round: int, patience: int):
    """Rounds and seconds a policy trains on these trials' curves, in trial order, and the
    best RMSE (curve minimum) it ends with; ``policy=None``: early stopping only."""
    recorded: list[RecordedCurve] = []
    rounds = seconds = 0.0
    best = float("inf")
    prune_policy = policy and PrunePolicy(
        policy.rung_fractions, policy.keep_fraction, policy.min_trials
    )
    for trial in trials:
        curve = early_stopped(trial.curve, patience)
        thresholds = rung_thresholds(recorded, num_boost_round, prune_policy) if policy else {}
        pruned = False
        for rung in sorted(thresholds):
            if rung <= len(curve) and prune_verdict(curve[:rung], thresholds).prune:
                curve, pruned = curve[:rung], True
                break
        recorded.append(RecordedCurve(curve, pruned))
        per_round = trial.train_seconds / max(1, len(trial.curve))
        rounds += len(curve)
        seconds += per_round * len(curve)
        best = min(best, min(curve))
    return rounds, seconds, best


def replay_grid(trials: list[Trial], num_boost_round: int, patience: int) -> list[dict]:
    usable = [t for t in trials if t.curve and not t.pruned]
    base_rounds, base_seconds, base_best = replay(usable, None, num_boost_round, patience)
    rows = []
    grid = itertools.product(
        [(0.03, 0.1, 0.3), (0.01, 0.03, 0.1, 0.3), (0.1, 0.3), (0.03, 0.1)],
        [1 / 2, 1 / 3, 1 / 4],
        [2, 3, 5],
        sorted({patience, 20, 10}, reverse=True),
    )
    for fractions, keep, warm_up, es in grid:
        if es > patience:
            continue
        policy = Policy(fractions, keep, warm_up, es)
        rounds, seconds, best = replay(usable, policy, num_boost_round, es)
        rows.append(
            {
                **asdict(policy),
                "rounds_saved": 1 - rounds / base_rounds,
                "seconds_saved": 1 - seconds / base_seconds,
                "best_curve_rmse": best,
                "best_delta": best - base_best,
            }
        )
    for es in sorted({patience, 20, 10}, reverse=True):  # early stopping alone
        if es <= patience:
            rounds, seconds, best = replay(usable, None, num_boost_round, es)
            rows.append(
                {
                    "rung_fractions": (),
                    "keep_fraction": 1.0,
                    "min_trials": 0,
                    "patience": es,
                    "rounds_saved": 1 - rounds / base_rounds,
                    "seconds_saved": 1 - seconds / base_seconds,
                    "best_curve_rmse": best,
                    "best_delta": best - base_best,
                }
            )
    return sorted(rows, key=lambda r: -r["seconds_saved"])


def bench_sparse_settings(uri: str, preprocess_run_id: str, rounds: int) -> list[dict]:
    """The lecture's best params, ``rounds`` rounds, with tree_method / max_bin variants."""
    import mlflow

    from steps.hpo import load_training_data
    from steps.models import XGBoostSettings, train_and_evaluate

    mlflow.set_tracking_uri(uri)
    train, val = load_training_data(preprocess_run_id)
    train.dmatrix(), val.dmatrix()  # built once, outside the timings
    lecture_best = {
        "learning_rate": 0.09585355369315604,
        "max_depth": 30,
        "min_child_weight": 1.060597050922164,
        "objective": "reg:squarederror",
        "reg_alpha": 0.018060244040060163,
        "reg_lambda": 0.011658731377807249,
        "seed": 42,
    }
    variants = [
        {},
        {"max_bin": 64},
        {"max_bin": 16},
        {"tree_method": "approx"},
    ]
    rows = []
    for extra in variants:
        started = time.perf_counter()
        result = train_and_evaluate(
            "xgboost", {**lecture_best, **extra}, train, val, XGBoostSettings(rounds, 0)
        )
        rows.append(
            {
                "settings": extra or {"tree_method": "hist (default)", "max_bin": 256},
                "seconds": time.perf_counter() - started,
                "val_rmse": result.val_rmse,
            }
        )
    return rows


@contextlib.contextmanager
def store_folder(keep: Path | None):
    """The folder for the benchmark's store: ``keep``, a new folder left in place (two
    benchmarks' runs never mix), or a temporary one."""
    if keep:
        keep.mkdir(parents=True)
        yield str(keep.resolve())
        return
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        yield tmp


def print_report(report: dict) -> None:
    searches = report.get("searches", {})
    if searches:
        print(
            f"{'':<12}{'wall s':>9}{'CPU s':>9}{'trials':>7}{'pruned':>7}{'rounds':>9}{'best':>9}"
        )
        for name, s in searches.items():
            print(
                f"{name:<12}{s['wall_seconds']:>9.1f}{s['cpu_seconds']:>9.1f}{s['trials']:>7}"
                f"{s['pruned_trials']:>7}{s['rounds_trained']:>9}{s['best_val_rmse']:>9.4f}"
            )
        r = report["ratios"]
        print(
            f"pruned/unpruned: wall {r['wall']:.3f}, CPU {r['cpu']:.3f}, rounds {r['rounds']:.3f};"
            f" best delta {r['best_delta']:+.4f}"
        )
    rows = report.get("replay", [])
    if rows:
        print("\nreplay on the unpruned curves (best first; seconds weighted per trial):")
        print(f"{'rungs':<24}{'keep':>6}{'warm':>5}{'pat':>5}{'rounds':>8}{'secs':>8}{'dbest':>9}")
        for row in rows[:25]:
            print(
                f"{str(row['rung_fractions']):<24}{row['keep_fraction']:>6.2f}"
                f"{row['min_trials']:>5}{row['patience']:>5}{row['rounds_saved']:>8.1%}"
                f"{row['seconds_saved']:>8.1%}{row['best_delta']:>+9.4f}"
            )
    for row in report.get("sparse_settings", []):
        print(f"{json.dumps(row['settings']):<40}{row['seconds']:>8.1f} s  {row['val_rmse']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tlc-dir", type=Path, default=DEFAULT_TLC)
    parser.add_argument("--train-month", default="2021-01")
    parser.add_argument("--val-month", default="2021-02")
    parser.add_argument("--test-month", default="2021-03")
    parser.add_argument("--max-evals", type=int, default=50)
    parser.add_argument("--num-boost-round", type=int, default=1000)
    parser.add_argument("--early-stopping-rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sparse-rounds", type=int, default=0)
    parser.add_argument("--replay-store", help="replay only: a tracking URI ...")
    parser.add_argument("--replay-run", help="... and an unpruned hpo run in it")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument(
        "--keep-store",
        type=Path,
        help="a new folder to keep the store in (mlflow.db + artifacts), for later --replay-store",
    )
    args = parser.parse_args()
    if args.keep_store and args.replay_run:
        parser.error("--keep-store keeps a new benchmark's store; --replay-run reads an old one")
    if args.keep_store and args.keep_store.exists():
        parser.error(f"--keep-store {args.keep_store}: already exists; name a new folder")

    from mlflow.tracking import MlflowClient

    report: dict = {"settings": {k: str(v) for k, v in vars(args).items()}}
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    if args.replay_run:
        client = MlflowClient(args.replay_store)
        run = client.get_run(args.replay_run)
        trials = load_trials(client, run.info.experiment_id, args.replay_run)
        rounds = int(run.data.params["num_boost_round"])
        patience = int(run.data.params["early_stopping_rounds"])
        report["replay"] = replay_grid(trials, rounds, patience)
    else:
        with store_folder(args.keep_store) as tmp:
            uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            client = MlflowClient(uri)
            experiment_id = client.create_experiment(
                "bench-search", artifact_location=(Path(tmp) / "artifacts").as_uri()
            )
            preprocess = mlflow_run(
                uri,
                experiment_id,
                "preprocess",
                {
                    "raw_data_path": args.tlc_dir,
                    "train_month": args.train_month,
                    "val_month": args.val_month,
                    "test_month": args.test_month,
                },
            )
            base = {
                "preprocess_run_id": preprocess,
                "max_evals": args.max_evals,
                "num_boost_round": args.num_boost_round,
                "early_stopping_rounds": args.early_stopping_rounds,
                "seed": args.seed,
            }
            searches, trials_of = {}, {}
            for name, prune in (("prune=false", "false"), ("prune=true", "true")):
                wall, cpu = time.perf_counter(), children_cpu()
                run_id = mlflow_run(uri, experiment_id, "hpo", {**base, "prune": prune})
                wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
                trials_of[name] = load_trials(client, experiment_id, run_id)
                searches[name] = search_summary(trials_of[name], wall, cpu)
                searches[name]["run_id"] = run_id
                searches[name]["per_trial"] = [
                    {**{k: v for k, v in asdict(t).items() if k != "curve"}, "rounds": len(t.curve)}
                    for t in trials_of[name]
                ]
                print(f"{name}: {wall:.0f} s", flush=True)
            off, on = searches["prune=false"], searches["prune=true"]
            report["searches"] = searches
            report["ratios"] = {
                "wall": on["wall_seconds"] / off["wall_seconds"],
                "cpu": on["cpu_seconds"] / off["cpu_seconds"],
                "rounds": on["rounds_trained"] / off["rounds_trained"],
                "best_delta": on["best_val_rmse"] - off["best_val_rmse"],
            }
            report["replay"] = replay_grid(
                trials_of["prune=false"], args.num_boost_round, args.early_stopping_rounds
            )
            if args.sparse_rounds:
                report["sparse_settings"] = bench_sparse_settings(
                    uri, preprocess, args.sparse_rounds
                )
    print_report(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"bench-search-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
