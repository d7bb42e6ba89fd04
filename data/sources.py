"""Readers that turn a configured source into one pandas DataFrame of raw examples.

Sources: `sklearn:<name>` (datasets bundled with scikit-learn),
`tfds:<name>[:<version>][/<split>]` (the TensorFlow Datasets catalog, or a
local builder registered by importing `data.tfds_builders`; all splits
unless one is named), and paths to data files, read by their suffix (see
`READERS`; CSV files with the recipe's `data.csv` options, those unset
sniffed from the file, by `data.csv_format`). Column names are normalised
to snake_case identifiers so they can name model inputs and MLflow
signature columns.

Rows that cannot be examples are set aside in `RawData.rejected`, each with
where it is and why: CSV lines with the wrong number of fields, a number
that does not parse in a column that is otherwise numeric, an infinite
value, a missing label. The ingest component applies the recipe's
`data.bad_rows_policy` to them.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data.errors import SourceError, rejected_rows

SKLEARN_DATASETS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
DATA_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class RawData:
    frame: pd.DataFrame
    label: str
    origin: str
    renamed: dict[str, str]
    path: str | None = None
    rejected: pd.DataFrame = field(default_factory=rejected_rows)
    csv_format: dict | None = None  # how a CSV source was read (`CsvFormat.to_dict()`)


# Latin letters that Unicode does not decompose into a base letter and an accent.
LATIN_LETTERS = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
                               "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH",
                               "ı": "i"})


def column_name(name: str) -> str:
    """`"sepal length (cm)"` → `"sepal_length_cm"`, `"Kündigt"` → `"kundigt"` (accents dropped, not the letters)."""
    letters = "".join(c for c in unicodedata.normalize("NFKD", str(name).translate(LATIN_LETTERS))
                      if not unicodedata.combining(c))
    clean = re.sub(r"[^0-9a-zA-Z]+", "_", letters).strip("_").lower()
    return clean if clean and not clean[0].isdigit() else f"f_{clean}"


def _normalise_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    renamed = {str(c): column_name(c) for c in frame.columns}
    seen: dict[str, str] = {}
    for original, new in renamed.items():
        if new in seen:
            raise SourceError(
                f"Columns {seen[new]!r} and {original!r} both normalise to {new!r}; rename one."
            )
        seen[new] = original
    return frame.rename(columns=renamed), renamed


def _read_sklearn(name: str) -> tuple[pd.DataFrame, str]:
    if name not in SKLEARN_DATASETS:
        raise SourceError(
            f"Unknown scikit-learn dataset {name!r}; available: {', '.join(SKLEARN_DATASETS)}."
        )
    import sklearn.datasets

    # Diabetes in its original units (age in years, sex 1/2, ...), not scikit-learn's pre-scaled copy.
    options = {"scaled": False} if name == "diabetes" else {}
    bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True, **options)
    frame = bunch.frame.copy()
    target_names = np.asarray(getattr(bunch, "target_names", []))
    label = {"iris": "species", "wine": "cultivar", "breast_cancer": "diagnosis",
             "diabetes": "disease_progression"}.get(name, "label")
    frame = frame.drop(columns=["target"])
    frame[label] = target_names[bunch.target.to_numpy()] if target_names.size else bunch.target
    return frame, label


def _read_csv(path: Path, options=None):
    """A CSV file of any common shape (`data.csv_format`): its rows by file row, the bad lines, the format."""
    from data.csv_format import read_csv

    return read_csv(path, options)


def _read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


# Files read as delimited rows (`data.csv_format` sniffs the delimiter, whatever the suffix says).
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")
# File suffix → reader (`module:function` for readers that live beside their format's code). Sentence
# pairs (`.txt`, `.tsv`) are delimited text too; the seq2seq task reads them with `data.pairs`.
READERS = {
    **dict.fromkeys(CSV_SUFFIXES, _read_csv),
    ".parquet": _read_parquet,
    ".ts": "data.ucr:read_ts",
}


def _reader(path: Path):
    for suffix, reader in READERS.items():
        if path.name.endswith(suffix):
            if isinstance(reader, str):
                module, _, function = reader.partition(":")
                reader = getattr(importlib.import_module(module), function)
            return reader
    raise SourceError(
        f"Unknown source {str(path)!r}: use sklearn:<name>, tfds:<name>, or a file ending in "
        f"{', '.join(READERS)}."
    )


def _tfds_name_and_split(spec: str) -> tuple[str, str]:
    """`name[/config][:version][/split]` → (builder name, split); in `glue/sst2`, `sst2` is a config."""
    import tensorflow_datasets as tfds

    parts = spec.split("/")
    if len(parts) == 1:
        return spec, ""
    if len(parts) == 2:
        try:
            configs = tfds.builder_cls(parts[0].split(":")[0]).builder_configs
        except tfds.core.registered.DatasetNotFoundError:
            configs = {}
        if parts[1].split(":")[0] in configs:
            return spec, ""
    return "/".join(parts[:-1]), parts[-1]


def _read_tfds(spec: str, data_dir: str | None) -> tuple[pd.DataFrame, str]:
    import tensorflow_datasets as tfds

    from data import tfds_builders  # noqa: F401  (registers the builders for shipped data)

    name, split = _tfds_name_and_split(spec)
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()
    if split and split not in builder.info.splits:
        raise SourceError(f"tfds:{name} has no split {split!r}; it has {', '.join(builder.info.splits)}.")
    dataset = builder.as_dataset(split=split or "+".join(builder.info.splits))
    frame = tfds.as_dataframe(dataset, builder.info)
    label = (builder.info.supervised_keys or (None, "label"))[1]
    columns = {}
    for name in frame.columns:
        values = frame[name]
        if values.map(np.ndim).max() == 1:  # a feature vector: one column per component
            matrix = np.stack(values.to_numpy())
            for i in range(matrix.shape[1]):
                columns[f"{name}_{i}"] = matrix[:, i]
        else:
            columns[name] = values.to_numpy()
    frame = pd.DataFrame(columns)
    feature = builder.info.features[label]
    if isinstance(feature, tfds.features.ClassLabel):
        frame[label] = [feature.int2str(int(i)) for i in frame[label]]
    return frame, label


def read_source(source: str, label: str | None = None, tfds_data_dir: str | None = None,
                csv: Mapping | None = None, reader=None) -> RawData:
    """Reads `source` into a DataFrame with normalised column names and its label column.

    `csv` holds the recipe's `data.csv` options for a CSV file (unset ones
    are sniffed); `label` may be the column's name in the file or normalised.
    `reader` (a path → DataFrame function) reads a file instead of the one
    its suffix picks.
    """
    kind, _, rest = source.partition(":")
    path, rejected, csv_format = None, rejected_rows(), None
    if kind == "sklearn":
        frame, default_label = _read_sklearn(rest)
    elif kind == "tfds":
        frame, default_label = _read_tfds(rest, tfds_data_dir)
    else:
        path = Path(source)
        if not path.is_absolute():
            path = DATA_ROOT.parent / path
        if not path.is_file():
            raise SourceError(f"Data file {source} does not exist.")
        reader = reader or _reader(path)
        if reader is _read_csv:
            frame, rejected, fmt = _read_csv(path, csv)
            csv_format = fmt.to_dict()
        else:
            result = reader(path)
            frame, rejected = result if isinstance(result, tuple) else (result, rejected)
        default_label = "label"
    frame, renamed = _normalise_columns(frame)
    label = column_name(label or default_label)
    if label not in frame.columns:
        raise SourceError(
            f"{source}: label column {label!r} not found; columns are: {', '.join(frame.columns)}."
        )
    if frame.empty and rejected.empty:
        raise SourceError(f"{source}: no rows.")
    frame, found = check_rows(frame, label, str(path or source))
    rejected = pd.concat([rejected, found], ignore_index=True) if len(found) else rejected
    return RawData(frame=frame, label=label, origin=source, renamed=renamed, path=str(path) if path else None,
                   rejected=rejected, csv_format=csv_format)


def check_rows(frame: pd.DataFrame, label: str, where: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sets aside rows with a missing label, an unparsable number or an infinite value.

    A text column most of whose values parse as numbers is taken for a
    numeric column with typos: it becomes numeric, and the rows whose value
    does not parse are rejected. Missing feature values stay (tasks fill
    them); infinite ones are rejected, since no statistic survives them.
    Returns the good rows, renumbered from 0, and the rejected problems.
    """
    problems = []

    def reject(mask: pd.Series, column: str, reason: str) -> None:
        for row, value in frame.loc[mask, column].items():
            problems.append({"source": where, "row": int(row), "column": column, "value": str(value)[:200],
                             "reason": reason})

    reject(frame[label].isna(), label, "missing label")
    for name in frame.columns.drop(label):
        column = frame[name]
        if pd.api.types.infer_dtype(column, skipna=True) == "string":
            numbers = pd.to_numeric(column, errors="coerce")
            unparsable = numbers.isna() & column.notna()
            if 0 < unparsable.sum() < column.notna().sum() / 2:
                reject(unparsable, name, "not a number, in a numeric column")
                frame[name] = column = numbers
        if pd.api.types.is_float_dtype(column):
            infinite = np.isinf(column.to_numpy(dtype="float64", na_value=np.nan))
            reject(pd.Series(infinite, index=frame.index), name, "infinite value")
    rejected = rejected_rows(problems)
    bad_rows = frame.index.isin(rejected["row"])
    return frame.loc[~bad_rows].reset_index(drop=True), rejected


def bad_rows_summary(rejected: pd.DataFrame, shown: int = 5) -> str:
    """The first rejected rows, one line each, as an error message lists them."""
    lines = []
    for problem in rejected.head(shown).itertuples():
        column = f", column {problem.column!r}" if isinstance(problem.column, str) else ""
        lines.append(f"  {problem.source} row {problem.row}{column}: {problem.reason} ({problem.value!r})")
    more = len(rejected) - shown
    return "\n".join(lines + ([f"  … and {more} more"] if more > 0 else []))


def apply_bad_rows_policy(rejected: pd.DataFrame, good_rows: int, policy: str, max_fraction: float) -> int:
    """Raises unless `policy` lets the rejected rows be set aside; returns how many rows are set aside."""
    bad_rows = len(rejected.drop_duplicates(["source", "row"]))
    if not bad_rows:
        return 0
    fraction = bad_rows / (bad_rows + good_rows)
    summary = bad_rows_summary(rejected)
    if policy == "fail":
        raise SourceError(
            f"{bad_rows} row(s) cannot be used:\n{summary}\nFix them, or set data.bad_rows_policy: quarantine "
            f"to set such rows aside (up to data.max_bad_rows_fraction = {max_fraction:g} of the rows)."
        )
    if fraction > max_fraction:
        raise SourceError(
            f"{bad_rows} of {bad_rows + good_rows} rows ({fraction:.1%}) cannot be used, more than "
            f"data.max_bad_rows_fraction = {max_fraction:g}:\n{summary}\nFix the data, or raise the fraction."
        )
    return bad_rows
