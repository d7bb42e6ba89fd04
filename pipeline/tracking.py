"""MLflow set-up: the embedded SQLite store by default, a server when the environment says so."""

from __future__ import annotations

import os
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
    # Per-epoch metrics are queued and flushed by a background thread, off the training loop.
    mlflow.config.enable_async_logging(True)
    if not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment)
    return uri


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
