"""Entry point ``train_best``: retrain an hpo run's best trials and package each as a model.

Reads the hpo run ``hpo_run_id`` (default: the latest finished one; a resuming run leads to the
search it resumed): its params ``model``, ``num_boost_round``, ``early_stopping_rounds``, its
tag ``preprocess_run_id``, and its FINISHED trial runs (metric ``val_rmse``, tag
``trial.params``). From the preprocess run: ``data/{train,val,test}.parquet`` and
``featurizer/featurizer.json``.

Writes to its run, named ``train_best <model>``: params ``hpo_run_id``, ``top_n``, ``autolog``;
tags ``step=train_best``, ``hpo_run_id`` (resolved), ``preprocess_run_id``, ``model``,
``best_candidate_run_id``; metrics ``best_val_rmse``, ``n_candidates``.

Each candidate is a nested run named ``candidate-R (trial NNN)`` with:
- params: the trial's typed params; tags ``hpo_trial_run_id``, ``hpo_trial_id``,
  ``candidate_rank``, ``model``, ``model_uri`` (the pyfunc) and, for XGBoost,
  ``xgboost_model_uri``
- metrics ``val_rmse``, ``test_rmse``, ``train_seconds``, ``model_size_bytes`` and, for
  XGBoost, ``best_iteration``; RMSEs are those of the saved model, loaded back
- logged models ``model`` (pyfunc from code: raw trips in, minutes out; featurizer inside) and,
  for XGBoost, ``xgboost_model`` (MLflow's xgboost flavor, UBJ)
- artifacts ``plots/{val,test}_predicted_vs_actual.png``, ``plots/{val,test}_residuals.png``,
  ``plots/feature_importance.png`` (XGBoost) and ``model_card.md``
- with ``autolog``, what MLflow's autologging adds, kept sparse (``steps/autolog.py``):
  XGBoost's per-round metrics and params; for scikit-learn, every estimator param, tags
  ``estimator_name``, ``estimator_class``, metrics ``training_*`` and ``estimator.html``
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import click
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from steps import options, reports
from steps.artifacts import load_preprocessed
from steps.autolog import estimator_record, log_estimator_record, xgboost_autolog
from steps.cli import StepCommand, setup_logging
from steps.errors import UserError
from steps.models import Split, XGBoostSettings, rmse, train_and_evaluate
from steps.packaging import input_example, log_predictor, log_xgboost_flavor
from steps.predictor import INPUT_COLUMNS, Predictor
from steps.tracking import (
    RESUMED_FROM_TAG,
    TRIAL_ID_TAG,
    TRIAL_PARAMS_TAG,
    finished_children,
    get_step_run,
    log_params_missing,
    resolve_upstream,
    set_run_name,
    step_run,
)

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TrainBestConfig:
    hpo_run_id: str | None = None
    top_n: int = 1
    autolog: bool = False

    def validate(self) -> None:
        if self.top_n < 1:
            raise UserError(f"top_n must be at least 1, got {self.top_n}")


@dataclass(frozen=True)
class Candidate:
    run_id: str
    trial_id: int
    val_rmse: float
    test_rmse: float
    model_uri: str


@dataclass(frozen=True)
class TrainBestResult:
    run_id: str
    candidates: list[Candidate]

    @property
    def best(self) -> Candidate:
        return min(self.candidates, key=lambda c: (c.val_rmse, c.trial_id))


def finished_trials(hpo_run: Run) -> list[Run]:
    """The search's FINISHED trials, best ``val_rmse`` first (ties: earlier trial first), one
    run per trial (an attempt of a Spark task given up for lost may have finished one too)."""
    children = finished_children(hpo_run)
    trials = [
        t for t in children if "val_rmse" in t.data.metrics and TRIAL_PARAMS_TAG in t.data.tags
    ]
    ranked = sorted(
        trials, key=lambda t: (t.data.metrics["val_rmse"], int(t.data.tags[TRIAL_ID_TAG]))
    )
    first = {}
    for trial in ranked:
        first.setdefault(trial.data.tags[TRIAL_ID_TAG], trial)
    return list(first.values())


def resolve_hpo_run(hpo_run_id: str | None, experiment_id: str) -> Run:
    run = resolve_upstream(hpo_run_id, "hpo", "hpo_run_id", experiment_id)
    original = run.data.tags.get(RESUMED_FROM_TAG)
    if original:
        log.info("hpo run %s resumed search %s: using that search", run.info.run_id, original)
        run = get_step_run(original, "hpo", "hpo_run_id")
    return run


def _data_rows(preprocess: Run) -> list[dict[str, str]]:
    tags = preprocess.data.tags
    return [
        {
            "split": s,
            "month": tags.get(f"data.{s}.month", "?"),
            "file": tags.get(f"data.{s}.file", "?"),
            "sha256": tags.get(f"data.{s}.sha256", "?"),
        }
        for s in SPLITS
    ]


def candidate_run_name(rank: int, trial_id: int) -> str:
    """``candidate-1 (trial 007)``: its rank by val_rmse and the hpo trial it retrains."""
    return f"candidate-{rank} (trial {trial_id:03d})"


def fit_candidate(kind: str, params: dict, splits: dict[str, Split], settings, autolog: bool):
    """Train on ``splits["train"]``; with ``autolog``, MLflow's XGBoost autolog, or for a
    scikit-learn model what ``mlflow.sklearn.autolog`` logs, computed without densifying."""
    with xgboost_autolog(autolog and kind == "xgboost"):
        result = train_and_evaluate(kind, params, splits["train"], splits["val"], settings)
    if autolog and kind != "xgboost":
        log_estimator_record(estimator_record(result.model, splits["train"].X, splits["train"].y))
    return result


def predict_saved(model_uri: str, frames: dict[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    """Predictions on val and test of the model as saved: loaded back, fed raw records."""
    saved = mlflow.pyfunc.load_model(model_uri)
    return {
        s: np.asarray(saved.predict(frames[s][list(INPUT_COLUMNS)]), dtype=np.float64)
        for s in ("val", "test")
    }


def log_plots(kind, model, featurizer, frames, preds: dict[str, np.ndarray]) -> None:
    """Feature importance (XGBoost), predicted vs actual and residuals per split."""
    if kind == "xgboost":
        gains = model.get_score(importance_type="total_gain")
        names = featurizer.feature_names
        mlflow.log_figure(
            reports.feature_importance(
                {names[int(k[1:])]: v for k, v in gains.items()}, "XGBoost feature importance"
            ),
            "plots/feature_importance.png",
        )
    for s, pred in preds.items():
        y = frames[s]["duration"].to_numpy()
        mlflow.log_figure(
            reports.predicted_vs_actual(y, pred, f"{s}: predicted vs actual"),
            f"plots/{s}_predicted_vs_actual.png",
        )
        mlflow.log_figure(reports.residuals(y, pred, f"{s} residuals"), f"plots/{s}_residuals.png")
    reports.plt.close("all")


def log_model_card(rank, trial_id, kind, params, metrics, data, lineage) -> None:
    card = reports.model_card(
        title=f"nyc-taxi-duration candidate {rank} (hpo trial {trial_id})",
        kind=kind,
        params=params,
        metrics={k: v for k, v in metrics.items() if not k.endswith("_seconds")},
        data=data,
        lineage=lineage,
        load_code=f'mlflow.pyfunc.load_model("{lineage["model"]}").predict(df)',
    )
    mlflow.log_text(card, "model_card.md")


def train_candidate(
    rank: int,
    trial: Run,
    kind: str,
    settings: XGBoostSettings,
    featurizer,
    frames: dict[str, pd.DataFrame],
    splits: dict[str, Split],
    autolog: bool,
    context: dict,
) -> Candidate:
    trial_id = int(trial.data.tags[TRIAL_ID_TAG])
    params = json.loads(trial.data.tags[TRIAL_PARAMS_TAG])
    with mlflow.start_run(nested=True, run_name=candidate_run_name(rank, trial_id)) as run:
        mlflow.set_tags(
            {
                "hpo_trial_run_id": trial.info.run_id,
                "hpo_trial_id": str(trial_id),
                "candidate_rank": str(rank),
                "model": kind,
            }
        )
        result = fit_candidate(kind, params, splits, settings, autolog)
        log_params_missing(params)  # after autolog, which may have logged the same ones

        model_info, size = log_predictor(
            Predictor(kind, featurizer, result.model), input_example(frames["val"])
        )
        preds = predict_saved(model_info.model_uri, frames)
        metrics = {f"{s}_rmse": rmse(frames[s]["duration"].to_numpy(), preds[s]) for s in preds}
        metrics |= {"train_seconds": result.train_seconds, "model_size_bytes": size}
        tags = {"model_uri": model_info.model_uri}
        if kind == "xgboost":
            metrics["best_iteration"] = result.best_iteration
            tags["xgboost_model_uri"] = log_xgboost_flavor(result.model).model_uri
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        log_plots(kind, result.model, featurizer, frames, preds)
        lineage = {
            "candidate run": run.info.run_id,
            "hpo run": context["hpo_run_id"],
            "hpo trial run": trial.info.run_id,
            "preprocess run": context["preprocess_run_id"],
            "git commit": context["git_commit"],
            "model": model_info.model_uri,
        }
        log_model_card(rank, trial_id, kind, params, metrics, context["data"], lineage)
        log.info(
            "candidate %d (trial %d): val_rmse %.6f, test_rmse %.6f",
            rank,
            trial_id,
            metrics["val_rmse"],
            metrics["test_rmse"],
        )
        return Candidate(
            run.info.run_id,
            trial_id,
            metrics["val_rmse"],
            metrics["test_rmse"],
            model_info.model_uri,
        )


def run_train_best(config: TrainBestConfig) -> TrainBestResult:
    config.validate()
    with step_run("train_best") as run:
        log_params_missing(
            {
                "hpo_run_id": config.hpo_run_id or "",
                "top_n": config.top_n,
                "autolog": str(config.autolog).lower(),
            }
        )
        hpo_run = resolve_hpo_run(config.hpo_run_id, run.info.experiment_id)
        trials = finished_trials(hpo_run)
        if not trials:
            raise UserError(f"hpo run {hpo_run.info.run_id} has no finished trials")
        if hpo_run.info.status != "FINISHED":
            log.warning(
                "hpo run %s is %s: using its %d finished trials",
                hpo_run.info.run_id,
                hpo_run.info.status,
                len(trials),
            )
        if config.top_n > len(trials):
            log.warning(
                "top_n=%d but the search has %d finished trials: retraining all",
                config.top_n,
                len(trials),
            )
        hpo_params = hpo_run.data.params
        kind = hpo_params["model"]
        set_run_name(f"train_best {kind}")
        settings = XGBoostSettings(
            int(hpo_params["num_boost_round"]), int(hpo_params["early_stopping_rounds"])
        )
        preprocess_run_id = hpo_run.data.tags["preprocess_run_id"]
        preprocess = get_step_run(preprocess_run_id, "preprocess", "preprocess_run_id")
        mlflow.set_tags(
            {
                "hpo_run_id": hpo_run.info.run_id,
                "preprocess_run_id": preprocess_run_id,
                "model": kind,
            }
        )
        featurizer, frames = load_preprocessed(preprocess_run_id, SPLITS)
        splits = {
            s: Split(featurizer.transform(f), f["duration"].to_numpy(dtype=np.float64))
            for s, f in frames.items()
        }
        context = {
            "data": _data_rows(preprocess),
            "hpo_run_id": hpo_run.info.run_id,
            "preprocess_run_id": preprocess_run_id,
            "git_commit": run.data.tags.get(MLFLOW_GIT_COMMIT, "unknown"),
        }
        candidates = [
            train_candidate(
                rank, trial, kind, settings, featurizer, frames, splits, config.autolog, context
            )
            for rank, trial in enumerate(trials[: config.top_n], start=1)
        ]
        result = TrainBestResult(run.info.run_id, candidates)
        mlflow.set_tag("best_candidate_run_id", result.best.run_id)
        mlflow.log_metrics({"best_val_rmse": result.best.val_rmse, "n_candidates": len(candidates)})
        return result


@click.command(cls=StepCommand, params=options.train_best_options())
@click.option("--hpo-run-id", default="", help="Default: the latest finished hpo run.")
def main(hpo_run_id, top_n, autolog):
    """Retrain the best hpo trials and log each as a pyfunc model."""
    setup_logging()
    started = time.perf_counter()
    result = run_train_best(TrainBestConfig(hpo_run_id or None, top_n, autolog))
    for c in result.candidates:
        click.echo(
            f"candidate run {c.run_id} (trial {c.trial_id}): val_rmse {c.val_rmse:.6f}, "
            f"test_rmse {c.test_rmse:.6f}, model {c.model_uri}"
        )
    click.echo(f"train_best run {result.run_id} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
