"""The served model guards its input over real HTTP, and serves the very predictions (floor
included) that its logged RMSEs were computed from.

One linear baseline, trained by real `mlflow run`s on the real months (it predicts below zero
for some March trips), served once by `mlflow models serve` for every case here.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest

from steps import tlc
from steps.contract import INPUT_COLUMNS, MIN_PREDICTED_MINUTES
from steps.models import rmse
from steps.predictor import predict_estimator
from tests.conftest import Tracking, free_port, tlc_file

pytestmark = pytest.mark.slow


def post(url: str, payload: dict) -> tuple[int, dict]:
    """POST JSON (``NaN``/``Infinity`` written as Python's json writes them); status, body."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@contextlib.contextmanager
def served(tracking: Tracking, model_uri: str) -> Iterator[str]:
    """`mlflow models serve` of ``model_uri`` on loopback; yields its base URL."""
    port = free_port()
    env = tracking.env()
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
        + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, "mlflow models serve exited"
                assert time.monotonic() < deadline, "server did not answer /ping"
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def linear_candidate(shared_tracking, worse_train_run):
    """The linear baseline's candidate and its trial (conftest's session-wide runs)."""
    train = worse_train_run
    search = shared_tracking.client.get_run(train).data.tags["hpo_run_id"]
    (candidate,) = shared_tracking.runs(f"tags.mlflow.parentRunId = '{train}'")
    (trial,) = shared_tracking.runs(f"tags.mlflow.parentRunId = '{search}'")
    return candidate, trial


@pytest.fixture(scope="module")
def model(shared_tracking, linear_candidate):
    mlflow.set_tracking_uri(shared_tracking.uri)
    yield mlflow.pyfunc.load_model(linear_candidate[0].data.tags["model_uri"])
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def server(shared_tracking, linear_candidate):
    with served(shared_tracking, linear_candidate[0].data.tags["model_uri"]) as base:
        yield f"{base}/invocations"


GOOD = [
    {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01},
    {"PULocationID": 74, "DOLocationID": 42, "trip_distance": 2.5},
    {"PULocationID": 75, "DOLocationID": 74, "trip_distance": 0.0},
]


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("trip_distance", None, "is null or NaN"),
        ("trip_distance", float("nan"), "is null or NaN"),
        ("trip_distance", float("inf"), "is infinite"),
        ("trip_distance", -0.3, "is negative"),
        ("trip_distance", "absent", "is null or NaN"),  # key left out of this record
        ("PULocationID", None, "is null"),
        ("PULocationID", "absent", "is null"),
        ("PULocationID", 43.5, "is not an integer"),
        ("PULocationID", "43", "is not an integer"),
        ("PULocationID", True, "is not an integer"),
        ("PULocationID", -5, "is outside [0, 2147483648)"),
        ("DOLocationID", 151.5, "is not an integer"),
        ("DOLocationID", None, "is null"),
    ],
)
def test_a_record_breaking_the_contract_is_a_400_naming_column_and_row(
    server, column, value, reason
):
    records = [dict(r) for r in GOOD]
    if value == "absent":
        del records[1][column]
    else:
        records[1][column] = value
    status, body = post(server, {"dataframe_records": records})
    assert status == 400, body
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert f"{column} {reason} in row 1" in body["message"]


def test_a_missing_column_is_a_400_naming_it(server):
    records = [{k: v for k, v in r.items() if k != "DOLocationID"} for r in GOOD]
    status, body = post(server, {"dataframe_records": records})
    assert status == 400 and "DOLocationID" in body["message"]
    split = {"columns": list(INPUT_COLUMNS), "data": [[43, 151, "far"]]}
    status, body = post(server, {"dataframe_split": split})
    assert status == 400 and "trip_distance" in body["message"]


def test_valid_records_and_zones_outside_the_list(server, model):
    unseen = [
        {"PULocationID": 9999, "DOLocationID": 151, "trip_distance": 2.0},
        {"PULocationID": 0, "DOLocationID": 0, "trip_distance": 2.0},
    ]
    whole = [{"PULocationID": 43.0, "DOLocationID": 151.0, "trip_distance": 1.01}]
    status, body = post(server, {"dataframe_records": GOOD + unseen + whole})
    assert status == 200, body
    served_minutes = body["predictions"]
    assert served_minutes == model.predict(pd.DataFrame(GOOD + unseen + whole)).tolist()
    # an unseen pickup/drop-off pair counts for nothing: both are the distance-only prediction
    assert served_minutes[3] == served_minutes[4]
    assert served_minutes[5] == served_minutes[0]  # 43.0 is the integer 43


def test_served_predictions_are_the_logged_ones_floor_included(server, model, linear_candidate):
    candidate, trial = linear_candidate
    # hpo's trial and train_best's saved model score the validation month alike
    assert candidate.data.metrics["val_rmse"] == trial.data.metrics["val_rmse"]

    test = tlc.clean(tlc.read_month(tlc_file("2023-03"), "green").frame, "green")
    inputs = test[list(INPUT_COLUMNS)]
    predictor = model.unwrap_python_model().predictor
    unclipped = predict_estimator(predictor.model, predictor.featurizer.transform(inputs))
    below = unclipped < MIN_PREDICTED_MINUTES
    assert below.sum() >= 5 and (unclipped < 0).any()  # the linear model goes below zero

    split = json.loads(inputs.to_json(orient="split", index=False))
    status, body = post(server, {"dataframe_split": split})
    assert status == 200
    served_minutes = np.array(body["predictions"])
    assert (served_minutes[below] == MIN_PREDICTED_MINUTES).all()
    np.testing.assert_array_equal(served_minutes[~below], unclipped[~below])
    # the logged test RMSE is the RMSE of what the server answers, to the last digit
    assert rmse(test["duration"].to_numpy(), served_minutes) == candidate.data.metrics["test_rmse"]
    assert rmse(test["duration"].to_numpy(), unclipped) > candidate.data.metrics["test_rmse"]
