"""Logging a ``Predictor`` as the MLflow pyfunc ``model`` (models-from-code, native files).

The signature names the input columns of ``steps.contract``. It declares location IDs as
``Any``, not ``long``: MLflow's scoring server casts a request to the signature's types before
the model sees it, and a ``long`` column turns ``43.5`` into ``43`` silently; with ``Any`` the
model receives the value sent (an int32 or int64 month alike) and its contract check refuses
what is not an integer, naming the column and row. ``trip_distance`` is ``double`` (a null
arrives as NaN, which the check refuses). Requirements are exact pins of the packages the model
imports, read from the running environment (built from the lock).
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType

from steps.contract import DISTANCE_COLUMN, INPUT_COLUMNS, LOCATION_COLUMNS
from steps.predictor import Predictor

MODEL_NAME_IN_RUN = "model"
XGBOOST_FLAVOR_NAME_IN_RUN = "xgboost_model"
STEPS_DIR = Path(__file__).resolve().parent
SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            *(ColSpec(AnyType(), name) for name in LOCATION_COLUMNS),
            ColSpec("double", DISTANCE_COLUMN),
        ]
    ),
    outputs=Schema([ColSpec("double", "duration")]),
)
_COMMON = ("mlflow", "numpy", "pandas", "scipy")
_BY_KIND = {"xgboost": ("xgboost-cpu",)}
_SKLEARN = ("scikit-learn", "skops")


def requirements(kind: str) -> list[str]:
    """Exact pins of what loading a ``kind`` model needs, as installed here."""
    names = _COMMON + _BY_KIND.get(kind, _SKLEARN)
    return [f"{n}=={importlib.metadata.version(n)}" for n in names]


def input_example(frame: pd.DataFrame, rows: int = 3) -> pd.DataFrame:
    return frame.loc[:, list(INPUT_COLUMNS)].head(rows).reset_index(drop=True)


def log_predictor(predictor: Predictor, example: pd.DataFrame) -> tuple[ModelInfo, int]:
    """Log the pyfunc ``model`` to the active run; returns its info and payload size."""
    with tempfile.TemporaryDirectory() as tmp:
        files = predictor.save(Path(tmp))
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(STEPS_DIR / "pyfunc_model.py"),
            artifacts={role: str(path) for role, path in files.items()},
            code_paths=[str(STEPS_DIR)],
            signature=SIGNATURE,
            input_example=example,
            pip_requirements=requirements(predictor.kind),
        )
        return info, files["payload"].stat().st_size


def log_xgboost_flavor(booster) -> ModelInfo:
    """The booster in MLflow's xgboost flavor: ``mlflow.xgboost.load_model`` gives a Booster."""
    return mlflow.xgboost.log_model(
        booster,
        name=XGBOOST_FLAVOR_NAME_IN_RUN,
        model_format="ubj",
        pip_requirements=requirements("xgboost"),
    )
