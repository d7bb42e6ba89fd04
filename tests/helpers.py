"""Running components on real data without the runner, for component tests."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from components.tuning_cluster import free_port  # noqa: F401  (re-exported for the server tests)
from pipeline.config import PipelineConfig, load_config


def run_component(name: str, config: PipelineConfig, inputs: dict[str, Path], output: Path) -> dict:
    """Runs one component into `output` inside a throwaway MLflow run."""
    import importlib

    import mlflow

    output.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"components.{name}")
    with mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None):
        return module.run(inputs, output, config)


def run_train(config: PipelineConfig, inputs: dict[str, Path], output: Path) -> dict:
    """Runs the train component and records its summary in the manifest, as the runner does for evaluate."""
    import json

    summary = run_component("train", config, inputs, output)
    (output / "manifest.json").write_text(json.dumps({"summary": summary}))
    return summary


def config_for(recipe: str = "iris_mlp", **overrides) -> PipelineConfig:
    return load_config(recipe, overrides)


@functools.cache
def _empty_store() -> Path:
    """An empty SQLite MLflow store at the schema's head, built once per test process."""
    import mlflow

    directory = Path(tempfile.mkdtemp(prefix="mlflow-store-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    mlflow.MlflowClient(f"sqlite:///{directory / 'mlflow.db'}").search_experiments(max_results=1)
    return directory / "mlflow.db"


def new_sqlite_store(directory: Path) -> str:
    """A new, empty SQLite MLflow store `directory/mlflow.db`; returns its URI.

    Creating a store runs every one of MLflow's schema migrations (1.5–2 s of
    a core); the tests create dozens, so each is a copy of one built once.
    """
    path = Path(directory) / "mlflow.db"
    shutil.copyfile(_empty_store(), path)
    return f"sqlite:///{path}"


def use_mlflow_store(directory: Path) -> str:
    """Points MLflow at a new SQLite store in `directory`, with an experiment selected."""
    import mlflow

    uri = new_sqlite_store(directory)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tests")
    return uri


def mlflow_server_command(root: Path, port: int, *extra: str) -> list[str]:
    """An MLflow tracking server on 127.0.0.1 with a new SQLite store and its artifacts under `root`."""
    return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", new_sqlite_store(root),
            "--artifacts-destination", str(root / "artifacts"), "--workers", "1", *extra]


def start_mlflow_server(command: list[str], log: Path, timeout: float = 300, env=None) -> subprocess.Popen:
    """Starts the server in its own process group and waits until `/health` answers."""
    port = command[command.index("--port") + 1]
    process = subprocess.Popen(command, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True,
                               env=env)
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return process
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                stop_mlflow_server(process)
                raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(1)


def stop_mlflow_server(process: subprocess.Popen) -> None:
    """Stops the server and its workers (its whole process group)."""
    import os
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    process.wait(30)
