"""Layers kept only so that models saved by earlier versions of the zoo still load.

No builder uses them. Each has the variable layout or the class name its
models were saved with (a `.keras` file keys the variables of a list of
layers by their class names), which differ from those of the shared layer
that replaced it (`keras_models.layers`), so an alias could not load them.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_models.layers import (
    MultiHeadDotProductAttention,
    PreNormEncoderLayer,
    TransformerEncoderLayer,
    bert_initializer,
)

@keras.saving.register_keras_serializable(package="keras_models")
class MultiHeadSelfAttention(MultiHeadDotProductAttention):
    """`MultiHeadDotProductAttention` with the variable layout BERT models were saved with before.

    The four projections are `Dense(width)` layers in the list `projections`
    (query, key, value, output) with kernels `(width, width)`, where the
    shared layer has `EinsumDense` kernels `(width, heads, head_dim)`; the
    attention is the same. It is the attention of `TransformerEncoderBlock`.

    Args:
        num_heads: int, attention heads; must divide the input width.
        dropout: float, dropout rate on the attention probabilities.
        **kwargs: the other `MultiHeadDotProductAttention` arguments.
    """

    def __init__(self, num_heads: int, dropout: float = 0.0, **kwargs):
        kwargs.setdefault("kernel_initializer", bert_initializer())
        super().__init__(num_heads, dropout=dropout, **kwargs)

    def build(self, query_shape, value_shape=None):
        width = query_shape[-1]
        self._heads = (self.num_heads, self._head_dim(width))
        self.projections = []
        for name in ("query", "key", "value", "attention_output"):
            dense = keras.layers.Dense(
                width, kernel_initializer=bert_initializer(), dtype=self.dtype_policy, name=name
            )
            dense.build(query_shape)
            self.projections.append(dense)

    def project_heads(self, query, value):
        batch = ops.shape(query)[0]
        query, key, value = (dense(x) for dense, x in zip(self.projections, (query, value, value)))
        return tuple(ops.reshape(x, (batch, ops.shape(x)[1], *self._heads)) for x in (query, key, value))

    def merge_heads(self, context):
        merged = ops.reshape(context, (ops.shape(context)[0], ops.shape(context)[1], context.shape[2] * context.shape[3]))
        return self.projections[3](merged)


@keras.saving.register_keras_serializable(package="keras_models")
class TransformerEncoderBlock(TransformerEncoderLayer):
    """BERT's encoder layer with the variable layout BERT models were saved with before.

    The same computation as `TransformerEncoderLayer` with BERT's settings; its
    attention is `MultiHeadSelfAttention` under `attention` and its first norm
    is `mixing_norm`. `keras.saving.load_model` builds it for the `.keras` files
    of BERT and series Transformer models saved before they used `TransformerEncoderLayer`.

    Args:
        num_heads: int, attention heads; must divide the input width.
        ff_dim: int, inner width of the feed-forward network.
        dropout: float, dropout rate on attention probabilities and sublayer outputs.
        layer_norm_epsilon: float, epsilon of the layer normalisations.
        **kwargs: the other `TransformerEncoderLayer` arguments.
    """

    def __init__(
        self, num_heads: int, ff_dim: int, dropout: float = 0.1, layer_norm_epsilon: float = 1e-12, **kwargs
    ):
        kwargs = {"attention_dropout": dropout, "activation": "gelu", "kernel_initializer": bert_initializer(),
                  **kwargs}
        super().__init__(num_heads, ff_dim, dropout, layer_norm_epsilon=layer_norm_epsilon, **kwargs)

    def build(self, inputs_shape, padding_mask_shape=None):
        width = inputs_shape[-1]
        self.build_feed_forward(width)
        self.attention = MultiHeadSelfAttention(
            self.num_heads, self.attention_dropout, flash_attention=self.flash_attention,
            dtype=self.dtype_policy, name="attention",
        )
        self.attention.build(inputs_shape)
        self.mixing_norm = self.build_norm("mixing_norm", width)

    def call(self, inputs, padding_mask=None, training=None):
        attended = self.attention(inputs, padding_mask=padding_mask, training=training)
        x = self.residual(self.mixing_norm, inputs, attended, training)
        return self.feed_forward(x, training)


@keras.saving.register_keras_serializable(package="keras_models")
class ViTEncoderBlock(PreNormEncoderLayer):
    """`PreNormEncoderLayer` under the class name ViT models were saved with, and its `mlp_dim` argument.

    Args:
        num_heads: int, attention heads; must divide the embedding size.
        mlp_dim: int, hidden width of the MLP (`ff_dim`).
        **kwargs: the other `PreNormEncoderLayer` arguments.
    """

    def __init__(self, num_heads: int, mlp_dim: int, **kwargs):
        super().__init__(num_heads, mlp_dim, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["mlp_dim"] = config.pop("ff_dim")
        return config
