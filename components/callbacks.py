"""Keras callbacks the train and tune components share."""

from __future__ import annotations

import math

import keras

from components.base import NonFiniteLossError


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops fitting at the first batch whose loss is NaN or infinite, with an error naming the step.

    Keras's `TerminateOnNaN` only sets `stop_training`, so the run would go
    on to export the diverged weights; raising aborts the component instead,
    and its artifact is never published. `error` lets the tuner raise Keras
    Tuner's `FailedTrialError`, which fails that trial and not the search.

    Args:
        error: the exception class raised, built from the message.
    """

    def __init__(self, error: type[Exception] = NonFiniteLossError):
        super().__init__()
        self.error = error
        self.epoch = 0
        self.step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise self.error(
                f"The training loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1} "
                f"(step {self.step}). Lower train.learning_rate, or look for extreme values in the inputs."
            )


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
