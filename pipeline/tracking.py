"""MLflow set-up: the embedded SQLite store by default, a server when the environment says so."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import Any

import mlflow

DEFAULT_STORE = "mlflow.db"


def configure(experiment: str) -> str:
    """Points MLflow at `MLFLOW_TRACKING_URI` or `sqlite:///mlflow.db` and selects the experiment.

    Under `mlflow run` (which exports `MLFLOW_RUN_ID`) the pipeline attaches to
    that run and its experiment; otherwise the experiment is
    `MLFLOW_EXPERIMENT_NAME` or the recipe's name.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_STORE).resolve()}"
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        _initialise_sqlite_store(uri)
    # Per-epoch metrics are queued and flushed by a background thread, off the training loop.
    # With a buffering window the thread waits on an event that ending a run sets; without
    # one it polls its queue with a 1 s timeout, which every run's end (each trial's too) waits out.
    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
    mlflow.config.enable_async_logging(True)
    if not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment)
    return uri


def _initialise_sqlite_store(uri: str) -> None:
    """Creates or migrates a SQLite store under a file lock.

    Two pipelines started at once on a fresh store would otherwise both run
    MLflow's schema migrations, and one fails on a column the other added.
    """
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        mlflow.MlflowClient(uri).search_experiments(max_results=1)


def owner_tags() -> dict[str, str]:
    """Which process runs the pipeline, so a later run can tell when it was killed."""
    return {"pipeline.host": socket.gethostname(), "pipeline.pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def close_abandoned_runs(experiment_id: str, current_run_id: str) -> list[str]:
    """Marks KILLED the runs of pipelines on this host whose process is gone, and their unfinished children.

    A SIGKILL leaves its MLflow runs RUNNING forever; the next pipeline run
    closes them, except the children a resumed build continues (they are
    set RUNNING again when resumed). Returns the closed run ids.
    """
    client = mlflow.MlflowClient()
    running = "attributes.status = 'RUNNING'"
    owners = client.search_runs([experiment_id], f"{running} and tags.`pipeline.host` = '{socket.gethostname()}'")
    closed, pending = [], [r.info.run_id for r in owners if r.info.run_id != current_run_id
                           and not _alive(int(r.data.tags.get("pipeline.pid", "0") or 0))]
    while pending:
        run_id = pending.pop()
        client.set_terminated(run_id, status="KILLED")
        closed.append(run_id)
        children = client.search_runs([experiment_id], f"{running} and tags.mlflow.parentRunId = '{run_id}'")
        pending.extend(c.info.run_id for c in children)
    return closed


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"epochs": 3}}` → `{"train.epochs": 3}` for `mlflow.log_params`."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def ui_command(uri: str) -> str:
    if uri.startswith("sqlite:///"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} in a browser"
