"""Text vocabularies and image statistics on Beam against the same work in one process.

    python -m bench.preprocess_modalities                       # mr_cnn1d and mnist_lenet
    python -m bench.preprocess_modalities --copies 40

For each recipe, the real ingest component reads its bundled data and every
split is then repeated `--copies` times (the layout ingest writes, row groups
included), so that there is work enough to time. On it:
- **one process**: the task's own analyzer (token counts; per-channel pixel
  moments) over the train split's row groups, its `finalize`, then its
  `transform_batch` over every split's row groups, written with pyarrow: the
  preprocessing without Beam, the reference;
- **beam, 1 worker** and **beam, 2 worker threads**: `components.preprocess.run`,
  the component itself, on the DirectRunner.

Each measurement runs in a fresh process (imports not timed). Every Beam
output is checked against the reference before the table prints: the same
vocabulary or pixel statistics, and the same transformed rows in any order.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.peak_memory import high_water_mib
from bench.preprocess_throughput import beam_preprocess

RECIPES = ("mr_cnn1d", "mnist_lenet")
SPLITS = ("train", "eval", "test")
VARIANTS = {"one process": ("reference", 1, "in_memory"), "beam, 1 worker": ("beam", 1, "in_memory"),
            "beam, 2 worker threads": ("beam", 2, "multi_threading")}


def examples(recipe: str, copies: int, work: Path) -> Path:
    """The recipe's ingest artifact with every split repeated `copies` times."""
    import mlflow

    from components import ingest
    from components.artifact_io import write_split
    from data.splits import split_files
    from pipeline.config import load_config

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    (work / "ingest").mkdir()
    with mlflow.start_run(run_name=f"bench-{recipe}"):
        ingest.run({}, work / "ingest", load_config(recipe))
    scaled = work / "examples"
    for split in SPLITS:
        (scaled / split).mkdir(parents=True)
        table = pa.concat_tables(pq.read_table(path) for path in split_files(work / "ingest" / split))
        write_split(pa.concat_tables([table] * copies), scaled / split / "data.parquet")
    shutil.copy(work / "ingest" / "schema.json", scaled / "schema.json")
    return scaled


def reference(recipe: str, examples: Path, output: Path) -> None:
    """The task's analyzer, finalize and transform over the row groups, in this process, without Beam."""
    from components.preprocess import row_groups as split_row_groups
    from pipeline.config import load_config
    from tasks import get_task

    config = load_config(recipe)
    task = get_task(config.task)
    schema = json.loads((examples / "schema.json").read_text())

    def row_groups(split: str):
        """The row groups the component deals to its workers, in order."""
        return (pq.ParquetFile(path).read_row_group(index) for path, index in split_row_groups(examples / split))

    analyzer = task.analyzer(schema, config.preprocess)
    accumulator = analyzer.create_accumulator()
    for batch in row_groups("train"):
        accumulator = analyzer.add_input(accumulator, batch)
    transform = task.finalize(analyzer.extract_output(accumulator), schema, config.preprocess)
    (output / "transform").mkdir(parents=True)
    (output / "transform" / "transform.json").write_text(json.dumps(transform))
    for split in SPLITS:
        (output / "transformed" / split).mkdir(parents=True)
        with pq.ParquetWriter(output / "transformed" / split / "part.parquet", task.output_schema(schema)) as writer:
            for batch in row_groups(split):
                writer.write_table(task.transform_batch(batch, transform, split))


def measure(kind: str, recipe: str, examples: Path, output: Path, workers: int, mode: str) -> None:
    """One measurement in this process, imports done first; prints a JSON line."""
    import keras  # noqa: F401

    import components.preprocess  # noqa: F401
    from pipeline.config import load_config
    from tasks import get_task

    get_task(load_config(recipe).task)  # imports the task's module
    if kind == "reference":
        start = time.perf_counter()
        reference(recipe, examples, output)
        seconds = time.perf_counter() - start
    else:
        seconds = beam_preprocess(examples, output, workers, mode, recipe)
    print(json.dumps({"seconds": seconds, "peak_rss_mib": high_water_mib()}))


def run_measurement(kind: str, recipe: str, examples: Path, output: Path, workers: int, mode: str) -> dict:
    command = [sys.executable, "-m", "bench.preprocess_modalities", "--measure", kind, "--recipes", recipe,
               "--examples", str(examples), "--output", str(output), "--workers", str(workers), "--mode", mode]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{kind} on {recipe} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def sorted_rows(directory: Path, split: str, transform: dict) -> np.ndarray:
    """A split's transformed rows as bytes, sorted; images as their stored pixels."""
    from components.artifact_io import table_columns

    table = pq.read_table(directory / "transformed" / split)
    matrix = table_columns(table.select([0]))[table.column_names[0]]
    matrix = matrix.reshape(len(matrix), -1)
    if "image" in transform:
        matrix = matrix.view(transform["image"]["dtype"]).astype("int32")
    rows = np.hstack([matrix.astype("<i4"), table.column(1).to_numpy().astype("<i4")[:, None]])
    return np.sort(np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1] * 4))).ravel())


def check_equal(expected: Path, actual: Path) -> None:
    """The same vocabulary or pixel statistics, labels, and transformed rows (in any order)."""
    want, got = (json.loads((d / "transform" / "transform.json").read_text()) for d in (expected, actual))
    if "text" in want:
        assert got["text"]["vocabulary"] == want["text"]["vocabulary"], "vocabularies differ"
    else:
        for key in ("mean", "variance"):
            np.testing.assert_allclose(got["image"][key], want["image"][key], rtol=1e-9)
    assert got["label"] == want["label"] and got["num_train_rows"] == want["num_train_rows"]
    for split in SPLITS:
        assert np.array_equal(sorted_rows(expected, split, want), sorted_rows(actual, split, got)), \
            f"{actual}: the {split} rows differ from the reference's"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--copies", type=int, default=20, help="times each split is repeated")
    parser.add_argument("--measure", choices=["reference", "beam"], help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="in_memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.recipes[0], args.examples, args.output, args.workers, args.mode)
        return

    print("| recipe | train rows | preprocessing | seconds | train rows/s | × one process | peak RSS MiB |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for recipe in args.recipes:
        with tempfile.TemporaryDirectory(prefix=f"bench-preprocess-{recipe}-") as work:
            work = Path(work)
            data = examples(recipe, args.copies, work)
            rows = pq.ParquetFile(data / "train" / "data.parquet").metadata.num_rows
            results = {name: run_measurement(kind, recipe, data, work / f"out-{i}", workers, mode)
                       for i, (name, (kind, workers, mode)) in enumerate(VARIANTS.items())}
            for i in range(1, len(VARIANTS)):
                check_equal(work / "out-0", work / f"out-{i}")
            base = results["one process"]["seconds"]
            for name, result in results.items():
                print(f"| {recipe} | {rows:,} | {name} | {result['seconds']:.2f} | {rows / result['seconds']:,.0f} | "
                      f"{base / result['seconds']:.2f} | {result['peak_rss_mib']:,.0f} |")


if __name__ == "__main__":
    main()
