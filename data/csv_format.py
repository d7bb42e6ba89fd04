"""CSV files of any common shape, read by pyarrow with options given or sniffed from the file.

The options are the recipe's `data.csv` section; each one left unset is
sniffed from a sample at the start of the file:

- `encoding`: UTF-8; UTF-8 with a byte-order mark (`utf-8-sig`); else the
  codec `charset_normalizer` finds (Windows-1252 among equally good
  Western candidates, as browsers read Latin-1). pyarrow transcodes
  anything that is not UTF-8 while it reads.
- `delimiter`: the one among `,` `;` tab `|` that splits the sample's
  records (parsed by the `csv` module, so quoted delimiters and newlines
  do not count) into the same number of fields most consistently.
- `header`: a first row whose values are not numbers in columns whose other
  values are is a header, and one whose values are numbers there is data;
  when every column is text, a first row whose values recur in their
  columns is data, one of a different length from a fixed-length column a
  header, and a header when nothing tells.
- `decimal`: `,` when the delimiter is not a comma and the sample's numbers
  are written `3,14` (none `3.14`), else `.`.
- `thousands`: the mark that groups digits by three, `.` in `1.234,5` or
  `1.234.567`, `,` in `1,234.5` or `1,234,567` (a form no other reading
  fits); none otherwise. Text columns whose every value is a number so
  written are read as numbers.

A headerless file's columns are `column_1` … `column_N` unless
`column_names` names them. Rows are indexed by their file row (the header
is row 1 when there is one); lines of the wrong width are set aside with
theirs.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from data.errors import SourceError, rejected_rows

log = logging.getLogger("data")

DELIMITERS = (",", ";", "\t", "|")
OPTIONS = ("delimiter", "encoding", "header", "column_names", "column_types", "na_values", "quote_char", "decimal",
           "thousands")
THOUSANDS = ("", ".", ",", " ", "'")  # "" is none
KINDS = {
    "string": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.timestamp("ms"),
}
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
# pyarrow's own missing-value markers, for sniffing the header as the reader will see the values.
DEFAULT_NA = frozenset(pacsv.ConvertOptions().null_values)
DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
DECIMAL_POINT = re.compile(r"[+-]?\d*\.\d+(?:[eE][+-]?\d+)?")
# Digits grouped by three that no other reading fits: `1.234,5` or `1.234.567`; `1,234.5` or `1,234,567`.
GROUPED = {".": re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+,\d+|[+-]?\d{1,3}(?:\.\d{3}){2,}"),
           ",": re.compile(r"[+-]?\d{1,3}(?:,\d{3})+\.\d+|[+-]?\d{1,3}(?:,\d{3}){2,}"),
           "'": re.compile(r"[+-]?\d{1,3}(?:'\d{3})+(?:\.\d+)?")}
SAMPLE_BYTES = 1 << 16
PARSE_BLOCK_BYTES = 1 << 20  # pyarrow's block size: a record must fit in one


@dataclass(frozen=True)
class CsvFormat:
    """How one CSV file is read: every option resolved, whether given or sniffed."""

    delimiter: str = ","
    encoding: str = "utf-8"
    header: bool = True
    column_names: tuple[str, ...] | None = None
    column_types: dict[str, str] = field(default_factory=dict)
    na_values: tuple[str, ...] | None = None
    quote_char: str = '"'
    decimal: str = "."
    thousands: str = ""

    def __post_init__(self):  # lists from JSON become tuples
        for name in ("column_names", "na_values"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(str(v) for v in value))
        object.__setattr__(self, "column_types", dict(self.column_types or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with the same keys; `CsvFormat(**d)` reads it back."""
        d = asdict(self)
        for name in ("column_names", "na_values"):
            d[name] = list(d[name]) if d[name] is not None else None
        return d


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _check_options(options: Mapping | None) -> dict[str, Any]:
    """The options that are set, checked; an unknown key or kind names itself."""
    given = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise SourceError(f"Unknown CSV option(s) {unknown}; valid: {', '.join(OPTIONS)}.")
    if "delimiter" in given:
        given["delimiter"] = DELIMITER_NAMES.get(given["delimiter"], given["delimiter"])
    for key in ("delimiter", "quote_char"):
        if key in given and len(given[key]) != 1:
            raise SourceError(f"data.csv.{key} must be one character, got {given[key]!r}.")
    if given.get("decimal", ".") not in (".", ","):
        raise SourceError(f"data.csv.decimal must be '.' or ',', got {given['decimal']!r}.")
    if given.get("decimal") == "," and given.get("delimiter") == ",":
        raise SourceError("data.csv.decimal ',' needs another delimiter than ','; set data.csv.delimiter.")
    if given.get("thousands", "") not in THOUSANDS:
        raise SourceError(f"data.csv.thousands must be one of {THOUSANDS[1:]} or '' (none), got {given['thousands']!r}.")
    if given.get("thousands") and given["thousands"] in (given.get("decimal", "."), given.get("delimiter")):
        raise SourceError(f"data.csv.thousands {given['thousands']!r} is also the decimal mark or the delimiter.")
    if "encoding" in given:
        try:
            codecs.lookup(given["encoding"])
        except LookupError:
            raise SourceError(f"data.csv.encoding: unknown encoding {given['encoding']!r}; "
                              "use a Python codec name such as utf-8 or cp1252.") from None
    for name, kind in (given.get("column_types") or {}).items():
        if kind not in KINDS:
            raise SourceError(f"data.csv.column_types[{name!r}]: {kind!r} is not one of {', '.join(KINDS)}.")
    return given


def _sniff_encoding(sample: bytes, complete: bool) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    return _detect_encoding(sample) or "cp1252"


def _detect_encoding(data: bytes) -> str | None:
    """charset_normalizer's guess; Windows-1252 when it fits as well as the best (it is the usual one)."""
    import charset_normalizer

    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return None
    least = min(m.chaos for m in matches)
    tied = [m for m in matches if m.chaos <= least + 0.01]
    if any("cp1252" in m.could_be_from_charset for m in tied):
        return "cp1252"
    return max(tied, key=lambda m: m.coherence).encoding


def _records(text: str, delimiter: str, quote_char: str, complete: bool) -> list[list[str]]:
    """The sample's records as the `csv` module splits them; a record cut by the sample's end is dropped."""
    try:
        records = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quote_char)
                   if r]
    except csv.Error:
        return []
    return records if complete or len(records) < 2 else records[:-1]


def _sniff_delimiter(text: str, quote_char: str, complete: bool) -> str:
    """The delimiter that splits the records into the same number (> 1) of fields most consistently."""
    scores = []
    for order, delimiter in enumerate(DELIMITERS):
        widths = Counter(len(r) for r in _records(text, delimiter, quote_char, complete))
        if not widths:
            continue
        width, count = widths.most_common(1)[0]
        if width > 1:
            scores.append((count / sum(widths.values()), width, -order, delimiter))
    return max(scores)[-1] if scores else ","


def _is_number(value: str, decimal: str = ".", thousands: str = "") -> bool:
    if thousands:
        value = value.replace(thousands, "")
    try:
        float(value.replace(",", ".") if decimal == "," else value)
        return True
    except ValueError:
        return False


def _sniff_numbers(records: list[list[str]], delimiter: str, given: Mapping) -> tuple[str, str]:
    """The decimal mark and the thousands mark (see the module docstring); `given` ones stay."""
    fields = [value.strip() for record in records[1:] for value in record]
    grouped = [mark for mark, form in GROUPED.items() if any(form.fullmatch(v) for v in fields)]
    thousands = given.get("thousands", grouped[0] if len(grouped) == 1 else "")
    if "decimal" in given:
        return given["decimal"], thousands if thousands != given["decimal"] else ""
    if thousands in (".", ",", "'"):
        return ("," if thousands == "." else "."), thousands
    if delimiter == ",":
        return ".", thousands
    fields = [v.replace(thousands, "") for v in fields] if thousands else fields
    commas = sum(bool(DECIMAL_COMMA.fullmatch(v)) for v in fields)
    points = sum(bool(DECIMAL_POINT.fullmatch(v)) for v in fields)
    return ("," if commas and not points else "."), thousands


def _sniff_header(records: list[list[str]], na_values: frozenset[str], decimal: str = ".", thousands: str = "") -> bool:
    """Whether the first record names the columns (see the module docstring)."""
    if len(records) < 2:
        return True
    first, body = records[0], records[1:]
    numeric_votes, text_votes = [], []
    for i, name in enumerate(first):
        values = [r[i] for r in body if i < len(r) and r[i] not in na_values]
        if not values or name in na_values:
            continue
        if sum(_is_number(v, decimal, thousands) for v in values) >= 0.8 * len(values):
            numeric_votes.append(not _is_number(name, decimal, thousands))
        elif name in values:
            text_votes.append(False)
        elif len({len(v) for v in values}) == 1 and len(name) != len(values[0]):
            text_votes.append(True)
        elif len(set(values)) < len(values):  # a column of categories that lacks the first value
            text_votes.append(True)
    votes = numeric_votes or text_votes
    return sum(votes) >= len(votes) / 2 if votes else True


def sniff(path, options: Mapping | None = None) -> CsvFormat:
    """The format of the CSV file at `path`: `options` (the recipe's `data.csv`; None means sniff it), the rest sniffed."""
    path = Path(path)
    given = _check_options(options)
    if not path.is_file():
        raise SourceError(f"Data file {path} does not exist.")
    with _open(path) as f:
        sample = f.read(SAMPLE_BYTES)
        complete = not f.read(1)
    if not sample.strip():
        raise SourceError(f"{path}: the file is empty.")
    encoding = given.get("encoding") or _sniff_encoding(sample, complete)
    text = sample.decode(encoding, errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    quote_char = given.get("quote_char", '"')
    delimiter = given.get("delimiter") or _sniff_delimiter(text, quote_char, complete)
    na_values = given.get("na_values")
    records = _records(text, delimiter, quote_char, complete)
    decimal, thousands = _sniff_numbers(records, delimiter, given)
    header = given["header"] if "header" in given else _sniff_header(
        records, frozenset(na_values) if na_values is not None else DEFAULT_NA, decimal, thousands)
    width = len(records[0]) if records else 1
    names = given.get("column_names")
    if names is not None and len(names) != width:
        raise SourceError(f"{path}: data.csv.column_names names {len(names)} columns, but the file's first row "
                          f"has {width} fields; name each column once.")
    if names is None and not header:
        names = tuple(f"column_{i}" for i in range(1, width + 1))
    fmt = CsvFormat(delimiter=delimiter, encoding=encoding, header=header, column_names=names,
                    column_types=given.get("column_types") or {}, na_values=na_values, quote_char=quote_char,
                    decimal=decimal, thousands=thousands)
    known = names if names is not None else (records[0] if records else [])
    missing = [name for name in fmt.column_types if name not in known]
    if missing:
        raise SourceError(f"{path}: data.csv.column_types names {missing}, which the file lacks; "
                          f"its columns are: {', '.join(known)}.")
    sniffed = [k for k in ("delimiter", "encoding", "header", "decimal", "thousands") if k not in given]
    if sniffed:
        log.info("%s: sniffed %s", path, ", ".join(f"{k} {getattr(fmt, k)!r}" for k in sniffed)
                 + ("" if header else f"; columns named {names[0]} … {names[-1]}" if "column_names" not in given
                    else ""))
    return fmt


def _arrow_options(fmt: CsvFormat, on_invalid, types: Mapping[str, pa.DataType] | None = None):
    """pyarrow's read, parse and convert options for `fmt` (`types` overrides the column types)."""
    read = pacsv.ReadOptions(
        use_threads=False,  # single-threaded parsing reports row numbers
        block_size=PARSE_BLOCK_BYTES,
        encoding="utf8" if fmt.encoding.replace("_", "-").lower() in ("utf-8", "utf8", "utf-8-sig") else fmt.encoding,
        column_names=list(fmt.column_names) if fmt.column_names is not None else None,
        skip_rows=1 if fmt.header and fmt.column_names is not None else 0,
    )
    parse = pacsv.ParseOptions(delimiter=fmt.delimiter, quote_char=fmt.quote_char, newlines_in_values=True,
                               invalid_row_handler=on_invalid)
    convert = pacsv.ConvertOptions(
        strings_can_be_null=True,
        decimal_point=fmt.decimal,
        column_types=dict(types) if types is not None else {n: KINDS[k] for n, k in fmt.column_types.items()},
        **({"null_values": list(fmt.na_values)} if fmt.na_values is not None else {}),
    )
    return read, parse, convert


class _Rows:
    """File row numbers for the rows pyarrow returns: counted from the first data row, past the skipped lines."""

    def __init__(self, path: Path, fmt: CsvFormat):
        self.path, self.next, self.skipped, self.reported = path, 2 if fmt.header else 1, [], 0

    def invalid(self, row) -> str:
        self.skipped.append({"source": str(self.path), "row": row.number, "column": None,
                             "value": row.text[:200],
                             "reason": f"{row.actual_columns} fields where the header has {row.expected_columns}"})
        return "skip"

    def take(self, n: int) -> pd.Index:
        skipped = {b["row"] for b in self.skipped}
        rows = []
        while len(rows) < n:
            if self.next not in skipped:
                rows.append(self.next)
            self.next += 1
        return pd.Index(rows, dtype="int64")

    def unreported(self) -> int:
        return len(self.skipped) - self.reported

    def rejected(self, through: int | None = None) -> list[dict]:
        """The skipped lines not yet reported, up to row `through` (None: all)."""
        pending = sorted(self.skipped[self.reported:], key=lambda b: b["row"])
        now = [b for b in pending if through is None or b["row"] <= through]
        self.skipped[self.reported:] = now + [b for b in pending if b not in now]
        self.reported += len(now)
        return now


def _column_names(path: Path, fmt: CsvFormat) -> list[str]:
    """The columns as the reader names them: given, or the header's."""
    if fmt.column_names is not None:
        return list(fmt.column_names)
    with _open(path) as raw:
        text = io.TextIOWrapper(raw, encoding=fmt.encoding, errors="replace", newline="")
        return next(csv.reader(text, delimiter=fmt.delimiter, quotechar=fmt.quote_char), [])


def _undecodable(path: Path, fmt: CsvFormat) -> str | None:
    """Where the file first fails to decode under `fmt.encoding`, as the error message says it."""
    names = None
    try:
        with _open(path) as raw:
            text = io.TextIOWrapper(raw, encoding=fmt.encoding, errors="surrogateescape", newline="")
            reader = csv.reader(text, delimiter=fmt.delimiter, quotechar=fmt.quote_char)
            for row, fields in enumerate(reader, 1):
                if names is None:
                    names = list(fmt.column_names) if fmt.column_names is not None else fields
                for i, value in enumerate(fields):
                    bad = re.search("[\udc80-\udcff]+", value)
                    if bad:
                        return _where(fmt, row, reader.line_num, names[i] if i < len(names) and (
                            row > 1 or not fmt.header) else None, fields, value, bad.group())
    except (csv.Error, UnicodeError):  # a codec that cannot mark the bytes, a field beyond the csv module's limit
        return None
    return None


def _where(fmt: CsvFormat, row: int, line: int, column: str | None, fields: list[str], value: str, bad: str) -> str:
    data = bytes(ord(c) - 0xDC00 for c in bad)
    record = fmt.delimiter.join(fields).encode(fmt.encoding, errors="surrogateescape")
    guess = _detect_encoding(record)
    hint = f" (it looks like {guess})" if guess and guess != fmt.encoding else ""
    return (f"row {row}{f' (line {line})' if line != row else ''}{f', column {column!r}' if column else ''} "
            f"does not decode as {fmt.encoding} (bytes {data.hex(' ')} in "
            f"{value.encode(fmt.encoding, 'surrogateescape')[:80]!r}); set data.csv.encoding to the file's "
            f"encoding{hint}")


def _decoding_error(path: Path, fmt: CsvFormat) -> SourceError:
    where = _undecodable(path, fmt) or f"does not decode as {fmt.encoding}; set data.csv.encoding to its encoding"
    return SourceError(f"{path}: {where}.")


def _arrow_error(path: Path, fmt: CsvFormat, error: Exception) -> SourceError:
    """A pyarrow error → one line naming the file, row, column and the option that fixes it."""
    message = str(error)
    if isinstance(error, UnicodeDecodeError) or re.search(r"utf-?8", message, re.IGNORECASE):
        return _decoding_error(path, fmt)
    if "Empty CSV file" in message:
        return SourceError(f"{path}: the file is empty.")
    found = re.search(r"column #(\d+): Row #(\d+): CSV conversion error to (\S+): invalid value '(.*)'", message)
    if found:
        index, row, kind, value = int(found[1]), found[2], found[3], found[4]
        names = _column_names(path, fmt)
        name = names[index] if index < len(names) else f"#{index + 1}"
        forced = fmt.column_types.get(name)
        fix = (f"fix the value or change data.csv.column_types[{name!r}]" if forced
               else "fix the value or set data.csv.column_types for the column")
        return SourceError(f"{path}: row {row}, column {name!r}: {value!r} is not {forced or kind}; {fix}.")
    if "straddling" in message or "block" in message:
        return SourceError(f"{path}: a record is too long or an opening quote is unclosed ({message}); check "
                           f"data.csv.quote_char ({fmt.quote_char!r}).")
    return SourceError(f"{path}: malformed CSV ({message}); check the data.csv options "
                       f"(delimiter {fmt.delimiter!r}, quote_char {fmt.quote_char!r}).")


def _check_decoded(path: Path, fmt: CsvFormat, table: pa.Table) -> None:
    """A column pyarrow could only read as bytes is text in another encoding."""
    if any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in table.schema.types):
        raise _decoding_error(path, fmt)


def read_csv(path, options: Mapping | None = None) -> tuple[pd.DataFrame, pd.DataFrame, CsvFormat]:
    """The file's rows indexed by file row, the lines of the wrong width, and the resolved format."""
    path = Path(path)
    fmt = sniff(path, options)
    rows = _Rows(path, fmt)
    try:
        table = pacsv.read_csv(path, *_arrow_options(fmt, rows.invalid))
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise _arrow_error(path, fmt, e) from None
    _check_decoded(path, fmt, table)
    forced = set(fmt.column_types)
    table = pa.table([table[n] if n in forced else _ungroup(table[n], fmt) for n in table.column_names],
                     names=table.column_names)
    frame = table.to_pandas()
    for name in table.column_names:  # pandas would make these floats; a class label must stay an integer
        if pa.types.is_integer(table[name].type) and table[name].null_count:
            frame[name] = frame[name].astype("Int64")
    frame.index = rows.take(len(frame))
    return frame, rejected_rows(rows.skipped), fmt


# Each inferred type, then what a chunk's column falls back to when a value does not fit it.
_FALLBACKS = {pa.int64(): (pa.float64(),), pa.null(): (pa.int64(), pa.float64(), pa.bool_(), pa.timestamp("s"))}


def _ungroup(column: pa.ChunkedArray, fmt: CsvFormat) -> pa.ChunkedArray:
    """A text column whose every value is a number written with `fmt.thousands`, as numbers; any other as it is."""
    if not fmt.thousands or not pa.types.is_string(column.type) or column.null_count == len(column):
        return column
    mark, point = re.escape(fmt.thousands), re.escape(fmt.decimal)
    number = rf"^\s*[+-]?(?:\d{{1,3}}(?:{mark}\d{{3}})*|\d+)(?:{point}\d+)?\s*$"
    if not pc.all(pc.match_substring_regex(column, number), skip_nulls=True).as_py():
        return column
    text = pc.utf8_trim_whitespace(pc.replace_substring(column, fmt.thousands, ""))
    if fmt.decimal != ".":
        text = pc.replace_substring(text, fmt.decimal, ".")
    for kind in (pa.int64(), pa.float64()):
        try:
            return text.cast(kind)
        except pa.ArrowInvalid:
            continue
    return column


def _settle(column: pa.ChunkedArray, target: pa.DataType, decimal: str = ".") -> pa.ChunkedArray:
    """A column read as text, cast to the type inferred from the file's start, else the next that fits, else text."""
    if target == pa.string():
        return column
    if target == pa.null() and column.null_count == len(column):
        return column.cast(pa.null())
    for kind in (target, *_FALLBACKS.get(target, ())):
        try:
            if pa.types.is_floating(kind) and decimal != ".":
                return pc.replace_substring(column, decimal, ".").cast(kind)
            return column.cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return column


def iter_csv(path, fmt: CsvFormat, block_rows: int = 65536) -> Iterator[pd.DataFrame]:
    """Streams the file in chunks of `block_rows` rows, each indexed by file row, as `read_csv` parses it.

    Memory stays bounded by the chunk. Column types are inferred from the
    file's first block; a chunk whose values do not fit them keeps the column
    as text (as `read_csv` does for the whole file), so a typo is a row to
    reject, not a failed stream. Each chunk's `attrs["rejected"]` lists the
    lines of the wrong width up to its last row (dicts with the
    `data.sources.rejected_rows` columns), and the last chunk's the rest (it is empty when only bad lines follow
    the last full chunk).
    """
    path = Path(path)
    rows = _Rows(path, fmt)
    try:
        with pacsv.open_csv(path, *_arrow_options(fmt, lambda row: "skip")) as first:
            inferred = first.schema
        forced = {n: KINDS[k] for n, k in fmt.column_types.items()}
        as_text = {name: forced.get(name, pa.string()) for name in inferred.names}
        reader = pacsv.open_csv(path, *_arrow_options(fmt, rows.invalid, as_text))
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise _arrow_error(path, fmt, e) from None

    def chunk(table: pa.Table, last: bool = False) -> pd.DataFrame:
        columns = [table[name] if name in forced else _ungroup(_settle(table[name], inferred.field(name).type,
                                                                        fmt.decimal), fmt)
                   for name in table.column_names]
        table = pa.table(columns, names=table.column_names)
        _check_decoded(path, fmt, table)
        frame = table.to_pandas()
        frame.index = rows.take(len(frame))
        frame.attrs["rejected"] = rows.rejected(through=None if last else frame.index[-1])
        return frame

    pending: list[pa.RecordBatch] = []
    held = 0
    with reader:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, UnicodeDecodeError) as e:
                raise _arrow_error(path, fmt, e) from None
            pending.append(batch)
            held += batch.num_rows
            while held >= block_rows:
                table = pa.Table.from_batches(pending, schema=reader.schema)
                yield chunk(table.slice(0, block_rows))
                pending, held = table.slice(block_rows).to_batches(), held - block_rows
        if held or rows.unreported():
            yield chunk(pa.Table.from_batches(pending, schema=reader.schema), last=True)
