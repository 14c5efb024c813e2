"""Reading, downloading and cleaning NYC TLC monthly trip files.

Pure functions plus one side effect (``ensure_local_file`` downloads a missing month, and
keeps it only once it reads as a parquet file with the columns the colour needs).
Files are read month by month: the TLC changed column types between months (int64 to int32
location IDs in 2023-02, a ``null``-typed ``ehail_fee``), so one multi-month dataset fails.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from steps import contract
from steps.errors import DataError

DEFAULT_TLC_BASE_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"
COLORS = ("green", "yellow")
PICKUP_DROPOFF = {
    "green": ("lpep_pickup_datetime", "lpep_dropoff_datetime"),
    "yellow": ("tpep_pickup_datetime", "tpep_dropoff_datetime"),
}
LOCATION_COLUMNS = contract.LOCATION_COLUMNS
# The shortest trip kept; the model's prediction floor is the same number (contract.py, which
# ships inside every model and so spells it itself).
MIN_DURATION_MINUTES = contract.MIN_PREDICTED_MINUTES
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


def needed_columns(color: str) -> list[str]:
    """The columns of a TLC file that the model needs, for ``color``."""
    pickup, dropoff = PICKUP_DROPOFF[color]
    return [pickup, dropoff, *LOCATION_COLUMNS, "trip_distance"]


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split()) or type(reason).__name__


def _check_downloaded(path: Path, color: str) -> None:
    """Raise ``ValueError`` unless ``path`` is a parquet file usable as a ``color`` month:
    a footer that reads, the columns the model needs, at least one row."""
    try:
        metadata = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"not a parquet file ({_one_line(exc)})") from exc
    names = metadata.schema.to_arrow_schema().names
    missing = [c for c in needed_columns(color) if c not in names]
    if missing:
        raise ValueError(f"no column {missing[0]!r} (a {color} TLC file needs it)")
    if metadata.num_rows < 1:
        raise ValueError("no rows")


def _create_beside(dest: Path) -> tuple[int, Path]:
    """A new, uniquely named hidden file next to ``dest``, created with the user's normal
    permissions (``0o666`` less the umask, as ``open`` would; ``mkstemp`` would make it 0600)."""
    while True:
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.part"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def download(url: str, dest: Path, color: str, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` atomically, keeping it only if it is a usable ``color``
    month (see ``_check_downloaded``). Any failure (network, HTTP status, a body cut short,
    an error page served as the file) is a one-line ``DataError`` naming the file and the URL,
    and leaves no file behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(dest)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "nyc-taxi-duration"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            written = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                written += len(chunk)
        if expected is not None and written != int(expected):
            raise ValueError(f"cut short ({written} of {expected} bytes)")
        _check_downloaded(tmp, color)
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # URLError covers HTTPError; HTTPException covers IncompleteRead (a chunked body cut
        # short) and RemoteDisconnected; OSError covers timeouts and resets.
        reason = getattr(exc, "reason", None) or exc
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        elif isinstance(exc, http.client.IncompleteRead):
            reason = f"cut short: {exc!r}"
        raise DataError(f"cannot download {dest.name} from {url}: {_one_line(reason)}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def ensure_local_file(raw_dir: Path, color: str, month: str) -> Path:
    """Return the local path of a month's file, downloading it from the TLC if missing."""
    path = Path(raw_dir) / file_name(color, month)
    if not path.exists():
        download(f"{tlc_base_url()}/{path.name}", path, color)
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
    needed = needed_columns(color)
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
    """The course's cleaning: duration in minutes, keep 1 <= duration <= 60; and drop the
    trips the model's input contract refuses (steps/contract.py: a null, negative or infinite
    distance, a null or non-integer location ID), which no model could be evaluated on. No
    green month of 2021-2023 has such a trip, so the course's row counts hold.

    Row order is the file's. Location IDs become int64 whatever the month stored.
    """
    pickup, dropoff = PICKUP_DROPOFF[color]
    duration = (frame[dropoff] - frame[pickup]).dt.total_seconds().to_numpy() / 60.0
    keep = (duration >= MIN_DURATION_MINUTES) & (duration <= MAX_DURATION_MINUTES)
    keep &= pd.isna(contract.row_reasons(frame))  # None: the row keeps the contract
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
