"""The README's commands, verbatim, in a fresh clone, from a clean login shell.

A new user has a login shell with no virtualenv active and nothing on PATH but the system's
(pyenv's python3.11, make, git). The tests run each command the way that user types it, under
``env -i``, so nothing of the test's own environment (its .venv on PATH, MLflow variables)
can hide a command that only works for us:

- ``make pipeline``, the README's first command, downloading the months from a loopback HTTP
  server that stands in for the TLC, until the search has finished two trials (the default
  budget is the course's full search, about an hour);
- the "quick run on local files" block, read out of README.md so that the test breaks when the
  README drifts, to a FINISHED main run with a registered version.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import (
    MONTHS_2023,
    REPO,
    fresh_clone,
    start_loopback_server,
    stop_loopback_servers,
    tlc_file,
)

pytestmark = [pytest.mark.slow, pytest.mark.envmanager]
EXPERIMENT = "nyc-taxi-duration"


def readme_block(after: str) -> str:
    """The first ```bash block that follows the README line starting with ``after``."""
    text = (REPO / "README.md").read_text()
    start = text.index("\n" + after)
    match = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert match, f"no bash block after {after!r} in README.md"
    return match.group(1)


# How this machine reaches the package registries (its CA bundle, pip's mirrors, a proxy): the
# machine's network set-up, which a newcomer's shell has too, not a project environment.
NETWORK_VARIABLES = re.compile(r"(SSL_CERT_|_CA_BUNDLE$|^PIP_|_PROXY$)", re.I)


def clean_shell_env(**extra: str) -> dict[str, str]:
    """What ``env -i HOME=$HOME PATH=<system>`` gives: python3.11, make and git, nothing else
    (plus the machine's network variables)."""
    network = {k: v for k, v in os.environ.items() if NETWORK_VARIABLES.search(k)}
    dirs = ["/usr/bin", "/bin"]
    for tool in ("python3.11", "make", "git"):
        # a PATH that the test itself runs with may start with a virtualenv (this repo's .venv
        # when it was activated): look past any folder that holds mlflow or uv
        found = [
            os.path.join(d, tool)
            for d in os.environ.get("PATH", "").split(os.pathsep)
            if os.access(os.path.join(d, tool), os.X_OK)
            and not any(os.path.exists(os.path.join(d, t)) for t in ("mlflow", "uv"))
        ]
        assert found, f"{tool} is not on this machine's PATH outside a virtualenv"
        if os.path.dirname(found[0]) not in dirs:
            dirs.append(os.path.dirname(found[0]))
    path = os.pathsep.join(dirs)
    assert shutil.which("mlflow", path=path) is None and shutil.which("uv", path=path) is None
    return {"HOME": os.environ["HOME"], "PATH": path, **network, **extra}


def login_shell(script: str, cwd: Path, env: dict[str, str], **popen) -> subprocess.Popen:
    return subprocess.Popen(
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "-l", "-e", "-c", script],
        cwd=cwd,
        start_new_session=True,  # one process group: make, mlflow run and its steps
        **popen,
    )


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def do_GET(self):
        self.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tlc_mirror():
    """A loopback HTTP server over the TLC files; yields (URL, list of requested paths)."""
    requested: list[str] = []
    handler = type("Handler", (_RecordingHandler,), {"requested": requested})
    servers: list = []
    directory = str(tlc_file(MONTHS_2023[0]).parent)
    url = start_loopback_server(functools.partial(handler, directory=directory), servers)
    yield url, requested
    stop_loopback_servers(servers)


@pytest.fixture(scope="module")
def clone(tmp_path_factory, tlc_dir):
    """A fresh clone with ``../shared/data/tlc`` beside it, as the README assumes."""
    root = tmp_path_factory.mktemp("newcomer")
    (root / "shared" / "data").mkdir(parents=True)
    (root / "shared" / "data" / "tlc").symlink_to(tlc_dir.resolve())
    project, _ = fresh_clone(root / "nyc-taxi-duration")
    return project


def finished_trials(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            (n,) = conn.execute(
                "select count(*) from runs where name like 'trial-%' and status = 'FINISHED'"
            ).fetchone()
            return n
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return 0


def stop_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_make_pipeline_from_a_clean_shell(clone, tlc_mirror, tmp_path):
    url, requested = tlc_mirror
    assert "make pipeline" in readme_block("## The two commands")
    log = tmp_path / "make-pipeline.log"
    with open(log, "w") as out:
        proc = login_shell(
            "make pipeline",
            clone,
            clean_shell_env(TLC_BASE_URL=url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 1500
        try:
            while finished_trials(clone / "mlflow.db") < 2:
                assert proc.poll() is None, f"make pipeline exited:\n{log.read_text()[-5000:]}"
                assert time.monotonic() < deadline, f"too slow:\n{log.read_text()[-5000:]}"
                time.sleep(5)
        finally:
            stop_group(proc)

    # the months came from the mirror, byte for byte
    for month in MONTHS_2023:
        name = f"green_tripdata_{month}.parquet"
        assert f"/{name}" in requested
        assert sha256(clone / "data" / "raw" / name) == sha256(tlc_file(month))
    client = MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, "make pipeline did not track into nyc-taxi-duration"
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    steps = {r.data.tags.get("step") for r in runs}
    assert {"main", "preprocess", "hpo"} <= steps
    (preprocess,) = [r for r in runs if r.data.tags.get("step") == "preprocess"]
    assert preprocess.info.status == "FINISHED"
    (main,) = [r for r in runs if r.data.tags.get("step") == "main"]
    assert main.data.params["max_evals"] == "50"  # the default budget, untouched


def test_quick_run_block_from_a_clean_shell(clone, tmp_path):
    block = readme_block("A quick run on local files")
    assert "mlflow run" in block
    proc = login_shell(
        block,
        clone,
        clean_shell_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=1200)
    finally:
        stop_group(proc)
    assert proc.returncode == 0, output[-5000:]

    client = MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (main,) = client.search_runs(
        [experiment.experiment_id],
        "tags.step = 'main' and params.raw_data_path = '../shared/data/tlc'",
    )
    assert main.info.status == "FINISHED"
    name, version = main.data.tags["registered_model"], main.data.tags["registered_version"]
    assert client.get_model_version(name, version).run_id
    assert client.get_model_version_by_alias(name, "champion").version is not None
