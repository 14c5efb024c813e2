"""Rung-based pruning: the pure decisions (no MLflow), and XGBoost trials with and without it
(tiny real data, in process): pruning stops training and changes nothing else."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xgboost as xgb
from hyperopt.pyll import stochastic

from steps import tlc
from steps.contract import clip_minutes
from steps.features import Featurizer
from steps.hpo import HpoConfig, TrialRecord, pruning_thresholds
from steps.models import Split, XGBoostSettings, rmse, search_space, train_and_evaluate
from steps.pruning import (
    PrunePolicy,
    RecordedCurve,
    prune_verdict,
    rung_thresholds,
    rung_values,
)
from tests.conftest import tlc_file

POLICY = PrunePolicy(rung_fractions=(0.1, 0.3), keep_fraction=1 / 3, min_trials=3)


def test_rungs_scale_with_the_rounds():
    default = PrunePolicy()
    assert default.rungs(1000) == (30, 100, 300)
    assert default.rungs(60) == (2, 6, 18)
    assert default.rungs(30) == (1, 3, 9)
    assert default.rungs(10) == (1, 3)  # 3% and 10% are both round 1
    assert default.rungs(1) == ()  # nothing left to save


def test_a_rung_counts_trials_that_reached_it_or_ended_on_their_own():
    curves = [
        RecordedCurve((5.0, 4.0, 3.0, 2.0)),  # reached round 3: best 3.0
        RecordedCurve((6.0, 5.5)),  # early-stopped at round 2: its best stays 5.5
        RecordedCurve((7.0,), pruned=True),  # pruned at round 1: unknown at round 3
        RecordedCurve(()),  # no curve (not XGBoost): never counts
    ]
    assert rung_values(curves, 3) == [3.0, 5.5]
    assert rung_values(curves, 1) == [5.0, 6.0, 7.0]


def test_thresholds_keep_the_best_fraction_after_the_warm_up():
    curves = [RecordedCurve(tuple(float(v) for v in range(k, k + 10))) for k in (1, 2, 3, 4, 5, 6)]
    # rungs 1 and 3 (10 rounds); at each, six trials count; keep floor(6/3) = 2
    assert rung_thresholds(curves, 10, POLICY) == {1: 2.0, 3: 2.0}
    assert rung_thresholds(curves[:2], 10, POLICY) == {}  # warm-up: fewer than 3 trials
    assert rung_thresholds(curves[:3], 10, POLICY) == {1: 1.0, 3: 1.0}  # keep at least one


def test_verdict_only_at_a_rung_and_ties_go_on():
    thresholds = {3: 4.0}
    assert not prune_verdict([9.0, 9.0], thresholds).prune  # not a rung
    assert not prune_verdict([9.0, 9.0, 4.0], thresholds).prune  # tie
    verdict = prune_verdict([9.0, 5.0, 6.0], thresholds)
    assert verdict.prune
    assert "best RMSE 5 after 3 rounds > rung threshold 4" in verdict.reason
    assert not prune_verdict([9.0, 3.5, 6.0], thresholds).prune  # best so far, not the last


def record(trial_id: int, curve: tuple[float, ...], pruned: bool = False) -> TrialRecord:
    return TrialRecord(
        trial_id, {}, {}, min(curve), f"run{trial_id}", len(curve) - 1, curve,
        len(curve) if pruned else None,
    )  # fmt: skip


def test_pruning_input_from_earlier_trials_only_for_a_pruning_xgboost_search():
    earlier = [record(i, (10.0 - i,) * 30) for i in range(3)]
    config = HpoConfig(num_boost_round=30)
    assert pruning_thresholds(config, earlier) == {1: 8.0, 3: 8.0, 9: 8.0}
    assert pruning_thresholds(config, earlier[:2]) == {}
    assert pruning_thresholds(HpoConfig(num_boost_round=30, prune=False), earlier) is None
    assert pruning_thresholds(HpoConfig(model="random_forest"), earlier) is None


@pytest.fixture(scope="module")
def small_splits():
    frames = [
        tlc.clean(tlc.read_month(tlc_file(m), "green").frame, "green").iloc[:3000]
        for m in ("2023-01", "2023-02")
    ]
    featurizer = Featurizer.fit(frames[0])
    return [Split(featurizer.transform(f), f["duration"].to_numpy()) for f in frames]


def lecture_params(n: int) -> list[dict]:
    rng = np.random.default_rng(3)
    space = search_space("xgboost", 42)
    return [{**stochastic.sample(space, rng=rng), "nthread": 1} for _ in range(n)]


def course_trial(params, train: Split, val: Split, settings: XGBoostSettings):
    """The search's trial before pruning existed, as the course trains it."""
    booster = xgb.train(
        params,
        dtrain=train.dmatrix(),
        num_boost_round=settings.num_boost_round,
        evals=[(val.dmatrix(), "validation")],
        early_stopping_rounds=settings.early_stopping_rounds or None,
        verbose_eval=False,
    )
    if settings.early_stopping_rounds:
        best = booster.best_iteration
    else:
        best = booster.num_boosted_rounds() - 1
    pred = clip_minutes(booster[: best + 1].predict(val.dmatrix()))
    return rmse(val.y, pred), best


@pytest.mark.parametrize("early_stopping_rounds", [3, 0])
def test_without_pruning_a_trial_is_the_courses_bit_for_bit(small_splits, early_stopping_rounds):
    train, val = small_splits
    settings = XGBoostSettings(12, early_stopping_rounds)
    never = {1: math.inf, 3: math.inf, 6: math.inf}  # the pruning path, never pruning
    for params in lecture_params(3):
        expected = course_trial(params, train, val, settings)
        curves = set()
        for rungs in (None, {}, never):
            result = train_and_evaluate("xgboost", params, train, val, settings, rungs)
            assert (result.val_rmse, result.best_iteration) == expected
            assert result.pruned_round is None and result.prune_reason == ""
            curves.add(result.curve)
        (curve,) = curves
        if early_stopping_rounds:
            assert min(curve) == curve[expected[1]]
        else:
            assert len(curve) == 12


def test_a_pruned_trial_stops_at_the_rung_with_its_rmse_there(small_splits):
    train, val = small_splits
    settings = XGBoostSettings(12, 3)
    (params,) = lecture_params(1)
    full = train_and_evaluate("xgboost", params, train, val, settings)
    pruned = train_and_evaluate("xgboost", params, train, val, settings, {2: 0.0, 6: 0.0})
    assert pruned.pruned_round == 2 and "after 2 rounds" in pruned.prune_reason
    assert pruned.curve == full.curve[:2]  # the same rounds, stopped
    assert pruned.best_iteration == int(np.argmin(full.curve[:2]))
    assert pruned.model.num_boosted_rounds() == pruned.best_iteration + 1
    expected = rmse(val.y, clip_minutes(pruned.model.predict(val.dmatrix())))
    assert pruned.val_rmse == expected
