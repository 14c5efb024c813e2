"""Artifacts a person looks at: prediction plots, feature importance, the model card."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray, title: str):
    fig, ax = plt.subplots(figsize=(6, 5))
    hb = ax.hexbin(y_true, y_pred, gridsize=60, bins="log", mincnt=1, cmap="viridis")
    lim = [0, max(float(np.max(y_true)), float(np.max(y_pred)))]
    ax.plot(lim, lim, color="red", linewidth=1, label="perfect prediction")
    ax.set_xlabel("actual duration (minutes)")
    ax.set_ylabel("predicted duration (minutes)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.colorbar(hb, ax=ax, label="trips (log)")
    fig.tight_layout()
    return fig


def residuals(y_true: np.ndarray, y_pred: np.ndarray, title: str):
    resid = y_true - y_pred
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.hexbin(y_pred, resid, gridsize=60, bins="log", mincnt=1, cmap="viridis")
    left.axhline(0, color="red", linewidth=1)
    left.set_xlabel("predicted duration (minutes)")
    left.set_ylabel("actual - predicted (minutes)")
    right.hist(resid, bins=100, color="steelblue")
    right.set_xlabel("actual - predicted (minutes)")
    right.set_ylabel("trips")
    fig.suptitle(f"{title}: mean {resid.mean():.3f}, std {resid.std():.3f}")
    fig.tight_layout()
    return fig


def feature_importance(scores: dict[str, float], title: str, top: int = 20):
    items = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:top]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(items) + 1.5))
    ax.set_xscale("log")  # distance dominates; a log axis keeps the zone pairs visible
    ax.barh([name for name, _ in reversed(items)], [v for _, v in reversed(items)])
    ax.set_xlabel("total gain")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def model_card(
    *,
    title: str,
    kind: str,
    params: dict,
    metrics: dict[str, float],
    data: list[dict[str, str]],
    lineage: dict[str, str],
    load_code: str,
) -> str:
    lines = [
        f"# {title}",
        "",
        f"Model kind: `{kind}`. Predicts trip duration in minutes from "
        "`PULocationID`, `DOLocationID` and `trip_distance` (other columns are ignored).",
        "",
        "## Load it",
        "",
        "```python",
        load_code,
        "```",
        "",
        "## Data",
        "",
        "| split | month | file | sha256 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {d['split']} | {d['month']} | {d['file']} | `{d['sha256']}` |" for d in data]
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v!r} |" for k, v in metrics.items()]
    lines += ["", "## Parameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {v!r} |" for k, v in params.items()]
    lines += ["", "## Lineage", "", "| | |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in lineage.items()]
    return "\n".join(lines) + "\n"
