"""Logging a ``Predictor`` as the MLflow pyfunc ``model`` (models-from-code, native files).

The model ships only the code serving needs, as its own package: ``contract``, ``features``
and ``predictor`` copied from ``steps/`` into ``nyc_taxi_duration_model_<first 12 hex digits
of the sha256 of its files>``, named in the model's artifact ``code_package.json``, from which
steps/pyfunc_model.py imports it. MLflow puts a model's ``code/`` folder at the front of
``sys.path`` when it loads it and evicts nothing from ``sys.modules``: under the generic name
``steps`` the first copy imported (usually the working tree's) would serve every model in the
process. Named after its content, each model's package is imported once per process and runs
its own code; two models with the same code share one copy, which is the same code.

The signature names the input columns of ``steps.contract``. It declares location IDs as
``Any``, not ``long``: MLflow's scoring server casts a request to the signature's types before
the model sees it, and a ``long`` column turns ``43.5`` into ``43`` silently; with ``Any`` the
model receives the value sent (an int32 or int64 month alike) and its contract check refuses
what is not an integer, naming the column and row. ``trip_distance`` is ``double`` (a null
arrives as NaN, which the check refuses). Requirements are exact pins of the packages the model
imports, read from the running environment (built from the lock).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
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
from steps.pyfunc_model import CODE_PACKAGE_ARTIFACT

MODEL_NAME_IN_RUN = "model"
XGBOOST_FLAVOR_NAME_IN_RUN = "xgboost_model"
STEPS_DIR = Path(__file__).resolve().parent
PYFUNC_MODEL_FILE = STEPS_DIR / "pyfunc_model.py"
CODE_PACKAGE_PREFIX = "nyc_taxi_duration_model_"
CODE_PACKAGE_FILE = "code_package.json"
# What serving imports: predictor -> contract, features (relative imports, nothing else of ours).
CODE_PACKAGE_MODULES = ("contract.py", "features.py", "predictor.py")
_PACKAGE_INIT = b'"""nyc-taxi-duration model code, as shipped inside a logged model."""\n'
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


def code_package_files(source_dir: Path = STEPS_DIR) -> dict[str, bytes]:
    """The shipped package's files (name -> bytes): ``CODE_PACKAGE_MODULES`` read from
    ``source_dir``, and an ``__init__.py``."""
    files = {"__init__.py": _PACKAGE_INIT}
    files |= {name: (Path(source_dir) / name).read_bytes() for name in CODE_PACKAGE_MODULES}
    return files


def code_package_name(files: dict[str, bytes]) -> str:
    """``nyc_taxi_duration_model_<12 hex digits>``: a digest of the files' names and bytes."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode())
        digest.update(files[name])
    return CODE_PACKAGE_PREFIX + digest.hexdigest()[:12]


def build_code_package(dest: Path, source_dir: Path = STEPS_DIR) -> Path:
    """Write the package into ``dest``; returns its folder (named ``code_package_name``)."""
    files = code_package_files(source_dir)
    package = Path(dest) / code_package_name(files)
    package.mkdir(parents=True)
    for name, content in files.items():
        (package / name).write_bytes(content)
    return package


def log_predictor(
    predictor: Predictor, example: pd.DataFrame, code_source: Path = STEPS_DIR
) -> tuple[ModelInfo, int]:
    """Log the pyfunc ``model`` to the active run; returns its info and payload size.

    ``code_source`` is the folder whose ``CODE_PACKAGE_MODULES`` the model ships (tests pass a
    modified copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = predictor.save(Path(tmp) / "artifacts")
        package = build_code_package(Path(tmp) / "code", code_source)
        code_file = Path(tmp) / "artifacts" / CODE_PACKAGE_FILE
        code_file.write_text(json.dumps({"package": package.name}))
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(PYFUNC_MODEL_FILE),
            artifacts={role: str(path) for role, path in files.items()}
            | {CODE_PACKAGE_ARTIFACT: str(code_file)},
            code_paths=[str(package)],
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
