"""Keras layers that repeat a task's Beam preprocessing inside its serving model.

They live apart from the task modules because Beam workers import those
to run the transforms, and a worker should not pay for importing Keras.
Loading a serving model needs this module imported (it registers them).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tasks")
class FillMissing(keras.layers.Layer):
    """Replaces NaN with `value` (the train mean), as the Beam transform does.

    Args:
        value: the fill value.
    """

    def __init__(self, value: float, **kwargs):
        super().__init__(**kwargs)
        self.value = float(value)

    def call(self, inputs):
        return ops.where(ops.isnan(inputs), ops.cast(self.value, inputs.dtype), inputs)

    def get_config(self):
        return {**super().get_config(), "value": self.value}


@keras.saving.register_keras_serializable(package="tasks")
class RoundPixels(keras.layers.Layer):
    """Rounds to whole numbers in 0..255, as Beam stores resized uint8 images."""

    def call(self, inputs):
        return ops.clip(ops.round(inputs), 0, 255)


@keras.saving.register_keras_serializable(package="tasks")
class SeriesZNormalization(keras.layers.Layer):
    """`[series, length]` → each row's channels z-normalised over its own first `length` steps.

    Missing values (NaN) stay NaN and are left out of the statistics, as in
    `znormalize`; the statistics are computed in float64, as Beam computes them.

    Args:
        epsilon: a standard deviation below this leaves the channel centred but unscaled.
    """

    def __init__(self, epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        series, length = inputs
        x = ops.cast(series, "float64")
        steps = ops.arange(ops.shape(x)[1])
        observed = ops.logical_and(
            steps[None, :, None] < ops.cast(length, "int32")[:, None, None], ops.logical_not(ops.isnan(x))
        )
        count = ops.maximum(ops.sum(ops.cast(observed, "float64"), axis=1, keepdims=True), 1.0)
        mean = ops.sum(ops.where(observed, x, 0.0), axis=1, keepdims=True) / count
        variance = ops.sum(ops.where(observed, ops.square(x - mean), 0.0), axis=1, keepdims=True) / count
        std = ops.sqrt(variance)
        return ops.cast((x - mean) / ops.where(std > self.epsilon, std, 1.0), self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="tasks")
class PadSeries(keras.layers.Layer):
    """`[series, length]` → `(batch, steps, channels)` with every row padded or truncated to `steps`.

    Row `i` holds its first `length[i]` steps (the rest of the batch's
    padding is ignored). Padding and missing values become 0; with
    `mask_channel`, a 0/1 observed-mask is appended per channel.

    Args:
        steps: the length every series gets.
        padding: `"pre"` pads and truncates at the start, `"post"` at the end.
        mask_channel: whether to append the observed-mask channels.
    """

    def __init__(self, steps: int, padding: str = "pre", mask_channel: bool = False, **kwargs):
        super().__init__(**kwargs)
        if padding not in ("pre", "post"):
            raise ValueError(f"padding must be 'pre' or 'post', got {padding!r}.")
        self.steps, self.padding, self.mask_channel = int(steps), padding, bool(mask_channel)

    def call(self, inputs):
        series, length = inputs
        length = ops.cast(length, "int32")[:, None]
        source = ops.arange(self.steps, dtype="int32")[None, :]
        if self.padding == "pre":
            source = source + length - self.steps
        in_range = ops.logical_and(source >= 0, source < length)
        index = ops.clip(source, 0, ops.maximum(ops.shape(series)[1] - 1, 0))
        values = ops.take_along_axis(series, index[:, :, None], axis=1)
        observed = ops.logical_and(in_range[:, :, None], ops.logical_not(ops.isnan(values)))
        values = ops.where(observed, values, ops.zeros_like(values))
        if self.mask_channel:
            values = ops.concatenate([values, ops.cast(observed, values.dtype)], axis=-1)
        return values

    def compute_output_shape(self, input_shapes):
        channels = input_shapes[0][-1]
        return (input_shapes[0][0], self.steps, 2 * channels if self.mask_channel else channels)

    def get_config(self):
        return {**super().get_config(), "steps": self.steps, "padding": self.padding,
                "mask_channel": self.mask_channel}


@keras.saving.register_keras_serializable(package="tasks")
class SeasonalDifference(keras.layers.Layer):
    """`(batch, steps, channels)` → `x[:, lag:] - x[:, :-lag]`, the seasonal difference Beam applied.

    Args:
        lag: the season length.
    """

    def __init__(self, lag: int, **kwargs):
        super().__init__(**kwargs)
        self.lag = int(lag)

    def call(self, inputs):
        return inputs[:, self.lag :] - inputs[:, : -self.lag]

    def compute_output_shape(self, input_shape):
        steps = None if input_shape[1] is None else input_shape[1] - self.lag
        return (input_shape[0], steps, *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "lag": self.lag}


@keras.saving.register_keras_serializable(package="tasks")
class SeasonalUndifference(keras.layers.Layer):
    """Forecast differences and the raw history → forecasts: `ŷ[t] = d̂[t] + y[t - lag]`.

    For steps past the first season `y[t - lag]` is itself a forecast, so
    each block of `lag` steps adds the block before it.

    Args:
        lag: the season length.
    """

    def __init__(self, lag: int, **kwargs):
        super().__init__(**kwargs)
        self.lag = int(lag)

    def call(self, inputs):
        differences, history = inputs
        horizon = differences.shape[-1]
        base = history[:, -self.lag :]
        blocks = []
        for start in range(0, horizon, self.lag):
            width = min(self.lag, horizon - start)
            block = differences[:, start : start + width] + base[:, :width]
            blocks.append(block)
            base = block
        return ops.concatenate(blocks, axis=-1) if len(blocks) > 1 else blocks[0]

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "lag": self.lag}


@keras.saving.register_keras_serializable(package="tasks")
class Destandardize(keras.layers.Layer):
    """`y * sqrt(variance) + mean`: a standardised prediction back in the target's original units.

    The network learns the target z-scored on the train split; this layer
    ends the serving model so it answers in the units the data came in.

    Args:
        mean: the target's train mean.
        variance: the target's train variance (0 leaves the scale at 1).

    >>> layer = Destandardize(mean=150.0, variance=400.0)
    >>> float(layer(ops.ones((1, 1)))[0, 0])
    170.0
    """

    def __init__(self, mean: float, variance: float, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.variance = float(mean), float(variance)

    def call(self, inputs):
        scale = self.variance**0.5 or 1.0
        return inputs * ops.cast(scale, inputs.dtype) + ops.cast(self.mean, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "variance": self.variance}


def _level_and_scale(history, season: int):
    """`tasks.forecasting.level_and_scale` in Keras ops: each row's last value and mean absolute seasonal difference."""
    lag = season if history.shape[-1] > season else 1
    scale = ops.mean(ops.abs(history[:, lag:] - history[:, :-lag]), axis=-1, keepdims=True)
    floor = 1e-6 * ops.maximum(ops.mean(ops.abs(history), axis=-1, keepdims=True), 1.0)
    return history[:, -1:], ops.maximum(scale, floor)


@keras.saving.register_keras_serializable(package="tasks")
class WindowScale(keras.layers.Layer):
    """Raw history `[rows, length]` → its last `window` values as `(y - level) / scale`, `[rows, window, 1]`.

    The level is the row's last value and the scale its mean absolute
    seasonal difference, as the Beam transform computes them.

    Args:
        window: steps the network reads.
        season: the season length of the scale's differences.
    """

    def __init__(self, window: int, season: int, **kwargs):
        super().__init__(**kwargs)
        self.window, self.season = int(window), int(season)

    def call(self, history):
        level, scale = _level_and_scale(history, self.season)
        return ops.expand_dims((history[:, -self.window :] - level) / scale, -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.window, 1)

    def get_config(self):
        return {**super().get_config(), "window": self.window, "season": self.season}


@keras.saving.register_keras_serializable(package="tasks")
class LastSteps(keras.layers.Layer):
    """Raw history `[rows, length]` → its last `steps` values: the network's window out of a longer history
    that the statistical forecasts combined with it read whole."""

    def __init__(self, steps: int, **kwargs):
        super().__init__(**kwargs)
        self.steps = int(steps)

    def call(self, history):
        return history[:, -self.steps :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.steps)

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


@keras.saving.register_keras_serializable(package="tasks")
class WindowUnscale(keras.layers.Layer):
    """Network outputs and the raw history → forecasts: `base + output · scale`.

    The base is the last season of the history repeated (`seasonal`) or its
    last value, so a network that outputs 0 forecasts seasonal naive or naive.

    Args:
        season: the season length.
        seasonal: whether the base is the last season (else the last value).
    """

    def __init__(self, season: int, seasonal: bool, **kwargs):
        super().__init__(**kwargs)
        self.season, self.seasonal = int(season), bool(seasonal)

    def call(self, inputs):
        outputs, history = inputs
        horizon = outputs.shape[-1]
        level, scale = _level_and_scale(history, self.season)
        if self.seasonal:
            last = history[:, -self.season :]
            base = ops.concatenate([last] * -(-horizon // self.season), axis=-1)[:, :horizon]
        else:
            base = ops.repeat(level, horizon, axis=-1)
        return base + outputs * scale

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "season": self.season, "seasonal": self.seasonal}
