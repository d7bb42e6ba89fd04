"""How fast the train component's stream hands out images, with no model: float lists against uint8 bytes.

    python -m bench.stream_read                       # ResNet-18's 32×32×3 images, batch 512
    python -m bench.stream_read --batches 101 --read-ahead 0 2

The same images (`bench.gpu_train`'s ResNet-18 case: `--batches` batches of
random 32×32×3 uint8 pixels) are written as a transformed split two ways,
uncompressed in row groups of `ROW_GROUP_BYTES` as the preprocess component
writes them:

- **float32 lists (before)**: the standardised pixels as a fixed-size list
  of float32, the layout the image transform wrote before;
- **uint8 bytes (after)**: the pixels as one fixed-size binary value per
  image, the layout it writes now (the model standardises them).

For each: **ms per row group**, the mean over row groups of the fastest of
three reads of a row group into the task's `(N, H, W, C)` arrays
(`read_row_group`, `table_columns`, `task.arrays`), and **images/s** of one shuffled epoch of
`ParquetBatches`, read batch by batch on one thread as Keras's `PyDataset`
worker does, per read-ahead setting (0: each row group is decoded when its
first batch is asked for). The first batch is not timed: in `fit`, Keras
asks for it while the train step compiles. The images/s are the ceiling the
stream puts on training.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

CASE = "resnet18"


def samples_per_second(split: Path, task, transform, batch_size: int, read_ahead: int) -> float:
    from components.input_pipeline import ParquetBatches

    stream = ParquetBatches(split, task, transform, batch_size, shuffle=True, seed=0, read_ahead=read_ahead)
    stream[0]  # the first row group, read while Keras compiles the train step
    start, rows = time.perf_counter(), 0
    for index in range(1, len(stream)):
        rows += len(stream[index][1])
    return rows / (time.perf_counter() - start)


def row_group_reads(split: Path, task, transform, repeats: int = 3) -> tuple[int, float, float]:
    """Images per row group, its MiB in the file, and the mean ms to read one into the task's arrays.

    Each row group is read `repeats` times and the fastest counts: other
    processes on the machine only ever add time.
    """
    import pyarrow.parquet as pq

    from components.artifact_io import table_columns
    from data.splits import split_files

    groups = [(path, i) for path in split_files(split) for i in range(pq.ParquetFile(path).metadata.num_row_groups)]
    seconds, rows, size = 0.0, 0, 0
    for path, i in groups:
        metadata = pq.ParquetFile(path).metadata.row_group(i)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x, _ = task.arrays(table_columns(pq.ParquetFile(path).read_row_group(i)), transform)
            times.append(time.perf_counter() - start)
        seconds += min(times)
        rows, size = rows + len(x), size + metadata.total_byte_size
    return rows // len(groups), size / len(groups) / 2**20, 1000 * seconds / len(groups)


def float_layout(transform, table):
    """The same images as the transform wrote them before: standardised float32 in a fixed-size list."""
    import pyarrow as pa

    from components.artifact_io import table_columns
    from tasks.image import decode_pixels, normalise

    spec = transform["image"]
    images = decode_pixels(table_columns(table.select(["image"]))["image"], spec)
    values = normalise(images, spec["mean"], spec["variance"]).reshape(len(images), -1)
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    before = copy.deepcopy(transform)
    before["image"].update(dtype="float32", mean=[0.0] * 3, variance=[1.0] * 3)
    labels = table.column("label").combine_chunks()
    return before, pa.Table.from_arrays([column, labels], names=["image", "label"])


def main() -> None:
    import numpy as np

    from bench.gpu_train import CASES, Shapes, synthetic_split, write_preprocess_artifact

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=201, help="batches in the split")
    parser.add_argument("--read-ahead", nargs="+", type=int, default=[0, 4])
    args = parser.parse_args()
    case = next(c for c in CASES if c.label == CASE)
    rows = case.batch_size * args.batches
    task, transform, table = synthetic_split(case, Shapes(), rows, np.random.default_rng(0))
    before, before_table = float_layout(transform, table)
    layouts = {"float32 lists (before)": (before, before_table), "uint8 bytes (after)": (transform, table)}
    results = {}
    for name, (spec, split_table) in layouts.items():
        with tempfile.TemporaryDirectory() as work:
            split = write_preprocess_artifact(Path(work), spec, split_table, case.batch_size)
            images, mib, ms = row_group_reads(split, task, spec)
            rates = [samples_per_second(split, task, spec, case.batch_size, n) for n in args.read_ahead]
        results[name] = (images, mib, ms, rates)
    print(f"{case.label}: {rows:,} images of {Shapes().image}×{Shapes().image}×3, batch {case.batch_size}")
    print("| layout | images per row group | MiB per row group | ms per row group | ms per 1,000 images | "
          + " | ".join(f"images/s, read-ahead {n}" for n in args.read_ahead) + " |")
    print("| --- |" + " ---: |" * (4 + len(args.read_ahead)))
    for name, (images, mib, ms, rates) in results.items():
        print(f"| {name} | {images:,} | {mib:.1f} | {ms:.1f} | {1000 * ms / images:.2f} | "
              + " | ".join(f"{r:,.0f}" for r in rates) + " |")
    (*_, rates_before), (*_, rates_after) = results.values()
    print("images/s after / before: " + ", ".join(f"read-ahead {n} {a / b:.2f}×" for n, a, b in
                                                  zip(args.read_ahead, rates_after, rates_before)))


if __name__ == "__main__":
    main()
