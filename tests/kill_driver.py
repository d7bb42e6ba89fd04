"""Runs the pipeline CLI and SIGKILLs it at a chosen point, as a crash or an OOM kill would.

    python tests/kill_driver.py {ingest|preprocess|tune|train} CLI-ARGS...

ingest, preprocess: after the component's work, before its artifact is
published. tune: in the second epoch of trial 1. train: after epoch 3,
whose `BackupAndRestore` checkpoint is written.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


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
        log_epoch = mlflow.keras.MlflowCallback.on_epoch_end

        def log_then_die(self, epoch, logs=None):
            log_epoch(self, epoch, logs)
            tags = mlflow.get_run(mlflow.active_run().info.run_id).data.tags
            in_trial_1 = tags.get("trial_id") == "1" and epoch >= 1
            if (point == "tune" and in_trial_1) or (point == "train" and tags.get("component") == "train" and epoch >= 2):
                die()

        mlflow.keras.MlflowCallback.on_epoch_end = log_then_die

    from pipeline.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
