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
