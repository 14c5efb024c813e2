"""The trained model as it is saved, loaded and served: featurizer + native model payload.

A ``Predictor`` maps raw trip records (``PULocationID``, ``DOLocationID``, ``trip_distance``;
other columns ignored) to predicted minutes. It is stored as files a person can open and that
load without unpickling anything: ``featurizer.json``, ``predictor.json`` (the model kind) and
the model in a native format: XGBoost's UBJ for boosters, skops for scikit-learn estimators.
``predict`` enforces the input contract (``contract``): it refuses a frame with a record that
breaks it and returns minutes clipped to the contract's floor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

# Relative imports only: this module, ``contract`` and ``features`` also ship inside every model
# as a package of their own (steps/packaging.py), which must not reach back into ``steps``.
from . import contract
from .contract import INPUT_COLUMNS as INPUT_COLUMNS
from .features import Featurizer

FEATURIZER_FILE = "featurizer.json"
META_FILE = "predictor.json"
XGBOOST_PAYLOAD = "booster.ubj"
SKLEARN_PAYLOAD = "estimator.skops"
# Types skops does not trust by default that our estimators contain (a forest's trees);
# a file holding any other unknown type is refused.
SKOPS_TRUSTED = ["sklearn.tree._tree.Tree"]


def payload_file(kind: str) -> str:
    return XGBOOST_PAYLOAD if kind == "xgboost" else SKLEARN_PAYLOAD


def int32_indices(X: sp.csr_matrix) -> sp.csr_matrix:
    """The same matrix with 32-bit indices: some scikit-learn solvers (Lasso) reject int64."""
    if X.indices.dtype == np.int32 or X.nnz >= 2**31:
        return X
    return sp.csr_matrix(
        (X.data, X.indices.astype(np.int32), X.indptr.astype(np.int32)), shape=X.shape
    )


def predict_estimator(model, X) -> np.ndarray:
    """Predict with one thread: a forest's parallel predict sums its trees in whatever order
    the threads finish, which changes the last bits from run to run. Fitting stays parallel
    (each tree's seed is drawn up front, so the forest does not depend on the core count)."""
    X = int32_indices(X)
    if getattr(model, "n_jobs", None) in (None, 1):
        return model.predict(X)
    n_jobs = model.n_jobs
    model.set_params(n_jobs=1)
    try:
        return model.predict(X)
    finally:
        model.set_params(n_jobs=n_jobs)


@dataclass
class Predictor:
    kind: str
    featurizer: Featurizer
    model: Any  # xgboost.Booster or a fitted scikit-learn estimator
    # What ``predict`` raises for a record that breaks the contract: the class of this copy
    # of the code, so that the pyfunc catches its own package's error.
    ContractError: ClassVar[type[Exception]] = contract.ContractError

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted trip durations in minutes (float64, clipped below), one per row of ``frame``.

        Raises ``contract.ContractError`` naming the column and the first row that breaks the
        input contract."""
        contract.check(frame)
        X = self.featurizer.transform(frame)
        if self.kind == "xgboost":
            import xgboost as xgb

            return contract.clip_minutes(self.model.predict(xgb.DMatrix(X)))
        return contract.clip_minutes(predict_estimator(self.model, X))

    def save(self, directory: Path) -> dict[str, Path]:
        """Write the three files into ``directory``; returns them by role."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "featurizer": directory / FEATURIZER_FILE,
            "meta": directory / META_FILE,
            "payload": directory / payload_file(self.kind),
        }
        self.featurizer.save(files["featurizer"])
        files["meta"].write_text(json.dumps({"kind": self.kind, "payload": files["payload"].name}))
        if self.kind == "xgboost":
            self.model.save_model(files["payload"])
        else:
            import skops.io

            skops.io.dump(self.model, files["payload"])
        return files

    @classmethod
    def load(cls, featurizer: Path, meta: Path, payload: Path) -> Predictor:
        kind = json.loads(Path(meta).read_text())["kind"]
        if kind == "xgboost":
            import xgboost as xgb

            model = xgb.Booster()
            model.load_model(str(payload))
        else:
            import skops.io

            model = skops.io.load(payload, trusted=SKOPS_TRUSTED)
        return cls(kind, Featurizer.load(featurizer), model)

    @classmethod
    def load_dir(cls, directory: Path) -> Predictor:
        directory = Path(directory)
        kind = json.loads((directory / META_FILE).read_text())["kind"]
        return cls.load(
            directory / FEATURIZER_FILE, directory / META_FILE, directory / payload_file(kind)
        )
