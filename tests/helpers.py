"""Running components on real data without the runner, for component tests."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

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


def mlflow_server_command(root: Path, port: int, *extra: str, backend_store_uri: str | None = None) -> list[str]:
    """An MLflow tracking server on 127.0.0.1 that proxies artifacts to `root/artifacts`.

    Its backend store is `backend_store_uri`, or a new SQLite store in `root`.
    """
    return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", backend_store_uri or new_sqlite_store(root),
            "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"), "--workers", "1", *extra]


@contextlib.contextmanager
def mlflow_server(root: Path, *extra: str, backend_store_uri: str | None = None, env=None) -> Iterator[str]:
    """A tracking server for the block (see `mlflow_server_command`); yields its URL, its log in `root/server.log`."""
    port = free_port()
    process = start_mlflow_server(mlflow_server_command(root, port, *extra, backend_store_uri=backend_store_uri),
                                  root / "server.log", env=env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow_server(process)


def postgres_bin_dir() -> Path:
    """Where PostgreSQL's server programs are: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not installed:
        raise RuntimeError("PostgreSQL's server programs (initdb, postgres) are not installed: "
                           "`make postgresql` installs Debian's postgresql package")
    return installed[-1].parent


@contextlib.contextmanager
def postgres_server(database: str = "mlflow", timeout: float = 60) -> Iterator[str]:
    """A new PostgreSQL cluster on 127.0.0.1 at a free port, with an empty `database`; yields its URI.

    PostgreSQL refuses to run as root, so under root the cluster belongs to
    the `postgres` user, in a directory of its own under the system's
    temporary directory (pytest's are private to root). Durability is
    switched off: the cluster lives as long as the block.
    """
    import psycopg2

    as_user = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
    directory = Path(tempfile.mkdtemp(prefix="postgres-"))
    if as_user:
        shutil.chown(directory, "postgres", "postgres")
    data, log, port = directory / "data", directory / "postgres.log", free_port()
    binaries = postgres_bin_dir()
    initdb = subprocess.run([binaries / "initdb", "--pgdata", data, "--username", "postgres", "--auth", "trust",
                             "--encoding", "UTF8", "--no-sync"], capture_output=True, text=True, **as_user)
    if initdb.returncode:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {initdb.stderr[-2000:]}")
    process = subprocess.Popen(
        [binaries / "postgres", "-D", data, "-h", "127.0.0.1", "-p", str(port), "-k", directory,
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, **as_user)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError(f"postgres did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        connection.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"  # SQLAlchemy 2.1 defaults to psycopg 3
    finally:
        process.send_signal(signal.SIGINT)  # fast shutdown: ends the sessions still open
        process.wait(60)
        shutil.rmtree(directory, ignore_errors=True)


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
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    process.wait(30)
