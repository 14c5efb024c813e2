"""Reading, downloading and cleaning TLC files (unit tests on real and tiny files)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps import tlc
from steps.errors import DataError
from tests.conftest import manifest, tlc_file, write_yellow_copy


@pytest.mark.parametrize("month", ["2023-01", "1999-12"])
def test_parse_month_accepts_yyyy_mm(month):
    assert tlc.parse_month(month) == month


@pytest.mark.parametrize("month", ["2023-13", "2023-1", "23-01", "2023/01", "", "2023-01-01"])
def test_parse_month_rejects_other_strings(month):
    with pytest.raises(ValueError, match="YYYY-MM"):
        tlc.parse_month(month)


def _frame(durations_minutes, color="green"):
    pickup_col, dropoff_col = tlc.PICKUP_DROPOFF[color]
    pickup = pd.Timestamp("2023-01-01 10:00")
    return pd.DataFrame(
        {
            pickup_col: [pickup] * len(durations_minutes),
            dropoff_col: [pickup + pd.Timedelta(minutes=m) for m in durations_minutes],
            "PULocationID": np.arange(len(durations_minutes), dtype=np.int32),
            "DOLocationID": np.arange(len(durations_minutes), dtype=np.int32) + 1,
            "trip_distance": np.linspace(0, 3, len(durations_minutes)),
        }
    )


def test_clean_keeps_one_to_sixty_minutes_inclusive_in_file_order():
    cleaned = tlc.clean(_frame([0.99, 1.0, 30.5, 60.0, 60.01, -5.0, 2.0]), "green")
    assert cleaned["duration"].tolist() == pytest.approx([1.0, 30.5, 60.0, 2.0])
    assert cleaned["PULocationID"].tolist() == [1, 2, 3, 6]  # file order kept
    assert cleaned["PULocationID"].dtype == np.int64
    assert list(cleaned.columns) == tlc.CLEAN_COLUMNS


def test_clean_handles_yellow_timestamps():
    cleaned = tlc.clean(_frame([5.0, 0.5], color="yellow"), "yellow")
    assert cleaned["duration"].tolist() == [5.0]


@pytest.mark.parametrize(
    ("month", "kept"),
    [
        ("2021-01", 73908),
        ("2021-02", 61921),
        ("2023-01", 65946),
        ("2023-02", 62574),
        ("2023-03", 69392),
    ],
)
def test_clean_matches_the_published_row_counts(month, kept):
    raw = tlc.read_month(tlc_file(month), "green")
    assert len(raw.frame) == int(manifest()[tlc_file(month).name]["rows"])
    assert len(tlc.clean(raw.frame, "green")) == kept


def test_clean_equals_the_course_code_row_for_row():
    df = pd.read_parquet(tlc_file("2021-01"))
    df["duration"] = df.lpep_dropoff_datetime - df.lpep_pickup_datetime
    df.duration = df.duration.apply(lambda td: td.total_seconds() / 60)
    df = df[(df.duration >= 1) & (df.duration <= 60)]
    cleaned = tlc.clean(tlc.read_month(tlc_file("2021-01"), "green").frame, "green")
    np.testing.assert_array_equal(cleaned["duration"].to_numpy(), df["duration"].to_numpy())
    np.testing.assert_array_equal(cleaned["DOLocationID"].to_numpy(), df["DOLocationID"])


def test_read_month_checks_sha256_against_manifest():
    path = tlc_file("2023-02")
    assert tlc.read_month(path, "green").sha256 == manifest()[path.name]["sha256"]


def test_read_month_handles_int32_and_int64_months():
    old = tlc.read_month(tlc_file("2021-01"), "green").frame
    new = tlc.read_month(tlc_file("2023-02"), "green").frame
    assert old["PULocationID"].dtype == np.int64 and new["PULocationID"].dtype == np.int32
    assert tlc.clean(new, "green")["PULocationID"].dtype == np.int64


def test_read_month_yellow_shape(tmp_path):
    path = write_yellow_copy("2023-01", tmp_path)
    assert len(tlc.clean(tlc.read_month(path, "yellow").frame, "yellow")) == 65946
    with pytest.raises(DataError, match="lpep_pickup_datetime"):
        tlc.read_month(path, "green")


def test_read_month_names_the_missing_column(tmp_path):
    path = tmp_path / "green_tripdata_2023-01.parquet"
    table = pq.read_table(tlc_file("2023-01")).drop_columns(["trip_distance"])
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"green_tripdata_2023-01.parquet has no column 'trip_di"):
        tlc.read_month(path, "green")


def test_read_month_rejects_a_non_parquet_file(tmp_path):
    path = tmp_path / "green_tripdata_2023-01.parquet"
    path.write_text("VendorID,lpep_pickup_datetime\n1,2023-01-01\n")
    with pytest.raises(DataError, match="not a readable parquet file"):
        tlc.read_month(path, "green")


def test_read_month_rejects_text_timestamps(tmp_path):
    path = tmp_path / "green_tripdata_2023-01.parquet"
    table = pq.read_table(tlc_file("2023-01"))
    i = table.column_names.index("lpep_pickup_datetime")
    table = table.set_column(i, "lpep_pickup_datetime", table.column(i).cast(pa.string()))
    pq.write_table(table, path)
    with pytest.raises(DataError, match="not a timestamp"):
        tlc.read_month(path, "green")


def test_download_fetches_a_missing_month(tmp_path, tlc_server, monkeypatch):
    monkeypatch.setenv("TLC_BASE_URL", tlc_server(tlc_file("2023-01").parent))
    path = tlc.ensure_local_file(tmp_path / "raw", "green", "2023-01")
    assert path == tmp_path / "raw" / "green_tripdata_2023-01.parquet"
    assert tlc.sha256_of(path) == manifest()[path.name]["sha256"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_download_error_names_file_and_url_and_leaves_nothing(tmp_path, tlc_server, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = tlc_server(empty)
    monkeypatch.setenv("TLC_BASE_URL", base)
    with pytest.raises(DataError) as err:
        tlc.ensure_local_file(tmp_path / "raw", "green", "2023-01")
    assert "green_tripdata_2023-01.parquet" in str(err.value)
    assert f"{base}/green_tripdata_2023-01.parquet" in str(err.value)
    assert list((tmp_path / "raw").iterdir()) == []


def test_cut_download_leaves_no_file(tmp_path, tlc_server, monkeypatch):
    monkeypatch.setenv("TLC_BASE_URL", tlc_server(tlc_file("2023-01").parent, truncate=True))
    with pytest.raises(DataError, match="green_tripdata_2023-01.parquet"):
        tlc.ensure_local_file(tmp_path / "raw", "green", "2023-01")
    assert list((tmp_path / "raw").iterdir()) == []


def test_unreachable_host_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TLC_BASE_URL", "http://127.0.0.1:9/trip-data")  # discard port: closed
    with pytest.raises(
        DataError,
        match=r"cannot download green_tripdata_2023-01.parquet from "
        r"http://127.0.0.1:9/trip-data/green_tripdata_2023-01",
    ):
        tlc.ensure_local_file(tmp_path / "raw", "green", "2023-01")


def test_clean_drops_trips_the_model_contract_refuses():
    """A 10-minute trip with a negative, null or infinite distance, or a null location ID,
    cannot be predicted by the model (steps/contract.py), so it cannot be trained or tested on."""
    start = pd.Timestamp("2023-01-01 10:00")
    frame = pd.DataFrame(
        {
            "lpep_pickup_datetime": [start] * 5,
            "lpep_dropoff_datetime": [start + pd.Timedelta(minutes=10)] * 5,
            "PULocationID": [43.0, 43.0, 43.0, None, 43.0],
            "DOLocationID": [151.0] * 5,
            "trip_distance": [1.5, -1.0, float("nan"), 2.0, float("inf")],
        }
    )
    cleaned = tlc.clean(frame, "green")
    assert cleaned["trip_distance"].tolist() == [1.5]
    assert cleaned["PULocationID"].dtype == np.int64
