"""Text timestamps read day first where the file writes them so, and as pandas reads them otherwise."""

import pandas as pd
import pytest

from data.timestamps import parse_timestamps


def dates(start: str, periods: int, freq: str, fmt: str) -> pd.Series:
    return pd.Series(pd.date_range(start, periods=periods, freq=freq).strftime(fmt))


@pytest.mark.parametrize("fmt", ["%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y-%m-%d", "%d-%m-%Y"])
@pytest.mark.parametrize("freq", ["W", "D", "MS"])
def test_every_order_reads_back_the_dates_written(fmt, freq):
    """Weekly dates from January 6 are ambiguous at first (06/01), the first of each month (01/02…) throughout."""
    expected = pd.date_range("2019-01-06" if freq != "MS" else "2019-01-01", periods=40, freq=freq)
    parsed = parse_timestamps(pd.Series(expected.strftime(fmt)))
    assert parsed.tolist() == expected.tolist()


def test_values_that_are_no_timestamp_are_missing_and_the_rest_keep_their_order():
    parsed = parse_timestamps(pd.Series(["13/01/2019", None, "20/01/2019", "27/01/2019", "soon"]))
    assert parsed.isna().tolist() == [False, True, False, False, True]
    assert parsed.dropna().dt.strftime("%Y-%m-%d").tolist() == ["2019-01-13", "2019-01-20", "2019-01-27"]


def test_a_column_that_parses_both_ways_and_is_regular_neither_way_reads_month_first():
    """Event dates, not a series: nothing tells the orders apart, so pandas' own reading stands."""
    parsed = parse_timestamps(pd.Series(["03/04/2020", "01/02/2021", "11/12/2019", "05/06/2022"]))
    assert parsed.dt.strftime("%Y-%m-%d").tolist() == ["2020-03-04", "2021-01-02", "2019-11-12", "2022-05-06"]
