"""The input contract, the prediction floor and score's row handling (pure, in-process)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LinearRegression

from steps import contract, tlc
from steps.contract import ContractError, check, clip_minutes, row_reasons
from steps.features import Featurizer
from steps.models import Split, train_and_evaluate
from steps.predictor import Predictor
from steps.score import main as score_main
from steps.score import score_frame, write_atomically


def trips(**columns) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "PULocationID": [43, 74, 75, 41],
            "DOLocationID": [151, 42, 74, 42],
            "trip_distance": [1.01, 2.5, 0.0, 3.2],
        }
    )
    for name, value in columns.items():
        frame[name] = frame[name].astype(object)
        frame.loc[2, name] = value
    return frame


def test_valid_records_pass():
    frame = trips()
    check(frame)
    assert row_reasons(frame).tolist() == [None] * 4


@pytest.mark.parametrize(
    "ids",
    [
        np.array([43, 74, 75, 41], dtype=np.int32),
        np.array([43, 74, 75, 41], dtype=np.int64),
        np.array([43.0, 74.0, 75.0, 41.0]),  # integer-valued floats count as integers
        pd.array([43, 74, 75, 41], dtype="Int64"),
        np.array([0, 9999, 265, 2**31 - 1]),  # outside the TLC zone list: accepted
    ],
)
def test_location_ids_of_any_integer_type_pass(ids):
    frame = trips()
    frame["PULocationID"] = ids
    check(frame)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("trip_distance", None, "trip_distance is null or NaN"),
        ("trip_distance", np.nan, "trip_distance is null or NaN"),
        ("trip_distance", np.inf, "trip_distance is infinite"),
        ("trip_distance", -np.inf, "trip_distance is infinite"),
        ("trip_distance", -0.5, "trip_distance is negative"),
        ("trip_distance", "1.2", "trip_distance is not a number"),
        ("trip_distance", True, "trip_distance is not a number"),
        ("PULocationID", None, "PULocationID is null"),
        ("PULocationID", 43.5, "PULocationID is not an integer"),
        ("PULocationID", "43", "PULocationID is not an integer"),
        ("PULocationID", True, "PULocationID is not an integer"),
        ("PULocationID", -1, "PULocationID is outside [0, 2147483648)"),
        ("DOLocationID", 2**31, "DOLocationID is outside [0, 2147483648)"),
        ("DOLocationID", np.nan, "DOLocationID is null"),
        ("DOLocationID", np.inf, "DOLocationID is not an integer"),
    ],
)
def test_each_breach_names_column_and_row(column, value, reason):
    frame = trips(**{column: value})
    with pytest.raises(ContractError) as caught:
        check(frame)
    assert str(caught.value).startswith(f"{reason} in row 2, got ")
    assert "1 of 4 rows break the input contract" in str(caught.value)
    assert (caught.value.column, caught.value.row) == (column, 2)
    assert row_reasons(frame).tolist() == [None, None, reason, None]


def test_first_bad_row_is_reported_with_its_index_label():
    frame = trips(trip_distance=-1.0).set_index(pd.Index([10, 11, 12, 13]))
    frame["PULocationID"] = [43.0, 74.0, 75.0, 43.5]
    with pytest.raises(ContractError, match=r"^trip_distance is negative in row 2 \(index 12\)"):
        check(frame)
    assert row_reasons(frame).tolist() == [
        None,
        None,
        "trip_distance is negative",
        "PULocationID is not an integer",
    ]


def test_every_reason_of_a_row_is_given():
    frame = trips(PULocationID=None, trip_distance=np.inf)
    assert row_reasons(frame)[2] == "PULocationID is null; trip_distance is infinite"


def test_missing_column():
    frame = trips().drop(columns="DOLocationID")
    with pytest.raises(ContractError, match="^column DOLocationID is missing"):
        check(frame)
    assert row_reasons(frame).tolist() == ["DOLocationID is missing"] * 4


def test_clip_minutes_floors_at_the_shortest_training_trip():
    assert contract.MIN_PREDICTED_MINUTES == tlc.MIN_DURATION_MINUTES == 1.0
    clipped = clip_minutes(np.array([-3.0, 0.0, 0.99, 1.0, 7.5], dtype=np.float32))
    assert clipped.dtype == np.float64
    assert clipped.tolist() == [1.0, 1.0, 1.0, 1.0, 7.5]


@pytest.fixture
def negative_predictor() -> Predictor:
    """A linear model that predicts 10 * distance - 5 minutes: below zero for short trips."""
    frame = trips()
    featurizer = Featurizer(("trip_distance",))  # no pair known: distance only
    model = LinearRegression().fit(featurizer.transform(frame), 10 * frame["trip_distance"] - 5)
    return Predictor("linear", featurizer, model)


def test_predictor_clips_and_refuses(negative_predictor):
    np.testing.assert_allclose(negative_predictor.predict(trips()), [5.1, 20.0, 1.0, 27.0])
    with pytest.raises(ContractError, match="PULocationID is not an integer in row 2"):
        negative_predictor.predict(trips(PULocationID=43.5))


def test_pyfunc_refusal_is_an_http_400(negative_predictor):
    from steps.pyfunc_model import TripDurationModel

    model = TripDurationModel()
    model.predictor = negative_predictor
    with pytest.raises(MlflowException) as caught:
        model.predict(None, trips(trip_distance=None))
    assert caught.value.get_http_status_code() == 400
    assert "trip_distance is null or NaN in row 2" in caught.value.message


def test_trial_rmse_is_of_clipped_predictions():
    frame = trips()
    featurizer = Featurizer(("trip_distance",))
    X = featurizer.transform(frame)
    train = Split(X, (10 * frame["trip_distance"] - 5).to_numpy())
    val = Split(X, np.array([6.0, 19.0, 2.0, 30.0]))
    result = train_and_evaluate("linear", {}, train, val)
    clipped = np.array([5.1, 20.0, 1.0, 27.0])
    assert result.val_rmse == pytest.approx(np.sqrt(np.mean((val.y - clipped) ** 2)))
    assert result.val_rmse < np.sqrt(np.mean((val.y - [5.1, 20.0, -5.0, 27.0]) ** 2))


def test_score_frame_keeps_every_row_in_order(negative_predictor):
    raw = trips(trip_distance=-1.0)
    raw.loc[0, "PULocationID"] = None
    raw.insert(0, "lpep_pickup_datetime", pd.date_range("2023-03-01", periods=4, freq="h"))
    scored = score_frame(negative_predictor, raw, "green", "m", "3", "models:/m/3")
    assert scored["pickup_datetime"].tolist() == raw["lpep_pickup_datetime"].tolist()
    assert scored["rejected_reason"].fillna("").tolist() == [
        "PULocationID is null",
        "",
        "trip_distance is negative",
        "",
    ]
    np.testing.assert_allclose(scored["predicted_duration"], [np.nan, 20.0, np.nan, 27.0])


def test_score_frame_with_no_valid_row(negative_predictor):
    raw = trips(trip_distance=None).iloc[2:3]
    raw.insert(0, "lpep_pickup_datetime", pd.Timestamp("2023-03-01"))
    scored = score_frame(negative_predictor, raw, "green", "m", "3", "models:/m/3")
    assert scored["predicted_duration"].isna().all() and len(scored) == 1


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_score_output_has_the_users_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "out" / "scored.parquet"
        write_atomically(trips(), path)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["scored.parquet"]  # no temp file left
    pd.testing.assert_frame_equal(pd.read_parquet(path), trips())


def test_score_help_shows_the_real_default_output_path():
    result = CliRunner().invoke(score_main, ["--help"])
    assert result.exit_code == 0
    assert "predictions/<color>_tripdata_<month>.parquet" in " ".join(result.output.split())
