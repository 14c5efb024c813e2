"""The course's ways of running MLflow, with real servers on loopback:
scenario 2, a local `mlflow server` (SQLite + served artifacts); scenario 3, the team server of
scripts/team-server-up.sh (PostgreSQL, served artifacts, basic auth); served artifacts on an
S3-compatible server (moto); concurrent searches; a server killed mid-search."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, Tracking, assert_ok, free_port, fresh_clone, mlflow_run
from tests.test_resume import trials_of

pytestmark = [pytest.mark.slow, pytest.mark.server]
SMALL = {"max_evals": 1, "num_boost_round": 5, "early_stopping_rounds": 2}
ADMIN_PASSWORD = "test-Admin-pw-1"  # a throw-away server's; real ones come from the environment
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True, scope="module")
def _admin_credentials():
    """In-process clients (``tracking.client``) read credentials from the environment; servers
    without auth ignore them."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN_PASSWORD
    yield
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            assert proc is None or proc.poll() is None, "server exited"
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.3)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def start_mlflow_server(root: Path, artifacts: str, extra_env=None) -> Server:
    """`mlflow server` with a SQLite backend and served artifacts (scenario 2)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root}/server.db",
                "--artifacts-destination",
                artifacts,
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(extra_env or {})},
            start_new_session=True,
        )
    wait_healthy(url, proc)
    return Server(url, proc)


def server_tracking(url: str, root: Path, user=None, password=None) -> Tracking:
    """A Tracking handle on a server: a new experiment, created as ``user``."""
    env = {"MLFLOW_TRACKING_URI": url}
    if user:
        env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from mlflow.tracking import MlflowClient

        experiment_id = MlflowClient(url).create_experiment(f"tests-{time.time_ns()}")
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    t = Tracking(url, experiment_id, root)
    t.extra = env  # type: ignore[attr-defined]
    return t


def run_as(tracking: Tracking, entry_point, params, project, extra=None):
    return mlflow_run(
        tracking,
        entry_point,
        params,
        project=project,
        extra_env={**tracking.extra, **(extra or {})},
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    return fresh_clone(tmp_path_factory.mktemp("clone") / "project")[0]


# ---- scenario 2 ----------------------------------------------------------------------------


def test_pipeline_against_a_local_server(tmp_path, clone, tlc_dir):
    server = start_mlflow_server(tmp_path, str(tmp_path / "served"))
    try:
        tracking = server_tracking(server.url, tmp_path)
        main_id = assert_ok(run_as(tracking, "main", {"raw_data_path": tlc_dir, **SMALL}, clone))
        run = tracking.client.get_run(main_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["registered_version"] == "1"
        # artifacts went through the server into its destination folder
        assert any((tmp_path / "served").rglob("featurizer.json"))
    finally:
        server.stop()


# ---- scenario 3 ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    # PostgreSQL runs as `postgres`, which must reach the folder: not under pytest's
    # root-only temp root. The script itself makes the folder root:postgres 710.
    state = Path(tempfile.mkdtemp(prefix="team-server-", dir="/tmp"))
    env = {
        **os.environ,
        "TEAM_SERVER_DIR": str(state),
        "MLFLOW_PORT": str(free_port()),
        "PG_PORT": str(free_port()),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW": str(BIN / "mlflow"),
    }
    up = subprocess.run(
        [str(REPO / "scripts" / "team-server-up.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert up.returncode == 0, up.stderr + up.stdout
    url = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    assert f"MLflow team server is up: {url}" in up.stdout
    yield {"url": url, "env": env, "state": state}
    down = subprocess.run(
        [str(REPO / "scripts" / "team-server-down.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    assert "tracking server stopped" in down.stderr and "PostgreSQL stopped" in down.stderr
    shutil.rmtree(state, ignore_errors=True)


def admin_tracking(team_server, root):
    return server_tracking(team_server["url"], root, "admin", ADMIN_PASSWORD)


def test_pipeline_against_the_team_server(team_server, tmp_path, clone, tlc_dir):
    tracking = admin_tracking(team_server, tmp_path)
    main_id = assert_ok(run_as(tracking, "main", {"raw_data_path": tlc_dir, **SMALL}, clone))
    assert tracking.client.get_run(main_id).data.tags["registered_version"]


def test_auth_refuses_anonymous_and_other_users(team_server, tmp_path):
    url = team_server["url"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    assert err.value.code == 401

    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=url)  # as admin (the fixture's env)
    suffix = time.time_ns()
    auth.create_user(f"alice{suffix}", "alice-password-123")
    auth.create_user(f"bob{suffix}", "bob-password-1234")
    alice = server_tracking(url, tmp_path, f"alice{suffix}", "alice-password-123")
    run_id = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mlflow,sys; mlflow.set_experiment(experiment_id=sys.argv[1]);"
            "r=mlflow.start_run(); mlflow.log_metric('m', 1.0); mlflow.end_run();"
            'print("\\n" + r.info.run_id)',
            alice.experiment_id,
        ],
        env={**os.environ, **alice.extra},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]  # after MLflow's "View run" line
    assert run_id
    bob = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mlflow,sys; mlflow.set_experiment(experiment_id=sys.argv[1]);"
            "mlflow.start_run()",
            alice.experiment_id,
        ],
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_USERNAME": f"bob{suffix}",
            "MLFLOW_TRACKING_PASSWORD": "bob-password-1234",
        },
        capture_output=True,
        text=True,
    )
    assert bob.returncode != 0
    assert "PERMISSION_DENIED" in bob.stderr or "403" in bob.stderr


def test_served_artifacts_reach_a_client_without_folder_access(team_server, tmp_path):
    tracking = admin_tracking(team_server, tmp_path)
    script = (
        "import mlflow,sys; mlflow.set_experiment(experiment_id=sys.argv[1]);\n"
        "with mlflow.start_run() as r: mlflow.log_text('hello through the server', 'n/t.txt')\n"
        'print("\\n" + r.info.run_id)'
    )
    run_id = subprocess.run(
        [sys.executable, "-c", script, tracking.experiment_id],
        env={**os.environ, **tracking.extra},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]  # after MLflow's "View run" line
    artifacts = team_server["state"] / "artifacts"
    assert any(artifacts.rglob("t.txt"))
    out = tmp_path / "client"
    out.mkdir()
    # The second client runs in its own mount namespace where the server's whole state folder
    # is an empty tmpfs: whatever it gets, it gets over HTTP.
    download = (
        "import os,sys,mlflow; assert not os.listdir(sys.argv[3]);"
        "p = mlflow.artifacts.download_artifacts("
        "run_id=sys.argv[1], artifact_path='n/t.txt', dst_path=sys.argv[2]);"
        "print(open(p).read())"
    )
    result = subprocess.run(
        [
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            'mount -t tmpfs none "$0" && exec "$@"',
            str(team_server["state"]),
            sys.executable,
            "-c",
            download,
            run_id,
            str(out),
            str(team_server["state"]),
        ],
        env={**os.environ, **tracking.extra},
        capture_output=True,
        text=True,
        cwd=out,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "hello through the server"


# ---- scenario 3: who gets in ---------------------------------------------------------------

SECRET_FILES = ("db_password", "pgpass", "flask_secret", "basic_auth.ini")
# How PostgreSQL (or the kernel, for the socket) turns a connection down.
REFUSALS = (
    "Permission denied",  # the socket's folders: no way in
    "no pg_hba.conf entry",  # a role, database or method the rules do not admit
    "no password supplied",  # the mlflow role over TCP, without its password
    "password authentication failed",  # ... or with a wrong one
)


def _as_root_running_the_script():
    if os.geteuid() != 0:
        pytest.skip("the team server's access rules are tested as root, the way it runs")


def psql_as(user: str, host: str, port: str, role: str, db: str, password: str | None = None):
    """``psql -c 'SELECT 1'`` as OS user ``user``, never prompting, no ~/.pgpass."""
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "5", "PGPASSFILE": "/dev/null"}
    if password is not None:
        env["PGPASSWORD"] = password
    cmd = [shutil.which("psql") or "psql", "-X", "-w", "-tA", "-h", host, "-p", port]
    cmd += ["-U", role, "-d", db, "-c", "SELECT 1"]
    if user != "root":
        cmd = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_postgres_admits_only_its_own_os_user_and_the_servers_role(team_server):
    _as_root_running_the_script()
    state, port = team_server["state"], team_server["env"]["PG_PORT"]
    socket_dir = str(state / "pgsock")
    # The way in that must work, so that the refusals below are the rules, not a dead server.
    assert psql_as("postgres", socket_dir, port, "postgres", "postgres").stdout.strip() == "1"
    password = (state / "db_password").read_text().strip()
    assert psql_as("root", "127.0.0.1", port, "mlflow", "mlflow", password).stdout.strip() == "1"

    attempts = [
        (host, role, db, pw)
        for role in ("postgres", "mlflow", "mlflow_auth", "nobody", "root")
        for host, dbs in (
            (socket_dir, ("postgres", "mlflow")),
            ("127.0.0.1", ("postgres", "mlflow", "mlflow_auth", "template1")),
        )
        for db in dbs
        for pw in (None, "wrong-password")
    ]
    for host, role, db, pw in attempts:
        got = psql_as("nobody", host, port, role, db, pw)
        assert got.returncode != 0 and "1" not in got.stdout, (host, role, db, pw, got.stdout)
        assert any(r in got.stderr for r in REFUSALS), (host, role, db, pw, got.stderr)
    # the server's OS user is the only local one: root, too, is refused as postgres on the socket
    got = psql_as("root", socket_dir, port, "postgres", "postgres")
    assert got.returncode != 0 and "Peer authentication failed" in got.stderr, got.stderr
    # and the cluster has no socket anywhere else
    for folder in ("/var/run/postgresql", "/run/postgresql", "/tmp"):
        assert not Path(folder, f".s.PGSQL.{port}").exists()


def test_team_server_state_is_its_owners_alone(team_server):
    _as_root_running_the_script()
    state = team_server["state"]
    postgres_gid = int(
        subprocess.run(["id", "-g", "postgres"], capture_output=True, text=True).stdout
    )
    for folder in (state, state / "logs"):  # postgres may pass through, nobody else
        info = folder.stat()
        assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o710, 0, postgres_gid)
    for name in SECRET_FILES:
        info = (state / name).stat()
        assert (info.st_mode & 0o777, info.st_uid) == (0o600, 0), name
    paths = [Path(d) / n for d, dirs, files in os.walk(state) for n in dirs + files]
    loose = [
        (str(p), oct(p.lstat().st_mode & 0o777))
        for p in paths
        if p.lstat().st_mode & (0o077 if p != state / "logs" else 0o067)
    ]
    assert loose == []  # nothing under the state folder grants anything to group or others
    readable = subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            "sh",
            "-c",
            'ls "$0" && echo "listed $0"; for f; do cat "$f" >/dev/null && echo "read $f"; done',
            str(state),
            *(str(p) for p in paths if p.is_file()),
        ],
        capture_output=True,
        text=True,
    )
    assert readable.stdout == "", readable.stdout
    assert "Permission denied" in readable.stderr


def _secrets(team_server) -> dict[str, str]:
    state = team_server["state"]
    return {
        "database password": (state / "db_password").read_text().strip(),
        "CSRF key": (state / "flask_secret").read_text().strip(),
        "admin password": ADMIN_PASSWORD,
    }


def test_no_password_on_the_servers_command_lines(team_server):
    """``ps`` (every process's arguments, untruncated) shows no secret while the server runs."""
    _as_root_running_the_script()
    secrets = _secrets(team_server)
    args = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert "mlflow server" in args and "huey" in args  # the server and its workers are listed
    for what, secret in secrets.items():
        assert secret not in args, f"the {what} is on a command line"


def test_no_password_on_the_command_line_of_anything_the_script_runs(team_server, tmp_path):
    """Every program the script starts (psql with the role's password, runuser, tee ...),
    traced as it starts: none has a secret in its arguments. (The tracking server itself is
    already running: the test above looks at its command line.)"""
    _as_root_running_the_script()
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    trace = tmp_path / "execve.log"
    up = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=execve", "-s", "100000", "-o", str(trace)]
        + [str(REPO / "scripts" / "team-server-up.sh")],
        env=team_server["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stderr[-2000:]
    calls = [line for line in trace.read_text().splitlines() if "execve(" in line]
    assert any("psql" in c for c in calls) and any("pg_ctl" in c for c in calls)
    for what, secret in _secrets(team_server).items():
        assert not [c for c in calls if secret in c], f"the {what} is on a command line"


def test_s3_artifact_destination_on_an_s3_compatible_server(tmp_path):
    """moto's server mode stands in for S3: the tracking server holds the credentials."""
    s3_port = free_port()
    s3 = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    s3_env = {
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    server = None
    try:
        import boto3

        deadline = time.monotonic() + 60
        while True:
            try:
                boto3.client(
                    "s3",
                    endpoint_url=s3_env["MLFLOW_S3_ENDPOINT_URL"],
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                    region_name="us-east-1",
                ).create_bucket(Bucket="mlflow")
                break
            except Exception:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.3)
        server = start_mlflow_server(tmp_path, "s3://mlflow/artifacts", extra_env=s3_env)
        tracking = server_tracking(server.url, tmp_path)
        client_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))
        }
        script = (
            "import mlflow,sys; mlflow.set_experiment(experiment_id=sys.argv[1]);\n"
            "with mlflow.start_run() as r: mlflow.log_dict({'a': 1}, 'x/d.json')\n"
            "print(mlflow.artifacts.load_dict(f'runs:/{r.info.run_id}/x/d.json'))"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, tracking.experiment_id],
            env={**client_env, **tracking.extra},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().endswith("{'a': 1}")
        objects = boto3.client(
            "s3",
            endpoint_url=s3_env["MLFLOW_S3_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).list_objects_v2(Bucket="mlflow")
        assert any(o["Key"].endswith("x/d.json") for o in objects.get("Contents", []))
    finally:
        if server:
            server.stop()
        os.killpg(s3.pid, signal.SIGTERM)
        s3.wait(timeout=30)


# ---- concurrency ---------------------------------------------------------------------------


def start_search(
    env: dict, preprocess_run_id: str, seed: int, max_evals: int, num_boost_round: int = 2
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "steps.hpo",
            "--preprocess-run-id",
            preprocess_run_id,
            "--max-evals",
            str(max_evals),
            "--num-boost-round",
            str(num_boost_round),
            "--seed",
            str(seed),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def preprocess_direct(env: dict, tlc_dir) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "steps.preprocess", "--raw-data-path", str(tlc_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split("preprocess run ")[1].split(":")[0]


def assert_searches_complete(tracking, procs, max_evals):
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
    parents = tracking.runs("tags.step = 'hpo'")
    assert len(parents) == len(procs)
    for parent in parents:
        assert parent.info.status == "FINISHED"
        trials = tracking.runs(f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert len(trials) == max_evals
        assert all(t.info.status == "FINISHED" and "val_rmse" in t.data.metrics for t in trials)


def env_for(tracking) -> dict:
    env = {
        **os.environ,
        **getattr(tracking, "extra", {}),
        "MLFLOW_TRACKING_URI": tracking.uri,
        "MLFLOW_EXPERIMENT_ID": tracking.experiment_id,
    }
    env.pop("MLFLOW_RUN_ID", None)
    return env


def test_four_searches_at_once_on_one_sqlite_file(tmp_path, tlc_dir):
    from tests.conftest import make_tracking

    tracking = make_tracking(tmp_path)
    env = env_for(tracking)
    pre = preprocess_direct(env, tlc_dir)
    procs = [start_search(env, pre, seed, max_evals=4) for seed in range(4)]
    assert_searches_complete(tracking, procs, 4)


def test_eight_searches_at_once_on_the_postgres_server(team_server, tmp_path, tlc_dir):
    tracking = admin_tracking(team_server, tmp_path)
    env = env_for(tracking)
    pre = preprocess_direct(env, tlc_dir)
    procs = [start_search(env, pre, seed, max_evals=3) for seed in range(8)]
    assert_searches_complete(tracking, procs, 3)


# ---- a server killed mid-search ------------------------------------------------------------


SERVER_SEARCH = {"seed": 5, "max_evals": 6, "num_boost_round": 30}


def trial_results(tracking, parent_id) -> list[tuple]:
    """A search's finished trials in trial-id order: id, hyperopt's vals, params, val_rmse."""
    return [
        (t.data.tags["trial_id"], t.data.tags["trial.vals"], t.data.params)
        + (t.data.metrics["val_rmse"],)
        for t in trials_of(tracking, parent_id)
        if t.info.status == "FINISHED"
    ]


def best_of(tracking, run_id: str, dest: Path) -> tuple[float, dict]:
    """A search's ``best_val_rmse`` and its ``best_params.json`` less the run IDs in it."""
    path = tracking.client.download_artifacts(run_id, "best_params.json", str(dest / run_id))
    best = json.loads(Path(path).read_text())
    best = {k: v for k, v in best.items() if k not in ("trial_run_id", "hpo_run_id")}
    return tracking.client.get_run(run_id).data.metrics["best_val_rmse"], best


def test_server_killed_mid_search_then_resumed(team_server, tmp_path, tlc_dir):
    """Ends exactly like an uninterrupted search with the same seed, as on SQLite
    (tests/test_resume.py): same trials, same values, same best."""
    tracking = admin_tracking(team_server, tmp_path)
    env = env_for(tracking)
    pre = preprocess_direct(env, tlc_dir)
    reference = start_search(env, pre, **SERVER_SEARCH)
    _, err = reference.communicate(timeout=900)
    assert reference.returncode == 0, err[-2000:]
    (reference_run,) = tracking.runs("tags.step = 'hpo'")
    reference_id = reference_run.info.run_id
    # fail within seconds once the server is gone, rather than after minutes of retries
    env |= {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }
    search = start_search(env, pre, **SERVER_SEARCH)
    state = team_server["state"]
    deadline = time.monotonic() + 600
    while True:
        assert search.poll() is None, "the search ended before the server was killed"
        assert time.monotonic() < deadline
        parents = [r for r in tracking.runs("tags.step = 'hpo'") if r.info.run_id != reference_id]
        if parents:
            trials = tracking.runs(f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
            done = [t for t in trials if t.info.status == "FINISHED"]
            if len(done) >= 2:
                break
        time.sleep(0.2)
    parent_id = parents[0].info.run_id
    server_pid = int((state / "mlflow.pid").read_text())
    os.killpg(server_pid, signal.SIGKILL)
    _, err = search.communicate(timeout=300)
    assert search.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert errors and "MLflow" in errors[-1], err[-2000:]

    up = subprocess.run(
        [str(REPO / "scripts" / "team-server-up.sh")],
        env=team_server["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert up.returncode == 0, up.stderr
    assert tracking.client.get_run(parent_id).info.status == "RUNNING"  # killed, not ended
    for t in done:  # the trials finished before the kill are intact
        again = tracking.client.get_run(t.info.run_id)
        assert again.info.status == "FINISHED"
        assert again.data.metrics["val_rmse"] == t.data.metrics["val_rmse"]

    resume = subprocess.run(
        [sys.executable, "-m", "steps.hpo", "--resume-run-id", parent_id],
        cwd=REPO,
        env=env_for(tracking),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resume.returncode == 0, resume.stderr[-2000:]
    assert tracking.client.get_run(parent_id).info.status == "FINISHED"
    resumed = trial_results(tracking, parent_id)
    assert [r[0] for r in resumed] == ["0", "1", "2", "3", "4", "5"]
    assert resumed == trial_results(tracking, reference_id)
    # the trials finished before the kill were reloaded, not retrained
    finished_ids = {
        t.info.run_id for t in trials_of(tracking, parent_id) if t.info.status == "FINISHED"
    }
    assert {t.info.run_id for t in done} <= finished_ids
    assert best_of(tracking, parent_id, tmp_path) == best_of(tracking, reference_id, tmp_path)
