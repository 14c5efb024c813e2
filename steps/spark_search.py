"""``hpo``'s trials on Spark: hyperopt's ``SparkTrials``, one Spark task per trial (shared).

Imported only when ``spark_master`` is set. hyperopt schedules: TPE suggests on the driver, and
``SparkTrials`` runs each suggested trial as a one-task Spark job, up to ``parallelism`` at once.
This module only makes a trial on an executor the same as a trial in process:

- **Which trial am I?** ``SparkTrials`` calls the objective with the resolved params only. The
  objective (``SparkObjective``) is pickled on the driver when Spark ships a trial's task, after
  hyperopt has put that trial in the ``Trials``; its ``__getstate__`` then snapshots every trial
  not yet finished as {canonical JSON of its resolved params: [(trial id, raw vals)]}, and the
  executor looks its params up. Two pending trials with identical params (possible in the
  random forest's integer space) share one entry: the executor tries each trial id in turn, and
  the trial-number check of ``TrialLogger`` (another run of that trial started first) sends it
  to the next, leaving its run of the taken id KILLED.
- **Pruning**: the same snapshot carries the trials finished at dispatch time, from which the
  executor computes the trial's rungs (serial search: trials 0..k-1).
- **Tracking**: executors build their own client from the tracking URI and credentials the
  driver passes (``tracking_env``): nothing is assumed about their environment.
- **Data**: train and val (CSR + y) are broadcast once (each executor fetches them once);
  a Python worker unpickles them and builds XGBoost's DMatrix once (``worker_splits``, keyed
  by a name the driver gives the broadcast) and reuses them while Spark reuses the worker.
- **Code**: the ``steps`` package is zipped and shipped with ``addPyFile`` (``zip_code``).
- **Threads**: each trial trains with ``trial_threads(cores, parallelism)`` threads (XGBoost's
  global ``nthread``; joblib's CPU count for the random forest), outside its params.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from steps.errors import UserError
from steps.models import Split
from steps.spark import is_local_master

log = logging.getLogger(__name__)

SPARK_MASTER_TAG = "spark.master"
SPARK_PARALLELISM_TAG = "spark.parallelism"
SPARK_TRIAL_THREADS_TAG = "spark.trial_threads"
SPARK_APP_ID_TAG = "spark.app_id"
# What an MLflow client reads from its environment to reach and authenticate to a store.
TRACKING_ENV_VARS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)
LOCAL_STORE_SCHEMES = ("", "file", "sqlite")
TEAM_SERVER_HINT = (
    "run a tracking server they can reach and point MLFLOW_TRACKING_URI at it (README, "
    "'Tracking: one person, a local server, a team server': the team server, scenario 3)"
)


def check_spark_settings(spark_master: str, parallelism: int | None, resume: bool) -> None:
    """The rules on ``spark_master`` and ``parallelism`` alone (no Spark, no store)."""
    if spark_master:
        from steps.spark import validate_master

        validate_master(spark_master)
    if parallelism is not None and parallelism < 1:
        raise UserError(f"parallelism must be at least 1, got {parallelism}")
    if parallelism is not None and not spark_master:
        raise UserError(
            "parallelism applies to a search on Spark: give spark_master too (local[N], "
            "spark://host:port, ...), or leave parallelism empty"
        )
    if spark_master and resume:
        raise UserError(
            "resume_run_id cannot be combined with spark_master: a search is resumed in "
            "process, and only a search that ran in process can be resumed"
        )


def unreachable_tracking(spark_master: str, tracking_uri: str) -> str | None:
    """Why executors of ``spark_master`` cannot log to ``tracking_uri``; None if they can.

    ``local[N]`` runs executors in this process's machine, so any store will do; a cluster's
    executors run elsewhere and cannot open this machine's SQLite file or folder."""
    if not spark_master or is_local_master(spark_master):
        return None
    if tracking_uri == "databricks" or tracking_uri.startswith("databricks://"):
        return None  # a workspace's store: executors reach it as the driver does
    scheme = urlparse(tracking_uri).scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter: a local path
        scheme = ""
    if scheme not in LOCAL_STORE_SCHEMES:
        return None
    return (
        f"spark_master={spark_master}: the tracking store {tracking_uri or './mlruns'!r} is a "
        f"local file that executors on other machines cannot reach; {TEAM_SERVER_HINT}"
    )


def absolute_tracking_uri(tracking_uri: str) -> str:
    """``tracking_uri`` with a relative SQLite file or folder made absolute (executors may
    run in another working directory)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite" and tracking_uri.startswith("sqlite:///"):
        path = tracking_uri[len("sqlite:///") :]
        if path and not path.startswith("/") and path != ":memory:":
            return "sqlite:///" + str(Path(path).resolve())
        return tracking_uri
    if parsed.scheme in ("", "file") and not parsed.netloc:
        path = parsed.path if parsed.scheme else tracking_uri
        return Path(path or "mlruns").resolve().as_uri()
    return tracking_uri


def tracking_env(tracking_uri: str, environ: dict[str, str]) -> dict[str, str]:
    """What executors set before building their MLflow client: the URI and the credentials
    and TLS settings this process has."""
    env = {"MLFLOW_TRACKING_URI": absolute_tracking_uri(tracking_uri)}
    env |= {k: environ[k] for k in TRACKING_ENV_VARS if environ.get(k)}
    return env


def trial_threads(cores: int, parallelism: int) -> int:
    """Threads per trial so that ``parallelism`` trials on ``cores`` cores do not oversubscribe."""
    return max(1, cores // max(1, parallelism))


def params_key(params: dict[str, Any]) -> str:
    """Canonical JSON of resolved params (numpy scalars as Python numbers)."""
    return json.dumps(params, sort_keys=True, default=lambda v: v.item())


def zip_code(folder: Path) -> Path:
    """The ``steps`` package zipped into ``folder``, for every executor's Python path."""
    package = Path(__file__).resolve().parent
    archive = folder / "steps.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package.glob("*.py")):
            zf.write(path, f"steps/{path.name}")
    return archive


_WORKER_SPLITS: dict[str, tuple[Split, Split]] = {}


def worker_splits(key: str, data) -> tuple[Split, Split]:
    """This Python worker's train and val splits from broadcast ``data`` (named ``key`` by the
    driver), built once per search (the DMatrix too, cached in the ``Split``)."""
    if key not in _WORKER_SPLITS:
        _WORKER_SPLITS.clear()  # a worker reused by a later search keeps one search's data
        train_x, train_y, val_x, val_y = data.value
        _WORKER_SPLITS[key] = (Split(train_x, train_y), Split(val_x, val_y))
    return _WORKER_SPLITS[key]


# run(trial_id, vals, params, train, val, finished) -> a record with ``val_rmse``, or None
# when another task already runs that trial id (``TrialLogger``'s trial-number check).
ExecutorTrial = Callable[[int, dict, dict, Split, Split, list], Any]


@dataclass
class Ticket:
    trial_id: int
    vals: dict[str, list]


class SparkObjective:
    """hyperopt's objective for ``SparkTrials``: pickled on the driver per trial task (with a
    snapshot of the pending and finished trials), called on an executor."""

    def __init__(
        self,
        space: dict,
        run: ExecutorTrial,
        data,
        env: dict[str, str],
        threads: int,
    ):
        self.space = space
        self.run = run
        self.data = data  # Broadcast of (train X, train y, val X, val y)
        self.data_key = uuid.uuid4().hex  # names it in the workers' cache
        self.env = env
        self.threads = threads
        self.trials = None  # the driver's SparkTrials: never pickled
        self.pending: dict[str, list[Ticket]] = {}
        self.finished: list = []

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "trials"}
        if self.trials is not None:
            state["pending"], state["finished"] = self.snapshot()
        state["trials"] = None
        return state

    def snapshot(self) -> tuple[dict[str, list[Ticket]], list]:
        """Trials not yet finished, by params; records of those finished, by trial id."""
        from hyperopt import space_eval
        from hyperopt.base import JOB_STATE_DONE, JOB_STATE_NEW, JOB_STATE_RUNNING, spec_from_misc

        pending: dict[str, list[Ticket]] = {}
        finished = []
        for doc in list(self.trials.trials):
            if doc["state"] in (JOB_STATE_NEW, JOB_STATE_RUNNING):
                params = space_eval(self.space, spec_from_misc(doc["misc"]))
                ticket = Ticket(doc["tid"], doc["misc"]["vals"])
                pending.setdefault(params_key(params), []).append(ticket)
            elif doc["state"] == JOB_STATE_DONE and "record" in doc["result"]:
                finished.append(doc["result"]["record"])
        return pending, sorted(finished, key=lambda r: r.trial_id)

    def __call__(self, params: dict) -> dict:
        """On an executor: run and log the trial these params belong to."""
        from hyperopt import STATUS_FAIL, STATUS_OK

        os.environ.update(self.env)
        os.environ["LOKY_MAX_CPU_COUNT"] = str(self.threads)  # joblib's n_jobs=-1 (forests)
        try:
            import xgboost

            train, val = worker_splits(self.data_key, self.data)
            for ticket in self.pending.get(params_key(params), []):
                with xgboost.config_context(nthread=self.threads):
                    record = self.run(
                        ticket.trial_id, ticket.vals, params, train, val, self.finished
                    )
                if record is not None:
                    return {"status": STATUS_OK, "loss": record.val_rmse, "record": record}
            error = f"no pending trial of this search has the params {params_key(params)}"
        except Exception as exc:  # the trial's run is FAILED with its error; the search goes on
            error = f"{type(exc).__name__}: {exc}"
        return {"status": STATUS_FAIL, "error": error}


EXECUTOR_WAIT_SECONDS = 60.0


def cluster_cores(context, spark_master: str, wait: float = EXECUTOR_WAIT_SECONDS) -> int:
    """Cores the trials can use: ``local[N]``'s N; on a cluster, its executors' cores, read
    once at least one executor has registered (right after start-up Spark reports 2)."""
    if not is_local_master(spark_master):
        deadline = time.monotonic() + wait
        # the driver counts among the block managers: more than one means an executor is up
        while context._jsc.sc().getExecutorMemoryStatus().size() < 2:
            if time.monotonic() > deadline:
                raise UserError(
                    f"no Spark executor registered with {spark_master} within {wait:.0f} s: "
                    "is a worker running and does it have free cores and memory?"
                )
            time.sleep(0.5)
    return context.defaultParallelism


@dataclass
class SparkSide:
    """What a search sets up on Spark before its first trial."""

    parallelism: int
    threads: int
    data: Any  # Broadcast of (train X, train y, val X, val y)
    env: dict[str, str]
    tags: dict[str, str]


def start_search(
    session, spark_master: str, parallelism: int | None, train: Split, val: Split, code: Path
) -> SparkSide:
    """Threads per trial, the data broadcast, the code shipped, what executors need to log."""
    import mlflow

    context = session.sparkContext
    if context.getConf().get("spark.speculation", "false").strip().lower() == "true":
        raise UserError(
            "spark.speculation is on: a trial would run twice at once and log two runs; "
            "turn it off for the search (a retry after a failure is fine)"
        )
    cores = cluster_cores(context, spark_master)
    parallelism = parallelism or cores
    # local[N] trials share this machine's cores; a cluster's, its executors' cores
    machine = (os.cpu_count() or 1) if is_local_master(spark_master) else cores
    threads = trial_threads(machine, parallelism)
    context.addPyFile(str(code))
    data = context.broadcast((train.X, train.y, val.X, val.y))
    env = tracking_env(mlflow.get_tracking_uri(), dict(os.environ))
    tags = {
        SPARK_MASTER_TAG: spark_master,
        SPARK_PARALLELISM_TAG: str(parallelism),
        SPARK_TRIAL_THREADS_TAG: str(threads),
        SPARK_APP_ID_TAG: context.applicationId,
    }
    log.info(
        "spark: %d at once on %s (%d cores), %d threads per trial",
        parallelism,
        spark_master,
        cores,
        threads,
    )
    return SparkSide(parallelism, threads, data, env, tags)


def collect_records(trials) -> list:
    """The records of the trials that succeeded, by trial id; ``UserError`` if none did."""
    from hyperopt import STATUS_OK

    records, errors = [], []
    for doc in trials.trials:
        result = doc.get("result") or {}
        if result.get("status") == STATUS_OK and "record" in result:
            records.append(result["record"])
        else:
            error = result.get("error") or str((doc.get("misc") or {}).get("error"))
            errors.append(f"trial {doc['tid']}: {error}")
            log.warning("trial %d failed on Spark: %s", doc["tid"], error)
    if not records:
        raise UserError(
            f"all {len(errors)} trials failed on Spark; first error: "
            + (errors[0] if errors else "none recorded")
        )
    return sorted(records, key=lambda r: r.trial_id)


def run_on_spark(
    spark_master: str,
    parallelism: int | None,
    space: dict,
    run: ExecutorTrial,
    train: Split,
    val: Split,
    n_trials: int,
    rstate,
    on_session: Callable[[dict[str, str]], None] = lambda tags: None,
) -> list:
    """Run ``n_trials`` TPE trials on Spark; the records of those that succeeded, by trial id.

    ``on_session`` gets the tags describing the Spark side (master, parallelism, threads, app
    id) once the session is up, before any trial. Raises ``UserError`` if every trial failed.
    """
    from hyperopt import fmin, tpe
    from hyperopt.exceptions import AllTrialsFailed
    from hyperopt.spark import SparkTrials

    from steps.spark import spark_session

    session = spark_session(spark_master, "nyc-taxi-duration hpo")
    with tempfile.TemporaryDirectory(prefix="nyc-taxi-steps-") as folder:
        try:
            side = start_search(
                session, spark_master, parallelism, train, val, zip_code(Path(folder))
            )
            on_session(side.tags)
            objective = SparkObjective(space, run, side.data, side.env, side.threads)
            trials = SparkTrials(parallelism=side.parallelism, spark_session=session)
            objective.trials = trials
            with contextlib.suppress(AllTrialsFailed):  # reported below, with the first error
                fmin(
                    objective,
                    space,
                    algo=tpe.suggest,
                    max_evals=n_trials,
                    trials=trials,
                    rstate=rstate,
                    show_progressbar=False,
                    return_argmin=False,
                )
            side.data.destroy()
        finally:
            session.stop()
    return collect_records(trials)
