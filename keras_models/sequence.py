"""Sequence models for time series: a 1D CNN, the TCN, recurrent nets and the SRU.

Every model reads series shaped `(timesteps, channels)`. A forecasting head
emits the next `output_spec.units` steps at once (direct multi-step strategy),
a classification head class probabilities, a regression head real values.
The 1D CNN and the recurrent nets also read token ids
(`InputSpec((seq_len,), dtype="int32", vocab_size=V)`, id 0 padding) through
an `embedding_dim`-wide embedding learned from scratch.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_models.heads import require_range, task_head
from keras_models.registry import register_model
from keras_models.specs import InputSpec, OutputSpec

TASKS = ("forecasting", "classification", "regression")


def _series_input(input_spec: InputSpec, model: str):
    if len(input_spec.shape) != 2:
        raise ValueError(
            f"Model {model!r} reads series shaped (timesteps, channels); "
            f"got input shape {input_spec.shape}."
        )
    return keras.Input(shape=input_spec.shape, name="series")


def _is_token_input(input_spec: InputSpec) -> bool:
    return input_spec.vocab_size is not None and input_spec.dtype.startswith("int")


def _sequence_input(input_spec: InputSpec, model: str, embedding_dim: int, mask_zero: bool):
    """`(inputs, x)`: a series as it is, or token ids `(seq_len,)` through a learned embedding.

    `mask_zero` masks padding (id 0) for layers that honour Keras masks, as
    recurrent layers do; convolutions ignore masks, so padding keeps a learned vector.
    """
    if not _is_token_input(input_spec):
        inputs = _series_input(input_spec, model)
        return inputs, inputs
    require_range("embedding_dim", embedding_dim, 1, 4096, model=model)
    if len(input_spec.shape) != 1:
        raise ValueError(
            f"Model {model!r} reads token ids shaped (seq_len,); got input shape {input_spec.shape}."
        )
    inputs = keras.Input(shape=input_spec.shape, dtype=input_spec.dtype, name="token_ids")
    x = keras.layers.Embedding(
        input_spec.vocab_size, embedding_dim, mask_zero=mask_zero, name="embedding"
    )(inputs)
    return inputs, x


@keras.saving.register_keras_serializable(package="keras_models")
class LastTimestep(keras.layers.Layer):
    """Keeps the last step of a sequence: `(batch, time, features)` → `(batch, features)`.

    The last output of a causal network has seen the whole window (up to its
    receptive field), so it is the summary the TCN's head reads.

    Args:
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`).
    """

    def call(self, inputs):
        return inputs[:, -1, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


# --------------------------------------------------------------------------
# 1D CNN: the fully convolutional network of Wang, Yan & Oates (2017).
# --------------------------------------------------------------------------


def cnn1d_search_space(hp):
    return dict(
        filters=hp.Choice("filters", [32, 64, 128]),
        kernel_size=hp.Choice("kernel_size", [3, 5, 8], default=8),
        num_blocks=hp.Int("num_blocks", 1, 4, default=3),
    )


def fcn_layout(filters: int, kernel_size: int, num_blocks: int) -> list[tuple[int, int]]:
    """(width, kernel size) of each block, following the FCN's 128-256-128 / 8-5-3 shape.

    Inner blocks are twice as wide as the first and last; kernels taper as
    8 → 5 → 3, scaled by `kernel_size / 8`, so the defaults are the paper's network.

    >>> fcn_layout(128, 8, 3)
    [(128, 8), (256, 5), (128, 3)]
    """
    layout = []
    for i in range(num_blocks):
        width = filters if i in (0, num_blocks - 1) else 2 * filters
        if i == 0:
            kernel = kernel_size
        elif i == num_blocks - 1:
            kernel = max(1, math.ceil(kernel_size * 3 / 8))
        else:
            kernel = max(1, math.ceil(kernel_size * 5 / 8))
        layout.append((width, kernel))
    return layout


@register_model(
    "cnn1d",
    family="sequence",
    search_space=cnn1d_search_space,
    paper="Wang, Yan & Oates 2017, Time Series Classification from Scratch with Deep Neural Networks: A Strong Baseline",
    tasks=TASKS,
)
def cnn1d(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    filters: int = 128,
    kernel_size: int = 8,
    num_blocks: int = 3,
    embedding_dim: int = 64,
) -> keras.Model:
    """The fully convolutional network (FCN) for time series of Wang et al. 2017.

    `num_blocks` × (Conv1D "same" → BatchNorm → ReLU), global average pooling
    over time, then the task head. Block widths and kernels follow
    `fcn_layout`; the defaults give the paper's 128/256/128 filters with
    kernels 8/5/3. Batch-norm statistics use momentum 0.9 (PyTorch's
    default) rather than Keras's 0.99, so that inference statistics settle
    within the few hundred steps a small UCR training set gives.

    Args:
        filters: width of the first and last block (inner blocks are twice as wide).
        kernel_size: kernel of the first block, 2 to 64; later blocks taper as in the paper.
        num_blocks: convolutional blocks, 1 to 8.
        embedding_dim: width of the token embedding, for token-id inputs only.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("cnn1d", InputSpec((24, 1)), OutputSpec("classification", 2), filters=32)
    >>> model.output_shape
    (None, 2)
    """
    require_range("filters", filters, 1, 4096, model="cnn1d")
    require_range("kernel_size", kernel_size, 2, 64, model="cnn1d")
    require_range("num_blocks", num_blocks, 1, 8, model="cnn1d")
    inputs, x = _sequence_input(input_spec, "cnn1d", embedding_dim, mask_zero=False)
    for i, (width, kernel) in enumerate(fcn_layout(filters, kernel_size, num_blocks)):
        x = keras.layers.Conv1D(width, kernel, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="cnn1d")


# --------------------------------------------------------------------------
# TCN: Bai, Kolter & Koltun (2018).
# --------------------------------------------------------------------------


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
    inputs = _series_input(input_spec, "tcn")
    x = inputs
    for i in range(num_blocks):
        x = _tcn_block(x, filters, kernel_size, 2**i, dropout, weight_norm, name=f"block{i}")
    x = LastTimestep(name="last_timestep")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="tcn")


# --------------------------------------------------------------------------
# Stacked recurrent networks: SimpleRNN, LSTM, GRU.
# --------------------------------------------------------------------------


def recurrent_search_space(hp):
    return dict(
        units=hp.Choice("units", [16, 32, 64]),
        num_layers=hp.Int("num_layers", 1, 3),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
    )


def _stacked_recurrent(
    name, layer_cls, input_spec, output_spec, units, num_layers, dropout, bidirectional, embedding_dim
):
    require_range("units", units, 1, 4096, model=name)
    require_range("num_layers", num_layers, 1, 8, model=name)
    require_range("dropout", dropout, 0.0, 0.9, model=name)
    if bidirectional and output_spec.head != "classification":
        raise ValueError(
            f"Hyperparameter bidirectional=True of model {name!r} is for classification only; "
            f"{output_spec.head} models read the series causally, left to right."
        )
    inputs, x = _sequence_input(input_spec, name, embedding_dim, mask_zero=True)
    for i in range(num_layers):
        layer = layer_cls(units, dropout=dropout, return_sequences=i < num_layers - 1, name=f"{name}_{i}")
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
        x = layer(x)
    return keras.Model(inputs, task_head(x, output_spec), name=name)


@register_model(
    "rnn",
    family="sequence",
    search_space=recurrent_search_space,
    paper="Elman 1990, Finding Structure in Time",
    tasks=TASKS,
)
def rnn(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    units: int = 32,
    num_layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
    embedding_dim: int = 64,
) -> keras.Model:
    """A stack of simple (Elman) recurrent layers; the head reads the last hidden state.

    Args:
        units: hidden units per layer.
        num_layers: stacked layers, 1 to 8.
        dropout: dropout rate on each layer's inputs, in [0, 0.9].
        bidirectional: read the series both ways (classification only; not searched,
            since the search space does not know the task).
        embedding_dim: width of the token embedding, for token-id inputs only.
    """
    return _stacked_recurrent(
        "rnn", keras.layers.SimpleRNN, input_spec, output_spec, units, num_layers, dropout, bidirectional,
        embedding_dim,
    )


@register_model(
    "lstm",
    family="sequence",
    search_space=recurrent_search_space,
    paper="Hochreiter & Schmidhuber 1997, Long Short-Term Memory",
    tasks=TASKS,
)
def lstm(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    units: int = 32,
    num_layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
    embedding_dim: int = 64,
) -> keras.Model:
    """A stack of LSTM layers; the head reads the last hidden state.

    Args:
        units: hidden units per layer.
        num_layers: stacked layers, 1 to 8.
        dropout: dropout rate on each layer's inputs, in [0, 0.9].
        bidirectional: read the series both ways (classification only; not searched).
        embedding_dim: width of the token embedding, for token-id inputs only.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("lstm", InputSpec((12, 1)), OutputSpec("forecasting", 3), units=16)
    >>> model.count_params() == 4 * (16 * (16 + 1) + 16) + (16 * 3 + 3)
    True
    """
    return _stacked_recurrent(
        "lstm", keras.layers.LSTM, input_spec, output_spec, units, num_layers, dropout, bidirectional,
        embedding_dim,
    )


@register_model(
    "gru",
    family="sequence",
    search_space=recurrent_search_space,
    paper="Cho et al. 2014, Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation",
    tasks=TASKS,
)
def gru(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    units: int = 32,
    num_layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
    embedding_dim: int = 64,
) -> keras.Model:
    """A stack of GRU layers (Keras's `reset_after=True` variant); the head reads the last hidden state.

    Args:
        units: hidden units per layer.
        num_layers: stacked layers, 1 to 8.
        dropout: dropout rate on each layer's inputs, in [0, 0.9].
        bidirectional: read the series both ways (classification only; not searched).
        embedding_dim: width of the token embedding, for token-id inputs only.
    """
    return _stacked_recurrent(
        "gru", keras.layers.GRU, input_spec, output_spec, units, num_layers, dropout, bidirectional,
        embedding_dim,
    )


# --------------------------------------------------------------------------
# SRU: Lei et al. (2018).
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_models")
class SRU(keras.layers.Layer):
    """Simple Recurrent Unit (Lei et al. 2018): every matrix product is taken for all steps at once.

    For inputs `x_t` of width `d`:

        x̃_t = W x_t
        f_t = σ(W_f x_t + v_f ⊙ c_{t−1} + b_f)
        r_t = σ(W_r x_t + v_r ⊙ c_{t−1} + b_r)
        c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ x̃_t
        h_t = r_t ⊙ g(c_t) + (1 − r_t) ⊙ x'_t

    `W`, `W_f`, `W_r` (and `W'` when `d != units`) form one kernel applied to
    the whole sequence in a single matmul; only the element-wise recurrence of
    `c_t` runs step by step (`keras.ops.scan`), in float32. The skip term is
    `x'_t = α x_t`, or `W' x_t` when `d != units`, with the paper's scaling
    correction `α = √(1 + 2·exp(highway_bias))`. Initialisation follows the
    reference code: `W` uniform with variance `1/d`, gate columns and `v`
    scaled by `√0.5`, `v` with variance 1/2, `W'` scaled by `α`.
    Trainable parameters: `k·d·units + 4·units`, `k = 3` (or 4 with `W'`).

    Args:
        units: int, width of the state `c_t` and the output `h_t`.
        activation: str or None, name of the Keras activation `g`: None (the identity, as in
            the 2018 paper) or `"tanh"` (the 2017 preprint).
        highway_bias: float, initial value of `b_r`.
        rescale: bool, whether to apply the scaling correction `α` to the skip term.
        return_sequences: bool, whether to return `h_t` for every step or only the last.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:
    >>> import numpy as np
    >>> tuple(SRU(8, return_sequences=True)(np.zeros((2, 5, 3), "float32")).shape)
    (2, 5, 8)
    """

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        highway_bias: float = 0.0,
        rescale: bool = True,
        return_sequences: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.activation = activation
        self.highway_bias = highway_bias
        self.rescale = rescale
        self.return_sequences = return_sequences
        self._g = keras.activations.get(activation)
        self._alpha = math.sqrt(1.0 + 2.0 * math.exp(highway_bias)) if rescale else 1.0

    def build(self, input_shape):
        d, h = input_shape[-1], self.units
        self._project = d != h
        k = 4 if self._project else 3
        self.kernel = self.add_weight(
            name="kernel", shape=(d, k * h), initializer=keras.initializers.LecunUniform()
        )
        scale = [1.0] * h + [math.sqrt(0.5)] * (2 * h) + [self._alpha] * (h if self._project else 0)
        self.kernel.assign(self.kernel * ops.convert_to_tensor(scale, dtype=self.kernel.dtype))
        limit = math.sqrt(3.0) * math.sqrt(0.5)
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(2, h),
            initializer=keras.initializers.RandomUniform(-limit, limit),
            autocast=False,
        )
        self.bias = self.add_weight(name="bias", shape=(2, h), initializer="zeros", autocast=False)
        self.bias.assign(ops.convert_to_tensor([[0.0] * h, [float(self.highway_bias)] * h]))

    def call(self, inputs):
        h = self.units
        u = ops.matmul(inputs, self.kernel)
        u = ops.cast(u, "float32")
        x_tilde, f_in, r_in = u[..., :h], u[..., h : 2 * h], u[..., 2 * h : 3 * h]
        skip = u[..., 3 * h :] if self._project else ops.cast(inputs, "float32") * self._alpha
        v_f, v_r = self.recurrent_kernel[0], self.recurrent_kernel[1]
        b_f, b_r = self.bias[0], self.bias[1]

        def step(c, xs):
            x_t, f_t = xs
            f = ops.sigmoid(f_t + v_f * c + b_f)
            c = f * c + (1.0 - f) * x_t
            return c, c

        c0 = ops.zeros_like(x_tilde[:, 0])
        _, cs = ops.scan(step, c0, (ops.moveaxis(x_tilde, 1, 0), ops.moveaxis(f_in, 1, 0)))
        cs = ops.moveaxis(cs, 0, 1)
        c_prev = ops.concatenate([c0[:, None], cs[:, :-1]], axis=1)
        r = ops.sigmoid(r_in + v_r * c_prev + b_r)
        outputs = r * self._g(cs) + (1.0 - r) * skip
        if not self.return_sequences:
            outputs = outputs[:, -1]
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.units)
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=self.activation,
            highway_bias=self.highway_bias,
            rescale=self.rescale,
            return_sequences=self.return_sequences,
        )
        return config


def sru_search_space(hp):
    return dict(
        units=hp.Choice("units", [16, 32, 64]),
        num_layers=hp.Int("num_layers", 1, 4, default=2),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
    )


@register_model(
    "sru",
    family="sequence",
    search_space=sru_search_space,
    paper="Lei et al. 2018, Simple Recurrent Units for Highly Parallelizable Recurrence",
    tasks=TASKS,
)
def sru(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    units: int = 32,
    num_layers: int = 2,
    dropout: float = 0.0,
) -> keras.Model:
    """A stack of Simple Recurrent Units (Lei et al. 2018); the head reads the last output.

    Args:
        units: width of each SRU layer.
        num_layers: stacked layers, 1 to 8.
        dropout: dropout rate between layers, in [0, 0.9].

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("sru", InputSpec((12, 1)), OutputSpec("forecasting", 3), units=16, num_layers=1)
    >>> model.count_params() == (4 * 1 * 16 + 4 * 16) + (16 * 3 + 3)
    True
    """
    require_range("units", units, 1, 4096, model="sru")
    require_range("num_layers", num_layers, 1, 8, model="sru")
    require_range("dropout", dropout, 0.0, 0.9, model="sru")
    inputs = _series_input(input_spec, "sru")
    x = inputs
    for i in range(num_layers):
        if dropout and i > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
        x = SRU(units, return_sequences=i < num_layers - 1, name=f"sru_{i}")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="sru")


# --------------------------------------------------------------------------
# Series Transformer: a Transformer encoder over real-valued timesteps.
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_models")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each timestep's position: `(batch, time, width)` in and out.

    Attention is blind to order, so a series encoder needs to be told which
    step is which; the window has a fixed length, so one vector per position
    (as in BERT and ViT) is enough.

    Args:
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:
    >>> import numpy as np
    >>> tuple(PositionEmbedding()(np.zeros((2, 5, 4), "float32")).shape)
    (2, 5, 4)
    """

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(input_shape[1], input_shape[2]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )

    def call(self, inputs):
        return inputs + ops.cast(self.embeddings, inputs.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape


def series_transformer_search_space(hp):
    return dict(
        d_model=hp.Choice("d_model", [16, 32, 64], default=32),
        num_heads=hp.Choice("num_heads", [2, 4], default=4),
        ff_dim=hp.Choice("ff_dim", [32, 64, 128], default=64),
        num_layers=hp.Int("num_layers", 1, 3, default=2),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
        pooling=hp.Choice("pooling", ["flatten", "mean", "last"], default="flatten"),
    )


@register_model(
    "series_transformer",
    family="sequence",
    search_space=series_transformer_search_space,
    paper="Vaswani et al. 2017, Attention Is All You Need (encoder over real-valued timesteps, as in Zerveas et al. 2021)",
    tasks=TASKS,
)
def series_transformer(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    d_model: int = 32,
    num_heads: int = 4,
    ff_dim: int = 64,
    num_layers: int = 2,
    dropout: float = 0.1,
    pooling: str = "flatten",
) -> keras.Model:
    """A Transformer encoder for real-valued series (Zerveas et al. 2021's input embedding).

    Each timestep's channels are projected linearly to `d_model`, a learned
    position embedding is added, then `num_layers` post-norm encoder blocks
    (`keras_models.text.TransformerEncoderBlock`, the BERT block) mix the
    steps with full self-attention: the window is all past values, so a
    forecast may attend anywhere in it. The head reads the encoded steps
    flattened (every position keeps its own weights, which suits a short
    fixed window), their mean, or the last step.

    Args:
        d_model: width of the step embeddings; `num_heads` must divide it.
        num_heads: attention heads.
        ff_dim: inner width of each block's feed-forward network.
        num_layers: encoder blocks, 1 to 12.
        dropout: dropout rate on the embeddings, attention and sublayer outputs, in [0, 0.9].
        pooling: `"flatten"`, `"mean"` or `"last"`: how the head reads the encoded steps.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("series_transformer", InputSpec((24, 1)), OutputSpec("forecasting", 12), d_model=16)
    >>> model.output_shape
    (None, 12)
    """
    from keras_models.text import TransformerEncoderBlock

    require_range("d_model", d_model, 1, 4096, model="series_transformer")
    require_range("num_heads", num_heads, 1, 64, model="series_transformer")
    require_range("ff_dim", ff_dim, 1, 16384, model="series_transformer")
    require_range("num_layers", num_layers, 1, 12, model="series_transformer")
    require_range("dropout", dropout, 0.0, 0.9, model="series_transformer")
    if d_model % num_heads:
        raise ValueError(
            f"Hyperparameter num_heads={num_heads} of model 'series_transformer' must divide d_model={d_model}."
        )
    if pooling not in ("flatten", "mean", "last"):
        raise ValueError(
            f"Hyperparameter pooling={pooling!r} of model 'series_transformer' must be 'flatten', 'mean' or 'last'."
        )
    inputs = _series_input(input_spec, "series_transformer")
    if input_spec.shape[0] is None and pooling == "flatten":
        raise ValueError("Model 'series_transformer' with pooling='flatten' needs a fixed number of timesteps.")
    x = keras.layers.Dense(d_model, name="step_embedding")(inputs)
    x = PositionEmbedding(name="position_embedding")(x)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(num_layers):
        x = TransformerEncoderBlock(num_heads, ff_dim, dropout, layer_norm_epsilon=1e-6, name=f"encoder_{i}")(x)
    if pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    elif pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_pooling")(x)
    else:
        x = LastTimestep(name="last_timestep")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="series_transformer")
