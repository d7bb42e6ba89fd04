"""Reading the artifacts components exchange: JSON files and Parquet splits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_columns(split_dir: Path) -> dict[str, np.ndarray]:
    """All Parquet files of a split directory as numpy columns (list columns as 2-D arrays)."""
    files = sorted(Path(split_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"No Parquet files in {split_dir}.")
    table = pq.ParquetDataset(files).read()
    columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
            values = column.flatten().to_numpy(zero_copy_only=False)
            columns[name] = values.reshape(len(column), -1) if len(column) else values
        else:
            columns[name] = column.to_numpy(zero_copy_only=False)
    return columns


def read_frame(split_dir: Path):
    """A split as ingest wrote it, as a DataFrame (list columns hold numpy arrays)."""
    files = sorted(Path(split_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"No Parquet files in {split_dir}.")
    return pq.ParquetDataset(files).read().to_pandas()


def load_transformed(preprocess_dir: Path, split: str, task) -> tuple[Any, Any, dict[str, Any]]:
    """A transformed split as `(x, y)` for the task's model, and the transform spec."""
    transform = read_json(Path(preprocess_dir) / "transform" / "transform.json")
    x, y = task.arrays(read_columns(Path(preprocess_dir) / "transformed" / split), transform)
    return x, y, transform
