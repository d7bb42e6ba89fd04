"""Keras Tuner's distributed mode on this host: a chief that holds the oracle, and worker processes.

Keras Tuner distributes a search by environment: every process builds the
same tuner over the same directory, `KERASTUNER_TUNER_ID` names it ("chief"
serves the oracle over gRPC at `KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`,
"tuner0", "tuner1", ... ask it for trials and report their scores). The tune
component starts them here as subprocesses (`python -m components.tune
SPEC`, which runs `process_main`) and waits for the workers; the chief then
has every trial on disk (`oracle.json`, one `trial.json` each) and is
stopped, since it only exits by itself after a polling interval.

A killed search resumes like an in-process one: the chief reloads its
oracle and hands the trials that were running to the next worker that
asks, under the same trial ids. The chief and the workers exit when the
process that started them is gone, so a killed pipeline leaves no search
running on its own.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, NoReturn

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_PID_ENV = "PIPELINE_TUNE_LAUNCHER_PID"
# Variables a child must not inherit: `mlflow run` exports MLFLOW_RUN_ID, and
# a process with it set resumes that run instead of starting a trial run;
# JAX's multi-host variables would make every worker claim the same process id.
NOT_INHERITED = ("MLFLOW_RUN_ID", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


class TuningClusterError(RuntimeError):
    """A process of the distributed search failed; the message holds the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def roles(workers: int) -> list[str]:
    return ["chief", *(f"tuner{i}" for i in range(workers))]


def run_cluster(module: str, workers: int, preprocess_dir: Path, output: Path, config, tune_run_id: str) -> None:
    """Runs the search with a chief and `workers` workers on 127.0.0.1; returns when the workers are done.

    Each process is `python -m module SPEC`; the module calls `process_main`.
    """
    import mlflow

    cluster_dir = output / "tuner" / "cluster"
    cluster_dir.mkdir(parents=True, exist_ok=True)
    spec = cluster_dir / "spec.json"
    spec.write_text(json.dumps({"preprocess": str(Path(preprocess_dir).resolve()), "output": str(output.resolve()),
                                "config": config.model_dump(mode="json"), "tune_run_id": tune_run_id,
                                "config_class": f"{type(config).__module__}:{type(config).__qualname__}"}, indent=2))
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update({
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(free_port()),
        "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
        LAUNCHER_PID_ENV: str(os.getpid()),
    })
    # Several processes share the host's accelerators: each takes memory as it needs it, not all of it.
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    processes: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for role in roles(workers):
            log = cluster_dir / f"{role}.log"
            role_env = {**env, "KERASTUNER_TUNER_ID": role}
            if role == "chief":
                role_env["CUDA_VISIBLE_DEVICES"] = ""  # it only serves the oracle
            with open(log, "a") as handle:
                processes[role] = (subprocess.Popen([sys.executable, "-m", module, str(spec)],
                                                    cwd=PROJECT_ROOT, env=role_env, stdout=handle,
                                                    stderr=subprocess.STDOUT), log)
        _wait_for_workers(processes)
    finally:
        for process, _ in processes.values():
            _stop(process)


def _wait_for_workers(processes: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    """Blocks until every worker exits; the first process to fail stops the search with its log."""
    while True:
        for role, (process, log) in processes.items():
            status = process.poll()
            if status not in (None, 0):
                tail = log.read_text(errors="replace")[-3000:]
                raise TuningClusterError(f"tune {role} process exited with status {status}; "
                                         f"the end of {log}:\n{tail}")
        if all(process.poll() == 0 for role, (process, _) in processes.items() if role != "chief"):
            return
        time.sleep(1)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _exit_with_launcher(pid: int) -> None:
    """Kills this process once its launcher is gone (this process is then reparented); checks every second."""

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def process_main(search: Callable[[Path, Path, Any, str], int]) -> NoReturn:
    """One process of the search, from its spec (`sys.argv[1]`): `search(preprocess, output, config, tune_run_id)`.

    It prints to its log what the pipeline's process would, and ends as the
    CLI's process does: with its frozen objects spared the final collection.
    """
    from components.console import configure_from_environment

    configure_from_environment()
    _exit_with_launcher(int(os.environ[LAUNCHER_PID_ENV]))
    spec = json.loads(Path(sys.argv[1]).read_text())
    module, _, name = spec["config_class"].partition(":")
    config = getattr(importlib.import_module(module), name).model_validate(spec["config"])
    status = search(Path(spec["preprocess"]), Path(spec["output"]), config, spec["tune_run_id"])
    gc.freeze()
    sys.exit(status)
