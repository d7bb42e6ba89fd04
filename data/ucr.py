"""Reader of the sktime `.ts` format, in which the UCR/UEA archives ship their series.

A file is a header of `#` comment lines and `@` tags (`@problemName`,
`@univariate`, `@dimensions`, `@equalLength`, `@seriesLength`, `@missing`,
`@timeStamps`, `@classLabel true <labels>`), then `@data` and one case a
line: the dimensions as comma-separated values separated by `:`, then the
class label, e.g. `1.0,2.0,?:3.0,4.0,5.0:a`. `?` is a missing value. Each
case becomes one numpy array, `(length,)` for univariate files and
`(length, channels)` for multivariate ones, so a case's dimensions must be
equally long; cases may differ in length from one another.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from data.sources import SourceError

MISSING = "?"


def _flag(path: Path, number: int, tag: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise SourceError(f"{path}, line {number}: {tag} must be true or false, got {value!r}.")
    return value.lower() == "true"


def _integer(path: Path, number: int, tag: str, value: str) -> int:
    try:
        result = int(value)
    except ValueError:
        result = 0
    if result < 1:
        raise SourceError(f"{path}, line {number}: {tag} must be a positive integer, got {value!r}.")
    return result


def _values(path: Path, number: int, dimension: int, text: str) -> np.ndarray:
    """One dimension's comma-separated values; `?` is NaN."""
    values = []
    for position, token in enumerate(text.split(","), start=1):
        token = token.strip()
        if token == MISSING:
            values.append(math.nan)
            continue
        try:
            values.append(float(token))
        except ValueError:
            raise SourceError(
                f"{path}, line {number}: dimension {dimension}, value {position} is not a number: {token!r}."
            ) from None
    return np.asarray(values, dtype="float64")


def read_ts(path: str | Path) -> pd.DataFrame:
    """A `.ts` file → a DataFrame with a `series` column of numpy arrays and a string `label` column.

    The `label` column is left out when the header says `@classLabel false`.
    Errors name the file and line: a value that is not a number, a label
    outside `@classLabel`, a case whose dimension count differs from the
    file's, dimensions of unequal length, a length that breaks `@seriesLength`.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 at byte {e.start}; re-encode the file as UTF-8.") from None

    header: dict[str, object] = {}
    classes: list[str] | None = None
    series, labels, data_line = [], [], None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if data_line is None:
            if not line.startswith("@"):
                raise SourceError(f"{path}, line {number}: data before the @data tag: {line[:40]!r}.")
            tag, _, value = line.partition(" ")
            tag, value = tag.lower(), value.strip()
            if tag == "@data":
                data_line = number
            elif tag == "@classlabel":
                flag, _, names = value.partition(" ")
                if _flag(path, number, "@classLabel", flag):
                    classes = names.split()
                    if not classes:
                        raise SourceError(f"{path}, line {number}: @classLabel true lists no class labels.")
                else:
                    classes = []
            elif tag in ("@univariate", "@equallength", "@timestamps", "@missing"):
                header[tag] = _flag(path, number, tag, value)
            elif tag in ("@dimension", "@dimensions"):
                header["@dimensions"] = _integer(path, number, tag, value)
            elif tag == "@serieslength":
                header[tag] = _integer(path, number, tag, value)
            if header.get("@timestamps"):
                raise SourceError(f"{path}, line {number}: timestamped series (@timeStamps true) are not supported.")
            continue

        parts = line.split(":")
        if classes:
            if len(parts) < 2:
                raise SourceError(f"{path}, line {number}: no ':<label>' after the values.")
            parts, label = parts[:-1], parts[-1].strip()
            if label not in classes:
                raise SourceError(
                    f"{path}, line {number}: class label {label!r} is not one of @classLabel {classes}."
                )
            labels.append(label)
        expected = header.get("@dimensions") or (1 if header.get("@univariate") else None)
        if expected is None and series:
            expected = series[0].shape[1] if series[0].ndim == 2 else 1
        if expected is not None and len(parts) != expected:
            raise SourceError(f"{path}, line {number}: {len(parts)} dimension(s), expected {expected}.")
        dimensions = [_values(path, number, d, text) for d, text in enumerate(parts, start=1)]
        lengths = {len(d) for d in dimensions}
        if len(lengths) > 1:
            raise SourceError(
                f"{path}, line {number}: dimensions have unequal lengths {[len(d) for d in dimensions]}; "
                "a case's channels must be equally long."
            )
        length = lengths.pop()
        if header.get("@equallength") and "@serieslength" in header and length != header["@serieslength"]:
            raise SourceError(
                f"{path}, line {number}: series of length {length}, but @seriesLength is {header['@serieslength']}."
            )
        series.append(dimensions[0] if len(dimensions) == 1 else np.stack(dimensions, axis=1))

    if data_line is None:
        raise SourceError(f"{path}: no @data tag; not a .ts file.")
    if classes is None:
        raise SourceError(f"{path}: no @classLabel tag in the header.")
    if not series:
        raise SourceError(f"{path}: no cases after @data (line {data_line}).")
    frame = pd.DataFrame({"series": pd.Series(series, dtype=object)})
    if classes:
        frame["label"] = pd.Series(labels, dtype=object).astype(str)
    return frame
