"""A recipe inferred from a data file: `keras-pipeline init` writes it, `keras-pipeline run --data` runs it.

The file is read as ingest reads it (CSV with the sniffed `data.csv`
options, Parquet with pandas, `sklearn:<name>`); each column gets a type
and a role, and the label decides the task:

- a numeric label beside a time column (given, or the one column whose
  values parse as dates, one per row) is a `forecasting` series, with the
  window, horizon and seasonality of its frequency (monthly: 12);
- a string or boolean label, or one of at most `MAX_CLASSES` integers, is
  `tabular_classification`;
- any other numeric label is `tabular_regression`.

Shapes `init` does not infer (images, whole series per row, text, sentence
pairs) are refused with the shipped recipe to start from instead.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from data import pairs
from data.sources import CSV_SUFFIXES, SourceError, column_name
from data.timestamps import parse_timestamps
from pipeline.config import PROJECT_ROOT, ConfigError, CsvOptions, allowed_roots, recipe_base
from tasks.forecasting import DEFAULT_MODEL, DEFAULT_TRAINING, MIN_TRAIN_WINDOWS, default_settings

MAX_CLASSES = 20  # an integer label with at most this many values is a class label
FILE_SUFFIXES = (*CSV_SUFFIXES, ".parquet")
# Files the project reads but `init` does not infer a recipe for: the shipped recipe to copy instead.
OTHER_SHAPES = {
    ".ts": "whole series per row (series_classification): start from pipeline/recipes/italypower_cnn1d.yaml",
    "sklearn:digits": "8×8 images as 64 pixel columns (image_classification): start from "
                      "pipeline/recipes/digits_lenet.yaml",
    "tfds:": "a TensorFlow Datasets source (images or text): start from pipeline/recipes/mnist_lenet.yaml or "
             "pipeline/recipes/mr_lstm.yaml",
}

# The multilayer perceptron of penguins_mlp.yaml (tabular), and the forecasting model that
# bench/forecasting.py measures on the benchmark series (tasks.forecasting.DEFAULT_MODEL).
TABULAR_MODEL = {"name": "mlp", "hparams": {"num_layers": 2, "units": 32, "activation": "relu", "dropout": 0.1,
                                            "l2": 0.0001}}
FORECASTING_MODEL = DEFAULT_MODEL

# A series' step → (what it is called, season length); the nearest step (in log scale) wins.
PERIODS = [
    (pd.Timedelta(minutes=1), "minutely", 60),
    (pd.Timedelta(hours=1), "hourly", 24),
    (pd.Timedelta(days=1), "daily", 7),
    (pd.Timedelta(weeks=1), "weekly", 52),
    (pd.Timedelta(days=30.44), "monthly", 12),
    (pd.Timedelta(days=91.31), "quarterly", 4),
    (pd.Timedelta(days=365.25), "yearly", 1),
]


@dataclass(frozen=True)
class Column:
    """One column of the file: `name` as the file has it, `key` as the pipeline names it."""

    name: str
    key: str
    type: str  # string | integer | float | boolean | date
    role: str  # label | time | series | numeric | categorical | ignored
    missing: int
    distinct: int


@dataclass(frozen=True)
class InferredRecipe:
    """The recipe (as `load_config` takes it), the column table behind it, and what the user should know."""

    recipe: dict[str, Any]
    columns: tuple[Column, ...]
    notes: tuple[str, ...]
    rows: int
    named: bool = False  # the name was given, not taken from the data file's

    @property
    def name(self) -> str:
        return self.recipe["name"]

    @property
    def source(self) -> str:
        return self.recipe["data"]["source"]

    @property
    def task_type(self) -> str:
        return self.recipe["task"]["type"]


def recipe_name(text: str) -> str:
    """A file name as a recipe name: `Pingüinos 2024.csv` → `pinguinos_2024`, as columns are named."""
    return column_name(text)


def _read(source: str) -> tuple[pd.DataFrame, dict[str, Any] | None, str]:
    """The rows as the file holds them, the resolved CSV options (CSV only), and a default recipe name."""
    for prefix, shape in OTHER_SHAPES.items():
        if source.startswith(prefix) or source.endswith(prefix):
            raise ConfigError(f"{source}: `init` infers recipes for tabular rows and dated series in CSV or "
                              f"Parquet files; this is {shape}.")
    if source.startswith("sklearn:"):
        from data.sources import read_source

        raw = read_source(source)  # the dataset's own label column; `infer_recipe` picks the one asked for
        return raw.frame, None, recipe_name(source.partition(":")[2])
    path = Path(source)
    if not path.name.endswith(FILE_SUFFIXES):
        raise ConfigError(f"{source}: `init` reads delimited text ({', '.join(CSV_SUFFIXES)}) and Parquet "
                          "(.parquet) files; convert the file to one of them.")
    if not path.is_file():
        raise ConfigError(f"{source}: no such file; check the path.")
    stem = path.name.removesuffix(".gz").rsplit(".", 1)[0]
    if path.name.endswith(".parquet"):
        return pd.read_parquet(path), None, recipe_name(stem)
    from data.csv_format import read_csv

    frame, rejected, fmt = read_csv(path)
    if len(rejected):
        first = rejected.iloc[0]
        raise ConfigError(f"{source}: row {first['row']}: {first['reason']} ({len(rejected)} such row(s)); "
                          "fix the file, or check the sniffed options with a recipe's data.csv section.")
    return frame, fmt.to_dict(), recipe_name(stem)


def _parses_as_dates(values: pd.Series) -> bool:
    """Text whose every value is a timestamp in one format (`2024-03-01`, `1949-01`, `03/01/2024`, `13/01/2024`)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    present = values.dropna()
    if present.empty or pd.api.types.is_numeric_dtype(present) or pd.api.types.is_bool_dtype(present):
        return False
    text = pd.Series(present.astype(str).unique())
    if not text.str.contains(r"\d{4}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}", regex=True).all():
        return False
    try:  # as the forecasting task parses them
        parsed = parse_timestamps(text)
    except (ValueError, TypeError):
        return False
    return bool(parsed.notna().all())


def _column_type(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_float_dtype(values):
        present = values.dropna()
        whole = not present.empty and bool((present == present.round()).all())
        return "integer" if whole and present.abs().max() < 2**53 else "float"
    if _parses_as_dates(values):
        return "date"
    return "string"


def _find_column(frame: pd.DataFrame, name: str, what: str, source: str) -> str:
    """The file's column that `name` means (as written in the file, or normalised)."""
    for original in frame.columns:
        if name == str(original) or column_name(name) == column_name(original):
            return str(original)
    names = [str(c) for c in frame.columns]
    close = difflib.get_close_matches(name, names, n=1) or difflib.get_close_matches(
        column_name(name), [column_name(c) for c in names], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    seq2seq = (" If the file holds sentence pairs, one pair a line, start from "
               "pipeline/recipes/tatoeba_transformer.yaml.") if source.endswith(pairs.SUFFIXES) else ""
    raise ConfigError(f"{source}: no column {name!r}{hint} for {what}; the columns are: {', '.join(names)}.{seq2seq}")


def _period(times: pd.Series) -> tuple[str, int]:
    """What the series' step is called, and its season length."""
    step = pd.Series(times.sort_values().to_numpy()).diff().median()
    name, season, best = "", 1, math.inf
    for typical, period, length in PERIODS:
        distance = abs(math.log(step / typical))
        if distance < best:
            best, name, season = distance, period, length
    return name, season


def _training(train_rows: int, forecasting: bool) -> dict[str, Any]:
    """Batch size near the square root of the train rows, and epochs for a similar number of steps."""
    if forecasting:
        return dict(DEFAULT_TRAINING)
    batch = int(min(1024, max(16, 2 ** round(math.log2(max(train_rows, 1) ** 0.5)))))
    steps = max(1, math.ceil(train_rows / batch))
    epochs = int(min(150, max(20, round(20000 / steps))))
    return {"epochs": epochs, "batch_size": batch, "learning_rate": 0.01,
            "early_stopping_patience": int(min(20, max(5, epochs // 7)))}


def infer_recipe(path: str | Path, label: str, time_column: str | None = None,
                 name: str | None = None) -> InferredRecipe:
    """Reads the data file at `path` (or a `sklearn:` source) and infers a recipe predicting `label`."""
    source = str(path) if str(path).startswith(("sklearn:", "tfds:")) else str(Path(path).expanduser().absolute())
    try:
        frame, csv_options, default_name = _read(source)
    except SourceError as e:
        raise ConfigError(str(e)) from None
    if frame.empty:
        raise ConfigError(f"{source}: no rows.")
    keys = {str(c): column_name(c) for c in frame.columns}
    label_column = _find_column(frame, label, "the label (--label)", source)
    labels = frame[label_column]
    notes: list[str] = []
    types = {str(c): _column_type(frame[c]) for c in frame.columns}
    if labels.isna().all():
        raise ConfigError(f"{source}: label column {label_column!r} has no values; pick another with --label.")
    if labels.nunique() < 2:
        raise ConfigError(f"{source}: label column {label_column!r} holds one value ({labels.dropna().iloc[0]!r}): "
                          "there is nothing to predict; pick another with --label.")
    numeric_label = types[label_column] in ("integer", "float")

    time = None
    if time_column is not None:
        time = _find_column(frame, time_column, "the time column (--time-column)", source)
        if time == label_column:
            raise ConfigError(f"{source}: --time-column and --label both name {time!r}; the label is the series' "
                              "values, the time column their timestamps.")
        if types[time] != "date":
            raise ConfigError(f"{source}: time column {time!r} holds values that are not all dates "
                              f"(e.g. {frame[time].dropna().iloc[0]!r}); name a column of timestamps.")
        if not numeric_label:
            raise ConfigError(f"{source}: forecasting needs a numeric label; {label_column!r} is "
                              f"{types[label_column]}: drop --time-column for a classification recipe.")
    elif numeric_label:
        dated = [c for c, t in types.items() if t == "date" and c != label_column and frame[c].notna().all()]
        unique = [c for c in dated if not frame[c].duplicated().any()]
        panels = {c: _series_keys(frame, types, label_column, c) for c in dated if c not in unique}
        panels = {c: found for c, found in panels.items() if len(found) == 1}
        if len(unique) == 1:
            time = unique[0]
            notes.append(f"column {time!r} holds one date per row: a forecasting recipe for the series "
                         f"{label_column!r}; other columns are not read.")
        elif len(unique) > 1:
            notes.append(f"columns {unique} all hold one date per row: pass --time-column to forecast the series "
                         f"{label_column!r}; without it the recipe is tabular.")
        elif len(panels) == 1:
            (time, (key,)), = panels.items()
            notes.append(f"column {time!r} holds one date per row of each {key!r}: a forecasting recipe for the "
                         f"{frame[key].nunique()} series of {label_column!r}; other columns are not read.")

    if time is not None:
        task = _forecasting_task(frame, types, keys, label_column, time, source, notes)
    elif not numeric_label or (types[label_column] == "integer" and labels.nunique() <= MAX_CLASSES):
        task = {"type": "tabular_classification"}
        if numeric_label:
            notes.append(f"label {label_column!r} holds {labels.nunique()} distinct integers: classification; "
                         "for a regression recipe, set task.type: tabular_regression.")
        smallest = labels.value_counts().min()
        if smallest < 4:
            notes.append(f"the rarest class of {label_column!r} has {smallest} row(s): the stratified split may "
                         "leave it out of eval or test.")
    else:
        task = {"type": "tabular_regression"}
        if types[label_column] == "integer":
            notes.append(f"label {label_column!r} holds {labels.nunique()} distinct integers (more than "
                         f"{MAX_CLASSES}): regression.")

    roles = {}
    for column, kind in types.items():
        if column == label_column:
            roles[column] = "label"
        elif column == time:
            roles[column] = "time"
        elif keys[column] == task.get("series_column"):
            roles[column] = "series"
        elif time is not None:
            roles[column] = "ignored"
        elif _identifier(frame[column], kind, keys[column]):
            roles[column] = "ignored"
        elif kind in ("string", "boolean", "date"):
            roles[column] = "categorical"
        else:
            roles[column] = "numeric"
    if task["type"] != "forecasting":
        categorical = [keys[c] for c, role in roles.items() if role == "categorical" and types[c] != "boolean"]
        if categorical:
            task["categorical"] = categorical
        ignored = [keys[c] for c, role in roles.items() if role == "ignored"]
        if ignored:
            task["ignore"] = ignored
        _feature_notes(frame, types, roles, notes)
        if not any(role in ("numeric", "categorical") for role in roles.values()):
            raise ConfigError(f"{source}: no column besides the label {label_column!r} to learn from.")

    columns = tuple(Column(name=c, key=keys[c], type=types[c], role=roles[c], missing=int(frame[c].isna().sum()),
                           distinct=int(frame[c].nunique())) for c in types)
    data: dict[str, Any] = {"source": source, "label": keys[label_column]}
    if csv_options is not None:
        data["csv"] = {k: v for k, v in csv_options.items()
                       if k in CsvOptions.model_fields and v is not None and v != {} and v != ()}
    missing_labels = int(labels.isna().sum())
    if missing_labels:
        share = missing_labels / len(frame)
        data["bad_rows_policy"] = "quarantine"
        data["max_bad_rows_fraction"] = min(1.0, math.ceil((share + 0.01) * 100) / 100)
        notes.append(f"{missing_labels} row(s) have no {label_column!r}: ingest sets them aside "
                     "(data.bad_rows_policy: quarantine).")
    renamed = [c for c in types if keys[c] != c]
    if renamed:
        notes.append("the recipe names columns as the pipeline normalises them: "
                     + ", ".join(f"{c!r} → {keys[c]}" for c in renamed[:6]) + (" …" if len(renamed) > 6 else ""))
    train_rows = int(len(frame) * 0.7)
    recipe = {
        "name": recipe_name(name) if name else default_name,
        "data": data,
        "task": task,
        "model": FORECASTING_MODEL if task["type"] == "forecasting" else TABULAR_MODEL,
        "train": _training(train_rows, task["type"] == "forecasting"),
        "tune": {"tuner": "none"},
        "evaluate": {"must_beat_baseline": True},
    }
    return InferredRecipe(recipe=recipe, columns=columns, notes=tuple(notes), rows=len(frame), named=bool(name))


def _series_keys(frame: pd.DataFrame, types: dict[str, str], label: str, time: str) -> list[str]:
    """Columns whose values tell series apart in a long table: with `time`, they make each row unique."""
    return [c for c, kind in types.items() if c not in (label, time) and kind in ("string", "integer")
            and frame[c].notna().all() and 1 < frame[c].nunique() <= len(frame) / 3
            and not frame.duplicated([c, time]).any()]


def _forecasting_task(frame: pd.DataFrame, types: dict[str, str], keys: dict[str, str], label: str, time: str,
                      source: str, notes: list[str]) -> dict[str, Any]:
    """One series, or, where dates repeat, the series of a long table told apart by one column."""
    times = parse_timestamps(frame[time])
    series_key = None
    if times.duplicated().any():
        found = _series_keys(frame, types, label, time)
        if not found:
            repeated = times[times.duplicated()].iloc[0]
            raise ConfigError(f"{source}: time column {time!r} repeats {repeated}, and no column tells series "
                              "apart; a series needs one row per period (aggregate the rows per period first).")
        if len(found) > 1:
            raise ConfigError(f"{source}: time column {time!r} repeats its dates, and each of the columns {found} "
                              "holds one series per value: name the one that tells the series apart in the "
                              "recipe's task.series_column.")
        series_key = found[0]
    if frame[label].isna().any():
        raise ConfigError(f"{source}: the series {label!r} has {int(frame[label].isna().sum())} missing value(s); "
                          "a forecast needs every period's value: fill them in the file.")
    groups = [("", times)] if series_key is None else [(f" of {name!r}", times[index]) for name, index in
                                                       frame.groupby(series_key, sort=False).groups.items()]
    for where, group in groups:
        if len(group) < 3 or pd.infer_freq(pd.DatetimeIndex(group.sort_values())) is None:
            raise ConfigError(f"{source}: time column {time!r}{where} follows no regular frequency (a missing or "
                              "extra period?); a series needs one row per period.")
    shortest = min(len(group) for _, group in groups)
    period, season = _period(groups[0][1])
    shape = default_settings(season, shortest)
    if shape is None:
        raise ConfigError(f"{source}: {shortest} {period} periods{' in the shortest series' if series_key else ''} "
                          f"are too few to train a forecaster and test it: at least {MIN_TRAIN_WINDOWS + 10} are "
                          "needed.")
    if series_key is not None:
        notes.append(f"{len(groups)} series told apart by {series_key!r} (the shortest {shortest} periods): one "
                     "model reads them all, each window scaled by its own series.")
        shape = {"series_column": keys[series_key], **shape}
    notes.append(f"{period} series: seasonality {shape['seasonality']}, the model reads "
                 f"{shape['window']} periods and forecasts {shape['horizon']}; the last {shape['test_periods']} "
                 f"periods are the test split ({shape['test_periods'] - shape['horizon'] + 1} rolling forecast "
                 "origins) and as many before them the eval split; the served model reads the last "
                 f"{shape['history']} periods and averages the network's forecast with AutoETS's and AutoTheta's.")
    return {"type": "forecasting", "time_column": keys[time], **shape}


# Names of integer columns that number the rows: pandas' unnamed index (`""`, `Unnamed: 0`), `id`, `row_id`…
ROW_NUMBER_NAMES = re.compile(r"f_|unnamed_\d+|id|index|row|row_?(?:id|number|no)|\w+_id")


def _identifier(values: pd.Series, kind: str, key: str) -> bool:
    """Text with a different value in almost every row (an identifier or free text, which no category
    generalises), or distinct integers under a row number's name (a written-out index, which would leak
    the file's order into the model)."""
    if len(values) <= 20:
        return False
    if kind == "string":
        return values.nunique() > 0.9 * len(values)
    return kind == "integer" and bool(ROW_NUMBER_NAMES.fullmatch(key)) and values.dropna().is_unique


def _feature_notes(frame: pd.DataFrame, types: dict[str, str], roles: dict[str, str], notes: list[str]) -> None:
    for column, role in roles.items():
        distinct = frame[column].nunique()
        if role == "ignored" and types[column] == "integer":
            notes.append(f"column {column!r} numbers the rows (an index written with the file?): it is left out of "
                         "the features (task.ignore), where it would teach the model the file's order.")
        elif role == "ignored":
            notes.append(f"column {column!r} has a different value in almost every row (an identifier?): it is "
                         "left out of the features (task.ignore).")
        elif role == "categorical" and types[column] == "date":
            notes.append(f"column {column!r} holds dates: the tabular recipe reads them as categories.")
        elif role == "numeric" and types[column] == "integer" and 2 < distinct <= 10:
            notes.append(f"integer column {column!r} has {distinct} values: read as a number; add it to "
                         "task.categorical if they are codes.")


def column_table(inferred: InferredRecipe) -> str:
    """The columns as a table: name, type, role, missing and distinct values."""
    rows = [("column", "type", "role", "missing", "distinct")]
    for c in inferred.columns:
        shown = c.name if c.name == c.key else f"{c.name} ({c.key})"
        rows.append((shown, c.type, c.role, str(c.missing), str(c.distinct)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(value.ljust(w) if i < 3 else value.rjust(w) for i, (value, w) in enumerate(zip(row, widths)))
        for row in rows
    )


def source_for(inferred: InferredRecipe, recipe_file: Path) -> tuple[str, Path | None]:
    """`data.source` as the recipe at `recipe_file` should say it, and a directory to allow, if any.

    Relative to where the recipe's paths start (`pipeline.config.recipe_base`)
    when the data lies there; otherwise absolute, and then its directory must
    be listed in `$PIPELINE_DATA_ROOTS` unless it is already allowed.
    """
    source = inferred.source
    if source.startswith(("sklearn:", "tfds:")):
        return source, None
    data = Path(source).resolve()
    base = recipe_base(Path(recipe_file).absolute())
    if data.is_relative_to(base):
        return Path(os.path.relpath(data, base)).as_posix(), None
    allowed = [*allowed_roots()] + ([] if base == PROJECT_ROOT else [base])
    return str(data), None if any(data.is_relative_to(root) for root in allowed) else data.parent


TASK_COMMENTS = {
    "tabular_classification": "Tabular classification: numbers are z-scored, text and boolean columns looked up "
                              "in vocabularies (categorical lists the text ones); missing values are filled; "
                              "columns under ignore are not read as features.",
    "tabular_regression": "Tabular regression: numbers are z-scored, text and boolean columns looked up in "
                          "vocabularies; the label is scaled for training and predicted in its own units; "
                          "columns under ignore are not read as features.",
    "forecasting": "Forecasting one series: split by time; the model reads `window` periods, each window scaled "
                   "by its own last value and mean seasonal change, and forecasts `horizon` as a correction to "
                   "seasonal naive; the served forecast is its mean with the forecasts `combine` names, fitted on "
                   "the last `history` periods; judged by MASE over rolling origins of the test split.",
}
BASELINES = {"tabular_classification": "the majority class", "tabular_regression": "the train mean",
             "forecasting": "seasonal naive on MASE (naive, drift, AutoETS and AutoTheta reported beside it)"}


def _yaml_line(key: str, value: Any) -> str:
    """`key: value` on one line, collections in flow style as the shipped recipes write them."""
    return yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=True, allow_unicode=True,
                          width=math.inf).strip().removeprefix("{").removesuffix("}")


def recipe_yaml(inferred: InferredRecipe, recipe_file: Path | None = None) -> str:
    """The recipe as commented YAML; `data.source` is written relative to `recipe_file`'s base when it can be.

    `name:` is written only when it was given and differs from the file's
    stem: otherwise the recipe is named after its file, so that a copy
    under another name registers its own model.
    """
    recipe = dict(inferred.recipe)
    source = inferred.source
    if recipe_file is not None:
        source, _ = source_for(inferred, recipe_file)
        if not inferred.named or Path(recipe_file).stem == recipe["name"]:
            recipe.pop("name")
    name = recipe.get("name") or (Path(recipe_file).stem if recipe_file is not None else inferred.name)
    recipe["data"] = {**recipe["data"], "source": source}
    task = recipe["task"]["type"]
    data_name = Path(inferred.source).name if not inferred.source.startswith("sklearn:") else inferred.source
    train = recipe["train"]
    comments = {
        "name": "The MLflow experiment and the registered model "
                f"(models:/{name.replace('_', '-')}@champion) are named after it.",
        "data": "The data file (a relative path starts at the checkout for a recipe inside it, else at this file's "
                "directory) and its label"
                + ("; `csv` holds the options it was read with (sniffed), each of which can be changed."
                   if "csv" in recipe["data"] else "."),
        "task": TASK_COMMENTS[task],
        "model": f"Model {recipe['model']['name']!r}: `keras-pipeline list` shows the others, `--model NAME` "
                 "tries one.",
        "train": ("As the airline recipes train" if task == "forecasting"
                  else f"Batch size for about {int(inferred.rows * 0.7)} train rows")
                 + f"; training stops when val_loss has not improved for {train['early_stopping_patience']} epochs "
                   "and keeps the best weights.",
        "tune": "No search on the first run; `--tuner random --max-trials 5` searches the model's space.",
        "evaluate": f"Registered when it beats {BASELINES[task]} on the test split; add thresholds, e.g. "
                    + ("{accuracy: 0.9}" if task == "tabular_classification" else "{rmse: 10.0}")
                    + ", to ask for more.",
    }
    header = (f"Recipe for {data_name}, predicting {recipe['data']['label']!r}: written by `keras-pipeline init` "
              f"from {inferred.rows} rows.")
    if "name" not in recipe:
        header += (f" The MLflow experiment and the registered model (models:/{name.replace('_', '-')}@champion) "
                   "are named after this file; a `name:` line would name them instead.")
    lines = textwrap.wrap(header, 108, initial_indent="# ", subsequent_indent="# ")
    for note in inferred.notes:
        lines += textwrap.wrap(note, 108, initial_indent="# Note: ", subsequent_indent="#   ")
    for section, value in recipe.items():
        lines += ["", *textwrap.wrap(comments[section], 108, initial_indent="# ", subsequent_indent="# ")]
        if not isinstance(value, dict):
            lines.append(_yaml_line(section, value))
            continue
        lines.append(f"{section}:")
        lines += [f"  {_yaml_line(key, item)}" for key, item in value.items()]
    return "\n".join(lines) + "\n"
