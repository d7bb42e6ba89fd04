"""Runs the pipeline CLI with one injected fault, as a crash, an OOM kill or a network outage would.

    python tests/fault_driver.py POINT CLI-ARGS...

POINT is where the process SIGKILLs itself: `ingest`, `preprocess` (after
the component's work, before its artifact is published), `tune` (in the
second epoch of trial 1) or `train` (after epoch 3, whose `BackupAndRestore`
checkpoint is written). `outage` instead stops the MLflow server described
by `$FAULT_SERVER` (JSON: pid, argv, log, pidfile) after training epoch 3
and starts it again 2 seconds later; the new server's pid goes to `pidfile`.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def die() -> None:
    """SIGKILL, once what was logged has reached the store.

    MLflow's asynchronous logging holds metrics for up to
    `MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS` (1 s): a kill inside that window
    loses them, whatever the pipeline does. The faults here come after it, so
    that a test can ask for every epoch's metrics exactly once.
    """
    import mlflow

    mlflow.flush_async_logging()
    os.kill(os.getpid(), signal.SIGKILL)


def outage(server: dict) -> None:
    """Stops the server's process group now and starts the same server again in 2 seconds."""
    os.killpg(server["pid"], signal.SIGTERM)

    def restart() -> None:
        time.sleep(2)
        process = subprocess.Popen(server["argv"], stdout=open(server["log"], "a"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        Path(server["pidfile"]).write_text(str(process.pid))

    threading.Thread(target=restart, daemon=True).start()


def main(point: str, argv: list[str]) -> int:
    import importlib

    import mlflow

    if point in ("ingest", "preprocess"):
        module = importlib.import_module(f"components.{point}")
        work = module.run

        def run_then_die(*args, **kwargs):
            work(*args, **kwargs)
            die()

        module.run = run_then_die
    else:
        from components.callbacks import EpochMlflowCallback

        log_epoch = EpochMlflowCallback.on_epoch_end
        injected = []

        def log_then_fault(self, epoch, logs=None):
            log_epoch(self, epoch, logs)
            tags = mlflow.get_run(mlflow.active_run().info.run_id).data.tags if point != "outage" else {}
            if point == "tune" and tags.get("trial_id") == "1" and epoch >= 1:
                die()
            if point == "train" and tags.get("component") == "train" and epoch >= 2:
                die()
            if point == "outage" and epoch == 2 and not injected:
                injected.append(epoch)
                outage(json.loads(os.environ["FAULT_SERVER"]))

        EpochMlflowCallback.on_epoch_end = log_then_fault

    from pipeline.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
