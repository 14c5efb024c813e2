"""The model's contract with its callers: which trip records it predicts, and what it returns.

Input: one record per trip with ``PULocationID`` and ``DOLocationID``, integers in
``[0, 2**31)`` (an integer-valued float such as ``43.0`` counts; ``43.5``, a string, a boolean
or a null does not), and ``trip_distance``, a finite number ``>= 0`` (miles). Other columns are
ignored. IDs outside the TLC zone list (1-265) are accepted: the featurizer, like the course's
``DictVectorizer``, ignores a pickup/drop-off pair it has not seen, so such a trip is predicted
from its distance alone.

Output: minutes, never below ``MIN_PREDICTED_MINUTES`` (the shortest trip the training data
keeps, ``tlc.MIN_DURATION_MINUTES``): a model that would predict less returns that floor.

This module ships inside every model (steps/packaging.py), so it imports nothing from the
project: the column names and the floor are spelled here, and a test holds them equal to
``tlc``'s.

``row_reasons`` says, per row, why a record breaks the contract (``None`` when it does not);
``check`` raises ``ContractError`` naming the column and the first offending row. The served
model calls ``check`` (one bad record refuses the request); batch ``score`` calls
``row_reasons`` (bad rows get no prediction). ``clip_minutes`` is applied to every prediction
the project computes: trials' ``val_rmse``, candidates' metrics and the served model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LOCATION_COLUMNS = ("PULocationID", "DOLocationID")
DISTANCE_COLUMN = "trip_distance"
INPUT_COLUMNS = (*LOCATION_COLUMNS, DISTANCE_COLUMN)
LOCATION_ID_LIMIT = 2**31  # exclusive; the featurizer packs a pickup/drop-off pair in 64 bits
MIN_PREDICTED_MINUTES = 1.0  # = tlc.MIN_DURATION_MINUTES
CONTRACT_SUMMARY = (
    f"a trip needs {' and '.join(LOCATION_COLUMNS)} as integers in [0, 2**31) "
    f"and {DISTANCE_COLUMN} as a finite number >= 0"
)


class ContractError(ValueError):
    """A record breaks the input contract; ``column`` and ``row`` (position) say where."""

    def __init__(self, message: str, column: str, row: int):
        super().__init__(message)
        self.column = column
        self.row = row


def _as_float(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64 (NaN for nulls), and a mask of entries that are not numbers at
    all (strings, booleans), which are NaN in the first array too."""
    n = len(values)
    if pd.api.types.is_bool_dtype(values):
        return np.full(n, np.nan), np.ones(n, dtype=bool)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(n, dtype=bool)
    items = values.to_numpy(dtype=object)
    null = np.asarray(pd.isna(items), dtype=bool)
    number = np.array(
        [
            isinstance(x, (int, float, np.integer, np.floating))
            and not isinstance(x, (bool, np.bool_))
            for x in items
        ],
        dtype=bool,
    )
    floats = np.full(n, np.nan)
    floats[number & ~null] = items[number & ~null].astype(np.float64)
    return floats, ~number & ~null


def _problems(frame: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """``(column, reason, mask of rows)`` for every way a row can break the contract."""
    n = len(frame)
    found = []
    for column in INPUT_COLUMNS:
        if column not in frame.columns:
            found.append((column, f"{column} is missing", np.ones(n, dtype=bool)))
            continue
        values, not_number = _as_float(frame[column])
        null = np.isnan(values) & ~not_number
        if column == DISTANCE_COLUMN:
            checks = [
                ("is null or NaN", null),
                ("is not a number", not_number),
                ("is infinite", np.isinf(values)),
                ("is negative", np.isfinite(values) & (values < 0)),
            ]
        else:
            finite = np.isfinite(values)
            integral = np.zeros(n, dtype=bool)
            integral[finite] = values[finite] == np.floor(values[finite])
            checks = [
                ("is null", null),
                ("is not an integer", not_number | (~null & ~not_number & ~integral)),
                (
                    f"is outside [0, {LOCATION_ID_LIMIT})",
                    integral & ((values < 0) | (values >= LOCATION_ID_LIMIT)),
                ),
            ]
        found += [(column, f"{column} {what}", mask) for what, mask in checks if mask.any()]
    return found


def row_reasons(frame: pd.DataFrame) -> np.ndarray:
    """Per row (in order), why it breaks the contract, ``"; "``-joined; ``None`` if it does not."""
    reasons = np.full(len(frame), None, dtype=object)
    for _, reason, mask in _problems(frame):
        for i in np.flatnonzero(mask):
            reasons[i] = reason if reasons[i] is None else f"{reasons[i]}; {reason}"
    return reasons


def check(frame: pd.DataFrame) -> None:
    """Raise ``ContractError`` for the first row that breaks the contract (in row order)."""
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ContractError(f"column {missing[0]} is missing ({CONTRACT_SUMMARY})", missing[0], 0)
    problems = _problems(frame)
    if not problems:
        return
    bad = np.zeros(len(frame), dtype=bool)
    for _, _, mask in problems:
        bad |= mask
    row = int(np.flatnonzero(bad)[0])
    column, reason, _ = next(p for p in problems if p[2][row])
    where = f"row {row}"
    label = frame.index[row]
    if label != row:
        where += f" (index {label!r})"
    got = frame[column].iloc[row]
    got = got.item() if isinstance(got, np.generic) else got
    count = f"{int(bad.sum())} of {len(frame)} rows break the input contract"
    message = f"{reason} in {where}, got {got!r} ({count}; {CONTRACT_SUMMARY})"
    raise ContractError(message, column, row)


def clip_minutes(predictions) -> np.ndarray:
    """Predictions as float64 minutes, raised to ``MIN_PREDICTED_MINUTES`` where below."""
    return np.maximum(np.asarray(predictions, dtype=np.float64), MIN_PREDICTED_MINUTES)
