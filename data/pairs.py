"""Reader of tab-separated sentence pairs, the format of the Tatoeba/ManyThings exports.

One pair a line, UTF-8: `source<TAB>target`, optionally `<TAB>attribution`
(the ManyThings files carry the Tatoeba sentence numbers and contributors
there, which the CC-BY licence requires to keep). Lines are split on tabs
by hand rather than with a CSV parser, because the sentences contain quotes
that are text, not quoting. The first line decides whether the file has an
attribution column; every line must then have the same number of fields.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data.sources import SourceError

COLUMNS = ("source", "target", "attribution")
SUFFIXES = (".txt", ".tsv")  # files a seq2seq recipe reads as pairs; other tasks read them as delimited rows


def read_pairs(path: str | Path) -> pd.DataFrame:
    """The pairs of `path` as a DataFrame with columns `source`, `target` and, when present, `attribution`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 at byte {e.start}; re-encode the file as UTF-8.") from None
    rows, width = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = [field.strip() for field in line.split("\t")]
        if width is None:
            width = len(fields)
            if width not in (2, 3):
                raise SourceError(
                    f"{path}, line {number}: expected 'source<TAB>target' or "
                    f"'source<TAB>target<TAB>attribution', got {width} tab-separated field(s)."
                )
        elif len(fields) != width:
            raise SourceError(
                f"{path}, line {number}: has {len(fields)} tab-separated field(s) where line 1 has {width} "
                f"({', '.join(COLUMNS[:width])})."
            )
        for name, value in zip(COLUMNS, fields):
            if not value:
                raise SourceError(f"{path}, line {number}: empty {name}.")
        rows.append(fields)
    if not rows:
        raise SourceError(f"{path}: no sentence pairs.")
    return pd.DataFrame(rows, columns=list(COLUMNS[:width]))
