"""Keras callbacks the train and tune components share."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import keras
import mlflow

from components.base import NonFiniteLossError


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops fitting at the first batch whose loss is NaN or infinite, with an error naming the step.

    Keras's `TerminateOnNaN` only sets `stop_training`, so the run would go
    on to export the diverged weights; raising aborts the component instead,
    and its artifact is never published. `error` lets the tuner raise Keras
    Tuner's `FailedTrialError`, which fails that trial and not the search.

    It is `async_safe`: where the backend allows it (JAX), Keras runs batch
    hooks on a thread pool and keeps dispatching steps while one reads the
    loss off the device, and re-raises the error at the next batch or at the
    epoch's end, before any epoch-end checkpoint. Read synchronously, every
    step would wait for the one before it to finish.

    Args:
        error: the exception class raised, built from the message.
    """

    async_safe = True

    def __init__(self, error: type[Exception] = NonFiniteLossError):
        super().__init__()
        self.error = error
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            steps = self.params.get("steps")
            step = f" (step {self.epoch * steps + batch + 1})" if steps else ""
            raise self.error(
                f"The training loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}{step}. "
                "Lower train.learning_rate, or look for extreme values in the inputs."
            )


class EpochBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` at each epoch's end; its batch hook does nothing, so it lets Keras run hooks async."""

    async_safe = True

    def __init__(self, backup_dir: str):
        super().__init__(backup_dir, save_freq="epoch")


class EpochMlflowCallback(keras.callbacks.Callback):
    """Logs each epoch's `logs` (`loss`, `val_loss`, the compiled metrics) at `step` = the epoch, one name each.

    MLflow's own `mlflow.keras.MlflowCallback` also logs every evaluation's
    metrics again as `validation_*` at step 0, and the optimizer's config as
    15 `optimizer_*` params; neither helps a reader of the run. This one
    keeps the model summary as `model_summary.txt`. Its batch hook does
    nothing, so it lets Keras run hooks async.
    """

    async_safe = True

    def on_train_begin(self, logs=None):
        lines = []
        self.model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        mlflow.log_text("\n".join(lines), "model_summary.txt")

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            mlflow.log_metrics({name: float(value) for name, value in logs.items()}, step=epoch, synchronous=False)


class CacheSavingSkipsets(keras.callbacks.Callback):
    """Makes Keras's per-save cache of attribute skip sets work, for the per-epoch checkpoints.

    Keras 3.15's `saving_lib.get_attr_skipset` stores each set under
    `saving_attr_skipset_<type>` but looks it up under
    `saving_attr_skiplist_<type>`, so every save builds reference `Layer`,
    `Metric` and `Optimizer` objects again: about half the time of each
    `BackupAndRestore` or Keras Tuner best-epoch checkpoint of a small model.
    At the start of each fit (the tuner clears the session before each
    trial, and the cache with it) this stores the sets under the key read.
    """

    OBJECT_TYPES = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")

    def on_train_begin(self, logs=None):
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib

        for obj_type in self.OBJECT_TYPES:
            key = f"saving_attr_skiplist_{obj_type}"
            if global_state.get_global_attribute(key) is None:
                global_state.set_global_attribute(key, saving_lib.get_attr_skipset(obj_type))


def training_callbacks(backup_dir: Path, early_stopping_patience: int) -> list[keras.callbacks.Callback]:
    """The train component's callbacks, in the order they run at each epoch's end.

    The checkpoint is written before early stopping may restore the best
    weights, and MLflow logs last. None defines a batch hook that makes Keras
    wait on each step (tests/test_callbacks.py checks it on JAX).
    """
    return [
        StopOnNonFiniteLoss(),
        CacheSavingSkipsets(),
        EpochBackupAndRestore(str(backup_dir)),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=early_stopping_patience,
                                      restore_best_weights=True),
        EpochMlflowCallback(),
    ]


def progress_verbosity() -> int:
    """`fit(verbose=...)` for the console: Keras's progress bar on a terminal, one line per epoch in a pipe or log."""
    return 1 if sys.stdout.isatty() else 2
