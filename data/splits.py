"""Reading the Parquet splits ingest writes (`examples/{train,eval,test}/*.parquet`).

Components and tasks both read them, so the readers live here, below both.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def split_files(split_dir: Path) -> list[Path]:
    files = sorted(Path(split_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"No Parquet files in {split_dir}.")
    return files


def read_frame(split_dir: Path, rows: int | None = None):
    """A split as ingest wrote it, as a DataFrame (list columns hold numpy arrays); its first `rows` rows if given."""
    if rows is None:
        return pq.ParquetDataset(split_files(split_dir)).read().to_pandas()
    first = next(pq.ParquetFile(split_files(split_dir)[0]).iter_batches(batch_size=rows), None)
    return pa.Table.from_batches([first]).to_pandas()
