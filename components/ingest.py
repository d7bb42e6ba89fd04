"""Ingest: raw source → deterministic train/eval/test splits as Parquet, a schema and statistics.

The task decides how rows are split (stratified, or by time) and how its
columns are typed. Outputs `{train,eval,test}/data.parquet`, `schema.json`
(features, label and what the train split says about them),
`statistics.json` (per split, per column) and, when the recipe's
`data.bad_rows_policy` set rows aside, `rejected_rows.csv` (where and why).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.artifact_io import write_split
from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="ingest",
    config_sections=("data", "task", "seed"),
    code=("components/ingest.py", "components/base.py", "components/artifact_io.py", "data", "tasks"),
    description="Read the source; write train/eval/test Parquet splits, schema and statistics.",
)


DATASETS = "datasets.json"
DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")
# What each split is for, as MLflow's `mlflow.data.context` input tag says it.
SPLIT_CONTEXTS = {"train": "training", "eval": "validation", "test": "testing"}


def datasets(ingest_dir: Path) -> dict:
    """The splits as MLflow dataset entities (source, digest, schema, profile), as ingest recorded them."""
    from mlflow.entities import Dataset

    path = ingest_dir / DATASETS
    return {name: Dataset(**entry) for name, entry in json.loads(path.read_text()).items()} if path.exists() else {}


def log_datasets(ingest_dir: Path, splits: list[str], run_id: str | None = None) -> None:
    """Logs `splits` of an ingest artifact as the inputs of `run_id` (the active run), each with its context.

    Every run that reads a split logs it, a cached one too, so the runs
    table's Dataset column and each run's page say what it was fed.
    """
    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    recorded = datasets(ingest_dir)
    inputs = [DatasetInput(recorded[split], [InputTag(MLFLOW_DATASET_CONTEXT, SPLIT_CONTEXTS[split])])
              for split in splits if split in recorded]
    if inputs:
        mlflow.MlflowClient().log_inputs(run_id or mlflow.active_run().info.run_id, datasets=inputs)


def column_statistics(frame: pd.DataFrame, label: str | None = None) -> dict[str, Any]:
    """Missing counts for every column; moments for numbers, top values for categories and a class label.

    A class `label` gets its value counts whatever its type (integer and
    boolean classes too), keyed by the canonical strings the splits store.
    """
    from tasks.classification import canonical_labels

    stats: dict[str, Any] = {"num_rows": int(len(frame)), "columns": {}}
    for name in frame.columns:
        column = frame[name]
        entry: dict[str, Any] = {"missing": int(column.isna().sum())}
        counted = name == label
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            described = column.describe()
            entry.update({k: float(described[k]) for k in ("mean", "std", "min", "max") if k in described})
        elif len(column) and column.map(np.ndim).max() > 0:  # images, series: report their lengths
            lengths = column.map(np.size)
            entry.update({"min_length": int(lengths.min()), "max_length": int(lengths.max())})
        else:
            counted = True
        if counted:
            values = pd.Series(canonical_labels(column)) if name == label else column.astype(str)
            counts = values.value_counts()
            entry.update({"unique": int(counts.size), "top": {k: int(v) for k, v in counts.head(20).items()}})
        stats["columns"][name] = entry
    return stats


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    from data.sources import SourceError, apply_bad_rows_policy
    from tasks import get_task

    task = get_task(config.task)
    raw, splits = task.read_splits(config.data, config.seed)
    data = config.data
    set_aside = apply_bad_rows_policy(
        raw.rejected, sum(len(f) for f in splits.values()), data.bad_rows_policy, data.max_bad_rows_fraction
    )
    empty = [name for name, frame in splits.items() if frame.empty]
    if empty:
        aside = f", after setting {set_aside} bad row(s) aside" if set_aside else ""
        raise SourceError(
            f"{data.source}: split(s) {empty} are empty{aside}; the source has {len(raw.frame)} usable rows. "
            "Use more data, or change data.split."
        )
    schema = task.schema(splits["train"], raw)
    schema["source"] = {"origin": raw.origin, "renamed_columns": raw.renamed, "csv": raw.csv_format}
    if raw.csv_format is not None:  # a tab shows as "\t"; lists and None as JSON
        mlflow.log_params({f"csv_{key}": value if isinstance(value, str) and value.isprintable()
                           else json.dumps(value)[:6000] for key, value in raw.csv_format.items()
                           if value not in (None, "")})
    label = raw.label if task.head == "classification" else None
    statistics = {name: column_statistics(frame, label) for name, frame in splits.items()}
    for name, frame in splits.items():
        (output / name).mkdir()
        write_split(task.to_arrow(frame, schema), output / name / "data.parquet")
    if set_aside:
        raw.rejected.to_csv(output / "rejected_rows.csv", index=False)
        mlflow.log_artifact(str(output / "rejected_rows.csv"))
    (output / "schema.json").write_text(json.dumps(schema, indent=2))
    (output / "statistics.json").write_text(json.dumps(statistics, indent=2))

    with warnings.catch_warnings():
        # MLflow registers two sources that both take a local path, and its schema inference hints at
        # model signatures: neither says anything about the data.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column")
        source = resolve_dataset_source(str(raw.path)) if raw.path else CodeDatasetSource({"source": raw.origin})
        datasets = {name: mlflow.data.from_pandas(frame, source=source, name=config.data.source, targets=raw.label)
                    for name, frame in splits.items()}
        entities = {name: dataset._to_mlflow_entity() for name, dataset in datasets.items()}  # infers the schema
    (output / DATASETS).write_text(json.dumps({name: {key: getattr(entity, key) for key in DATASET_FIELDS}
                                               for name, entity in entities.items()}, indent=2))
    log_datasets(output, list(splits))
    mlflow.log_artifact(str(output / "schema.json"))
    mlflow.log_artifact(str(output / "statistics.json"))
    row_counts = {name: len(frame) for name, frame in splits.items()}
    mlflow.log_metrics({**{f"rows_{name}": n for name, n in row_counts.items()}, "rows_rejected": set_aside})
    return {"row_counts": row_counts, "rows_rejected": set_aside, "output_rows": row_counts,
            "output_files": ["schema.json", "statistics.json"]}
