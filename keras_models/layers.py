"""Layers the zoo's models share: padding mask, multi-head attention, position embeddings, transformer blocks.

`MultiHeadDotProductAttention` computes attention with `keras.ops.dot_product_attention`,
which runs a fused kernel where the backend has one (cuDNN flash attention on
a GPU under JAX, for shapes and dtypes it supports); it falls back to an
explicit einsum and float32 softmax only to return the attention weights or to
drop attention probabilities while training.

There is one transformer block of each norm order: `TransformerEncoderLayer`
and `TransformerDecoderLayer` are post-norm (`LN(x + sublayer(x))`, the
Transformer, BERT, the series Transformer), `PreNormEncoderLayer` is pre-norm
(`x + sublayer(LN(x))`, ViT).

Every layer is registered under `keras_models>ClassName`; the names are those
the families used before this module existed, so models saved then still load.
A name the zoo saved under before (`MultiHeadAttention`) is an alias of the
layer here; layers saved under other class names or with other variable
layouts are kept, for loading only, in `keras_models.legacy`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

PAD_ID = 0


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="keras_models")(cls)


def _identifier(initializer):
    """`initializer` as a name or a config, kept until each weight gets its own instance."""
    if isinstance(initializer, (str, dict)):
        return initializer
    return keras.initializers.serialize(keras.initializers.get(initializer))


def _fresh(identifier):
    """A new initializer instance: Keras repeats the values of an unseeded instance called twice.

    Instances are made as each sublayer is created, so a seeded run draws the
    same initial weights as the layers these replaced.
    """
    return keras.initializers.get(dict(identifier) if isinstance(identifier, dict) else identifier)


def bert_initializer():
    """BERT's truncated normal (stddev 0.02), the initializer of the text encoders."""
    return keras.initializers.TruncatedNormal(stddev=0.02)


@_serializable
class PaddingMask(keras.layers.Layer):
    """`True` where a token id is a real token, `False` where it is `pad_id`.

    Args:
        pad_id: int, the padding token id.
        **kwargs: base `keras.layers.Layer` arguments such as `name`.

    Example:
    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(PaddingMask()(np.array([[5, 3, 0]]))).tolist()
    [[True, True, False]]
    """

    def __init__(self, pad_id: int = PAD_ID, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, token_ids):
        return ops.not_equal(token_ids, self.pad_id)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="bool")

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@_serializable
class MultiHeadDotProductAttention(keras.layers.Layer):
    """Scaled dot-product attention over `num_heads` heads (Vaswani et al. 2017, §3.2).

    The query, key, value and output projections have the layout of
    `keras.layers.MultiHeadAttention` (`query_dense`, `key_dense`,
    `value_dense`, `output_dense`, each an `EinsumDense` with bias). The
    attention itself is `keras.ops.dot_product_attention`, which lets the
    backend pick a fused kernel (`flash_attention=None`). That op neither
    returns the attention weights nor drops probabilities, so the layer
    computes an explicit einsum and float32 softmax instead when called with
    `return_attention_scores=True`, or while training with `dropout > 0`.

    Args:
        num_heads: int, attention heads.
        key_dim: int or None, per-head width of queries, keys and values;
            None: the query width divided by `num_heads`.
        dropout: float, dropout rate on the attention probabilities.
        kernel_initializer: initializer of the projection kernels.
        flash_attention: bool or None, passed to `keras.ops.dot_product_attention`;
            None lets Keras use flash attention where the backend, device and
            shapes allow it.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.

    Call args:
        query: (batch, Tq, width).
        value: (batch, Tk, width_kv), also the keys; None attends over `query` (self-attention).
        padding_mask: (batch, Tk) bool, `False` at keys no query may attend to (padding).
        use_causal_mask: bool, query `i` attends only to keys `j <= i` (decoder self-attention).
        return_attention_scores: bool, also return the float32 attention weights
            `(batch, num_heads, Tq, Tk)`.
        training: bool, applies the attention dropout.

    Example:
    >>> import numpy as np
    >>> layer = MultiHeadDotProductAttention(num_heads=2)
    >>> x = np.zeros((1, 3, 4), "float32")
    >>> outputs, weights = layer(x, padding_mask=np.array([[True, True, False]]), return_attention_scores=True)
    >>> tuple(outputs.shape), keras.ops.convert_to_numpy(weights)[0, 0, 0].round(2).tolist()
    ((1, 3, 4), [0.5, 0.5, 0.0])
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int | None = None,
        dropout: float = 0.0,
        kernel_initializer="glorot_uniform",
        flash_attention: bool | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout = dropout
        self.kernel_initializer = _identifier(kernel_initializer)
        self.flash_attention = flash_attention
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def _head_dim(self, width) -> int:
        if self.key_dim is not None:
            return self.key_dim
        if width % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must divide the query width {width}, or pass key_dim."
            )
        return width // self.num_heads

    def build(self, query_shape, value_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        head_dim = self._head_dim(query_shape[-1])

        def projection(name):
            return keras.layers.EinsumDense(
                "btd,dhk->bthk",
                (None, self.num_heads, head_dim),
                bias_axes="hk",
                kernel_initializer=_fresh(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=name,
            )

        self.query_dense, self.key_dense, self.value_dense = (
            projection("query"), projection("key"), projection("value")
        )
        self.query_dense.build(query_shape)
        self.key_dense.build(value_shape)
        self.value_dense.build(value_shape)
        self.output_dense = keras.layers.EinsumDense(
            "bthk,hkd->btd",
            (None, query_shape[-1]),
            bias_axes="d",
            kernel_initializer=_fresh(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="output",
        )
        self.output_dense.build((None, None, self.num_heads, head_dim))

    def project_heads(self, query, value):
        """Queries, keys and values split into heads, each (batch, T, num_heads, head_dim)."""
        return self.query_dense(query), self.key_dense(value), self.value_dense(value)

    def merge_heads(self, context):
        """The output projection of the attended values (batch, Tq, num_heads, head_dim)."""
        return self.output_dense(context)

    def call(
        self,
        query,
        value=None,
        padding_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        value = query if value is None else value
        q, k, v = self.project_heads(query, value)
        mask = None if padding_mask is None else ops.cast(padding_mask, "bool")[:, None, None, :]
        if return_attention_scores or (training and self.dropout > 0):
            context, weights = self._explicit_attention(q, k, v, mask, use_causal_mask, training)
        else:
            context, weights = ops.dot_product_attention(
                q, k, v, mask=mask, is_causal=use_causal_mask, flash_attention=self.flash_attention
            ), None
        outputs = self.merge_heads(context)
        return (outputs, weights) if return_attention_scores else outputs

    def _explicit_attention(self, q, k, v, mask, causal, training):
        """Einsum and float32 softmax: the same attention, with its weights (batch, heads, Tq, Tk)."""
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = ops.einsum("bqhd,bkhd->bhqk", ops.cast(q, "float32"), ops.cast(k, "float32")) * scale
        if causal:
            steps_q, steps_k = ops.arange(ops.shape(q)[1]), ops.arange(ops.shape(k)[1])
            causal_mask = ops.greater_equal(steps_q[:, None], steps_k[None, :])[None, None]
            mask = causal_mask if mask is None else ops.logical_and(mask, causal_mask)
        if mask is not None:
            scores = ops.where(mask, scores, -1e9)
        weights = ops.softmax(scores, axis=-1)
        dropped = self.dropout_layer(ops.cast(weights, v.dtype), training=training)
        return ops.einsum("bhqk,bkhd->bqhd", dropped, v), weights

    def compute_output_spec(
        self, query, value=None, padding_mask=None, use_causal_mask=False,
        return_attention_scores=False, training=None,
    ):
        outputs = keras.KerasTensor(query.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        keys = query.shape[1] if value is None else value.shape[1]
        weights = keras.KerasTensor((query.shape[0], self.num_heads, query.shape[1], keys), dtype="float32")
        return outputs, weights

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
            "kernel_initializer": self.kernel_initializer,
            "flash_attention": self.flash_attention,
        }


# The seq2seq Transformer saved its attention under this name, with the same variables.
keras.saving.get_custom_objects()["keras_models>MultiHeadAttention"] = MultiHeadDotProductAttention


# ------------------------------------------------------------ position embeddings


@_serializable
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Sum of a token embedding and a learned absolute position embedding (BERT).

    Args:
        vocab_size: int, number of token ids.
        max_len: int, longest sequence the position table covers.
        embed_dim: int, embedding width.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.

    Example:
    >>> import numpy as np
    >>> layer = TokenAndPositionEmbedding(vocab_size=10, max_len=8, embed_dim=4)
    >>> tuple(layer(np.array([[2, 3, 0]])).shape)
    (1, 3, 4)
    """

    def __init__(self, vocab_size: int, max_len: int, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.embed_dim = embed_dim
        self.token_embedding = keras.layers.Embedding(
            vocab_size,
            embed_dim,
            embeddings_initializer=bert_initializer(),
            dtype=self.dtype_policy,
            name="token_embedding",
        )

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embeddings = self.add_weight(
            shape=(self.max_len, self.embed_dim),
            initializer=bert_initializer(),
            name="position_embeddings",
        )

    def call(self, token_ids):
        length = ops.shape(token_ids)[-1]
        table = ops.convert_to_tensor(self.position_embeddings)
        positions = ops.slice(table, (0, 0), (length, self.embed_dim))
        return self.token_embedding(token_ids) + positions

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"vocab_size": self.vocab_size, "max_len": self.max_len, "embed_dim": self.embed_dim}
        )
        return config


@_serializable
class PositionalEncoding(keras.layers.Layer):
    """Scales embeddings by `sqrt(d_model)` and adds the sinusoids of Vaswani et al. 2017 (§3.4–3.5).

    `PE(pos, 2i) = sin(pos / 10000^(2i/d))`, `PE(pos, 2i+1) = cos(pos / 10000^(2i/d))`,
    computed for any sequence length, so one model serves every prefix length.

    Args:
        max_wavelength: float, the `10000` of the paper.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.

    Example:
    >>> tuple(PositionalEncoding()(keras.ops.zeros((1, 3, 4))).shape)
    (1, 3, 4)
    """

    def __init__(self, max_wavelength: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength

    def call(self, embeddings):
        width = embeddings.shape[-1]
        positions = ops.cast(ops.arange(ops.shape(embeddings)[1]), "float32")
        inverse_frequencies = ops.exp(
            ops.arange(0, width, 2, dtype="float32") * (-math.log(self.max_wavelength) / width)
        )
        angles = positions[:, None] * inverse_frequencies[None, :]
        encoding = ops.reshape(ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1), (-1, width))
        return embeddings * ops.cast(math.sqrt(width), embeddings.dtype) + ops.cast(
            encoding, embeddings.dtype
        )[None]

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}


@_serializable
class ViTPositionEmbedding(keras.layers.Layer):
    """Learned 1-D position embeddings of a class token and a grid of patches (ViT).

    The class token's embedding and the patch grid's are separate variables of
    shapes `(1, dim)` and `(grid_height, grid_width, dim)`, so that weights saved
    at one resolution load at another: `load_own_variables` keeps the class-token
    embedding and resizes the grid bilinearly (Dosovitskiy et al. 2020, section 3.2)
    with half-pixel centres and no antialiasing, as `keras.ops.image.resize` does
    (and big_vision and timm; the paper's first code release used corner-aligned
    `scipy.ndimage.zoom`).

    Args:
        grid_size: tuple of two ints, patches per column and per row.
        stddev: float, standard deviation of the normal initialiser.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.

    Example:
    >>> layer = ViTPositionEmbedding(grid_size=(2, 2))
    >>> tuple(layer(keras.ops.zeros((1, 5, 8))).shape)
    (1, 5, 8)
    """

    def __init__(self, grid_size, stddev: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(int(g) for g in grid_size)
        self.stddev = stddev

    def build(self, input_shape):
        dim = input_shape[-1]
        initializer = keras.initializers.RandomNormal(stddev=self.stddev)
        self.class_embedding = self.add_weight(shape=(1, dim), initializer=initializer, name="class_embedding")
        self.grid_embedding = self.add_weight(
            shape=(*self.grid_size, dim), initializer=initializer, name="grid_embedding"
        )

    def call(self, inputs):
        grid = ops.reshape(self.grid_embedding, (-1, self.grid_embedding.shape[-1]))
        embedding = ops.concatenate([self.class_embedding, grid], axis=0)
        return inputs + ops.cast(embedding, inputs.dtype)[None]

    def load_own_variables(self, store):
        if len(store.keys()) != 2:
            raise ValueError(
                f"Layer {self.name!r} expects 2 variables (class and grid embeddings), "
                f"found {len(store.keys())} in the saved weights."
            )
        grid = store["1"]
        if tuple(grid.shape[:2]) != self.grid_size:
            grid = ops.image.resize(
                grid, self.grid_size, interpolation="bilinear", antialias=False, data_format="channels_last"
            )
        self.class_embedding.assign(store["0"])
        self.grid_embedding.assign(grid)

    def get_config(self):
        return {**super().get_config(), "grid_size": self.grid_size, "stddev": self.stddev}


@_serializable
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position of a fixed-length sequence: `(batch, time, width)` in and out.

    One vector per position, as in BERT and ViT; the series Transformer uses
    it, since attention alone is blind to the order of its timesteps.

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


# ------------------------------------------------------------ sequence summaries


@_serializable
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


# ------------------------------------------------------------ post-norm blocks


class PostNormBlock(keras.layers.Layer):
    """What the post-norm blocks share: `LayerNorm(x + sublayer(x))` and the position-wise feed-forward network.

    Subclasses build their token-mixing sublayers in `build` (after calling
    `build_feed_forward`) and call them in `call`; the feed-forward network is
    `ff_outer(activation(ff_inner(x)))`, wrapped as `ff_norm(x + Dropout(FFN(x)))`.

    Args:
        ff_dim: int, inner width of the feed-forward network.
        dropout: float, dropout rate on the sublayer outputs.
        activation: str, activation of the feed-forward network's inner layer.
        layer_norm_epsilon: float, epsilon of the layer normalisations.
        kernel_initializer: initializer of the dense kernels.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.
    """

    def __init__(
        self,
        ff_dim: int,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_epsilon: float = 1e-6,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = _identifier(kernel_initializer)
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build_norm(self, name: str, width: int) -> keras.layers.LayerNormalization:
        """A built LayerNormalization of `width` features."""
        norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        norm.build((None, None, width))
        return norm

    def build_feed_forward(self, width: int) -> None:
        self.ff_inner = keras.layers.Dense(
            self.ff_dim,
            activation=self.activation,
            kernel_initializer=_fresh(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="ff_inner",
        )
        self.ff_outer = keras.layers.Dense(
            width, kernel_initializer=_fresh(self.kernel_initializer), dtype=self.dtype_policy, name="ff_outer"
        )
        self.ff_inner.build((None, None, width))
        self.ff_outer.build((None, None, self.ff_dim))
        self.ff_norm = self.build_norm("ff_norm", width)

    def residual(self, norm, x, sublayer_output, training):
        """`norm(x + Dropout(sublayer_output))`."""
        return norm(x + self.dropout_layer(sublayer_output, training=training))

    def feed_forward(self, x, training):
        return self.residual(self.ff_norm, x, self.ff_outer(self.ff_inner(x)), training)

    def get_config(self):
        return {
            **super().get_config(),
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": self.kernel_initializer,
        }


class _AttentionBlock(PostNormBlock):
    """A post-norm block whose token mixing is multi-head attention."""

    def __init__(
        self,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation: str = "relu",
        layer_norm_epsilon: float = 1e-6,
        kernel_initializer="glorot_uniform",
        flash_attention: bool | None = None,
        **kwargs,
    ):
        super().__init__(ff_dim, dropout, activation, layer_norm_epsilon, kernel_initializer, **kwargs)
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.flash_attention = flash_attention

    def build_attention(self, name: str, width: int) -> MultiHeadDotProductAttention:
        """A built attention layer over `width`-wide queries and values."""
        if width % self.num_heads:
            raise ValueError(f"d_model={width} is not divisible by num_heads={self.num_heads}.")
        attention = MultiHeadDotProductAttention(
            self.num_heads,
            width // self.num_heads,
            dropout=self.attention_dropout,
            kernel_initializer=self.kernel_initializer,
            flash_attention=self.flash_attention,
            dtype=self.dtype_policy,
            name=name,
        )
        attention.build((None, None, width), (None, None, width))
        return attention

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "attention_dropout": self.attention_dropout,
            "flash_attention": self.flash_attention,
        }


@_serializable
class TransformerEncoderLayer(_AttentionBlock):
    """Post-norm Transformer encoder layer (Vaswani et al. 2017; BERT, Devlin et al. 2019).

    `x = LN(x + Dropout(SelfAttention(x)))`, then `x = LN(x + Dropout(FFN(x)))`;
    padded keys are never attended to. The defaults are the Transformer's
    (ReLU, epsilon 1e-6, no attention dropout); BERT uses GELU, epsilon 1e-12,
    attention dropout equal to `dropout` and a truncated-normal initializer.

    Args:
        num_heads: int, attention heads; must divide the model width.
        ff_dim: int, inner width of the feed-forward network.
        dropout: float, dropout rate on the sublayer outputs.
        attention_dropout: float, dropout rate on the attention probabilities.
        activation: str, activation of the feed-forward network.
        layer_norm_epsilon: float, epsilon of the layer normalisations.
        kernel_initializer: initializer of the dense kernels.
        flash_attention: bool or None, see `MultiHeadDotProductAttention`.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.

    Call args:
        inputs: (batch, S, d_model).
        padding_mask: (batch, S) bool, `False` at padding; None attends everywhere.

    Example:
    >>> layer = TransformerEncoderLayer(num_heads=2, ff_dim=8)
    >>> tuple(layer(keras.ops.zeros((1, 3, 4))).shape)
    (1, 3, 4)
    """

    def build(self, inputs_shape, padding_mask_shape=None):
        width = inputs_shape[-1]
        self.build_feed_forward(width)
        self.self_attention = self.build_attention("self_attention", width)
        self.self_attention_norm = self.build_norm("self_attention_norm", width)

    def call(self, inputs, padding_mask=None, training=None):
        attended = self.self_attention(inputs, padding_mask=padding_mask, training=training)
        x = self.residual(self.self_attention_norm, inputs, attended, training)
        return self.feed_forward(x, training)

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return inputs_shape


@_serializable
class TransformerDecoderLayer(_AttentionBlock):
    """Post-norm Transformer decoder layer (Vaswani et al. 2017): causal self-attention, cross-attention, FFN.

    Args:
        num_heads: int, attention heads; must divide the model width.
        ff_dim: int, inner width of the feed-forward network.
        dropout: float, dropout rate on the sublayer outputs.
        attention_dropout: float, dropout rate on the attention probabilities.
        activation: str, activation of the feed-forward network.
        layer_norm_epsilon: float, epsilon of the layer normalisations.
        kernel_initializer: initializer of the dense kernels.
        flash_attention: bool or None, see `MultiHeadDotProductAttention`.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.

    Call args:
        inputs: (batch, T, d_model) target states.
        target_mask: (batch, T) bool, `False` at target padding.
        encoder_outputs: (batch, S, d_model).
        source_mask: (batch, S) bool, `False` at source padding.
        return_attention_scores: bool, also return the cross-attention weights.

    Returns:
        (batch, T, d_model), and with `return_attention_scores=True` the float32
        cross-attention weights (batch, heads, T, S) too.

    Example:
    >>> import numpy as np
    >>> layer = TransformerDecoderLayer(num_heads=2, ff_dim=8)
    >>> outputs, weights = layer(keras.ops.zeros((1, 3, 4)), np.ones((1, 3), bool),
    ...                          keras.ops.zeros((1, 5, 4)), np.ones((1, 5), bool), return_attention_scores=True)
    >>> tuple(outputs.shape), tuple(weights.shape)
    ((1, 3, 4), (1, 2, 3, 5))
    """

    def build(self, inputs_shape, target_mask_shape, encoder_outputs_shape, source_mask_shape):
        width = inputs_shape[-1]
        self.build_feed_forward(width)
        self.self_attention = self.build_attention("self_attention", width)
        self.self_attention_norm = self.build_norm("self_attention_norm", width)
        self.cross_attention = self.build_attention("cross_attention", width)
        self.cross_attention_norm = self.build_norm("cross_attention_norm", width)

    def call(
        self, inputs, target_mask, encoder_outputs, source_mask, training=None, return_attention_scores=False
    ):
        attended = self.self_attention(
            inputs, padding_mask=target_mask, use_causal_mask=True, training=training
        )
        x = self.residual(self.self_attention_norm, inputs, attended, training)
        attended = self.cross_attention(
            x, encoder_outputs, padding_mask=source_mask,
            return_attention_scores=return_attention_scores, training=training,
        )
        if return_attention_scores:
            attended, weights = attended
        x = self.feed_forward(self.residual(self.cross_attention_norm, x, attended, training), training)
        return (x, weights) if return_attention_scores else x

    def compute_output_spec(
        self, inputs, target_mask, encoder_outputs, source_mask, training=None, return_attention_scores=False
    ):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        batch, steps = inputs.shape[:2]
        weights = keras.KerasTensor((batch, self.num_heads, steps, encoder_outputs.shape[1]), dtype="float32")
        return outputs, weights


# ------------------------------------------------------------ pre-norm block


@_serializable
class PreNormEncoderLayer(keras.layers.Layer):
    """Pre-norm Transformer encoder layer (ViT eqs. 2-3; Xiong et al. 2020).

    `x + MSA(LN(x))`, then `x + MLP(LN(x))` with MLP = Dense(ff_dim, activation) →
    Dense(dim). The attention is a `MultiHeadDotProductAttention` (fused
    dot-product attention where the backend has it). Called with
    `return_attention_scores=True` the block also returns the float32 attention
    weights, shaped `(batch, heads, tokens, tokens)`.

    The attention's projections are saved as the block's `query`, `key`,
    `value` and `attention_output`, the layout ViT weights have always had:
    the attention layer itself is a private attribute, which Keras's saving
    visits after the public ones.

    Args:
        num_heads: int, attention heads; must divide the embedding size.
        ff_dim: int, hidden width of the MLP.
        dropout: float, dropout on the MLP's hidden layer and on both residual branches.
        attention_dropout: float, dropout on the attention weights.
        layer_norm_epsilon: float, epsilon of both layer normalisations.
        activation: str, activation of the MLP's hidden layer.

    Example:
    >>> block = PreNormEncoderLayer(num_heads=2, ff_dim=16)
    >>> outputs, weights = block(keras.ops.ones((1, 5, 8)), return_attention_scores=True)
    >>> tuple(outputs.shape), tuple(weights.shape)
    ((1, 5, 8), (1, 2, 5, 5))
    """

    def __init__(
        self,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        activation: str = "gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"Embedding size {dim} is not divisible by num_heads={self.num_heads}.")
        common = dict(dtype=self.dtype_policy)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_norm", **common
        )
        self._attention = MultiHeadDotProductAttention(
            self.num_heads, dropout=self.attention_dropout, name="attention", **common
        )
        self._attention.build(input_shape)
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="mlp_norm", **common)
        self.mlp_hidden = keras.layers.Dense(self.ff_dim, activation=self.activation, name="mlp_hidden", **common)
        self.mlp_output = keras.layers.Dense(dim, name="mlp_output", **common)
        self.dropout_layer = keras.layers.Dropout(self.dropout, **common)
        for layer in (self.attention_norm, self.mlp_norm, self.mlp_hidden):
            layer.build(input_shape)
        self.mlp_output.build((*input_shape[:-1], self.ff_dim))

    @property
    def query(self):
        return self._attention.query_dense

    @property
    def key(self):
        return self._attention.key_dense

    @property
    def value(self):
        return self._attention.value_dense

    @property
    def attention_output(self):
        return self._attention.output_dense

    def call(self, inputs, training=None, return_attention_scores=False):
        attended = self._attention(
            self.attention_norm(inputs), return_attention_scores=return_attention_scores, training=training
        )
        if return_attention_scores:
            attended, weights = attended
        x = inputs + self.dropout_layer(attended, training=training)
        y = self.dropout_layer(self.mlp_hidden(self.mlp_norm(x)), training=training)
        outputs = x + self.dropout_layer(self.mlp_output(y), training=training)
        return (outputs, weights) if return_attention_scores else outputs

    def compute_output_spec(self, inputs, training=None, return_attention_scores=False):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        tokens = inputs.shape[1]
        return outputs, keras.KerasTensor((inputs.shape[0], self.num_heads, tokens, tokens), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation": self.activation,
        }


