"""MLflow set-up: the embedded SQLite store by default, a server when the environment says so."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Any, Iterator

import mlflow
from mlflow.exceptions import MlflowException

DEFAULT_STORE = "mlflow.db"
# The reachability check's HTTP settings: one retry, 4 s to answer, so a server that is down or silent
# fails the run within about 10 s. Runs keep MLflow's own settings (7 retries with backoff, about 4
# minutes), which carry the asynchronous metric logging through an outage mid-run.
CHECK_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "4",
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
}


class TrackingServerUnreachable(MlflowException):
    """The tracking server named by `MLFLOW_TRACKING_URI` does not answer."""


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
    elif uri.startswith(("http://", "https://")):
        check_server(uri)
    # Per-epoch metrics are queued and flushed by a background thread, off the training loop.
    # With a buffering window the thread waits on an event that ending a run sets; without
    # one it polls its queue with a 1 s timeout, which every run's end (each trial's too) waits out.
    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
    mlflow.config.enable_async_logging(True)
    if not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment)
    return uri


def check_server(uri: str) -> None:
    """Raises `TrackingServerUnreachable`, naming `uri`, when the server does not answer within about 10 s.

    Without it, a wrong URI waits out MLflow's retries (about 4 minutes) at
    the first call. The request is a real API call with the run's credentials,
    so a refusal (401, 403) is MLflow's own error, raised at once.
    """
    import requests

    retries_log = logging.getLogger("urllib3.connectionpool")  # one warning per retry: the error says it all
    level = retries_log.level
    retries_log.setLevel(logging.ERROR)
    try:
        with environment(CHECK_SETTINGS):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as e:
        cause = e.__cause__ or e.__context__
        no_answer = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)
        if not isinstance(cause, no_answer):  # an answer, such as a refusal: MLflow's error says which
            raise
        reason = _reason(cause)
        raise TrackingServerUnreachable(
            f"MLflow tracking server {uri} does not answer ({reason}): start it, or set MLFLOW_TRACKING_URI "
            f"to a server that runs (unset, runs go to the local store {DEFAULT_STORE})"
        ) from None
    finally:
        retries_log.setLevel(level)


@contextlib.contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    """Sets environment variables for the duration of the block and restores what was there before."""
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reason(error: BaseException) -> str:
    """Why a request got no answer: the operating system's words ("Connection refused"), or a timeout."""
    import urllib3

    chain, pending = [], [error]
    while pending:
        current = pending.pop(0)
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        pending.extend(e for e in (getattr(current, "reason", None), current.__cause__, current.__context__,
                                   *current.args) if isinstance(e, BaseException))
    for current in chain:
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
    if any(isinstance(current, (urllib3.exceptions.TimeoutError, TimeoutError)) for current in chain):
        return f"no answer within {CHECK_SETTINGS['MLFLOW_HTTP_REQUEST_TIMEOUT']} s"
    return type(error).__name__


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
