"""What a source reader reports: the error that stops it, and the rows it sets aside.

Every reader (`data.sources`, `data.csv_format`) raises and fills these, so
they live in a module of their own that imports no reader.
"""

from __future__ import annotations

import pandas as pd


class SourceError(ValueError):
    """A source that cannot be read, with the file, row or column at fault."""


REJECTED_COLUMNS = ["source", "row", "column", "value", "reason"]


def rejected_rows(records: list[dict] | None = None) -> pd.DataFrame:
    """Rejected rows, one problem each; `row` is a CSV's row number (the header is row 1), else the position from 0."""
    return pd.DataFrame(records or [], columns=REJECTED_COLUMNS)
