"""What the series models share: the heads they offer and how they read series or token ids.

Every model reads series shaped `(timesteps, channels)`. A forecasting head
emits the next `output_spec.units` steps at once (direct multi-step strategy),
a classification head class probabilities, a regression head real values.
The 1D CNN and the recurrent nets also read token ids
(`InputSpec((seq_len,), dtype="int32", vocab_size=V)`, id 0 padding) through
an `embedding_dim`-wide embedding learned from scratch.
"""

from __future__ import annotations

import keras

from keras_models.heads import require_range
from keras_models.specs import InputSpec

TASKS = ("forecasting", "classification", "regression")


def series_input(input_spec: InputSpec, model: str):
    if len(input_spec.shape) != 2:
        raise ValueError(
            f"Model {model!r} reads series shaped (timesteps, channels); "
            f"got input shape {input_spec.shape}."
        )
    return keras.Input(shape=input_spec.shape, name="series")


def _is_token_input(input_spec: InputSpec) -> bool:
    return input_spec.vocab_size is not None and input_spec.dtype.startswith("int")


def sequence_input(input_spec: InputSpec, model: str, embedding_dim: int, mask_zero: bool):
    """`(inputs, x)`: a series as it is, or token ids `(seq_len,)` through a learned embedding.

    `mask_zero` masks padding (id 0) for layers that honour Keras masks, as
    recurrent layers do; convolutions ignore masks, so padding keeps a learned vector.
    """
    if not _is_token_input(input_spec):
        inputs = series_input(input_spec, model)
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

