"""A generated tabular dataset in the layout ingest writes, for the preprocessing benchmarks.

    python -m bench.tabular_data --rows 2000000 --output /tmp/tabular-2m

10 numeric columns (normal, 1% missing) and 3 categorical ones (5, 50 and
1,000 values, Zipf-like frequencies), a 3-class label that depends on them,
split 70/15/15 into `{train,eval,test}/data.parquet` (row groups of about
64 MiB) with `schema.json`, as the ingest component writes them, so the
preprocess component reads it as is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.artifact_io import write_split

NUMERIC = [f"x{i}" for i in range(10)]
CATEGORICAL = {"colour": 5, "region": 50, "product": 1000}
LABEL = "label"
SPLITS = {"train": 0.7, "eval": 0.15, "test": 0.15}


def _categories(rng: np.random.Generator, name: str, cardinality: int, rows: int) -> tuple[np.ndarray, pa.Array]:
    weights = 1.0 / np.arange(1, cardinality + 1)
    codes = rng.choice(cardinality, size=rows, p=weights / weights.sum())
    values = pa.array([f"{name}_{i}" for i in range(cardinality)], pa.string())
    return codes, pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), values).cast(pa.string())


def generate(rows: int, output: Path, seed: int = 0) -> Path:
    """Writes the dataset to `output` (created) and returns it."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, len(NUMERIC))).astype("float32")
    score = numeric[:, 0] + 0.5 * numeric[:, 1] - 0.5 * numeric[:, 2]
    columns = {}
    for j, name in enumerate(NUMERIC):
        values = numeric[:, j].copy()
        values[rng.random(rows) < 0.01] = np.nan
        columns[name] = pa.array(values, pa.float32())
    for name, cardinality in CATEGORICAL.items():
        codes, columns[name] = _categories(rng, name, cardinality, rows)
        score += (codes % 3 - 1) * 0.3
    classes = np.array(["high", "low", "mid"])
    columns[LABEL] = pa.array(classes[np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))], pa.string())
    table = pa.table(columns)

    output.mkdir(parents=True)
    start = 0
    for split, fraction in SPLITS.items():
        stop = rows if split == "test" else start + int(rows * fraction)
        (output / split).mkdir()
        write_split(table.slice(start, stop - start), output / split / "data.parquet")
        start = stop
    schema = {
        "features": [{"name": n, "kind": "numeric", "dtype": "float32"} for n in NUMERIC]
        + [{"name": n, "kind": "categorical", "dtype": "string"} for n in CATEGORICAL],
        "label": {"name": LABEL, "kind": "categorical", "classes": sorted(classes.tolist())},
    }
    (output / "schema.json").write_text(json.dumps(schema, indent=2))
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    print(generate(args.rows, args.output))


if __name__ == "__main__":
    main()
