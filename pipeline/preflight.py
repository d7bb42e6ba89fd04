"""Checks a run's inputs before any MLflow run exists: the data files are there and have the columns named.

Reading a CSV header (with the sniffed options) or a Parquet schema is
cheap, so a typo in `data.label` fails in a second with the columns listed,
not after MLflow runs were created and ingest read the whole file.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from data import pairs
from data.sources import CSV_SUFFIXES, SourceError, column_name
from pipeline.config import PROJECT_ROOT, SOURCE_SCHEMES, ConfigError, PipelineConfig


def source_file(source: str) -> Path | None:
    """The file a source names (relative to the checkout, as `load_config` leaves it), or None for a catalog."""
    if source.startswith(SOURCE_SCHEMES):
        return None
    return PROJECT_ROOT / source


def file_columns(path: Path, csv_options: dict | None = None) -> list[str] | None:
    """The normalised column names of a CSV or Parquet file, from its header or schema; None for other files."""
    if path.name.endswith(CSV_SUFFIXES):
        from data.csv_format import iter_csv, sniff

        first = next(iter_csv(path, sniff(path, csv_options), block_rows=1), None)
        names = list(first.columns) if first is not None else None
    elif path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
    else:
        return None
    return None if names is None else [column_name(n) for n in names]


def _missing_column(key: str, value: str, columns: list[str], path: Path, fix: str) -> ConfigError:
    close = difflib.get_close_matches(column_name(value), columns, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{key}: {path} has no column {value!r}{hint}; its columns are {', '.join(columns)}. {fix}")


def check_inputs(config: PipelineConfig) -> None:
    """Raises `ConfigError` naming the key to fix when a data file is missing or lacks a column the recipe names."""
    data = config.data
    for key, source in (("data.source", data.source), ("data.test_source", data.test_source)):
        path = source_file(source) if source else None
        if path is not None and not path.is_file():
            raise ConfigError(f"{key}: data file {source} does not exist; fix the path in the recipe or pass "
                              f"--set {key}=PATH.")
    path = source_file(data.source)
    if path is None or (config.task.type == "seq2seq" and path.name.endswith(pairs.SUFFIXES)):
        return  # sentence pairs have no header to check
    try:
        columns = file_columns(path, data.csv.model_dump())
    except SourceError as e:
        raise ConfigError(str(e)) from None
    if columns is None:
        return
    named = [("data.label", data.label or "label", "Set data.label to one of them (--set data.label=COLUMN).")]
    task = config.task
    if task.type == "forecasting":
        named.append(("task.time_column", task.time_column,
                      "Set task.time_column to one of them (--set task.time_column=COLUMN)."))
    for key in ("categorical", "ignore"):
        for column in getattr(task, key, ()):
            named.append((f"task.{key}", column, f"Correct or remove it in the recipe's task.{key}."))
    for key, value, fix in named:
        if column_name(value) not in columns:
            raise _missing_column(key, value, columns, path, fix)
