"""Timestamps written as text, with the day before the month or after it.

pandas reads a column in the format it infers from the first value, month
first where that value is ambiguous: `06/01/2019` is June 1. A file written
where dates go day first (`13/01/2019`) then parses only in part, or, for
the first of each month (`01/02/2019`, `01/03/2019`…), parses whole but as
an irregular run of January days. `parse_timestamps` reads such a column day
first, and every other column as pandas does.
"""

from __future__ import annotations

import warnings

import pandas as pd


def _parse(values: pd.Series, dayfirst: bool) -> pd.Series:
    with warnings.catch_warnings():  # pandas warns when a value contradicts `dayfirst`; the caller decides
        warnings.simplefilter("ignore", UserWarning)
        return pd.to_datetime(values, errors="coerce", dayfirst=dayfirst)


def _regular(times: pd.Series) -> bool:
    """Whether the distinct timestamps, sorted, follow one pandas frequency."""
    index = pd.DatetimeIndex(times.dropna().drop_duplicates().sort_values())
    return len(index) >= 3 and pd.infer_freq(index) is not None


def parse_timestamps(values: pd.Series) -> pd.Series:
    """`values` as datetimes, NaT where a value is missing or not a timestamp.

    Read day first where that parses more values than month first, or as
    many but into a regular series where month first does not.
    """
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return pd.to_datetime(values, errors="coerce")
    month_first = _parse(values, dayfirst=False)
    parsed, regular = int(month_first.notna().sum()), _regular(month_first)
    if parsed == int(values.notna().sum()) and (parsed < 3 or regular):
        return month_first
    day_first = _parse(values, dayfirst=True)
    parsed_day_first = int(day_first.notna().sum())
    if parsed_day_first > parsed or (parsed_day_first == parsed and not regular and _regular(day_first)):
        return day_first
    return month_first
