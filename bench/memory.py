"""Peak memory of the preprocess and train components as the data grows.

    python -m bench.memory                                  # 0.5M, 1M and 2M rows
    python -m bench.memory --rows 250000 500000 --epochs 1

For each size, on the generated tabular dataset (`bench/tabular_data.py`),
each in a fresh process: the preprocess component (Beam DirectRunner, one
worker), then the train component (an MLP, `--epochs` epochs) fed from the
whole split in memory (`train.input: memory`) and streamed from Parquet row
groups (`train.input: stream`). Prints peak resident memory (MiB); a
process's baseline (Python, TensorFlow, Beam, MLflow imported) is in every
figure, so what matters is how each column grows with the rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.peak_memory import high_water_mib
from bench.preprocess_throughput import run_measurement
from bench.tabular_data import LABEL, generate


def train(examples: Path, preprocessed: Path, output: Path, mode: str, epochs: int) -> None:
    """The train component in this process; prints its seconds and peak memory as JSON."""
    import mlflow

    from components import train as component
    from pipeline.config import load_config

    config = load_config("iris_mlp", {"data.label": LABEL, "train.input": mode, "epochs": epochs,
                                      "batch_size": 1024, "learning_rate": 0.003})
    mlflow.set_tracking_uri(f"sqlite:///{output.parent / f'mlflow-{mode}.db'}")
    output.mkdir()
    with mlflow.start_run():
        start = time.perf_counter()
        summary = component.run({"ingest": examples, "preprocess": preprocessed}, output, config)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mib": high_water_mib(),
                      "val_accuracy": summary.get("best_val_accuracy")}))


def run_train(examples: Path, preprocessed: Path, output: Path, mode: str, epochs: int) -> dict:
    command = [sys.executable, "-m", "bench.memory", "--train", mode, "--examples", str(examples),
               "--preprocessed", str(preprocessed), "--output", str(output), "--epochs", str(epochs)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"train ({mode}) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[500_000, 1_000_000, 2_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train", choices=["memory", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--preprocessed", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train:
        train(args.examples, args.preprocessed, args.output, args.train, args.epochs)
        return

    print("| rows | preprocess peak MiB | train, in memory: peak MiB (s) | train, streamed: peak MiB (s) |")
    print("| ---: | ---: | ---: | ---: |")
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as work:
            work = Path(work)
            examples = generate(rows, work / "examples")
            (work / "beam").mkdir()
            preprocessed = work / "beam" / "preprocess"
            beam = run_measurement("beam", examples, preprocessed)
            trained = {mode: run_train(examples, preprocessed, work / f"train-{mode}", mode, args.epochs)
                       for mode in ("memory", "stream")}
            cells = [f"{t['peak_rss_mib']:,.0f} ({t['seconds']:.0f} s)" for t in trained.values()]
            print(f"| {rows:,} | {beam['peak_rss_mib']:,.0f} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
