"""What a pipeline process prints: its own progress and real warnings, not the libraries' start-up notices.

`configure(verbose)` is called once, first thing, by each entry point (the
CLI, a tuning worker). Quiet, the default:

- Python logging shows WARNING and above, except this project's own loggers
  (`pipeline`, `components`, `tasks`, `data`, `keras_models`), which keep INFO
  ("train: running"). That silences Beam's INFO notices (the BigQuery storage
  client, `WriteImpl min_shards`, the state cache) and MLflow's
  (system-metrics monitoring, database set-up, "Creating a new experiment").
- Beam's one WARNING that is not one, "apitools not found" (logged on the root
  logger when its optional GCP clients are missing), is dropped by name.
- MLflow's artifact download bars are off (`MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`).
- TensorFlow's native start-up lines (absl's "All log messages before
  absl::InitializeLog()" and INFO lines such as "oneDNN custom operations are
  on"), which `TF_CPP_MIN_LOG_LEVEL` does not reach, are taken out of the
  process's stderr while `tensorflow` is first imported; anything else
  written then is passed on.

The settings are environment variables too, so subprocesses (tuning workers,
`mlflow run`'s command) inherit them. `verbose=True` leaves every library at
its own settings. Keras's progress (a bar on a terminal, a line per epoch
otherwise) is chosen where `fit` is called (`components/callbacks.py`).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

VERBOSE_ENV = "KERAS_PIPELINE_VERBOSE"
PROJECT_LOGGERS = ("pipeline", "components", "tasks", "data", "keras_models")
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"
# Environment for a quiet process; each is only a default, so a variable the user set wins.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# Root-logger records that are notices, not warnings: (logger name, start of the message).
DROPPED_RECORDS = (("root", "apitools not found"),)
# Native stderr lines of TensorFlow's import: absl's notice about logging before its set-up, and absl INFO
# lines ("I0000 00:00:… port.cc:153] oneDNN custom operations are on…").
NATIVE_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} \S+ +\d+ [\w.]+:\d+\] ")


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(record.name == name and message.startswith(start) for name, start in DROPPED_RECORDS)


def configure(verbose: bool = False) -> None:
    """Sets up logging and the libraries' console output for this process (see the module docstring)."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")
        return
    os.environ.pop(VERBOSE_ENV, None)
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropNotices())
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    # MLflow configures its own logger on import from MLFLOW_LOGGING_LEVEL; set here for an earlier import.
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport("tensorflow"))


def configure_from_environment() -> None:
    """`configure` for a subprocess, as verbose as the process that started it."""
    configure(verbose=os.environ.get(VERBOSE_ENV) == "1")


@contextlib.contextmanager
def native_stderr_filtered(noise: re.Pattern = NATIVE_NOISE) -> Iterator[None]:
    """Collects what is written to file descriptor 2 in the block, and writes back the lines `noise` does not match.

    Native libraries write to the descriptor directly, past `sys.stderr`.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not noise.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Runs the first import of `module` (and what it imports) under `native_stderr_filtered`."""

    def __init__(self, module: str):
        self.module = module

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with native_stderr_filtered():
            self.loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self.loader, name)
