"""How many hpo searches at once each tracking backend holds, and time per trial on each.

    python scripts/concurrency.py [--searches 1 4 8 16] [--max-evals 5] [--backends sqlite server]
    # PostgreSQL: start scripts/team-server-up.sh, export MLFLOW_TRACKING_USERNAME/PASSWORD,
    # and add --team-url http://127.0.0.1:5000

For each backend and each count N it starts N `python -m steps.hpo` processes at once (tiny
XGBoost trials: one boosting round, so tracking dominates), on one preprocess run, and counts
searches that exited 0 and trials left FINISHED with their metric. Time per trial is the trial
run's wall time (start to end in the store); `tracking` is that minus `train_seconds`.
Prints a table and writes JSON to benchmarks/results/concurrency-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
TLC = Path(os.environ.get("NYC_TAXI_TLC_DIR", REPO.parent / "shared" / "data" / "tlc"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(uri: str, experiment_id: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_ID": experiment_id}
    env.pop("MLFLOW_RUN_ID", None)
    return env


def measure(uri: str, n: int, max_evals: int) -> dict:
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"concurrency-{n}-{time.time_ns()}")
    env = env_for(uri, experiment_id)
    pre = subprocess.run(
        [
            sys.executable,
            "-m",
            "steps.preprocess",
            "--raw-data-path",
            str(TLC),
            "--train-month",
            "2021-01",
            "--val-month",
            "2021-02",
            "--test-month",
            "2021-03",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if pre.returncode != 0:
        raise SystemExit(pre.stderr[-2000:])
    pre_id = pre.stdout.split("preprocess run ")[1].split(":")[0]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "steps.hpo",
                "--preprocess-run-id",
                pre_id,
                "--max-evals",
                str(max_evals),
                "--num-boost-round",
                "1",
                "--seed",
                str(i),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    errors = []
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            lines = [ln for ln in err.splitlines() if ln.startswith("Error")] or err.splitlines()
            errors.append(lines[-1][:200] if lines else f"exit {p.returncode}")
    wall = time.perf_counter() - started
    runs = client.search_runs([experiment_id], "", run_view_type=ViewType.ALL, max_results=50000)
    trials = [r for r in runs if "trial_id" in r.data.tags]
    ok = [t for t in trials if t.info.status == "FINISHED" and "val_rmse" in t.data.metrics]
    per_trial = [(t.info.end_time - t.info.start_time) / 1000 for t in ok]
    tracking = [d - t.data.metrics["train_seconds"] for d, t in zip(per_trial, ok, strict=True)]
    return {
        "searches": n,
        "searches_ok": n - len(errors),
        "trials_expected": n * max_evals,
        "trials_finished": len(ok),
        "wall_seconds": wall,
        "trial_median_seconds": statistics.median(per_trial) if per_trial else None,
        "tracking_median_seconds": statistics.median(tracking) if tracking else None,
        "errors": sorted(set(errors)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--max-evals", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "server"])
    parser.add_argument("--team-url", default="")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        backends = {}
        if "sqlite" in args.backends:
            backends["sqlite file"] = lambda n: f"sqlite:///{tmp}/sqlite-{n}.db"
        if "server" in args.backends:
            port = free_port()
            server = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{tmp}/server.db",
                    "--artifacts-destination",
                    f"{tmp}/served",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            backends["local server (SQLite)"] = lambda n: f"http://127.0.0.1:{port}"
        if args.team_url:
            backends["team server (PostgreSQL)"] = lambda n: args.team_url
        try:
            for name, uri_of in backends.items():
                for n in args.searches:
                    row = {"backend": name, **measure(uri_of(n), n, args.max_evals)}
                    results.append(row)
                    print(
                        f"{name:<26} N={n:<3} searches ok {row['searches_ok']}/{n}, trials "
                        f"{row['trials_finished']}/{row['trials_expected']}, trial median "
                        f"{row['trial_median_seconds']}",
                        file=sys.stderr,
                    )
        finally:
            if server:
                os.killpg(server.pid, signal.SIGTERM)

    print(f"{'backend':<26} {'N':>3} {'ok':>6} {'trials':>9} {'s/trial':>8} {'tracking s':>10}")
    for r in results:

        def f(v):
            return "-" if v is None else f"{v:.3f}"

        print(
            f"{r['backend']:<26} {r['searches']:>3} {r['searches_ok']:>3}/{r['searches']:<2} "
            f"{r['trials_finished']:>4}/{r['trials_expected']:<4} "
            f"{f(r['trial_median_seconds']):>8} {f(r['tracking_median_seconds']):>10}"
            + (f"  {r['errors'][0]}" if r["errors"] else "")
        )
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"concurrency-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(
        json.dumps(
            {"max_evals": args.max_evals, "cpus": os.cpu_count(), "results": results}, indent=2
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
