"""MLflow set-up: the embedded SQLite store by default, a server when the environment says so."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Iterator

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


# The MLflow UI opens an experiment with this tag in its model-training view, not the GenAI one.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
DEFAULT_EXPERIMENT_ID = "0"


def configure(experiment: str) -> tuple[str, str | None]:
    """Points MLflow at `MLFLOW_TRACKING_URI` or `sqlite:///mlflow.db` and selects the experiment.

    Under `mlflow run` (which exports `MLFLOW_RUN_ID`) with `--experiment-name`
    or `--experiment-id`, the pipeline attaches to that run and its experiment.
    A plain `mlflow run .` puts its run in the `Default` experiment, with every
    entry-point parameter logged, the empty ones as `''`: the pipeline then
    starts its own run in the recipe's experiment (or `MLFLOW_EXPERIMENT_NAME`)
    and returns the project run's id, for the runner to link the two.
    Otherwise the experiment is `MLFLOW_EXPERIMENT_NAME` or the recipe's name.
    Returns the tracking URI and that project run id (None when not detached).
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
    client = mlflow.MlflowClient()
    project_run = os.environ.get("MLFLOW_RUN_ID")
    attached = client.get_run(project_run).info.experiment_id if project_run else None
    if attached is not None and attached != DEFAULT_EXPERIMENT_ID:
        _tag_experiment_kind(client, attached)
        return uri, None
    if project_run:  # the pipeline's runs go to the recipe's experiment, not to the project run
        os.environ.pop("MLFLOW_RUN_ID")
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    chosen = mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment)
    if chosen.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        _tag_experiment_kind(client, chosen.experiment_id)
    return uri, project_run


def _tag_experiment_kind(client: mlflow.MlflowClient, experiment_id: str) -> None:
    """Sets `EXPERIMENT_KIND` on the experiment, where a pipeline started at the same moment may set it too.

    On a SQL store two first settings of one tag race: the second insert breaks
    the tag's unique key. It lost to the same value, which is all it wanted.
    """
    try:
        client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    except mlflow.exceptions.MlflowException:
        if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            raise


def link_project_run(project_run: str, run) -> None:
    """Says on the `mlflow run` project run where the pipeline logged, and on the pipeline's run where it came from."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment(run.info.experiment_id).name
    client.set_tag(project_run, "pipeline.run_id", run.info.run_id)
    client.set_tag(project_run, "mlflow.note.content",
                   f"The pipeline logged into experiment `{experiment}`: "
                   f"[run {run.info.run_id}](#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}).")
    mlflow.set_tag("pipeline.project_run_id", project_run)


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


def one_line(error: BaseException) -> str:
    """The error's message on one line (what the CLI prints), or its type when it has none."""
    return " ".join(str(error).split())[:5000] or type(error).__name__


def record_failure(run_id: str, error: BaseException) -> None:
    """Tags the run `pipeline.error` with the one-line message and logs the traceback as `error.txt`.

    Both are written at once (not queued): the run ends FAILED right after.
    """
    import traceback

    client = mlflow.MlflowClient()
    client.set_tag(run_id, "pipeline.error", one_line(error), synchronous=True)
    client.log_text(run_id, "".join(traceback.format_exception(error)), "error.txt")


def ui_command(uri: str) -> str:
    if uri.startswith("sqlite:///"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} in a browser"
