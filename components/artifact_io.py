"""Reading the artifacts components exchange: JSON files and Parquet splits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_columns(split_dir: Path) -> dict[str, np.ndarray]:
    """All Parquet files of a split directory as numpy columns."""
    files = sorted(Path(split_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"No Parquet files in {split_dir}.")
    table = pq.ParquetDataset(files).read()
    return {name: table.column(name).to_numpy() for name in table.column_names}


def load_transformed(preprocess_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features matrix, integer labels and the transform spec of one transformed split."""
    from keras_models.serving import feature_matrix

    transform = read_json(Path(preprocess_dir) / "transform" / "transform.json")
    columns = read_columns(Path(preprocess_dir) / "transformed" / split)
    return feature_matrix(columns, transform), columns[transform["label"]["name"]].astype("int32"), transform
