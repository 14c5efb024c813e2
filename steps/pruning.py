"""Rung-based pruning of XGBoost boosting rounds (successive halving, as in ASHA): pure decisions.

A search's XGBoost trials record their validation curve: the RMSE after each boosting round
(``curve[i]`` is the RMSE with ``i + 1`` trees). At a few *rungs* (numbers of rounds, scaled
with ``num_boost_round``) a trial is stopped when its best RMSE so far is worse than the
``keep_fraction`` best of the earlier trials at the same rung. Only earlier trials' recorded
curves decide, so a search with the same seed prunes the same trials, and a resumed search
(curves reloaded from the tracking store) prunes as the uninterrupted one did.

An earlier trial counts at rung ``r`` when it trained at least ``r`` rounds, or when it ended
on its own before ``r`` (early stopping: its best so far stays its best); a trial pruned before
``r`` does not count there (what it would have reached is unknown). A rung prunes nothing until
``min_trials`` earlier trials count at it (the warm-up).

Nothing here knows MLflow or XGBoost: the step gathers the curves and acts on the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PrunePolicy:
    # Rungs as fractions of num_boost_round: 1000 rounds -> rungs at 30, 100 and 300 rounds.
    rung_fractions: tuple[float, ...] = (0.03, 0.1, 0.3)
    keep_fraction: float = 1 / 3
    min_trials: int = 3

    def rungs(self, num_boost_round: int) -> tuple[int, ...]:
        """The rungs (rounds trained) for ``num_boost_round``: distinct, at least 1, and below
        ``num_boost_round`` (a trial that trained every round has nothing left to save)."""
        rounds = {max(1, round(f * num_boost_round)) for f in self.rung_fractions}
        return tuple(sorted(r for r in rounds if r < num_boost_round))


DEFAULT_POLICY = PrunePolicy()


@dataclass(frozen=True)
class RecordedCurve:
    """An earlier trial's validation curve, and whether it was pruned (stopped by a rung)."""

    rmse: tuple[float, ...]
    pruned: bool = False


@dataclass(frozen=True)
class Verdict:
    prune: bool
    reason: str


def best_so_far(curve: Sequence[float], rounds: int) -> float:
    """The best RMSE among the first ``rounds`` rounds of ``curve``."""
    return min(curve[:rounds])


def rung_values(curves: Iterable[RecordedCurve], rung: int) -> list[float]:
    """Best-so-far RMSEs at ``rung`` of the trials that count there (see the module doc)."""
    return [
        best_so_far(c.rmse, rung)
        for c in curves
        if c.rmse and (len(c.rmse) >= rung or not c.pruned)
    ]


def rung_thresholds(
    curves: Sequence[RecordedCurve], num_boost_round: int, policy: PrunePolicy = DEFAULT_POLICY
) -> dict[int, float]:
    """rung -> the worst best-so-far RMSE a trial may have there and go on; rungs still in
    their warm-up (fewer than ``policy.min_trials`` earlier trials count) are left out."""
    thresholds = {}
    for rung in policy.rungs(num_boost_round):
        values = sorted(rung_values(curves, rung))
        if len(values) < policy.min_trials:
            continue
        keep = max(1, math.floor(len(values) * policy.keep_fraction))
        thresholds[rung] = values[keep - 1]
    return thresholds


def prune_verdict(curve: Sequence[float], thresholds: Mapping[int, float]) -> Verdict:
    """Should a trial whose curve so far is ``curve`` stop now, after ``len(curve)`` rounds?
    Only at a rung with a threshold; a tie with the threshold goes on."""
    rounds = len(curve)
    if rounds not in thresholds:
        return Verdict(False, f"round {rounds} is not a rung in use")
    best, threshold = best_so_far(curve, rounds), thresholds[rounds]
    if best > threshold:
        return Verdict(
            True, f"best RMSE {best:.6g} after {rounds} rounds > rung threshold {threshold:.6g}"
        )
    return Verdict(
        False, f"best RMSE {best:.6g} after {rounds} rounds <= rung threshold {threshold:.6g}"
    )
