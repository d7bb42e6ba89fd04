"""The preprocess component's Beam full pass against pandas doing the same work in one process.

    python -m bench.preprocess_throughput                       # 2M rows, 1 and 2 workers, Dask with 2
    python -m bench.preprocess_throughput --rows 500000 1000000 2000000
    python -m bench.preprocess_throughput --rows 2000000 8000000 --workers 1 --dask-workers 2

For each size, on a generated dataset (`bench/tabular_data.py`: 10 numeric,
3 categorical columns, the layout ingest writes):
- **pandas**: read train, compute means, variances and vocabularies, z-score
  and index every split, write Parquet; one process, the reference;
- **beam, N worker(s)**: `components.preprocess.run`, the component itself:
  the same statistics as a Beam combiner on train, the transform of every
  split, the Parquet write, on the DirectRunner (`direct_num_workers=N`);
  for N > 1 once with worker processes (`multi_processing`) and once with
  worker threads in the runner's process (`multi_threading`);
- **beam on dask, N worker processes**: the same component on Beam's
  DaskRunner, against a local dask.distributed cluster (`dask scheduler`
  and N single-threaded `dask worker` processes on 127.0.0.1) started once
  for the whole benchmark (`--dask-workers N`, 0 for none). Its fixed cost
  is measured apart and printed first: the seconds until every worker has
  registered, and a first job (the component on 1,000 rows) on the fresh
  workers, which import Beam, pyarrow and the task there.

Each measurement runs in a fresh process (imports not timed) and reports
wall seconds, rows per second over all splits, speed relative to pandas
and peak resident memory (the process and, for worker processes, the
largest of them; `bench/peak_memory.py`; for Dask, the largest worker's
high-water mark since the cluster started). Every output is checked to be
equal to pandas's before its row is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.peak_memory import ChildrenPeak, high_water_mib
from bench.tabular_data import CATEGORICAL, LABEL, NUMERIC, SPLITS, generate


def pandas_preprocess(examples: Path, output: Path) -> None:
    """The same statistics and transform as the tabular task, written with pandas and pyarrow."""
    train = pd.read_parquet(examples / "train" / "data.parquet")
    mean, scale = train[NUMERIC].mean(), np.sqrt(train[NUMERIC].var(ddof=0)).replace(0, 1)
    vocabularies = {}
    for name in CATEGORICAL:
        counts = train[name].value_counts()
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        vocabularies[name] = [value for value, _ in ranked]
    classes = sorted(train[LABEL].dropna().unique())
    for split in SPLITS:
        frame = train if split == "train" else pd.read_parquet(examples / split / "data.parquet")
        columns = {n: ((frame[n] - mean[n]) / scale[n]).fillna(0).to_numpy("float32") for n in NUMERIC}
        for name, vocabulary in vocabularies.items():
            columns[name] = pd.Categorical(frame[name], categories=vocabulary).codes.astype("int64") + 1
        columns[LABEL] = pd.Categorical(frame[LABEL], categories=classes).codes.astype("int64")
        (output / split).mkdir(parents=True)
        pq.write_table(pa.table(columns), output / split / "part.parquet", compression="none")


def beam_preprocess(examples: Path, output: Path, workers: int, mode: str, recipe: str = "iris_mlp",
                    settings: dict | None = None) -> float:
    """Seconds `components.preprocess.run` takes on `examples` under `recipe` (and `settings`), into `output`."""
    import mlflow

    from components import preprocess
    from pipeline.config import load_config

    config = load_config(recipe, {
        **(settings or {}),
        "preprocess.direct_num_workers": workers,
        "preprocess.direct_running_mode": mode,
    })
    mlflow.set_tracking_uri(f"sqlite:///{output.parent / 'mlflow.db'}")
    output.mkdir()
    with mlflow.start_run():
        start = time.perf_counter()
        preprocess.run({"ingest": examples}, output, config)
        return time.perf_counter() - start


class DaskCluster:
    """`dask scheduler` and `workers` single-threaded `dask worker` processes on 127.0.0.1, for the benchmark's life."""

    def __init__(self, workers: int, directory: Path):
        from components.tuning_cluster import free_port

        self.address = f"tcp://127.0.0.1:{free_port()}"
        dask = Path(sys.executable).with_name("dask")
        port = self.address.rsplit(":", 1)[1]
        self.commands = [[str(dask), "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"]] + [
            [str(dask), "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--local-directory", str(directory / f"worker-{i}")] for i in range(workers)]
        self.directory, self.processes, self.startup_seconds = directory, [], 0.0

    def __enter__(self) -> DaskCluster:
        from distributed import Client

        start = time.perf_counter()
        try:
            for i, command in enumerate(self.commands):
                self.processes.append(subprocess.Popen(
                    command, stdout=open(self.directory / f"{i}.log", "w"), stderr=subprocess.STDOUT,
                    start_new_session=True))
            with Client(self.address, timeout=60) as client:
                client.wait_for_workers(len(self.commands) - 1, timeout=120)
        except BaseException:
            self.__exit__()
            raise
        self.startup_seconds = time.perf_counter() - start
        return self

    def worker_peak_mib(self) -> float:
        return max(high_water_mib(p.pid) for p in self.processes[1:])

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def measure(kind: str, examples: Path, output: Path, workers: int, mode: str, dask: str | None) -> None:
    """One measurement in this process; prints a JSON line."""
    with ChildrenPeak() as children:
        if kind == "pandas":
            start = time.perf_counter()
            pandas_preprocess(examples, output)
            seconds = time.perf_counter() - start
        else:
            settings = {"data.label": LABEL}
            if dask:
                settings |= {"preprocess.runner": "DaskRunner",
                             "preprocess.beam_args": [f"--dask_client_address={dask}"]}
            seconds = beam_preprocess(examples, output, workers, mode, settings=settings)
    print(json.dumps({"seconds": seconds, "peak_rss_mib": high_water_mib(), "worker_peak_rss_mib": children.mib}))


def run_measurement(kind: str, examples: Path, output: Path, workers: int = 1, mode: str = "in_memory",
                    dask: str | None = None) -> dict:
    command = [sys.executable, "-m", "bench.preprocess_throughput", "--measure", kind,
               "--examples", str(examples), "--output", str(output), "--workers", str(workers), "--mode", mode,
               *(["--dask", dask] if dask else [])]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_output(directory: Path) -> dict[str, pd.DataFrame]:
    return {split: pd.read_parquet(sorted((directory / "transformed" / split).glob("*.parquet"))
                                   if (directory / "transformed").exists()
                                   else directory / split / "part.parquet")
            for split in SPLITS}


def check_equal(reference: Path, candidate: Path) -> None:
    """Beam's transformed splits hold the same rows as pandas's (in any order), to float32 precision."""
    expected, actual = read_output(reference), read_output(candidate)
    for split in SPLITS:
        order = [LABEL, *CATEGORICAL, *NUMERIC]
        a = expected[split][order].sort_values(order, ignore_index=True)
        b = actual[split][order].sort_values(order, ignore_index=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False, atol=1e-5, rtol=1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dask-workers", type=int, default=2, help="worker processes of the Dask cluster (0: none)")
    parser.add_argument("--measure", choices=["pandas", "beam"], help=argparse.SUPPRESS)
    parser.add_argument("--dask", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="in_memory", help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.examples, args.output, args.workers[0], args.mode, args.dask)
        return

    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as work, contextlib.ExitStack() as stack:
        work = Path(work)
        cluster = None
        if args.dask_workers:
            (work / "dask").mkdir()
            cluster = stack.enter_context(DaskCluster(args.dask_workers, work / "dask"))
            examples = generate(1_000, work / "first-job")
            output = work / "first-job-output" / "preprocess"
            output.parent.mkdir()
            first = run_measurement("beam", examples, output, dask=cluster.address)
            print(f"Dask cluster, {args.dask_workers} workers: start-up {cluster.startup_seconds:.2f} s "
                  f"(until every worker registered); first job {first['seconds']:.2f} s (1,000 rows)\n")
        print("| rows | preprocessing | seconds | rows/s | × pandas | peak RSS MiB (largest worker) |")
        print("| ---: | --- | ---: | ---: | ---: | ---: |")
        for rows in args.rows:
            size = work / f"rows-{rows}"
            examples = generate(rows, size / "examples")
            reference = run_measurement("pandas", examples, size / "pandas")
            results = [("pandas, 1 process", reference)]
            for workers in args.workers:
                modes = {"multi_processing": f"beam, {workers} worker processes",
                         "multi_threading": f"beam, {workers} worker threads"} if workers > 1 else {
                    "in_memory": f"beam, {workers} worker"}
                for mode, name in modes.items():
                    output = size / f"beam-{workers}-{mode}" / "preprocess"
                    output.parent.mkdir()
                    results.append((name, run_measurement("beam", examples, output, workers, mode)))
                    check_equal(size / "pandas", output)
            if cluster:
                output = size / "beam-dask" / "preprocess"
                output.parent.mkdir()
                result = run_measurement("beam", examples, output, dask=cluster.address)
                check_equal(size / "pandas", output)
                results.append((f"beam on dask, {args.dask_workers} worker processes",
                                {**result, "worker_peak_rss_mib": cluster.worker_peak_mib()}))
            for name, result in results:
                worker = f" ({result['worker_peak_rss_mib']:.0f})" if result["worker_peak_rss_mib"] else ""
                print(f"| {rows:,} | {name} | {result['seconds']:.2f} | {rows / result['seconds']:,.0f} | "
                      f"{reference['seconds'] / result['seconds']:.2f} | {result['peak_rss_mib']:.0f}{worker} |",
                      flush=True)
            shutil.rmtree(size)


if __name__ == "__main__":
    main()
