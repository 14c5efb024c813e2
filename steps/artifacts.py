"""Artifact paths: the written contract between steps (who writes what, who reads it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from steps.errors import UserError
from steps.features import Featurizer

# preprocess writes, hpo and train_best read
DATA_DIR = "data"
FEATURIZER_PATH = "featurizer/featurizer.json"
# hpo writes on its parent run
BEST_PARAMS_PATH = "best_params.json"


def split_path(split: str) -> str:
    """Cleaned split ``train``/``val``/``test`` of a preprocess run."""
    return f"{DATA_DIR}/{split}.parquet"


def load_preprocessed(
    preprocess_run_id: str, splits: tuple[str, ...]
) -> tuple[Featurizer, dict[str, pd.DataFrame]]:
    """The fitted featurizer and the cleaned ``splits`` of a preprocess run."""
    with tempfile.TemporaryDirectory() as tmp:

        def fetch(path: str) -> Path:
            return Path(
                mlflow.artifacts.download_artifacts(
                    run_id=preprocess_run_id, artifact_path=path, dst_path=tmp
                )
            )

        try:
            featurizer = Featurizer.load(fetch(FEATURIZER_PATH))
            frames = {s: pd.read_parquet(fetch(split_path(s))) for s in splits}
        except (MlflowException, OSError) as exc:
            raise UserError(
                f"preprocess run {preprocess_run_id} lacks its artifacts ({exc})"
            ) from None
    return featurizer, frames
