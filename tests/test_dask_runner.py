"""Beam preprocessing on a dask.distributed cluster (one scheduler, two worker processes on 127.0.0.1).

The DaskRunner's output must be the DirectRunner's: the same transform spec
and the same transformed rows (in any order), for tabular, text and image
recipes; and the model trains on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest

from components.artifact_io import load_transformed, read_columns, read_json
from data.splits import split_files
from pipeline.artifacts import check_outputs
from tasks import get_task
from tests.helpers import config_for, free_port, run_component, run_train, use_mlflow_store

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "eval", "test")
# Recipes cut down to run in seconds: a text vocabulary of 2,000 tokens over 16-token texts.
RECIPES = {
    "penguins_mlp": {},
    "mr_cnn1d": {"task.max_length": 16, "task.vocabulary_size": 2000},
    "digits_lenet": {},
}


def stop(processes: list[subprocess.Popen]) -> None:
    """Stops processes started in their own sessions, and whatever they started: all at once, then by force.

    Under a loaded machine a Dask process can take more than 10 s to close after SIGTERM; the
    test cluster holds nothing worth that wait.
    """
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and two single-threaded `dask worker` processes at free ports; their address."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask")
    dask = Path(sys.executable).with_name("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    commands = [[str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]] + [
        [str(dask), "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
         "--name", f"worker-{i}", "--local-directory", str(logs / f"worker-{i}")] for i in range(2)]
    processes = []
    try:
        for i, command in enumerate(commands):
            processes.append(subprocess.Popen(command, cwd=ROOT, stdout=open(logs / f"{i}.log", "w"),
                                              stderr=subprocess.STDOUT, start_new_session=True))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        stop(processes)


def dask_settings(address: str) -> dict:
    return {"preprocess.runner": "DaskRunner", "preprocess.beam_args": [f"--dask_client_address={address}"]}


def preprocess_summary(output: Path, examples: Path) -> dict:
    """What the preprocess component declares for the store's check."""
    rows = {f"transformed/{s}": sum(pq.ParquetFile(f).metadata.num_rows for f in split_files(examples / s))
            for s in SPLITS}
    return {"output_files": ["transform/transform.json"], "output_rows": rows}


def sorted_rows(split_dir: Path) -> np.ndarray:
    """A transformed split as one float64 matrix (list columns spread out), rows in a canonical order."""
    matrix = np.column_stack([c.reshape(len(c), -1).astype("float64") for c in read_columns(split_dir).values()])
    return matrix[np.lexsort(np.round(matrix, 4).T[::-1])]


def rounded(transform: dict) -> dict:
    """The transform spec with its floats to 12 significant digits: statistics merged in another order."""
    return json.loads(json.dumps(transform), parse_float=lambda text: float(f"{float(text):.12g}"))


@pytest.fixture(scope="module")
def preprocessed(dask_cluster, tmp_path_factory):
    """Each recipe ingested once and preprocessed on both runners; the Dask run's workers by task."""
    from distributed import Client, get_task_stream

    from components import artifact_io

    root = tmp_path_factory.mktemp("dask-runs")
    use_mlflow_store(root)
    runs = {}
    for recipe, settings in RECIPES.items():
        base = root / recipe
        config = config_for(recipe, **settings)
        with pytest.MonkeyPatch.context() as patch:
            if recipe == "penguins_mlp":  # rows in row groups of about 20: a split is spread over both workers
                patch.setattr(artifact_io, "ROW_GROUP_BYTES", 1024)
            run_component("ingest", config, {}, base / "ingest")
        run_component("preprocess", config, {"ingest": base / "ingest"}, base / "direct")
        with Client(dask_cluster) as client, get_task_stream(client) as stream:
            summary = run_component("preprocess", config_for(recipe, **settings, **dask_settings(dask_cluster)),
                                    {"ingest": base / "ingest"}, base / "dask")
        runs[recipe] = {"base": base, "config": config, "summary": summary,
                        "workers": {task["worker"] for task in stream.data}}
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_dask_output_is_the_direct_runners(preprocessed, recipe):
    run = preprocessed[recipe]
    base = run["base"]
    assert check_outputs(base / "dask", run["summary"]) == []
    assert run["summary"]["output_rows"] == preprocess_summary(base / "dask", base / "ingest")["output_rows"]
    assert rounded(read_json(base / "dask" / "transform" / "transform.json")) == rounded(
        read_json(base / "direct" / "transform" / "transform.json"))
    for split in SPLITS:
        direct, dask = (sorted_rows(base / runner / "transformed" / split) for runner in ("direct", "dask"))
        assert dask.shape == direct.shape and len(dask) > 0
        np.testing.assert_allclose(dask, direct, rtol=1e-6, atol=1e-6, err_msg=f"{recipe} {split}")


@pytest.mark.slow
def test_row_groups_are_spread_over_both_workers_and_keep_their_order(preprocessed):
    run = preprocessed["penguins_mlp"]
    assert len(run["workers"]) == 2
    groups = pq.ParquetFile(run["base"] / "ingest" / "train" / "data.parquet").num_row_groups
    parts = split_files(run["base"] / "dask" / "transformed" / "train")
    assert groups >= 8 and [p.name for p in parts] == [f"part-{i:05d}-of-{groups:05d}.parquet" for i in range(groups)]
    direct = read_columns(run["base"] / "direct" / "transformed" / "train")
    dask = read_columns(run["base"] / "dask" / "transformed" / "train")
    np.testing.assert_allclose(dask["body_mass_g"], direct["body_mass_g"], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_the_model_trains_on_the_dask_output(preprocessed, tmp_path):
    run = preprocessed["penguins_mlp"]
    inputs = {"ingest": run["base"] / "ingest", "preprocess": run["base"] / "dask"}
    run_train(config_for("penguins_mlp", epochs=30), inputs, tmp_path / "train")
    model = keras.saving.load_model(tmp_path / "train" / "model.keras")
    x, y, _ = load_transformed(run["base"] / "dask", "test", get_task(run["config"].task))
    assert float((np.asarray(model.predict(x, verbose=0)).argmax(-1) == y).mean()) >= 0.9


@pytest.mark.slow
def test_a_worker_error_reaches_the_driver(dask_cluster):
    import apache_beam as beam

    from components.preprocess import pipeline_options, pipeline_runner, run_beam

    options = pipeline_options(config_for(**dask_settings(dask_cluster)).preprocess)
    p = beam.Pipeline(runner=pipeline_runner(options), options=options)
    _ = p | beam.Create(range(6)) | beam.Map(lambda value: 1 // (value - 3))  # pickled by value, not by module
    with pytest.raises(ZeroDivisionError):
        run_beam(p)


@pytest.mark.parametrize("runner, option", [("DaskRunner", "--dask_client_address=tcp://127.0.0.1:{port}"),
                                            ("PortableRunner", "--job_endpoint=localhost:{port}")])
def test_an_unreachable_runner_fails_at_once_naming_its_address(runner, option):
    from components.base import RunnerUnreachableError
    from components.preprocess import check_reachable, pipeline_options

    port = free_port()  # free: nothing listens there
    config = config_for(**{"preprocess.runner": runner, "preprocess.beam_args": [option.format(port=port)]})
    start = time.perf_counter()
    with pytest.raises(RunnerUnreachableError, match=rf"preprocess.runner {runner}: nothing answers at \S*:{port} "):
        check_reachable(pipeline_options(config.preprocess))
    assert time.perf_counter() - start < 5


def test_the_cli_names_an_unreachable_scheduler_in_one_line(tmp_path, local_mlflow, capsys):
    from pipeline.cli import main

    port = free_port()
    status = main(["preprocess", "--recipe", "iris_mlp", "--output-dir", str(tmp_path / "artifacts"),
                   "--set", "preprocess.runner=DaskRunner",
                   "--set", f'preprocess.beam_args=["--dask_client_address=tcp://127.0.0.1:{port}"]'])
    stderr = capsys.readouterr().err
    error = stderr.strip().splitlines()[-1]
    assert status == 1 and "Traceback" not in stderr
    assert error.startswith(f"error: preprocess.runner DaskRunner: nothing answers at tcp://127.0.0.1:{port} ")
    assert not list((tmp_path / "artifacts" / "preprocess").glob("*/manifest.json"))
