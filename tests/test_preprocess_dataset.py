"""The dataset input preprocess logs for a raw file: what ``from_pandas`` recorded, unscanned."""

from __future__ import annotations

import json
import time
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.types.utils import _infer_schema

from steps import tlc
from steps.preprocess import frame_schema, raw_file_dataset
from tests.conftest import MONTHS_2023, manifest, tlc_file


@pytest.mark.parametrize("month", [*MONTHS_2023, "2021-01"])
def test_raw_file_dataset_records_what_from_pandas_recorded(month):
    """Name, digest, source, source type, schema and profile: the same config, field for
    field, as the dataset preprocess used to build with ``mlflow.data.from_pandas``."""
    raw = tlc.read_month(tlc_file(month), "green")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scanned = mlflow.data.from_pandas(
            raw.frame,
            source=str(raw.path.resolve()),
            name=raw.path.name,
            digest=raw.sha256[:36],
        ).to_dict()
    logged = raw_file_dataset(raw).to_dict()
    assert logged == scanned
    entry = manifest()[raw.path.name]
    assert logged["digest"] == entry["sha256"][:36]
    assert json.loads(logged["source"]) == {"uri": str(raw.path.resolve())}
    assert logged["source_type"] == "local"
    assert json.loads(logged["profile"]) == {
        "num_rows": int(entry["rows"]),
        "num_elements": int(entry["rows"]) * 5,
    }


def test_frame_schema_types_and_nulls_match_mlflows_inference():
    frame = pd.DataFrame(
        {
            "with_nan": [1.0, np.nan, 2.0],
            "with_nat": pd.to_datetime(["2023-01-01", None, "2023-01-02"]),
            "int32": np.array([1, 2, 3], dtype=np.int32),
            "int64": np.array([1, 2, 3], dtype=np.int64),
            "uint16": np.array([1, 2, 3], dtype=np.uint16),
            "float32": np.array([1, 2, 3], dtype=np.float32),
            "boolean": [True, False, True],
            "text_with_none": ["a", None, "c"],
            "datetime": pd.to_datetime(["2023-01-01"] * 3),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's hint about integer columns
        inferred = _infer_schema(frame)
    assert frame_schema(frame) == inferred
    required = {spec.name: spec.required for spec in frame_schema(frame).inputs}
    assert not required["with_nan"] and not required["with_nat"]
    assert required["int32"] and required["datetime"]


def test_raw_file_dataset_does_not_scan_rows():
    """A million rows take what a thousand take (from_pandas: ~8 s per million)."""
    raw = tlc.read_month(tlc_file("2023-01"), "green")
    big = tlc.RawMonth(raw.path, pd.concat([raw.frame] * 15, ignore_index=True), raw.sha256)
    started = time.perf_counter()
    dataset = raw_file_dataset(big).to_dict()
    assert time.perf_counter() - started < 1.0
    assert json.loads(dataset["profile"])["num_rows"] == 15 * len(raw.frame)
