"""Running components on real data without the runner, for component tests."""

from __future__ import annotations

import subprocess
import sys
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


def use_mlflow_store(directory: Path) -> str:
    """Points MLflow at a fresh SQLite store in `directory`, with an experiment selected."""
    import mlflow

    uri = f"sqlite:///{Path(directory) / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tests")
    return uri


def mlflow_server_command(root: Path, port: int, *extra: str) -> list[str]:
    """An MLflow tracking server on 127.0.0.1 with its SQLite store and artifacts under `root`."""
    return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
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
