"""BERT (Devlin et al. 2019), and what the text encoders share: token-id checks, embeddings, pooling, heads.

Inputs are `InputSpec((seq_len,), dtype="int32", vocab_size=V)` token ids.
Two ids are reserved: `PAD_ID = 0` pads a sequence and `MASK_ID = 1` is the
`[MASK]` token of masked-LM pretraining; real tokens use ids 2 to V - 1. For
`pooling="cls"` put a `[CLS]` token of your vocabulary first in every sequence.

BERT and FNet (`keras_models.architectures.fnet`) keep the encoder as a
sub-model named `"encoder"`, identical in the classifier and the masked-LM
model, so a classifier starts from pretrained weights with
`keras_models.training.transfer_encoder_weights`.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_models.heads import require_range, task_head
from keras_models.layers import (
    PaddingMask,
    TokenAndPositionEmbedding,
    TransformerEncoderLayer,
    bert_initializer,
)
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec
from keras_models.training import MASK_ID


@keras.saving.register_keras_serializable(package="keras_models")
class SequencePooling(keras.layers.Layer):
    """Pools `(batch, seq, width)` to `(batch, width)`: the first position or the mean of real tokens.

    Args:
        mode: str, `"cls"` for the first position, `"mean"` for the mean over
            positions where `padding_mask` is true (all-padding rows give zeros).
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.
    """

    def __init__(self, mode: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("cls", "mean"):
            raise ValueError(f"SequencePooling mode must be 'cls' or 'mean'; got {mode!r}.")
        self.mode = mode

    def call(self, inputs, padding_mask=None):
        if self.mode == "cls":
            return inputs[:, 0]
        x = ops.cast(inputs, "float32")
        if padding_mask is None:
            return ops.cast(ops.mean(x, axis=1), self.compute_dtype)
        weights = ops.cast(padding_mask, "float32")[..., None]
        pooled = ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)
        return ops.cast(pooled, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


def check_text_spec(name: str, input_spec: InputSpec, max_len: int) -> None:
    if len(input_spec.shape) != 1 or input_spec.vocab_size is None:
        raise ValueError(
            f"Model {name!r} takes token ids: InputSpec((seq_len,), dtype='int32', vocab_size=V); "
            f"got {input_spec}."
        )
    if input_spec.vocab_size <= MASK_ID + 1:
        raise ValueError(f"Model {name!r} needs vocab_size > {MASK_ID + 1} (ids 0 and 1 are reserved).")
    seq_len = input_spec.shape[0]
    if seq_len is not None and seq_len > max_len:
        raise ValueError(
            f"Hyperparameter max_len={max_len} of model {name!r} is shorter than seq_len={seq_len}."
        )


def text_model(name, encoder, input_spec, output_spec, *, d_model, dropout, pooling) -> keras.Model:
    """Puts the classification or masked-LM head on `encoder`."""
    token_ids = keras.Input(shape=input_spec.shape, dtype="int32", name="token_ids")
    sequence = encoder(token_ids)
    if output_spec.head == "masked_lm":
        vocab_size = output_spec.vocab_size or input_spec.vocab_size
        # BERT's prediction transform. The projection to the vocabulary is its
        # own Dense (untied from the token embedding): a layer shared between the
        # encoder sub-model and the head would not reload as one variable.
        x = keras.layers.Dense(
            d_model, activation="gelu", kernel_initializer=bert_initializer(), name="mlm_transform"
        )(sequence)
        x = keras.layers.LayerNormalization(epsilon=1e-12, name="mlm_norm")(x)
        outputs = keras.layers.Dense(
            vocab_size,
            activation="softmax",
            kernel_initializer=bert_initializer(),
            dtype="float32",
            name="mlm_output",
        )(x)
    else:
        padding_mask = PaddingMask(name="padding_mask")(token_ids)
        pooled = SequencePooling(pooling, name="pooling")(sequence, padding_mask=padding_mask)
        pooled = keras.layers.Dense(
            d_model, activation="tanh", kernel_initializer=bert_initializer(), name="pooler"
        )(pooled)
        pooled = keras.layers.Dropout(dropout, name="pooler_dropout")(pooled)
        outputs = task_head(pooled, output_spec)
    return keras.Model(token_ids, outputs, name=f"{name}_{output_spec.head}")


def text_embeddings(input_spec, *, d_model, max_len, dropout, projection: bool):
    token_ids = keras.Input(shape=input_spec.shape, dtype="int32", name="token_ids")
    x = TokenAndPositionEmbedding(input_spec.vocab_size, max_len, d_model, name="embeddings")(token_ids)
    x = keras.layers.LayerNormalization(epsilon=1e-12, name="embeddings_norm")(x)
    if projection:
        x = keras.layers.Dense(d_model, kernel_initializer=bert_initializer(), name="embedding_projection")(x)
    x = keras.layers.Dropout(dropout, name="embeddings_dropout")(x)
    return token_ids, x


def check_common(name, input_spec, *, d_model, ff_dim, num_layers, dropout, max_len, pooling):
    require_range("d_model", d_model, 1, 8192, model=name)
    require_range("ff_dim", ff_dim, 1, 65536, model=name)
    require_range("num_layers", num_layers, 1, 48, model=name)
    require_range("dropout", dropout, 0.0, 0.9, model=name)
    require_range("max_len", max_len, 1, 1 << 20, model=name)
    if pooling not in ("cls", "mean"):
        raise ValueError(f"Hyperparameter pooling={pooling!r} of model {name!r} must be 'cls' or 'mean'.")
    check_text_spec(name, input_spec, max_len)


def bert_search_space(hp):
    return dict(
        d_model=hp.Choice("d_model", [32, 64, 128]),
        num_heads=hp.Choice("num_heads", [2, 4]),
        ff_dim=hp.Choice("ff_dim", [64, 128, 256]),
        num_layers=hp.Int("num_layers", 1, 4),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
        pooling=hp.Choice("pooling", ["mean", "cls"]),
    )


@register_model(
    "bert",
    family="text",
    search_space=bert_search_space,
    paper="Devlin et al. 2019, BERT: Pre-training of Deep Bidirectional Transformers "
    "for Language Understanding",
    tasks=("classification", "masked_lm"),
    example=Example(InputSpec((12,), "int32", 50), OutputSpec("classification", 2), dict(d_model=16, num_heads=2, ff_dim=32, num_layers=1, max_len=16)),
)
def bert(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    d_model: int = 128,
    num_heads: int = 4,
    ff_dim: int = 512,
    num_layers: int = 2,
    dropout: float = 0.1,
    max_len: int = 512,
    pooling: str = "mean",
) -> keras.Model:
    """BERT (Devlin et al. 2019): a bidirectional post-norm Transformer encoder over token ids.

    Token plus learned position embeddings, LayerNorm and dropout, then
    `num_layers` post-norm `TransformerEncoderLayer`s (GELU, attention dropout
    equal to `dropout`) that never attend to padding. The
    encoder is the sub-model `"encoder"`. Heads: `classification` pools the
    encoding (`pooling`), applies BERT's tanh pooler and the task head;
    `masked_lm` applies BERT's Dense-GELU-LayerNorm transform and an untied
    softmax over the vocabulary at every position (train it with
    `masked_lm_loss()` on `mask_tokens` outputs). There are no segment (token
    type) embeddings: BERT-base with them has `2 × 768` more weights.

    Args:
        d_model: hidden width H, 1 to 8192; a multiple of `num_heads`.
        num_heads: attention heads A, 1 to 128.
        ff_dim: feed-forward inner width (4H in BERT).
        num_layers: encoder blocks L, 1 to 48.
        dropout: dropout rate, in [0, 0.9].
        max_len: rows of the position table; at least the sequence length.
        pooling: `"mean"` over real tokens or `"cls"` for the first position.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> spec = InputSpec((16,), dtype="int32", vocab_size=100)
    >>> model = build_model("bert", spec, OutputSpec("classification", 2), d_model=16, num_heads=2, ff_dim=32)
    >>> model.output_shape
    (None, 2)
    """
    check_common("bert", input_spec, d_model=d_model, ff_dim=ff_dim, num_layers=num_layers,
                  dropout=dropout, max_len=max_len, pooling=pooling)
    require_range("num_heads", num_heads, 1, 128, model="bert")
    if d_model % num_heads:
        raise ValueError(
            f"Hyperparameter d_model={d_model} of model 'bert' must be a multiple of num_heads={num_heads}."
        )
    token_ids, x = text_embeddings(
        input_spec, d_model=d_model, max_len=max_len, dropout=dropout, projection=False
    )
    padding_mask = PaddingMask(name="padding_mask")(token_ids)
    for i in range(num_layers):
        block = TransformerEncoderLayer(
            num_heads,
            ff_dim,
            dropout,
            attention_dropout=dropout,
            activation="gelu",
            layer_norm_epsilon=1e-12,
            kernel_initializer=bert_initializer(),
            name=f"block_{i}",
        )
        x = block(x, padding_mask=padding_mask)
    encoder = keras.Model(token_ids, x, name="encoder")
    return text_model(
        "bert", encoder, input_spec, output_spec, d_model=d_model, dropout=dropout, pooling=pooling
    )

