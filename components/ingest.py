"""Ingest: raw source → deterministic stratified splits as Parquet, a schema and statistics.

Outputs `examples/{train,eval,test}/data.parquet`, `schema.json` (feature
names, kinds, dtypes, ranges and vocabularies from the train split, the label
and its classes) and `statistics.json` (per split, per column).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from components.base import ComponentSpec
from data.sources import SourceError, read_source

SPEC = ComponentSpec(
    name="ingest",
    config_sections=("data", "seed"),
    code=("components/ingest.py", "components/base.py", "data"),
    description="Read the source; write stratified train/eval/test Parquet splits, schema and statistics.",
)
SPLITS = ("train", "eval", "test")


def _is_categorical(series: pd.Series, forced: tuple[str, ...]) -> bool:
    return series.name in forced or not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def infer_schema(train: pd.DataFrame, label: str, categorical: tuple[str, ...]) -> dict[str, Any]:
    features = []
    for name in train.columns:
        if name == label:
            continue
        column = train[name]
        if _is_categorical(column, categorical):
            values = column.dropna().astype(str)
            features.append({"name": name, "kind": "categorical", "dtype": "string",
                             "vocabulary": sorted(values.unique().tolist())})
        else:
            features.append({"name": name, "kind": "numeric", "dtype": "float32",
                             "min": float(column.min()), "max": float(column.max())})
    classes = sorted(train[label].astype(str).unique().tolist())
    return {"features": features, "label": {"name": label, "kind": "categorical", "classes": classes}}


def column_statistics(frame: pd.DataFrame) -> dict[str, Any]:
    stats: dict[str, Any] = {"num_rows": int(len(frame)), "columns": {}}
    for name in frame.columns:
        column = frame[name]
        entry: dict[str, Any] = {"missing": int(column.isna().sum())}
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            described = column.describe()
            entry.update({k: float(described[k]) for k in ("mean", "std", "min", "max") if k in described})
        else:
            counts = column.astype(str).value_counts()
            entry.update({"unique": int(counts.size), "top": {k: int(v) for k, v in counts.head(20).items()}})
        stats["columns"][name] = entry
    return stats


def split_frame(frame: pd.DataFrame, label: str, fractions, seed: int) -> dict[str, pd.DataFrame]:
    """Stratified train/eval/test split; the same seed always gives the same rows."""
    counts = frame[label].value_counts()
    rare = counts[counts < 3]
    if not rare.empty:
        raise SourceError(
            f"Label {label!r} values {rare.index.tolist()} have fewer than 3 rows; "
            "each class needs a row in every split."
        )
    holdout = fractions.eval + fractions.test
    train, rest = train_test_split(frame, test_size=holdout, stratify=frame[label], random_state=seed)
    evaluation, test = train_test_split(
        rest, test_size=fractions.test / holdout, stratify=rest[label], random_state=seed
    )
    return {"train": train, "eval": evaluation, "test": test}


def _to_arrow(frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
    columns, fields = [], []
    for feature in schema["features"]:
        column = frame[feature["name"]]
        if feature["kind"] == "categorical":
            values = pa.array(column.astype("string").to_numpy(na_value=None), pa.string())
        else:
            values = pa.array(column.to_numpy(dtype="float32", na_value=np.nan), pa.float32())
        columns.append(values)
        fields.append(pa.field(feature["name"], values.type))
    label = schema["label"]["name"]
    columns.append(pa.array(frame[label].astype(str).to_numpy(), pa.string()))
    fields.append(pa.field(label, pa.string()))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import mlflow

    raw = read_source(config.data.source, config.data.label, config.data.tfds_data_dir)
    splits = split_frame(raw.frame, raw.label, config.data.split, config.seed)
    schema = infer_schema(splits["train"], raw.label, config.data.categorical)
    schema["source"] = {"origin": raw.origin, "renamed_columns": raw.renamed}
    statistics = {name: column_statistics(frame) for name, frame in splits.items()}
    for name, frame in splits.items():
        (output / name).mkdir()
        pq.write_table(_to_arrow(frame, schema), output / name / "data.parquet")
    (output / "schema.json").write_text(json.dumps(schema, indent=2))
    (output / "statistics.json").write_text(json.dumps(statistics, indent=2))

    from mlflow.data.code_dataset_source import CodeDatasetSource

    source = raw.path or CodeDatasetSource({"source": raw.origin})
    dataset = mlflow.data.from_pandas(splits["train"], source=source, name=config.data.source, targets=raw.label)
    mlflow.log_input(dataset, context="training")
    mlflow.log_artifact(str(output / "schema.json"))
    mlflow.log_artifact(str(output / "statistics.json"))
    row_counts = {name: len(frame) for name, frame in splits.items()}
    mlflow.log_metrics({f"rows_{name}": n for name, n in row_counts.items()})
    return {"row_counts": row_counts}
