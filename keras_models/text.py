"""Text encoders over token ids: BERT and FNet, each with a classification and a masked-LM head.

Inputs are `InputSpec((seq_len,), dtype="int32", vocab_size=V)` token ids.
Two ids are reserved: `PAD_ID = 0` pads a sequence and `MASK_ID = 1` is the
`[MASK]` token of masked-LM pretraining; real tokens use ids 2 to V - 1. For
`pooling="cls"` put a `[CLS]` token of your vocabulary first in every sequence.

Both models keep the encoder as a sub-model named `"encoder"`, identical in the
classifier and the masked-LM model, so a classifier starts from pretrained
weights with `transfer_encoder_weights`:

    mlm = build_model("bert", spec, OutputSpec("masked_lm"))
    inputs, labels, weights = mask_tokens(token_ids, rng=0)
    mlm.compile("adam", loss=masked_lm_loss())
    mlm.fit(inputs, labels)
    classifier = build_model("bert", spec, OutputSpec("classification", 2))
    transfer_encoder_weights(mlm, classifier)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_models.heads import require_range, task_head
from keras_models.layers import (
    PAD_ID,
    MultiHeadDotProductAttention,
    PaddingMask,
    PostNormBlock,
    TokenAndPositionEmbedding,
    TransformerEncoderLayer,
    bert_initializer,
)
from keras_models.registry import register_model
from keras_models.specs import InputSpec, OutputSpec

MASK_ID = 1


@keras.saving.register_keras_serializable(package="keras_models")
class FNetBlock(PostNormBlock):
    """FNet's encoder layer (Lee-Thorp et al. 2021): attention replaced by a Fourier transform.

    `x = LN(x + Re(FFT2(x)))` over the (sequence, hidden) axes, then
    `x = LN(x + Dropout(FFN(x)))` with a GELU feed-forward network. The
    transform is computed in float32. As in the paper, padded positions are
    mixed like real ones, so the encoding of a real token depends on the
    padding (its length and its embeddings); the pooled classifier still
    averages over real tokens only.

    Args:
        ff_dim: int, inner width of the feed-forward network.
        dropout: float, dropout rate on the feed-forward output.
        layer_norm_epsilon: float, epsilon of the layer normalisations.
        activation: str, activation of the feed-forward network.
        kernel_initializer: initializer of the dense kernels; None: BERT's truncated normal.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.

    Example:
    >>> block = FNetBlock(ff_dim=8)
    >>> tuple(block(np.zeros((1, 3, 4), "float32")).shape)
    (1, 3, 4)
    """

    def __init__(
        self,
        ff_dim: int,
        dropout: float = 0.1,
        layer_norm_epsilon: float = 1e-12,
        activation: str = "gelu",
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(
            ff_dim, dropout, activation, layer_norm_epsilon, kernel_initializer or bert_initializer(), **kwargs
        )

    def build(self, input_shape):
        width = input_shape[-1]
        self.mixing_norm = self.build_norm("mixing_norm", width)
        self.build_feed_forward(width)

    def call(self, inputs, training=None):
        # No dropout on the Fourier sublayer, as in FNet.
        x = ops.cast(inputs, "float32")
        real, _ = ops.fft2((x, ops.zeros_like(x)))
        x = self.mixing_norm(inputs + ops.cast(real, self.compute_dtype))
        return self.feed_forward(x, training)

    def compute_output_shape(self, input_shape):
        return input_shape


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


def _check_text_spec(name: str, input_spec: InputSpec, max_len: int) -> None:
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


def _text_model(name, encoder, input_spec, output_spec, *, d_model, dropout, pooling) -> keras.Model:
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


def _embeddings(input_spec, *, d_model, max_len, dropout, projection: bool):
    token_ids = keras.Input(shape=input_spec.shape, dtype="int32", name="token_ids")
    x = TokenAndPositionEmbedding(input_spec.vocab_size, max_len, d_model, name="embeddings")(token_ids)
    x = keras.layers.LayerNormalization(epsilon=1e-12, name="embeddings_norm")(x)
    if projection:
        x = keras.layers.Dense(d_model, kernel_initializer=bert_initializer(), name="embedding_projection")(x)
    x = keras.layers.Dropout(dropout, name="embeddings_dropout")(x)
    return token_ids, x


def _check_common(name, input_spec, *, d_model, ff_dim, num_layers, dropout, max_len, pooling):
    require_range("d_model", d_model, 1, 8192, model=name)
    require_range("ff_dim", ff_dim, 1, 65536, model=name)
    require_range("num_layers", num_layers, 1, 48, model=name)
    require_range("dropout", dropout, 0.0, 0.9, model=name)
    require_range("max_len", max_len, 1, 1 << 20, model=name)
    if pooling not in ("cls", "mean"):
        raise ValueError(f"Hyperparameter pooling={pooling!r} of model {name!r} must be 'cls' or 'mean'.")
    _check_text_spec(name, input_spec, max_len)


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
    _check_common("bert", input_spec, d_model=d_model, ff_dim=ff_dim, num_layers=num_layers,
                  dropout=dropout, max_len=max_len, pooling=pooling)
    require_range("num_heads", num_heads, 1, 128, model="bert")
    if d_model % num_heads:
        raise ValueError(
            f"Hyperparameter d_model={d_model} of model 'bert' must be a multiple of num_heads={num_heads}."
        )
    token_ids, x = _embeddings(
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
    return _text_model(
        "bert", encoder, input_spec, output_spec, d_model=d_model, dropout=dropout, pooling=pooling
    )


def fnet_search_space(hp):
    return dict(
        d_model=hp.Choice("d_model", [32, 64, 128]),
        ff_dim=hp.Choice("ff_dim", [64, 128, 256]),
        num_layers=hp.Int("num_layers", 1, 4),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
        pooling=hp.Choice("pooling", ["mean", "cls"]),
    )


@register_model(
    "fnet",
    family="text",
    search_space=fnet_search_space,
    paper="Lee-Thorp et al. 2021, FNet: Mixing Tokens with Fourier Transforms",
    tasks=("classification", "masked_lm"),
)
def fnet(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    d_model: int = 128,
    ff_dim: int = 512,
    num_layers: int = 2,
    dropout: float = 0.1,
    max_len: int = 512,
    pooling: str = "mean",
) -> keras.Model:
    """FNet (Lee-Thorp et al. 2021): BERT's encoder with self-attention replaced by a 2D Fourier transform.

    Token plus learned position embeddings, LayerNorm, FNet's embedding
    projection and dropout, then `num_layers` `FNetBlock`s, whose token mixing
    is the real part of the FFT over (sequence, hidden) and has no weights.
    Padding is mixed like any token, as in the paper (see `FNetBlock`). Same
    `"encoder"` sub-model and heads as `bert`; no segment embeddings.

    Args:
        d_model: hidden width, 1 to 8192.
        ff_dim: feed-forward inner width.
        num_layers: encoder blocks, 1 to 48.
        dropout: dropout rate, in [0, 0.9].
        max_len: rows of the position table; at least the sequence length.
        pooling: `"mean"` over real tokens or `"cls"` for the first position.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> spec = InputSpec((16,), dtype="int32", vocab_size=100)
    >>> build_model("fnet", spec, OutputSpec("masked_lm"), d_model=16, ff_dim=32).output_shape
    (None, 16, 100)
    """
    _check_common("fnet", input_spec, d_model=d_model, ff_dim=ff_dim, num_layers=num_layers,
                  dropout=dropout, max_len=max_len, pooling=pooling)
    token_ids, x = _embeddings(
        input_spec, d_model=d_model, max_len=max_len, dropout=dropout, projection=True
    )
    for i in range(num_layers):
        x = FNetBlock(ff_dim, dropout, name=f"block_{i}")(x)
    encoder = keras.Model(token_ids, x, name="encoder")
    return _text_model(
        "fnet", encoder, input_spec, output_spec, d_model=d_model, dropout=dropout, pooling=pooling
    )


def mask_tokens(token_ids, rng, mask_rate: float = 0.15, vocab_size: int | None = None):
    """BERT's masking for masked-LM pretraining (Devlin et al. 2019, Section 3.1).

    Each real token (id > `MASK_ID`) is selected with probability `mask_rate`;
    a selected token is replaced by `MASK_ID` 80% of the time, by a random real
    token 10% of the time, and kept 10% of the time.

    Args:
        token_ids: integer array `(batch, seq_len)`.
        rng: a `numpy.random.Generator` or a seed.
        mask_rate: probability that a real token is selected.
        vocab_size: random replacements are drawn from `[MASK_ID + 1, vocab_size)`;
            defaults to `token_ids.max() + 1`.

    Returns:
        `(inputs, labels, sample_weights)`: the corrupted ids; the original ids at
        selected positions and `PAD_ID` elsewhere (what `masked_lm_loss` ignores);
        float32 weights, 1 at selected positions and 0 elsewhere.
    """
    if not 0.0 <= mask_rate <= 1.0:
        raise ValueError(f"mask_rate={mask_rate!r} must be in [0, 1].")
    rng = np.random.default_rng(rng)
    token_ids = np.asarray(token_ids)
    vocab_size = vocab_size or int(token_ids.max()) + 1
    if vocab_size <= MASK_ID + 1:
        raise ValueError(f"vocab_size={vocab_size} leaves no real token to draw (ids 0 and 1 are reserved).")
    selected = (token_ids > MASK_ID) & (rng.random(token_ids.shape) < mask_rate)
    action = rng.random(token_ids.shape)
    inputs = token_ids.copy()
    inputs[selected & (action < 0.8)] = MASK_ID
    randomised = selected & (action >= 0.8) & (action < 0.9)
    inputs[randomised] = rng.integers(MASK_ID + 1, vocab_size, size=int(randomised.sum()))
    labels = np.where(selected, token_ids, PAD_ID).astype(token_ids.dtype)
    return inputs, labels, selected.astype("float32")


def masked_lm_loss() -> keras.losses.Loss:
    """Cross-entropy averaged over the masked positions only.

    Positions whose label is `PAD_ID` (unselected by `mask_tokens`) are ignored
    and the mean is over the selected positions of the batch, as in BERT.
    """
    return keras.losses.SparseCategoricalCrossentropy(ignore_class=PAD_ID, name="masked_lm_loss")


def transfer_encoder_weights(pretrained: keras.Model, target: keras.Model) -> None:
    """Copies the `"encoder"` sub-model's weights of `pretrained` (e.g. a masked-LM model) into `target`.

    Args:
        pretrained: a text model built by `build_model`, usually the masked-LM one.
        target: a model of the same architecture and hyperparameters, e.g. its classifier.
    """
    source, destination = pretrained.get_layer("encoder"), target.get_layer("encoder")
    source_shapes = [tuple(w.shape) for w in source.weights]
    destination_shapes = [tuple(w.shape) for w in destination.weights]
    if source_shapes != destination_shapes:
        raise ValueError(
            "The encoders differ: build both models with the same input spec and "
            f"encoder hyperparameters (weight shapes {source_shapes} vs {destination_shapes})."
        )
    destination.set_weights(source.get_weights())


# ------------------------------------------- the BERT block with Dense projections


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
    of BERT models saved before `bert` used `TransformerEncoderLayer`, and
    `series_transformer` (`keras_models.sequence`) still builds its blocks with it.

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
