"""Entry point ``hpo``: a hyperopt TPE search, one nested MLflow run per trial.

Reads from the preprocess run ``preprocess_run_id`` (default: the latest finished one in the
experiment): ``data/train.parquet``, ``data/val.parquet``, ``featurizer/featurizer.json``.

Writes to its run (the search's parent), named ``hpo <model>`` (``hpo <model> (resume)``):
- params ``preprocess_run_id``, ``model``, ``max_evals``, ``seed``, ``num_boost_round``,
  ``early_stopping_rounds``, ``resume_run_id``, ``prune`` (as given; ``mlflow run`` logs them),
  ``spark_master``, ``parallelism``
- tags ``step=hpo``, ``preprocess_run_id`` (the resolved ID), ``model``, ``best_trial_run_id``;
  on Spark also ``spark.master``, ``spark.parallelism``, ``spark.trial_threads``,
  ``spark.app_id`` (``steps.spark_search``)
- metrics ``best_val_rmse``, ``n_trials``, ``search_seconds``
- artifact ``best_params.json``: the best trial's typed ``params`` and raw hyperopt ``vals``,
  its ``val_rmse``, ``trial_id``, ``trial_run_id``, and the search settings

Each trial is a child run (tag ``mlflow.parentRunId``) named ``trial-NNN`` with:
- params: the resolved hyperparameters; tags ``trial_id``, ``model``, ``trial.vals``
  (hyperopt's raw ``vals``, JSON) and ``trial.params`` (resolved params, JSON)
- metrics ``val_rmse``, ``train_seconds`` and, for XGBoost, ``best_iteration`` and the
  validation curve ``val_rmse_curve`` (XGBoost's RMSE as metric history, step = rounds trained,
  1, 2, ...)
- a trial stopped by pruning (``prune``, XGBoost only, ``steps.pruning``) is FINISHED too,
  tagged ``pruned=true`` and ``pruned.reason``, with metric ``pruned_round`` (rounds trained);
  its ``val_rmse`` (the loss TPE is told) is that of its trees up to then. Which trials are
  pruned depends only on earlier trials' curves: trial k's rung thresholds come from trials
  0..k-1 (``pruning_thresholds``), reloaded from the metric history when resuming.
- a trial that raised is FAILED, tagged ``trial.error`` (``type: message``).

With ``spark_master`` set, hyperopt's ``SparkTrials`` runs the trials on Spark executors, up to
``parallelism`` at once (``steps.spark_search``); each is logged as above by the executor
(``ExecutorTrial``), its rungs from the trials finished when it was dispatched. A failed trial
does not stop a Spark search. A search that ran on Spark cannot be resumed.

A resumed search (``resume_run_id``) nests its new trials under the original parent, which ends
FINISHED with the results above; the resuming run is tagged ``resumed_from`` and logs
``best_val_rmse`` and ``best_params.json`` too. Search settings come from the original run.

One process at a time runs a search (MLflow has no locks, so this is a protocol on tags of the
search's parent run):
- The live search (the original, or the resumer that took it over) holds tag
  ``hpo.heartbeat`` = ``{"run_id", "time" (epoch s), "host", "pid", "pid_ns"}`` of its process,
  refreshed before each trial and every ``stale / 4`` seconds (at most 20 s) from a background
  thread, and deleted when it ends (finished or failed); only a killed process (or a store that
  went away) leaves it behind.
- A heartbeat or claim is live while younger than the staleness (``HEARTBEAT_STALE_SECONDS`` =
  90 s; the environment variable ``NYC_TAXI_HPO_STALE_SECONDS`` overrides it), unless it names
  this host and pid namespace and a pid that no longer exists or is a zombie (then it is dead
  at once). A resumer refuses while the heartbeat is live: "search <id> is being run by <run>
  (host, pid, heartbeat N s ago)". After a crash on another machine, wait that long.
- Otherwise it writes its claim, tag ``hpo.claim.<its run id>`` (same JSON), and re-reads the
  parent (``claim_verdict``): no other live claim -> it proceeds and writes the heartbeat at
  once; a live claim earlier than its own (time, run ID) -> it withdraws and refuses; earliest
  among others -> it waits (up to 10 s) for them to withdraw, and refuses if they do not. Every
  claimant writes before it reads, so of any two at least one sees the other: at most one
  proceeds.
- Second line: after creating trial k's run, a search looks for another live (running or
  finished) run of trial k under the same parent that started before its own; if there is
  one, it marks its run KILLED and stops ("trial k of search ... was already started by ...").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import click
import mlflow
import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, tpe
from hyperopt.base import JOB_STATE_DONE
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from steps import options
from steps.artifacts import BEST_PARAMS_PATH, load_preprocessed
from steps.cli import StepCommand, setup_logging
from steps.errors import UserError
from steps.models import (
    MODEL_KINDS,
    Split,
    XGBoostSettings,
    search_space,
    train_and_evaluate,
)
from steps.pruning import DEFAULT_POLICY, RecordedCurve, rung_thresholds
from steps.spark_search import (
    SPARK_MASTER_TAG,
    check_spark_settings,
    run_on_spark,
    unreachable_tracking,
)
from steps.tracking import (
    CURVE_METRIC,
    PRUNE_REASON_TAG,
    PRUNED_ROUND_METRIC,
    PRUNED_TAG,
    RESUMED_FROM_TAG,
    SOURCE_CLEAN_TAG,
    SPARK_ATTEMPT_TAG,
    SPARK_TASK_TAG,
    TRIAL_ERROR_TAG,
    TRIAL_ID_TAG,
    TRIAL_PARAMS_TAG,
    TRIAL_VALS_TAG,
    get_step_run,
    log_params_missing,
    resolve_upstream,
    set_run_name,
    source_differs,
    step_run,
)

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
HEARTBEAT_TAG = "hpo.heartbeat"
CLAIM_TAG_PREFIX = "hpo.claim."
HEARTBEAT_STALE_SECONDS = 90.0
STALE_SECONDS_ENV = "NYC_TAXI_HPO_STALE_SECONDS"
CLAIM_WAIT_SECONDS = 10.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HpoConfig:
    preprocess_run_id: str | None = None
    model: str = "xgboost"
    max_evals: int = 50
    seed: int = 42
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
    resume_run_id: str | None = None
    prune: bool = True  # XGBoost only: stop unpromising trials at rungs (steps.pruning)
    spark_master: str = ""  # empty: trials in this process; else on Spark (steps.spark_search)
    parallelism: int | None = None  # trials at once on Spark; None: the cluster's cores

    def validate(self) -> None:
        check_spark_settings(self.spark_master, self.parallelism, bool(self.resume_run_id))
        if self.model not in MODEL_KINDS:
            raise UserError(f"model must be one of {', '.join(MODEL_KINDS)}, got {self.model!r}")
        if self.max_evals < 1:
            raise UserError(f"max_evals must be at least 1, got {self.max_evals}")
        if self.num_boost_round < 1:
            raise UserError(f"num_boost_round must be at least 1, got {self.num_boost_round}")
        if self.early_stopping_rounds < 0:
            raise UserError(
                f"early_stopping_rounds must be 0 (off) or more, got {self.early_stopping_rounds}"
            )

    def run_name(self) -> str:
        """``hpo xgboost``; ``hpo xgboost (resume)`` for a run that resumes a search."""
        return f"hpo {self.model}" + (" (resume)" if self.resume_run_id else "")

    @property
    def n_trials(self) -> int:
        return 1 if search_space(self.model, self.seed) is None else self.max_evals

    def params(self) -> dict[str, Any]:
        return {
            "preprocess_run_id": self.preprocess_run_id or "",
            "model": self.model,
            "max_evals": self.max_evals,
            "seed": self.seed,
            "num_boost_round": self.num_boost_round,
            "early_stopping_rounds": self.early_stopping_rounds,
            "resume_run_id": self.resume_run_id or "",
            "prune": str(self.prune).lower(),
            "spark_master": self.spark_master,
            "parallelism": "" if self.parallelism is None else self.parallelism,
        }


@dataclass(frozen=True)
class TrialRecord:
    trial_id: int
    vals: dict[str, list]  # hyperopt's raw vals: label -> [value] (or [] if inactive)
    params: dict[str, Any]  # resolved, typed
    val_rmse: float
    run_id: str
    best_iteration: int | None = None
    curve: tuple[float, ...] = ()  # XGBoost: validation RMSE after 1, 2, ... rounds
    pruned_round: int | None = None  # rounds trained when pruning stopped it


@dataclass(frozen=True)
class HpoResult:
    run_id: str  # the search's parent (the original one when resumed)
    best: TrialRecord
    trials: list[TrialRecord]
    reused_trials: int


def load_training_data(preprocess_run_id: str) -> tuple[Split, Split]:
    """Train and val splits of a preprocess run, featurised with its fitted featurizer."""
    featurizer, frames = load_preprocessed(preprocess_run_id, ("train", "val"))
    return tuple(
        Split(featurizer.transform(f), f["duration"].to_numpy(dtype=np.float64))
        for f in frames.values()
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


class SearchTaken(UserError):
    """Another process runs this search: this one stops without touching the search's state."""


@dataclass(frozen=True)
class Claim:
    run_id: str
    time: float  # epoch seconds
    host: str = ""
    pid: int = 0
    pid_ns: str = ""  # the pid namespace: a pid means this process only within it

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Claim:
        data = json.loads(text)
        return cls(
            str(data["run_id"]),
            float(data["time"]),
            str(data["host"]),
            int(data["pid"]),
            str(data.get("pid_ns", "")),
        )


def stale_seconds() -> float:
    """How old a heartbeat or claim must be to count as dead (``NYC_TAXI_HPO_STALE_SECONDS``)."""
    value = os.environ.get(STALE_SECONDS_ENV, "")
    try:
        seconds = float(value) if value else HEARTBEAT_STALE_SECONDS
    except ValueError:
        raise UserError(f"{STALE_SECONDS_ENV} must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise UserError(f"{STALE_SECONDS_ENV} must be positive, got {value!r}")
    return seconds


def claim_verdict(
    search_id: str,
    me: Claim,
    heartbeat: Claim | None,
    claims: list[Claim],
    now: float,
    stale: float,
    dead: frozenset[str] = frozenset(),
) -> tuple[str, str]:
    """``("proceed" | "wait" | "refuse", reason)`` for ``me``, who has written its claim and
    read back the parent's ``heartbeat`` and ``claims`` (its own among them). A heartbeat or
    claim is live while younger than ``stale`` seconds, unless its run is in ``dead`` (its
    process is known to be gone)."""

    def live(c: Claim) -> bool:
        return c.run_id != me.run_id and c.run_id not in dead and now - c.time < stale

    if heartbeat is not None and live(heartbeat):
        return "refuse", (
            f"search {search_id} is being run by {heartbeat.run_id} (host {heartbeat.host}, pid "
            f"{heartbeat.pid}, heartbeat {now - heartbeat.time:.0f} s ago); resume it once that "
            f"process is gone (on the same host) or its heartbeat is {stale:.0f} s old"
        )
    rivals = [c for c in claims if live(c)]
    if not rivals:
        return "proceed", "no other live claim"
    earlier = [c for c in rivals if (c.time, c.run_id) < (me.time, me.run_id)]
    if earlier:
        first = min(earlier, key=lambda c: (c.time, c.run_id))
        return "refuse", (
            f"search {search_id} is being resumed by {first.run_id} (claimed "
            f"{now - first.time:.0f} s ago, before this run)"
        )
    return "wait", f"search {search_id}: waiting for {len(rivals)} later claim(s) to withdraw"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def this_process(run_id: str) -> Claim:
    """A claim (or heartbeat) by this process, for run ``run_id``, now."""
    return Claim(run_id, time.time(), socket.gethostname(), os.getpid(), _pid_namespace())


def _process_gone(claim: Claim) -> bool:
    """True only when ``claim``'s process ran on this host, in this pid namespace, and no
    longer exists (or is a zombie); anything unsure counts as alive."""
    if claim.pid <= 0 or (claim.host, claim.pid_ns) != (socket.gethostname(), _pid_namespace()):
        return False
    try:
        os.kill(claim.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    try:
        stat = Path(f"/proc/{claim.pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _read_lease_tags(tags: dict[str, str]) -> tuple[Claim | None, list[Claim], frozenset[str]]:
    """The heartbeat, the claims, and the run IDs among them whose process is gone."""
    heartbeat = None
    if HEARTBEAT_TAG in tags:
        try:
            heartbeat = Claim.from_json(tags[HEARTBEAT_TAG])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable %s tag: %r", HEARTBEAT_TAG, tags[HEARTBEAT_TAG])
    claims = []
    for key, value in tags.items():
        if key.startswith(CLAIM_TAG_PREFIX):
            try:
                claims.append(Claim.from_json(value))
            except (ValueError, KeyError, TypeError):
                continue
    everyone = claims + ([heartbeat] if heartbeat else [])
    return heartbeat, claims, frozenset(c.run_id for c in everyone if _process_gone(c))


class SearchLease:
    """The right of one process (run ``owner_run_id``) to run the search ``parent_run_id``:
    the heartbeat, and for a resumer its claim (see the module docstring)."""

    def __init__(self, parent_run_id: str, owner_run_id: str, stale: float):
        self.client = MlflowClient()
        self.parent_run_id = parent_run_id
        self.owner_run_id = owner_run_id
        self.stale = stale
        self.interval = min(20.0, stale / 4)
        self._claimed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self) -> None:
        """Take over the search, or raise ``SearchTaken`` (the claim withdrawn)."""
        heartbeat, _, dead = _read_lease_tags(self._tags())
        me = self._me()
        verdict, reason = claim_verdict(
            self.parent_run_id, me, heartbeat, [], me.time, self.stale, dead
        )
        if verdict == "refuse":  # do not even claim while the search is visibly alive
            raise SearchTaken(reason)
        self.client.set_tag(self.parent_run_id, CLAIM_TAG_PREFIX + me.run_id, me.to_json())
        self._claimed = True
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while True:
            heartbeat, claims, dead = _read_lease_tags(self._tags())
            verdict, reason = claim_verdict(
                self.parent_run_id, me, heartbeat, claims, time.time(), self.stale, dead
            )
            if verdict == "proceed":
                break
            if verdict == "refuse" or time.monotonic() > deadline:
                self._withdraw()
                if verdict == "wait":
                    reason = (
                        f"search {self.parent_run_id} was claimed by other resumers at the same "
                        f"time, which did not withdraw within {CLAIM_WAIT_SECONDS:.0f} s; try again"
                    )
                raise SearchTaken(reason)
            time.sleep(0.5)
        self.beat()

    def _me(self) -> Claim:
        return this_process(self.owner_run_id)

    def _tags(self) -> dict[str, str]:
        return self.client.get_run(self.parent_run_id).data.tags

    def beat(self) -> None:
        self.client.set_tag(self.parent_run_id, HEARTBEAT_TAG, self._me().to_json())

    def __enter__(self) -> SearchLease:
        self.beat()
        self._thread = threading.Thread(target=self._beat_forever, daemon=True)
        self._thread.start()
        return self

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # a missed beat is retried; the search goes on
                log.warning("heartbeat of search %s failed: %s", self.parent_run_id, exc)

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)  # a beat stuck on an unreachable server: give up
        try:
            heartbeat, _, _ = _read_lease_tags(self._tags())
        except MlflowException as exc:  # the store is gone: the heartbeat goes stale instead
            log.warning("could not release search %s: %s", self.parent_run_id, exc)
            return
        if heartbeat is not None and heartbeat.run_id == self.owner_run_id:
            self._delete_tag(HEARTBEAT_TAG)
        self._withdraw()

    def _withdraw(self) -> None:
        if self._claimed:
            self._delete_tag(CLAIM_TAG_PREFIX + self.owner_run_id)
            self._claimed = False

    def _delete_tag(self, key: str) -> None:
        try:
            self.client.delete_tag(self.parent_run_id, key)
        except MlflowException as exc:
            log.warning("could not delete tag %s of search %s: %s", key, self.parent_run_id, exc)


@dataclass(frozen=True)
class TaskAttempt:
    """The Spark task attempt running a trial. Spark retries a task (same stage and partition,
    a higher attempt) only after the earlier attempt failed or was given up for lost, so an
    earlier attempt's run of the same trial is a dead one, not a rival. (An attempt given up
    for lost may still be running on an executor that missed its heartbeats: ``run_trial``
    re-reads its run before FINISHED. Speculative execution, two live attempts by design, is
    refused in ``spark_search.start_search``.)"""

    task: str
    attempt: int

    @staticmethod
    def current() -> TaskAttempt | None:
        """The attempt running this code, ``None`` outside a Spark task."""
        from pyspark import TaskContext

        context = TaskContext.get()
        if context is None:
            return None
        return TaskAttempt(f"{context.stageId()}.{context.partitionId()}", context.attemptNumber())

    def supersedes(self, run) -> bool:
        """``run`` was made by an earlier attempt of this same task."""
        tags = run.data.tags
        return (
            tags.get(SPARK_TASK_TAG) == self.task
            and int(tags.get(SPARK_ATTEMPT_TAG, self.attempt)) < self.attempt
        )


class TrialLogger:
    """Creates one child run per trial under ``parent_run_id`` and logs it in one batch."""

    def __init__(
        self,
        parent_run_id: str,
        experiment_id: str,
        model: str,
        before_trial: Callable[[], None] = lambda: None,
        attempt: TaskAttempt | None = None,
    ):
        self.client = MlflowClient()
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id
        self.model = model
        self.before_trial = before_trial  # the heartbeat
        self.attempt = attempt  # on Spark: the task attempt, tagged on each trial run

    def run_trial(
        self,
        trial_id: int,
        vals: dict,
        params: dict,
        train: Split,
        val: Split,
        settings: XGBoostSettings,
        rungs: dict[int, float] | None = None,
    ) -> TrialRecord:
        """Train and log trial ``trial_id``; ``rungs``: its pruning thresholds
        (``pruning_thresholds``), ``None`` to train every round."""
        vals, params = _jsonable(vals), _jsonable(params)
        self.before_trial()
        tags = {
            MLFLOW_PARENT_RUN_ID: self.parent_run_id,
            MLFLOW_RUN_NAME: f"trial-{trial_id:03d}",
            TRIAL_ID_TAG: str(trial_id),
            "model": self.model,
        }
        if self.attempt:
            tags |= {
                SPARK_TASK_TAG: self.attempt.task,
                SPARK_ATTEMPT_TAG: str(self.attempt.attempt),
            }
        run = self.client.create_run(
            self.experiment_id, tags=tags, run_name=f"trial-{trial_id:03d}"
        )
        run_id = run.info.run_id
        adopted = self._check_no_rival(trial_id, run)
        if adopted is not None:
            return adopted
        try:
            result = train_and_evaluate(self.model, params, train, val, settings, rungs)
            metrics = {"val_rmse": result.val_rmse, "train_seconds": result.train_seconds}
            if result.best_iteration is not None:
                metrics["best_iteration"] = result.best_iteration
            tags = {TRIAL_VALS_TAG: json.dumps(vals), TRIAL_PARAMS_TAG: json.dumps(params)}
            if result.pruned_round is not None:
                metrics[PRUNED_ROUND_METRIC] = result.pruned_round
                tags |= {PRUNED_TAG: "true", PRUNE_REASON_TAG: result.prune_reason}
            now = int(time.time() * 1000)
            logged = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
            logged += [Metric(CURVE_METRIC, v, now, i + 1) for i, v in enumerate(result.curve)]
            for start in range(0, len(logged), MAX_METRICS_PER_BATCH):
                first = start == 0
                self.client.log_batch(
                    run_id,
                    metrics=logged[start : start + MAX_METRICS_PER_BATCH],
                    params=[Param(k, str(v)) for k, v in params.items()] if first else [],
                    tags=[RunTag(k, v) for k, v in tags.items()] if first else [],
                )
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the store may be what failed
                error = f"{type(exc).__name__}: {exc}"[:5000]
                self.client.set_tag(run_id, TRIAL_ERROR_TAG, error)
            self.client.set_terminated(run_id, "FAILED")
            raise
        if self.attempt and TRIAL_ERROR_TAG in self.client.get_run(run_id).data.tags:
            # Spark gave this attempt up for lost and a retry has taken the trial over
            raise SearchTaken(f"trial {trial_id}: a retry of its Spark task took run {run_id} over")
        self.client.set_terminated(run_id, "FINISHED")
        return TrialRecord(
            trial_id,
            vals,
            params,
            result.val_rmse,
            run_id,
            result.best_iteration,
            result.curve,
            result.pruned_round,
        )

    def _check_no_rival(self, trial_id: int, run) -> TrialRecord | None:
        """Stop if another process started trial ``trial_id`` of this search before us.

        On Spark, runs of the trial by earlier attempts of our own task are dead, not rivals:
        one that finished (its attempt died before reporting) is adopted, its record returned
        and our run KILLED; one left RUNNING is marked FAILED and the trial trains again."""
        same_trial = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{self.parent_run_id}' "
            f"and tags.{TRIAL_ID_TAG} = '{trial_id}'",
            run_view_type=mlflow.entities.ViewType.ALL,
        )
        mine = (run.info.start_time, run.info.run_id)
        live = [r for r in same_trial if r.info.status in ("RUNNING", "SCHEDULED", "FINISHED")]
        dead = [r for r in live if self.attempt and self.attempt.supersedes(r)]
        done = [r for r in dead if finished_trial(r)]
        if done:
            log.warning(
                "trial run %s finished before its Spark task died: adopted", done[0].info.run_id
            )
            self.client.set_terminated(run.info.run_id, "KILLED")
            return trial_record(self.client, done[0])
        for r in dead:
            log.warning(
                "trial run %s: its Spark task was retried: marking it FAILED", r.info.run_id
            )
            reason = f"lost: Spark retried its task (attempt {self.attempt.attempt} took over)"
            self.client.set_tag(r.info.run_id, TRIAL_ERROR_TAG, reason)
            self.client.set_terminated(r.info.run_id, "FAILED")
        dead_ids = {r.info.run_id for r in dead}
        rivals = [
            r
            for r in live
            if r.info.run_id not in dead_ids and (r.info.start_time, r.info.run_id) < mine
        ]
        if rivals:
            self.client.set_terminated(run.info.run_id, "KILLED")
            raise SearchTaken(
                f"trial {trial_id} of search {self.parent_run_id} was already started by run "
                f"{rivals[0].info.run_id}: another process is running this search; this one stops"
            )
        return None


def reload_trials(parent_run_id: str, experiment_id: str) -> list[TrialRecord]:
    """The finished trials 0..k-1 of a search, in order; marks unfinished trials KILLED."""
    client = MlflowClient()
    children = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_run_id}'",
        run_view_type=mlflow.entities.ViewType.ALL,
        max_results=50000,
    )
    finished: dict[int, TrialRecord] = {}
    for child in children:
        status = child.info.status
        if status in ("RUNNING", "SCHEDULED"):
            log.info(
                "trial run %s was in flight when the search stopped: marking it KILLED",
                child.info.run_id,
            )
            client.set_terminated(child.info.run_id, "KILLED")
            continue
        if not finished_trial(child):
            continue
        trial_id = int(child.data.tags[TRIAL_ID_TAG])
        if trial_id not in finished:
            finished[trial_id] = trial_record(client, child)
    records = []
    while len(records) in finished:  # a contiguous prefix: trial k was suggested after 0..k-1
        records.append(finished[len(records)])
    return records


def finished_trial(run) -> bool:
    """``run`` is a trial that ran to the end and logged its result."""
    tags, metrics = run.data.tags, run.data.metrics
    return run.info.status == "FINISHED" and "val_rmse" in metrics and TRIAL_VALS_TAG in tags


def trial_record(client: MlflowClient, run) -> TrialRecord:
    """The record of a finished trial run, as the search made it (curve reloaded)."""
    tags, metrics = run.data.tags, run.data.metrics
    best_iteration = metrics.get("best_iteration")
    pruned_round = metrics.get(PRUNED_ROUND_METRIC)
    return TrialRecord(
        trial_id=int(tags[TRIAL_ID_TAG]),
        vals=json.loads(tags[TRIAL_VALS_TAG]),
        params=json.loads(tags[TRIAL_PARAMS_TAG]),
        val_rmse=metrics["val_rmse"],
        run_id=run.info.run_id,
        best_iteration=None if best_iteration is None else int(best_iteration),
        curve=_reload_curve(client, run) if CURVE_METRIC in metrics else (),
        pruned_round=None if pruned_round is None else int(pruned_round),
    )


def _reload_curve(client: MlflowClient, run) -> tuple[float, ...]:
    """A trial's validation curve from its metric history, in round order."""
    history = client.get_metric_history(run.info.run_id, CURVE_METRIC)
    by_round = {m.step: m.value for m in history}
    if sorted(by_round) != list(range(1, len(by_round) + 1)):
        raise UserError(f"trial run {run.info.run_id}: its {CURVE_METRIC} has missing rounds")
    return tuple(by_round[r] for r in range(1, len(by_round) + 1))


def pruning_thresholds(config: HpoConfig, earlier: list[TrialRecord]) -> dict[int, float] | None:
    """The rung thresholds for the next trial, from the ``earlier`` trials' recorded curves
    (serial search: trials 0..k-1); ``None`` when this search does not prune."""
    if not config.prune or config.model != "xgboost":
        return None
    curves = [RecordedCurve(r.curve, r.pruned_round is not None) for r in earlier]
    return rung_thresholds(curves, config.num_boost_round, DEFAULT_POLICY)


def rebuild_hyperopt_trials(records: list[TrialRecord]) -> Trials:
    """A hyperopt ``Trials`` holding ``records`` as done trials, as if they had just run."""
    trials = Trials()
    for record in records:
        (tid,) = trials.new_trial_ids(1)
        assert tid == record.trial_id
        misc = {
            "tid": tid,
            "cmd": ("domain_attachment", "FMinIter_Domain"),
            "workdir": None,
            "idxs": {label: [tid] if v else [] for label, v in record.vals.items()},
            "vals": record.vals,
        }
        (doc,) = trials.new_trial_docs([tid], [None], [{"status": "new"}], [misc])
        doc["state"] = JOB_STATE_DONE
        doc["result"] = {"loss": record.val_rmse, "status": STATUS_OK}
        trials.insert_trial_docs([doc])
    trials.refresh()
    return trials


@dataclass(frozen=True)
class ExecutorTrial:
    """One trial as a Spark executor runs it (plain data, pickled to executors): logged under
    ``parent_run_id`` by a ``TrialLogger`` built there from the environment the driver passed;
    its rungs come from the trials finished when it was dispatched."""

    config: HpoConfig
    parent_run_id: str
    experiment_id: str

    def __call__(self, trial_id, vals, params, train, val, finished) -> TrialRecord | None:
        config = self.config
        settings = XGBoostSettings(config.num_boost_round, config.early_stopping_rounds)
        logger = TrialLogger(
            self.parent_run_id, self.experiment_id, config.model, attempt=TaskAttempt.current()
        )
        rungs = pruning_thresholds(config, finished)
        try:
            return logger.run_trial(trial_id, vals, params, train, val, settings, rungs)
        except SearchTaken:  # another task runs this trial id (identical params): not ours
            return None


def _fail_lost_trials(client: MlflowClient, parent_run_id: str, experiment_id: str) -> None:
    """After a Spark search: a trial run still RUNNING belongs to a task attempt whose Python
    worker died (Spark retried the task elsewhere, or gave up): mark it FAILED, with why."""
    lost = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_run_id}' "
        "and attributes.status = 'RUNNING'",
        run_view_type=mlflow.entities.ViewType.ALL,
        max_results=50000,
    )
    for run in lost:
        log.warning("trial run %s was lost on Spark: marking it FAILED", run.info.run_id)
        client.set_tag(run.info.run_id, TRIAL_ERROR_TAG, "lost: its Spark task never finished")
        client.set_terminated(run.info.run_id, "FAILED")


def search(
    config: HpoConfig,
    train: Split,
    val: Split,
    trial_logger: TrialLogger,
    reloaded: list[TrialRecord],
) -> list[TrialRecord]:
    """Run trials up to ``config.n_trials``, after the ``reloaded`` ones; all trials in order."""
    settings = XGBoostSettings(config.num_boost_round, config.early_stopping_rounds)
    records = list(reloaded)
    space = search_space(config.model, config.seed)
    if space is None:  # nothing to tune: one plain trial
        if not records:
            records.append(trial_logger.run_trial(0, {}, {}, train, val, settings))
        return records

    if config.spark_master:  # resume is refused with Spark: nothing was reloaded
        executor_trial = ExecutorTrial(
            config, trial_logger.parent_run_id, trial_logger.experiment_id
        )

        def tag_parent(tags: dict[str, str]) -> None:
            tagged = [RunTag(k, v) for k, v in tags.items()]
            trial_logger.client.log_batch(trial_logger.parent_run_id, tags=tagged)

        try:
            return run_on_spark(
                config.spark_master,
                config.parallelism,
                space,
                executor_trial,
                train,
                val,
                config.n_trials,
                np.random.default_rng(config.seed),
                on_session=tag_parent,
            )
        finally:
            _fail_lost_trials(
                trial_logger.client, trial_logger.parent_run_id, trial_logger.experiment_id
            )

    trials = rebuild_hyperopt_trials(reloaded)
    rstate = np.random.default_rng(config.seed)
    for _ in reloaded:  # fmin draws one seed per suggested trial
        rstate.integers(2**31 - 1)

    def objective(params: dict) -> dict:
        doc = trials.trials[-1]  # the trial being evaluated (serial search)
        rungs = pruning_thresholds(config, records)  # records: trials 0..k-1
        record = trial_logger.run_trial(
            doc["tid"], doc["misc"]["vals"], params, train, val, settings, rungs
        )
        records.append(record)
        return {"loss": record.val_rmse, "status": STATUS_OK}

    if len(records) < config.n_trials:
        fmin(
            objective,
            space,
            algo=tpe.suggest,
            max_evals=config.n_trials,
            trials=trials,
            rstate=rstate,
            show_progressbar=True,
        )
    return records


def best_of(records: list[TrialRecord]) -> TrialRecord:
    return min(records, key=lambda r: (r.val_rmse, r.trial_id))


def _best_params_payload(config: HpoConfig, best: TrialRecord, parent_run_id: str) -> dict:
    return {
        "model": config.model,
        "params": best.params,
        "vals": best.vals,
        "val_rmse": best.val_rmse,
        "trial_id": best.trial_id,
        "trial_run_id": best.run_id,
        "best_iteration": best.best_iteration,
        "hpo_run_id": parent_run_id,
        "settings": {k: v for k, v in asdict(config).items() if k != "resume_run_id"},
    }


def _original_config(run, given: HpoConfig) -> HpoConfig:
    p = run.data.params
    original = HpoConfig(
        preprocess_run_id=run.data.tags.get("preprocess_run_id"),
        model=p["model"],
        max_evals=int(p["max_evals"]),
        seed=int(p["seed"]),
        num_boost_round=int(p["num_boost_round"]),
        early_stopping_rounds=int(p["early_stopping_rounds"]),
        resume_run_id=given.resume_run_id,
        # a search from before pruning existed did not prune
        prune=p.get("prune", "false") == "true",
    )
    for name in ("model", "max_evals", "seed", "num_boost_round", "early_stopping_rounds", "prune"):
        if getattr(given, name) != getattr(original, name):
            log.warning(
                "resume: %s=%s is ignored; the search keeps its own %s=%s",
                name,
                getattr(given, name),
                name,
                getattr(original, name),
            )
    return original


def run_hpo(config: HpoConfig) -> HpoResult:
    config.validate()
    unreachable = unreachable_tracking(config.spark_master, mlflow.get_tracking_uri())
    if unreachable:  # before any run or trial
        raise UserError(unreachable)
    stale = stale_seconds()
    with step_run("hpo", config.run_name()) as run:
        log_params_missing(config.params())
        if config.resume_run_id:
            original = get_step_run(config.resume_run_id, "hpo", "resume_run_id")
            if original.data.tags.get(RESUMED_FROM_TAG):
                raise UserError(
                    f"resume_run_id {config.resume_run_id} is itself a resuming run; pass the "
                    f"search it resumed, {original.data.tags[RESUMED_FROM_TAG]}"
                )
            # the tag is set once the session is up; the param (quoted by `mlflow run`) before
            spark_master = original.data.tags.get(SPARK_MASTER_TAG) or (
                original.data.params.get("spark_master", "").strip("'\"")
            )
            if spark_master:
                raise UserError(
                    f"search {original.info.run_id} ran on Spark "
                    f"(spark_master={spark_master}): resuming a Spark "
                    "search is not supported (its trials finished out of order, so it has no "
                    "serial prefix to continue from); start a new search"
                )
            config = _original_config(original, config)
            set_run_name(config.run_name())  # the search's own model
            mlflow.set_tag(RESUMED_FROM_TAG, original.info.run_id)
            lease = SearchLease(original.info.run_id, run.info.run_id, stale)
            lease.claim()  # before reloading: reloading marks running trials KILLED
        else:
            original = run
            lease = SearchLease(run.info.run_id, run.info.run_id, stale)
        with lease:
            return _run_search(config, run, original, lease)


def _run_search(config: HpoConfig, run, parent, lease: SearchLease) -> HpoResult:
    """The search under ``parent`` (``run`` itself unless resuming), with the lease held."""
    client = MlflowClient()
    parent_run_id, parent_experiment_id = parent.info.run_id, parent.info.experiment_id
    preprocess = resolve_upstream(
        config.preprocess_run_id, "preprocess", "preprocess_run_id", run.info.experiment_id
    )
    config = replace(config, preprocess_run_id=preprocess.info.run_id)
    mlflow.set_tags({"preprocess_run_id": preprocess.info.run_id, "model": config.model})
    train, val = load_training_data(preprocess.info.run_id)
    log.info(
        "train %s, val %s; model %s, %d trials",
        train.X.shape,
        val.X.shape,
        config.model,
        config.n_trials,
    )

    started = time.perf_counter()
    reloaded = []
    if config.resume_run_id:
        reloaded = reload_trials(parent_run_id, parent_experiment_id)
        log.info("resume: reusing %d finished trials of search %s", len(reloaded), parent_run_id)
    trial_logger = TrialLogger(parent_run_id, parent_experiment_id, config.model, lease.beat)
    try:
        records = search(config, train, val, trial_logger, reloaded)
    except SearchTaken:
        raise  # the search is another process's: leave its state alone
    except BaseException:
        if config.resume_run_id:
            client.set_terminated(parent_run_id, "FAILED")
        raise
    best = best_of(records)
    payload = _best_params_payload(config, best, parent_run_id)
    summary = {
        "best_val_rmse": best.val_rmse,
        "n_trials": len(records),
        "search_seconds": time.perf_counter() - started,
    }
    targets = [run.info.run_id] + ([parent_run_id] if config.resume_run_id else [])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / BEST_PARAMS_PATH
        path.write_text(json.dumps(payload, indent=2))
        for run_id in targets:
            client.log_artifact(run_id, str(path))
            client.set_tag(run_id, "best_trial_run_id", best.run_id)
            now = int(time.time() * 1000)
            client.log_batch(
                run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()]
            )
    if config.resume_run_id:
        _mark_source(client, run.info.run_id, parent)
        client.set_terminated(parent_run_id, "FINISHED")
    log.info("best trial %d: val_rmse %.6f (run %s)", best.trial_id, best.val_rmse, best.run_id)
    return HpoResult(parent_run_id, best, records, len(reloaded))


def _mark_source(client: MlflowClient, resumer_run_id: str, parent) -> None:
    """A search finished by a resumer from another commit, an edited tree or another
    environment definition is not a clean run of its original source: say so on the parent,
    so that main's cache never reuses it."""
    why = source_differs(client.get_run(resumer_run_id).data.tags, parent.data.tags)
    if why:
        log.warning(
            "resume: not the search's source (%s): search %s marked not clean",
            why,
            parent.info.run_id,
        )
        client.set_tag(parent.info.run_id, SOURCE_CLEAN_TAG, "false")


@click.command(cls=StepCommand, params=options.hpo_options())
@click.option(
    "--preprocess-run-id", default="", help="Default: the latest finished preprocess run."
)
@click.option("--resume-run-id", default="", help="Parent run of a search to resume.")
def main(
    preprocess_run_id,
    model,
    max_evals,
    seed,
    num_boost_round,
    early_stopping_rounds,
    resume_run_id,
    prune,
    spark_master,
    parallelism,
):
    """Search hyperparameters with hyperopt TPE; one nested run per trial."""
    setup_logging()
    result = run_hpo(
        HpoConfig(
            preprocess_run_id or None,
            model,
            max_evals,
            seed,
            num_boost_round,
            early_stopping_rounds,
            resume_run_id or None,
            prune=prune,
            spark_master=spark_master,
            parallelism=parallelism,
        )
    )
    click.echo(
        f"hpo run {result.run_id}: {len(result.trials)} trials "
        f"({result.reused_trials} reused), best val_rmse {result.best.val_rmse:.6f} "
        f"(trial {result.best.trial_id})"
    )


if __name__ == "__main__":
    main()
