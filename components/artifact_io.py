"""Reading and writing the artifacts components exchange: JSON files and Parquet splits.

The split readers that tasks need too are in `data.splits`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.splits import split_files


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# Splits are written in row groups of about this size: Beam and the streaming trainer
# read one row group at a time, so it bounds their memory whatever the split's size.
ROW_GROUP_BYTES = 64 * 2**20


def write_split(table: pa.Table, path: Path) -> None:
    rows = max(1, ROW_GROUP_BYTES * table.num_rows // max(table.nbytes, 1))
    pq.write_table(table, path, row_group_size=rows)


def binary_rows(column: pa.FixedSizeBinaryArray) -> np.ndarray:
    """A fixed-size binary column as `(rows, bytes)` uint8: a view of the Arrow buffer, no copy."""
    width = column.type.byte_width
    if not len(column):
        return np.zeros((0, width), np.uint8)
    return np.frombuffer(column.buffers()[1], np.uint8, count=len(column) * width,
                         offset=column.offset * width).reshape(len(column), width)


def table_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """An Arrow table as numpy columns (list columns as 2-D arrays, fixed-size binary as 2-D uint8)."""
    columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_binary(column.type) and column.null_count == 0:
            columns[name] = binary_rows(column)
        elif pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
            values = column.flatten().to_numpy(zero_copy_only=False)
            columns[name] = values.reshape(len(column), -1) if len(column) else values
        else:
            columns[name] = column.to_numpy(zero_copy_only=False)
    return columns


def read_columns(split_dir: Path) -> dict[str, np.ndarray]:
    """All Parquet files of a split directory as numpy columns (list columns as 2-D arrays)."""
    return table_columns(pq.ParquetDataset(split_files(split_dir)).read())


def load_transformed(preprocess_dir: Path, split: str, task) -> tuple[Any, Any, dict[str, Any]]:
    """A transformed split as `(x, y)` for the task's model, and the transform spec."""
    transform = read_json(Path(preprocess_dir) / "transform" / "transform.json")
    x, y = task.arrays(read_columns(Path(preprocess_dir) / "transformed" / split), transform)
    return x, y, transform
