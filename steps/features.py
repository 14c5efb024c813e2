"""The course's features, vectorised: ``PU_DO`` one-hot plus ``trip_distance``.

``Featurizer`` reproduces scikit-learn's ``DictVectorizer`` fitted on
``df[["PU_DO", "trip_distance"]].to_dict(orient="records")`` exactly (same CSR ``indptr``,
``indices`` and ``data``, explicit zeros kept) without building a dict per row: rows are mapped
to columns through the distinct (PULocationID, DOLocationID) pairs, of which there are a few
thousand, not millions. It is stored as JSON (its feature names), never pickled. This module
ships inside every model (steps/packaging.py), so it imports nothing from the project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

FEATURIZER_FORMAT = "nyc-taxi-duration/featurizer@1"
NUMERIC_FEATURE = "trip_distance"
CATEGORICAL_PREFIX = "PU_DO="


def _pairs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (PU, DO) pairs and, per row, the index of its pair."""
    pu = frame["PULocationID"].to_numpy(dtype=np.int64)
    do = frame["DOLocationID"].to_numpy(dtype=np.int64)
    if len(pu) and (min(pu.min(), do.min()) < 0 or max(pu.max(), do.max()) >= 2**31):
        raise ValueError("location IDs must lie in [0, 2**31)")
    codes, keys = pd.factorize((pu << 32) | do)
    return keys >> 32, keys & 0xFFFFFFFF, codes


def _pair_names(pu: np.ndarray, do: np.ndarray) -> list[str]:
    return [f"{CATEGORICAL_PREFIX}{a}_{b}" for a, b in zip(pu.tolist(), do.tolist(), strict=True)]


@dataclass(frozen=True)
class Featurizer:
    feature_names: tuple[str, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> Featurizer:
        pu, do, _ = _pairs(frame)
        # DictVectorizer sorts feature names as Python strings.
        return cls(tuple(sorted([*_pair_names(pu, do), NUMERIC_FEATURE])))

    @property
    def vocabulary(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.feature_names)}

    def transform(self, frame: pd.DataFrame) -> sp.csr_matrix:
        """CSR matrix equal, array for array, to DictVectorizer's on the PU_DO records."""
        n_rows = len(frame)
        vocab = self.vocabulary
        numeric_col = vocab[NUMERIC_FEATURE]
        pu, do, codes = _pairs(frame)
        pair_col = np.array([vocab.get(n, -1) for n in _pair_names(pu, do)], dtype=np.int64)
        row_col = pair_col[codes] if n_rows else np.empty(0, dtype=np.int64)
        known = row_col >= 0
        nnz_per_row = known.astype(np.int64) + 1
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(nnz_per_row, out=indptr[1:])
        nnz = int(indptr[-1])
        indices = np.empty(nnz, dtype=np.int64)
        data = np.empty(nnz, dtype=np.float64)
        distance = frame[NUMERIC_FEATURE].to_numpy(dtype=np.float64)
        # Within a row DictVectorizer sorts indices; a pair column precedes the numeric one
        # exactly when its index is lower.
        pair_first = known & (row_col < numeric_col)
        starts = indptr[:-1]
        ends = indptr[1:] - 1
        first = np.where(pair_first, row_col, numeric_col)
        last = np.where(known & ~pair_first, row_col, numeric_col)
        indices[starts] = first
        indices[ends] = last
        data[starts] = np.where(pair_first, 1.0, distance)
        data[ends] = np.where(known & ~pair_first, 1.0, distance)
        matrix = sp.csr_matrix((data, indices, indptr), shape=(n_rows, len(self.feature_names)))
        # scipy downcasts indices to int32 where they fit; DictVectorizer's stay int64.
        matrix.indices, matrix.indptr = indices, indptr
        return matrix

    def to_dict(self) -> dict:
        return {"format": FEATURIZER_FORMAT, "feature_names": list(self.feature_names)}

    @classmethod
    def from_dict(cls, payload: dict) -> Featurizer:
        if payload.get("format") != FEATURIZER_FORMAT:
            raise ValueError(f"not a featurizer payload (format {payload.get('format')!r})")
        return cls(tuple(payload["feature_names"]))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Featurizer:
        return cls.from_dict(json.loads(Path(path).read_text()))


def records_path_matrix(frame: pd.DataFrame, fitted=None):
    """The textbook path (per-row dicts into DictVectorizer), for tests and the benchmark.

    Returns ``(matrix, vectorizer)``; fits a new vectorizer unless ``fitted`` is given.
    """
    from sklearn.feature_extraction import DictVectorizer

    df = frame[["PULocationID", "DOLocationID", "trip_distance"]].copy()
    df["PU_DO"] = df["PULocationID"].astype(str) + "_" + df["DOLocationID"].astype(str)
    records = df[["PU_DO", "trip_distance"]].to_dict(orient="records")
    if fitted is None:
        fitted = DictVectorizer()
        return fitted.fit_transform(records), fitted
    return fitted.transform(records), fitted
