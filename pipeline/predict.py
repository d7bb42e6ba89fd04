"""Batch predictions: a logged model over a CSV or Parquet file, written beside its rows.

`predict_file` loads the model as MLflow serves it (`mlflow.pyfunc.load_model`),
so each chunk's predictions are the served model's, and streams the file a
chunk at a time: CSV with `data.csv_format.iter_csv`, in the format the
model's training file had unless options say otherwise; Parquet a record batch
at a time. The input rows, plus `prediction` (and `probability_<class>` for
classification), go to a temporary file beside the output, renamed over it
once every chunk is written, so a failed run leaves nothing half-written.

Rows the model cannot read (a number that does not parse, an infinite
value, a CSV line of the wrong width) fail the run by default, named by file
row; with `bad_rows="skip"` they are left out of the output and reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.sources import CSV_SUFFIXES

PARQUET_SUFFIXES = (".parquet", ".pq")
OUTPUT_SUFFIXES = (".csv", ".parquet")
NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
BAD_ROWS_POLICIES = ("fail", "skip")
DEFAULT_CHUNK_ROWS = 65536


class PredictError(ValueError):
    """Input that cannot be predicted on, with the file, row, column or option at fault and the fix."""


@dataclass(frozen=True)
class PredictSummary:
    """What `predict_file` did: where it read and wrote, how many rows, and the rows it left out."""

    model_uri: str
    input_path: Path
    output_path: Path
    rows_written: int
    chunks: int
    rejected: pd.DataFrame  # `data.sources.rejected_rows` columns: one problem per line

    @property
    def rows_skipped(self) -> int:
        return _count(self.rejected)


def _suffix(path: Path, suffixes: tuple[str, ...]) -> str | None:
    return next((s for s in suffixes if path.name.lower().endswith(s)), None)


def default_output(input_path: Path) -> Path:
    """`<input stem>.predictions.csv` (or `.parquet` for a Parquet input) beside the input."""
    suffix = _suffix(input_path, CSV_SUFFIXES + PARQUET_SUFFIXES) or input_path.suffix
    stem = input_path.name[: len(input_path.name) - len(suffix)] if suffix else input_path.name
    kind = ".parquet" if _suffix(input_path, PARQUET_SUFFIXES) else ".csv"
    return input_path.with_name(f"{stem}.predictions{kind}")


@dataclass(frozen=True)
class _Model:
    """The served model and what `predict_file` reads from its signature and transform."""

    pyfunc: Any
    inputs: list[str]  # the signature's column names: the file's original ones and the normalised ones
    numeric: frozenset[str]  # those the signature declares as numbers
    renamed: dict[str, str]  # original name → normalised name, for the columns ingest renamed
    label: str | None  # the label's normalised name
    csv: dict[str, Any] | None  # the training file's resolved CSV format

    def missing(self, columns: list[str]) -> list[str]:
        """Inputs the model reads that `columns` hold under neither their original nor their normalised name."""
        normalised = {self.renamed.get(c, c) for c in columns}
        original = {new: old for old, new in self.renamed.items()}
        needed = dict.fromkeys(self.renamed.get(c, c) for c in self.inputs)
        return [original.get(name, name) for name in needed if name not in normalised]


def load(model_uri: str) -> _Model:
    import mlflow

    from tasks.serving import SOURCE_KEY, renamed_columns

    pyfunc = mlflow.pyfunc.load_model(model_uri)
    schema = pyfunc.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        raise PredictError(f"{model_uri}: the model's signature names no input columns; it cannot read a table.")
    transform = pyfunc.unwrap_python_model().predictor.transform
    numeric = frozenset(s.name for s in schema.inputs if str(getattr(s.type, "name", s.type)) in NUMERIC_TYPES)
    label = transform.get("label")
    return _Model(pyfunc, schema.input_names(), numeric, renamed_columns(transform),
                  label.get("name") if isinstance(label, dict) else None,
                  (transform.get(SOURCE_KEY) or {}).get("csv"))


def csv_format(path: Path, model: _Model, options: Mapping[str, Any] | None):
    """How to read `path`: the training file's format with `options` laid over it, else `options` and sniffing.

    A headerless training file's `column_names` include the label; a file to
    predict on that is one field narrower gets them without it, and a file
    said to have a header keeps its own unless `options` name them. Column types
    forced to numbers are left to inference, so a value that does not parse
    is a bad row rather than a failed read; the rest also apply under the
    normalised names.
    """
    from data.csv_format import OPTIONS, sniff
    from data.sources import SourceError, column_name

    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise PredictError(f"Unknown CSV option(s) {unknown}; valid: {', '.join(OPTIONS)}.")
    trained = {k: v for k, v in (model.csv or {}).items() if k in OPTIONS}
    merged = {**trained, **options}
    if "header" in options and "column_names" not in options:
        merged.pop("column_names", None)
    types = merged.pop("column_types", None) or {}
    names = merged.get("column_names")
    try:
        if names is not None and "column_names" not in options:
            layout = {k: merged[k] for k in ("delimiter", "encoding", "quote_char") if k in merged}
            width = len(sniff(path, {**layout, "header": False}).column_names)
            unlabelled = [n for n in names if column_name(n) != model.label]
            if width == len(unlabelled) < len(names):
                merged["column_names"] = unlabelled
        fmt = sniff(path, merged)
    except SourceError as e:
        raise PredictError(str(e)) from None
    kept = {name: kind for name, kind in types.items() if kind not in ("integer", "float")}
    kept |= {model.renamed[name]: kind for name, kind in kept.items() if name in model.renamed}
    return dataclasses.replace(fmt, column_types=kept)


def _chunks(path: Path, fmt, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows a chunk at a time, indexed by file row (Parquet: by position from 0).

    `fmt` is the CSV format (None for Parquet). Each CSV chunk's
    `attrs["rejected"]` holds the lines of the wrong width read with it.
    """
    if fmt is None:
        import pyarrow.parquet as pq

        start = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
        return
    from data.csv_format import iter_csv
    from data.sources import SourceError

    try:
        yield from iter_csv(path, fmt, block_rows=chunk_rows)
    except SourceError as e:
        raise PredictError(str(e)) from None


def _check_numbers(frame: pd.DataFrame, numeric: frozenset[str], where: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`frame` with its numeric model inputs as float64, and its rows whose number does not parse or is infinite."""
    from data.sources import rejected_rows

    problems, frame = [], frame.copy()
    for name in [c for c in frame.columns if c in numeric]:
        column = frame[name]
        numbers = pd.to_numeric(column, errors="coerce").astype("float64")
        for reason, bad in (("not a number, in a numeric column", numbers.isna() & column.notna()),
                            ("infinite value", np.isinf(numbers))):
            problems += [{"source": where, "row": int(row), "column": name, "value": str(value)[:200],
                          "reason": reason} for row, value in column[bad].items()]
        frame[name] = numbers
    return frame, rejected_rows(problems)


class _Writer:
    """Appends chunks to a CSV (UTF-8, comma-separated) or Parquet file."""

    def __init__(self, path: Path, kind: str):
        self.path, self.kind, self.handle, self.parquet = path, kind, None, None

    def write(self, frame: pd.DataFrame, first_row: int) -> None:
        if self.kind == ".csv":
            if self.handle is None:
                self.handle = open(self.path, "w", encoding="utf-8", newline="")
                frame.to_csv(self.handle, index=False)
            else:
                frame.to_csv(self.handle, index=False, header=False)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.parquet is None:
            # A column empty in the first chunk has no type yet: text takes whatever later chunks hold.
            schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema])
            self.parquet = pq.ParquetWriter(self.path, schema.remove_metadata())
        try:
            table = table.cast(self.parquet.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            changed = [f.name for f, g in zip(table.schema, self.parquet.schema) if f.type != g.type]
            raise PredictError(
                f"Column(s) {changed} change type in the rows from row {first_row} on (e.g. numbers, then text); "
                "Parquet needs one type per column. Write CSV output, or fix the values."
            ) from None
        self.parquet.write_table(table)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.parquet is not None:
            self.parquet.close()


@contextlib.contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed over it when the block succeeds and removed when it fails."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp's file is private; the output gets a new file's permissions
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def predict_file(model_uri: str, input_path: str | Path, output_path: str | Path | None = None, *,
                 csv_options: Mapping[str, Any] | None = None, bad_rows: str = "fail",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, progress: bool = True) -> PredictSummary:
    """Writes the rows of `input_path` with the predictions of the model at `model_uri` to `output_path`.

    `model_uri` is any MLflow model URI (`models:/name@alias`, `models:/name/3`,
    `runs:/<run id>/model`). `output_path` defaults to `default_output(input_path)`;
    its suffix, `.csv` or `.parquet`, picks the format. `csv_options` (the
    `data.csv` keys: delimiter, encoding, header, column_names, column_types,
    na_values, quote_char) override the format of the model's training file.
    `bad_rows` is "fail" (the default) or "skip".
    """
    from data.sources import bad_rows_summary, rejected_rows

    input_path = Path(input_path).expanduser().resolve()
    output_path = Path(output_path).expanduser().resolve() if output_path else default_output(input_path)
    if bad_rows not in BAD_ROWS_POLICIES:
        raise PredictError(f"bad_rows={bad_rows!r}: use one of {', '.join(BAD_ROWS_POLICIES)}.")
    if chunk_rows < 1:
        raise PredictError(f"chunk_rows={chunk_rows}: use a positive number of rows.")
    if not input_path.is_file():
        raise PredictError(f"{input_path}: no such file.")
    if not _suffix(input_path, CSV_SUFFIXES + PARQUET_SUFFIXES):
        raise PredictError(f"{input_path}: unknown input format; use a file ending in "
                           f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}.")
    kind = _suffix(output_path, OUTPUT_SUFFIXES)
    if kind is None:
        raise PredictError(f"{output_path}: unknown output format; use a file ending in .csv or .parquet.")
    if output_path == input_path:
        raise PredictError(f"{output_path}: the output would overwrite the input; name another file.")
    if not output_path.parent.is_dir():
        raise PredictError(f"{output_path}: directory {output_path.parent} does not exist.")

    import pyarrow.parquet as pq
    from tqdm import tqdm

    model = load(model_uri)
    fmt = None if _suffix(input_path, PARQUET_SUFFIXES) else csv_format(input_path, model, csv_options)
    where, written, chunks, rejected = str(input_path), 0, 0, []
    with _atomic_output(output_path) as temporary:
        writer = _Writer(temporary, kind)
        try:
            total = None if fmt is not None else pq.ParquetFile(input_path).metadata.num_rows
            with tqdm(total=total, unit=" rows", desc=input_path.name, disable=not progress) as bar:
                for chunk in _chunks(input_path, fmt, chunk_rows):
                    if chunks == 0:
                        _check_columns(chunk, model, input_path, fmt)
                    chunks += 1
                    frame, problems = _check_numbers(chunk, model.numeric, where)
                    problems = pd.concat([_wrong_width(chunk), problems], ignore_index=True)
                    if len(problems):
                        problems = problems.sort_values("row", kind="stable", ignore_index=True)
                        if bad_rows == "fail":
                            raise PredictError(f"{_count(problems)} row(s) cannot be predicted on:\n"
                                               f"{bad_rows_summary(problems)}\n"
                                               "Fix them, or skip such rows (--bad-rows skip).")
                        rejected.append(problems)
                        frame = frame.loc[~frame.index.isin(problems["row"])]
                    if len(frame):
                        writer.write(_with_predictions(frame, model), first_row=int(frame.index[0]))
                        written += len(frame)
                    bar.update(len(chunk))
        finally:
            writer.close()
        if not written:
            skipped = f" after skipping {_count(pd.concat(rejected))} bad row(s)" if rejected else ""
            raise PredictError(f"{input_path}: no rows to predict on{skipped}.")
    return PredictSummary(model_uri, input_path, output_path, written, chunks,
                          pd.concat(rejected, ignore_index=True) if rejected else rejected_rows())


def _wrong_width(chunk: pd.DataFrame) -> pd.DataFrame:
    """The CSV lines of the wrong width `iter_csv` read with `chunk` (records or a frame of them)."""
    from data.sources import rejected_rows

    lines = chunk.attrs.get("rejected")
    return lines if isinstance(lines, pd.DataFrame) else rejected_rows(list(lines or []))


def _count(problems: pd.DataFrame) -> int:
    """Rows with at least one problem."""
    return int(problems[["source", "row"]].drop_duplicates().shape[0])


def _check_columns(chunk: pd.DataFrame, model: _Model, path: Path, fmt) -> None:
    missing = model.missing(list(chunk.columns))
    if missing:
        read = "" if fmt is None else (
            f" Read as CSV with delimiter {fmt.delimiter!r}, encoding {fmt.encoding!r}, "
            f"{'a header' if fmt.header else 'no header'}: if that is not the file's format, set it "
            "(--delimiter, --encoding, --header/--no-header, --csv KEY=VALUE).")
        raise PredictError(
            f"{path}: lacks column(s) {missing} that the model reads (under the training file's names or the "
            f"normalised ones); its columns are: {', '.join(map(str, chunk.columns))}.{read}"
        )
    taken = [c for c in chunk.columns if c == "prediction" or str(c).startswith("probability_")]
    if taken:
        raise PredictError(f"{path}: column(s) {taken} would be overwritten by the predictions; rename them.")


def _with_predictions(frame: pd.DataFrame, model: _Model) -> pd.DataFrame:
    """`frame` with the served model's prediction columns after its own."""
    predictions = pd.DataFrame(model.pyfunc.predict(frame[[c for c in frame.columns if c in set(model.inputs)]]))
    predictions.index = frame.index
    return pd.concat([frame, predictions], axis=1)
