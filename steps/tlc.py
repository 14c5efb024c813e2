"""Reading, downloading and cleaning NYC TLC monthly trip files.

Pure functions plus one side effect (``ensure_local_file`` downloads a missing month).
Files are read month by month: the TLC changed column types between months (int64 to int32
location IDs in 2023-02, a ``null``-typed ``ehail_fee``), so one multi-month dataset fails.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from steps.errors import DataError

DEFAULT_TLC_BASE_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"
COLORS = ("green", "yellow")
PICKUP_DROPOFF = {
    "green": ("lpep_pickup_datetime", "lpep_dropoff_datetime"),
    "yellow": ("tpep_pickup_datetime", "tpep_dropoff_datetime"),
}
LOCATION_COLUMNS = ("PULocationID", "DOLocationID")
MIN_DURATION_MINUTES = 1.0
MAX_DURATION_MINUTES = 60.0
# Columns of a cleaned split, as written to the preprocess run's artifacts.
CLEAN_COLUMNS = [
    "pickup_datetime",
    "dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
    "duration",
]
_MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def parse_month(value: str) -> str:
    """Return ``value`` if it is a ``YYYY-MM`` month, else raise ``ValueError``."""
    if not isinstance(value, str) or not _MONTH_RE.match(value):
        raise ValueError(f"month must be YYYY-MM (for example 2023-01), got {value!r}")
    return value


def file_name(color: str, month: str) -> str:
    return f"{color}_tripdata_{month}.parquet"


def tlc_base_url() -> str:
    return os.environ.get("TLC_BASE_URL", DEFAULT_TLC_BASE_URL).rstrip("/")


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` atomically: a failed or partial download leaves no file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "nyc-taxi-duration"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            written = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                written += len(chunk)
        if expected is not None and written != int(expected):
            raise DataError(
                f"download of {dest.name} from {url} was cut short ({written} of {expected} bytes)"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"cannot download {dest.name} from {url}: {reason}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def ensure_local_file(raw_dir: Path, color: str, month: str) -> Path:
    """Return the local path of a month's file, downloading it from the TLC if missing."""
    path = Path(raw_dir) / file_name(color, month)
    if not path.exists():
        download(f"{tlc_base_url()}/{path.name}", path)
    return path


@dataclass(frozen=True)
class RawMonth:
    path: Path
    frame: pd.DataFrame  # columns: pickup/dropoff (original names), locations, trip_distance
    sha256: str


def read_month(path: Path, color: str) -> RawMonth:
    """Read the columns the model needs from one TLC file, checking that they exist."""
    path = Path(path)
    pickup, dropoff = PICKUP_DROPOFF[color]
    needed = [pickup, dropoff, *LOCATION_COLUMNS, "trip_distance"]
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable parquet file: {exc}") from exc
    missing = [c for c in needed if c not in schema.names]
    if missing:
        raise DataError(
            f"{path} has no column {missing[0]!r} (a {color} TLC file needs {', '.join(needed)})"
        )
    table = pq.read_table(path, columns=needed)
    frame = table.to_pandas()
    for column in (pickup, dropoff):
        if not pd.api.types.is_datetime64_any_dtype(frame[column]):
            raise DataError(f"{path}: column {column!r} is {frame[column].dtype}, not a timestamp")
    for column in LOCATION_COLUMNS:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise DataError(f"{path}: column {column!r} is {frame[column].dtype}, not numeric")
    return RawMonth(path=path, frame=frame, sha256=sha256_of(path))


def clean(frame: pd.DataFrame, color: str) -> pd.DataFrame:
    """The course's cleaning: duration in minutes, keep 1 <= duration <= 60, nothing else.

    Row order is the file's. Location IDs become int64 whatever the month stored.
    """
    pickup, dropoff = PICKUP_DROPOFF[color]
    duration = (frame[dropoff] - frame[pickup]).dt.total_seconds().to_numpy() / 60.0
    keep = (duration >= MIN_DURATION_MINUTES) & (duration <= MAX_DURATION_MINUTES)
    kept = frame.loc[keep]
    return pd.DataFrame(
        {
            "pickup_datetime": kept[pickup].to_numpy(),
            "dropoff_datetime": kept[dropoff].to_numpy(),
            "PULocationID": kept["PULocationID"].to_numpy(dtype=np.int64),
            "DOLocationID": kept["DOLocationID"].to_numpy(dtype=np.int64),
            "trip_distance": kept["trip_distance"].to_numpy(dtype=np.float64),
            "duration": duration[keep],
        }
    )
