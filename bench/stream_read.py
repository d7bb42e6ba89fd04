"""How fast the train component's stream hands out batches, with no model: `ParquetBatches` by read-ahead.

    python -m bench.stream_read                       # ResNet-18's 32×32×3 images, batch 512
    python -m bench.stream_read --cases vit bert --batches 101 --read-ahead 0 2

Each case writes `bench.gpu_train`'s synthetic transformed split (`--batches`
batches, in row groups of `ROW_GROUP_BYTES`), then reads one shuffled epoch batch by
batch on one thread, as Keras's `PyDataset` worker does, once per read-ahead
setting (0: each row group is decoded when its first batch is asked for).
The first batch is not timed: in `fit`, Keras's queue asks for it while the
train step compiles. The table gives samples per second: the ceiling the
stream puts on training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEFAULT_CASES = ("resnet18",)


def samples_per_second(split: Path, task, transform, batch_size: int, read_ahead: int) -> float:
    from components.input_pipeline import ParquetBatches

    stream = ParquetBatches(split, task, transform, batch_size, shuffle=True, seed=0, read_ahead=read_ahead)
    stream[0]  # the first row group, read while Keras compiles the train step
    start, rows = time.perf_counter(), 0
    for index in range(1, len(stream)):
        rows += len(stream[index][1])
    return rows / (time.perf_counter() - start)


def main() -> None:
    import numpy as np

    from bench.gpu_train import CASES, Shapes, synthetic_split, write_preprocess_artifact

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="bench.gpu_train case labels")
    parser.add_argument("--batches", type=int, default=201, help="batches in the split")
    parser.add_argument("--read-ahead", nargs="+", type=int, default=[0, 1, 2, 4])
    args = parser.parse_args()
    print("| case (batch) | " + " | ".join(f"read-ahead {n}" for n in args.read_ahead) + " |")
    print("| --- |" + " ---: |" * len(args.read_ahead))
    for case in (c for c in CASES if c.label in args.cases):
        rows = case.batch_size * args.batches
        task, transform, table = synthetic_split(case, Shapes(), rows, np.random.default_rng(0))
        with tempfile.TemporaryDirectory() as work:
            split = write_preprocess_artifact(Path(work), transform, table, case.batch_size)
            rates = [samples_per_second(split, task, transform, case.batch_size, n) for n in args.read_ahead]
        print(f"| {case.label} ({case.batch_size}) | " + " | ".join(f"{r:,.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
