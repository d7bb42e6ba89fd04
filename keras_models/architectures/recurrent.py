"""Stacked recurrent networks: SimpleRNN (Elman), LSTM, GRU and the Simple Recurrent Unit (Lei et al. 2018).

One factory, `stacked_recurrent`, makes every builder here: `num_layers`
recurrent layers of `units`, the last returning only its final output, then
the task head. The Keras layers also read token ids through an embedding
whose padding (id 0) they skip, and read both ways when `bidirectional`.
"""

from __future__ import annotations

import inspect
import math

import keras
from keras import ops

from keras_models.architectures._series import TASKS, sequence_input, series_input
from keras_models.heads import require_range, task_head
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec


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



def recurrent_search_space(hp):
    return dict(
        units=hp.Choice("units", [16, 32, 64]),
        num_layers=hp.Int("num_layers", 1, 3),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
    )


def sru_search_space(hp):
    return dict(
        units=hp.Choice("units", [16, 32, 64]),
        num_layers=hp.Int("num_layers", 1, 4, default=2),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
    )


def _keras_stack(layer_cls):
    """Layer `i` of a stack of Keras recurrent layers, each dropping `dropout` of its inputs."""

    def layer(i, units, dropout, last, name):
        return layer_cls(units, dropout=dropout, return_sequences=not last, name=f"{name}_{i}")

    return layer


def _sru_stack(i, units, dropout, last, name):
    """Layer `i` of a stack of SRUs, with dropout between layers (none on the inputs)."""

    def layer(x):
        if dropout and i > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
        return SRU(units, return_sequences=not last, name=f"sru_{i}")(x)

    return layer


def stacked_recurrent(
    name: str,
    make_layer,
    *,
    summary: str,
    paper: str,
    search_space=recurrent_search_space,
    num_layers: int = 1,
    bidirectional: bool = True,
    token_ids: bool = True,
    example: str = "",
):
    """Registers the builder of a stack of `make_layer(i, units, dropout, last, name)` layers as `name`.

    Its hyperparameters are `units`, `num_layers` (default `num_layers`) and
    `dropout`, with `bidirectional` and `embedding_dim` where the layer
    supports reading both ways and token-id inputs.
    """
    parameter = inspect.Parameter
    keyword = [
        parameter("units", parameter.KEYWORD_ONLY, default=32, annotation=int),
        parameter("num_layers", parameter.KEYWORD_ONLY, default=num_layers, annotation=int),
        parameter("dropout", parameter.KEYWORD_ONLY, default=0.0, annotation=float),
    ]
    if bidirectional:
        keyword.append(parameter("bidirectional", parameter.KEYWORD_ONLY, default=False, annotation=bool))
    if token_ids:
        keyword.append(parameter("embedding_dim", parameter.KEYWORD_ONLY, default=64, annotation=int))
    defaults = {p.name: p.default for p in keyword}

    def builder(input_spec: InputSpec, output_spec: OutputSpec, **hparams) -> keras.Model:
        hparams = {**defaults, **hparams}
        units, layers, dropout = hparams["units"], hparams["num_layers"], hparams["dropout"]
        both_ways = hparams.get("bidirectional", False)
        require_range("units", units, 1, 4096, model=name)
        require_range("num_layers", layers, 1, 8, model=name)
        require_range("dropout", dropout, 0.0, 0.9, model=name)
        if both_ways and output_spec.head != "classification":
            raise ValueError(
                f"Hyperparameter bidirectional=True of model {name!r} is for classification only; "
                f"{output_spec.head} models read the series causally, left to right."
            )
        if token_ids:
            inputs, x = sequence_input(input_spec, name, hparams["embedding_dim"], mask_zero=True)
        else:
            inputs = x = series_input(input_spec, name)
        for i in range(layers):
            layer = make_layer(i, units, dropout, i == layers - 1, name)
            if both_ways:
                layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
            x = layer(x)
        return keras.Model(inputs, task_head(x, output_spec), name=name)

    builder.__name__ = builder.__qualname__ = name
    builder.__signature__ = inspect.Signature(
        [
            parameter("input_spec", parameter.POSITIONAL_OR_KEYWORD, annotation=InputSpec),
            parameter("output_spec", parameter.POSITIONAL_OR_KEYWORD, annotation=OutputSpec),
            *keyword,
        ],
        return_annotation=keras.Model,
    )
    args = [
        "units: hidden units per layer.",
        "num_layers: stacked layers, 1 to 8.",
        "dropout: dropout rate on each layer's inputs, in [0, 0.9]." if token_ids
        else "dropout: dropout rate between layers, in [0, 0.9].",
    ]
    if bidirectional:
        args.append("bidirectional: read the series both ways (classification only; not searched).")
    if token_ids:
        args.append("embedding_dim: width of the token embedding, for token-id inputs only.")
    builder.__doc__ = f"{summary}\n\n    Args:\n" + "".join(f"        {a}\n" for a in args) + (
        f"\n    Example:\n{example}" if example else ""
    )
    tiny = Example(InputSpec((12, 1)), OutputSpec("forecasting", 3), dict(units=8))
    return register_model(
        name, family="sequence", search_space=search_space, paper=paper, tasks=TASKS, example=tiny
    )(builder)


rnn = stacked_recurrent(
    "rnn",
    _keras_stack(keras.layers.SimpleRNN),
    summary="A stack of simple (Elman) recurrent layers; the head reads the last hidden state.",
    paper="Elman 1990, Finding Structure in Time",
)

lstm = stacked_recurrent(
    "lstm",
    _keras_stack(keras.layers.LSTM),
    summary="A stack of LSTM layers; the head reads the last hidden state.",
    paper="Hochreiter & Schmidhuber 1997, Long Short-Term Memory",
    example="""    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("lstm", InputSpec((12, 1)), OutputSpec("forecasting", 3), units=16)
    >>> model.count_params() == 4 * (16 * (16 + 1) + 16) + (16 * 3 + 3)
    True
""",
)

gru = stacked_recurrent(
    "gru",
    _keras_stack(keras.layers.GRU),
    summary="A stack of GRU layers (Keras's `reset_after=True` variant); the head reads the last hidden state.",
    paper="Cho et al. 2014, Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine "
    "Translation",
)

sru = stacked_recurrent(
    "sru",
    _sru_stack,
    summary="A stack of Simple Recurrent Units (Lei et al. 2018); the head reads the last output.",
    paper="Lei et al. 2018, Simple Recurrent Units for Highly Parallelizable Recurrence",
    search_space=sru_search_space,
    num_layers=2,
    bidirectional=False,
    token_ids=False,
    example="""    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("sru", InputSpec((12, 1)), OutputSpec("forecasting", 3), units=16, num_layers=1)
    >>> model.count_params() == (4 * 1 * 16 + 4 * 16) + (16 * 3 + 3)
    True
""",
)
