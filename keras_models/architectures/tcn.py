"""The temporal convolutional network (TCN) of Bai, Kolter & Koltun (2018), with weight-normalised convolutions."""

from __future__ import annotations

import keras
from keras import ops

from keras_models.architectures._series import TASKS, series_input
from keras_models.heads import require_range, task_head
from keras_models.layers import LastTimestep
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec


@keras.saving.register_keras_serializable(package="keras_models")
class WeightNormConv1D(keras.layers.Layer):
    """A 1D convolution with a weight-normalised kernel `w = g · v / ‖v‖` (Salimans & Kingma 2016).

    The norm is taken per output channel over its `(kernel_size, channels)`
    slice. `g` starts at `‖v‖`, so the initial kernel is `v`, as with
    PyTorch's `weight_norm` used by the TCN reference code. `v` and `g` stay
    float32 under mixed precision; the kernel is cast to the compute dtype
    after the normalisation.

    Args:
        filters: int, output channels.
        kernel_size: int, taps of the kernel.
        dilation_rate: int, spacing between taps.
        padding: str, `"causal"` (left zero padding, output `t` sees inputs `≤ t`),
            `"same"` or `"valid"`.
        use_bias: bool, whether to add a per-channel bias.
        kernel_initializer: initializer of the direction `v`; None means N(0, 0.01), as in the TCN.
        bias_initializer: initializer of the bias.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:
    >>> import numpy as np
    >>> conv = WeightNormConv1D(4, 3, dilation_rate=2)
    >>> tuple(conv(np.zeros((2, 10, 3), "float32")).shape)
    (2, 10, 4)
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        dilation_rate: int = 1,
        padding: str = "causal",
        use_bias: bool = True,
        kernel_initializer=None,
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if padding not in ("causal", "same", "valid"):
            raise ValueError(f"padding must be 'causal', 'same' or 'valid', got {padding!r}.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.padding = padding
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(0.0, 0.01)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.v = self.add_weight(
            name="v",
            shape=(self.kernel_size, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            autocast=False,
        )
        self.g = self.add_weight(name="g", shape=(self.filters,), initializer="ones", autocast=False)
        self.g.assign(ops.sqrt(ops.sum(ops.square(self.v), axis=(0, 1))))
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )

    def call(self, inputs):
        v = ops.cast(self.v, "float32")
        norm = ops.sqrt(ops.sum(ops.square(v), axis=(0, 1)))
        kernel = ops.cast(v * (ops.cast(self.g, "float32") / norm), self.compute_dtype)
        padding = self.padding
        if padding == "causal":
            left = (self.kernel_size - 1) * self.dilation_rate
            inputs = ops.pad(inputs, [[0, 0], [left, 0], [0, 0]])
            padding = "valid"
        outputs = ops.conv(inputs, kernel, strides=1, padding=padding, dilation_rate=self.dilation_rate)
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs

    def compute_output_shape(self, input_shape):
        steps = input_shape[1]
        if self.padding == "valid" and steps is not None:
            steps = steps - (self.kernel_size - 1) * self.dilation_rate
        return (input_shape[0], steps, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dilation_rate=self.dilation_rate,
            padding=self.padding,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


def tcn_receptive_field(kernel_size: int, num_blocks: int | None = None, *, dilations=None) -> int:
    """Input steps one TCN output sees: `1 + 2(k − 1) Σ dᵢ` (two causal convolutions per block).

    With `num_blocks` L and the paper's dilations 1, 2, …, 2^(L−1) this is
    `1 + 2(k − 1)(2^L − 1)`.

    >>> tcn_receptive_field(3, 4), tcn_receptive_field(3, dilations=[1, 2, 4, 8])
    (61, 61)
    """
    if (num_blocks is None) == (dilations is None):
        raise ValueError("Pass exactly one of num_blocks or dilations.")
    if dilations is None:
        dilations = [2**i for i in range(num_blocks)]
    return 1 + 2 * (kernel_size - 1) * sum(dilations)


def receptive_field(model: keras.Model) -> int:
    """Receptive field of a built model's chain of causal convolutions: `1 + Σ (k − 1)·d`.

    Read from the layers themselves, so it holds for a reloaded model too.
    """

    def first(value):
        return value[0] if isinstance(value, (tuple, list)) else value

    size = 1
    for layer in model.layers:
        if getattr(layer, "padding", None) == "causal":
            size += (first(layer.kernel_size) - 1) * first(layer.dilation_rate)
    return size


def tcn_search_space(hp):
    return dict(
        filters=hp.Choice("filters", [16, 32, 64]),
        kernel_size=hp.Choice("kernel_size", [2, 3, 5], default=3),
        num_blocks=hp.Int("num_blocks", 2, 5),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
        weight_norm=hp.Boolean("weight_norm", default=True),
    )


def _tcn_block(x, filters, kernel_size, dilation, dropout, weight_norm, name):
    """Residual block: 2 × (dilated causal conv → ReLU → spatial dropout), 1×1 conv on a width change."""
    shortcut = x
    for j in (1, 2):
        if weight_norm:
            conv = WeightNormConv1D(
                filters, kernel_size, dilation_rate=dilation, name=f"{name}_conv{j}"
            )
        else:
            conv = keras.layers.Conv1D(
                filters,
                kernel_size,
                padding="causal",
                dilation_rate=dilation,
                kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
                name=f"{name}_conv{j}",
            )
        x = keras.layers.ReLU(name=f"{name}_relu{j}")(conv(x))
        if dropout:
            x = keras.layers.SpatialDropout1D(dropout, name=f"{name}_dropout{j}")(x)
    if shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv1D(
            filters,
            1,
            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
            name=f"{name}_downsample",
        )(shortcut)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


@register_model(
    "tcn",
    family="sequence",
    search_space=tcn_search_space,
    paper="Bai, Kolter & Koltun 2018, An Empirical Evaluation of Generic Convolutional and Recurrent Networks for Sequence Modeling",
    tasks=TASKS,
    example=Example(InputSpec((12, 1)), OutputSpec("forecasting", 3), dict(filters=8, num_blocks=2)),
)
def tcn(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    filters: int = 32,
    kernel_size: int = 3,
    num_blocks: int = 4,
    dropout: float = 0.1,
    weight_norm: bool = True,
) -> keras.Model:
    """The temporal convolutional network (TCN) of Bai et al. 2018.

    `num_blocks` residual blocks with dilations 1, 2, 4, …; each has two
    dilated causal convolutions (weight-normalised when `weight_norm`) with
    ReLU and spatial dropout, and a 1×1 convolution on the residual path
    where the width changes. The head reads the last timestep, whose
    receptive field is `tcn_receptive_field(kernel_size, num_blocks)`
    (`receptive_field(model)` reads it back from a built model).

    Args:
        filters: channels of every block.
        kernel_size: taps of each convolution, 2 to 16.
        num_blocks: residual blocks, 1 to 12.
        dropout: spatial dropout rate after each convolution, in [0, 0.9].
        weight_norm: whether the dilated convolutions are weight-normalised.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("tcn", InputSpec((12, 1)), OutputSpec("forecasting", 3), filters=16, num_blocks=2)
    >>> model.output_shape, receptive_field(model)
    ((None, 3), 13)
    """
    require_range("filters", filters, 1, 4096, model="tcn")
    require_range("kernel_size", kernel_size, 2, 16, model="tcn")
    require_range("num_blocks", num_blocks, 1, 12, model="tcn")
    require_range("dropout", dropout, 0.0, 0.9, model="tcn")
    inputs = series_input(input_spec, "tcn")
    x = inputs
    for i in range(num_blocks):
        x = _tcn_block(x, filters, kernel_size, 2**i, dropout, weight_norm, name=f"block{i}")
    x = LastTimestep(name="last_timestep")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="tcn")
