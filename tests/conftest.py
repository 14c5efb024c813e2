"""Shared fixtures: the real TLC files, a throw-away tracking store, `mlflow run` helpers.

The TLC months come from ``$NYC_TAXI_TLC_DIR`` (default ``../shared/data/tlc`` beside the
repo). Nothing here touches the network: downloads go to a loopback HTTP server.
"""

from __future__ import annotations

import csv
import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
TLC_DIR = Path(os.environ.get("NYC_TAXI_TLC_DIR", REPO.parent / "shared" / "data" / "tlc"))
MONTHS_2023 = ("2023-01", "2023-02", "2023-03")


@functools.cache
def manifest() -> dict[str, dict]:
    path = TLC_DIR / "MANIFEST.tsv"
    if not path.exists():
        pytest.fail(
            f"TLC data not found at {TLC_DIR}: put the green 2021/2022/2023 Jan-Mar months and "
            f"MANIFEST.tsv there, or set NYC_TAXI_TLC_DIR to a folder holding them "
            f"(download from https://www.nyc.gov/site/tlc/about/tlc-trip-record-data.page)",
            pytrace=False,
        )
    with open(path) as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


@pytest.fixture(scope="session")
def tlc_dir() -> Path:
    for name in manifest():
        if not (TLC_DIR / name).exists():
            pytest.fail(f"{TLC_DIR / name} is listed in MANIFEST.tsv but missing", pytrace=False)
    return TLC_DIR


def tlc_file(month: str, color: str = "green") -> Path:
    manifest()
    return TLC_DIR / f"{color}_tripdata_{month}.parquet"


def write_yellow_copy(month: str, dest_dir: Path) -> Path:
    """A yellow-shaped file made from a green month: ``tpep_*`` timestamps, green's other
    columns (no yellow month is available offline)."""
    table = pq.read_table(tlc_file(month))
    names = [n.replace("lpep_", "tpep_") for n in table.column_names]
    dest = dest_dir / f"yellow_tripdata_{month}.parquet"
    pq.write_table(table.rename_columns(names), dest)
    return dest


@dataclass
class Tracking:
    uri: str
    experiment_id: str
    root: Path

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MLFLOW_TRACKING_URI"] = self.uri
        env["MLFLOW_EXPERIMENT_ID"] = self.experiment_id
        env.pop("MLFLOW_RUN_ID", None)
        return env

    def runs(self, filter_string: str = "") -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string,
            run_view_type=mlflow.entities.ViewType.ALL,
            max_results=10000,
        )


def make_tracking(root: Path) -> Tracking:
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(
        "tests", artifact_location=(root / "artifacts").as_uri()
    )
    return Tracking(uri, experiment_id, root)


def ambient(t: Tracking, monkeypatch) -> Iterator[Tracking]:
    """Make ``t`` the store and experiment that in-process step calls use, for one test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", t.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", t.experiment_id)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(t.uri)
    yield t
    while mlflow.active_run():
        mlflow.end_run("FAILED")
    mlflow.set_tracking_uri(None)


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> Tracking:
    """A fresh SQLite store, also made the ambient one for in-process step calls."""
    yield from ambient(make_tracking(tmp_path / "tracking"), monkeypatch)


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_kib: int | None = None  # with measure_peak: the largest process of this command

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


# Runs argv in a process of its own and reports the peak RSS of it and its descendants only
# (pytest's own RUSAGE_CHILDREN would include every earlier test's children: JVMs, servers).
PEAK_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(f'PEAK_RSS_KIB={peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def mlflow_run(
    tracking: Tracking,
    entry_point: str,
    params: dict[str, object] | None = None,
    *,
    project: Path | str = REPO,
    env_manager: str = "local",
    extra_env: dict[str, str] | None = None,
    version: str | None = None,
    timeout: float = 900,
    measure_peak: bool = False,
) -> Completed:
    """``mlflow run`` as a user types it, with this interpreter's environment on PATH; with
    ``measure_peak``, also the peak RSS of its processes (``Completed.peak_rss_kib``)."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(project),
        "-e",
        entry_point,
        "--env-manager",
        env_manager,
        "--experiment-id",
        tracking.experiment_id,
    ]
    if version:
        cmd += ["--version", version]
    for key, value in (params or {}).items():
        cmd += ["-P", f"{key}={value}"]
    env = tracking.env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra_env or {})
    if measure_peak:
        cmd = [sys.executable, "-c", PEAK_LAUNCHER, *cmd]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=tracking.root, timeout=timeout
    )
    peak = None
    if measure_peak:
        peak = int(proc.stderr.rstrip().rsplit("PEAK_RSS_KIB=", 1)[1])
    return Completed(proc.returncode, proc.stdout, proc.stderr, peak)


def run_id_of(completed: Completed) -> str:
    """The run ID that `mlflow run` reports last (main's nested steps report theirs first)."""
    for line in reversed(completed.output.splitlines()):
        if "=== Run (ID '" in line:
            return line.split("=== Run (ID '")[1].split("'")[0]
    raise AssertionError(f"no run ID in output:\n{completed.output[-3000:]}")


def assert_ok(completed: Completed) -> str:
    assert completed.returncode == 0, completed.output[-5000:]
    return run_id_of(completed)


@pytest.fixture(scope="session")
def shared_tracking(tmp_path_factory) -> Tracking:
    """One store for the session's read-only checks, with a preprocess run of 2023-01..03."""
    return make_tracking(tmp_path_factory.mktemp("shared-tracking"))


@pytest.fixture(scope="session")
def preprocess_run(shared_tracking, tlc_dir) -> str:
    completed = mlflow_run(shared_tracking, "preprocess", {"raw_data_path": tlc_dir})
    return assert_ok(completed)


TINY_SEARCH = {"max_evals": 3, "num_boost_round": 10, "early_stopping_rounds": 3}


@pytest.fixture(scope="session")
def tiny_search(shared_tracking, preprocess_run) -> str:
    """A 3-trial XGBoost search on the shared preprocess run."""
    params = {"preprocess_run_id": preprocess_run, **TINY_SEARCH}
    return assert_ok(mlflow_run(shared_tracking, "hpo", params))


@pytest.fixture(scope="session")
def train_run(shared_tracking, tiny_search) -> str:
    """train_best of the tiny search's two best trials."""
    return assert_ok(
        mlflow_run(shared_tracking, "train_best", {"hpo_run_id": tiny_search, "top_n": 2})
    )


@pytest.fixture(scope="session")
def worse_train_run(shared_tracking, preprocess_run) -> str:
    """A linear baseline (one trial): clearly worse than XGBoost on the same months."""
    search = assert_ok(
        mlflow_run(shared_tracking, "hpo", {"preprocess_run_id": preprocess_run, "model": "linear"})
    )
    return assert_ok(mlflow_run(shared_tracking, "train_best", {"hpo_run_id": search}))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


class _TruncatingHandler(_QuietHandler):
    """Announces the whole file but sends half of it, then closes: a cut download."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def tlc_server(tmp_path):
    """Start loopback HTTP servers over a folder; yields a function(folder, truncate) -> URL."""
    servers = []

    def start(folder: Path, truncate: bool = False) -> str:
        handler = functools.partial(
            _TruncatingHandler if truncate else _QuietHandler, directory=str(folder)
        )
        return start_loopback_server(handler, servers)

    yield start
    stop_loopback_servers(servers)


def start_loopback_server(handler, servers: list) -> str:
    """Serve ``handler`` on 127.0.0.1 in a thread; appends the server to ``servers``; its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return f"http://127.0.0.1:{server.server_address[1]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_loopback_servers(servers: list) -> None:
    for server in servers:
        server.shutdown()
        server.server_close()


def copy_months(dest: Path, months=MONTHS_2023, color: str = "green") -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for month in months:
        shutil.copy(tlc_file(month, color), dest)
    return dest


def git(*args, cwd=None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def fresh_clone(dest: Path) -> tuple[Path, str]:
    """A clean clone of this repository's HEAD (what CI and a new user have); its commit."""
    git("clone", "--quiet", str(REPO), str(dest))
    return dest, git("rev-parse", "HEAD", cwd=dest)
