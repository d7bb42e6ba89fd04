"""A Transformer encoder over real-valued timesteps (Vaswani et al. 2017; Zerveas et al. 2021's input embedding)."""

from __future__ import annotations

import keras

from keras_models.architectures._series import TASKS, series_input
from keras_models.heads import require_range, task_head
from keras_models.layers import LastTimestep, PositionEmbedding, TransformerEncoderLayer, bert_initializer
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec


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
    example=Example(InputSpec((12, 1)), OutputSpec("forecasting", 3), dict(d_model=8, num_heads=2, ff_dim=16, num_layers=1)),
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
    (`TransformerEncoderLayer` with BERT's settings: GELU, attention dropout) mix the
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
    inputs = series_input(input_spec, "series_transformer")
    if input_spec.shape[0] is None and pooling == "flatten":
        raise ValueError("Model 'series_transformer' with pooling='flatten' needs a fixed number of timesteps.")
    x = keras.layers.Dense(d_model, name="step_embedding")(inputs)
    x = PositionEmbedding(name="position_embedding")(x)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(num_layers):
        x = TransformerEncoderLayer(
            num_heads, ff_dim, dropout, attention_dropout=dropout, activation="gelu",
            kernel_initializer=bert_initializer(), name=f"encoder_{i}",
        )(x)
    if pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    elif pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_pooling")(x)
    else:
        x = LastTimestep(name="last_timestep")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="series_transformer")
