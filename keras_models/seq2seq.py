"""Sequence-to-sequence translation: RNN encoder–decoders with attention, and the Transformer.

Token ids shared by every model, the data pipeline and `keras_models.decoding`:

- `PAD_ID = 0`: padding; masked out of every attention and of the loss.
- `START_ID = 1`: first token of `target_in` (the decoder's input).
- `END_ID = 2`: end of sentence; the last real token of each target.

A model takes `{"source": (batch, src_len) int, "target_in": (batch, tgt_len) int}`,
where `target_in` is the target shifted right behind `START_ID` (teacher
forcing), and returns float32 probabilities over the target vocabulary,
`(batch, tgt_len, tgt_vocab)`. Step `t` depends only on `target_in[:, :t + 1]`
and on the real (non-padding) source tokens, so a decoder can re-run the model
on its growing prefix (see `keras_models.decoding`).
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from keras_models.heads import require_range
from keras_models.layers import (
    PAD_ID,
    PaddingMask,
    PositionalEncoding,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
)
from keras_models.registry import register_model
from keras_models.specs import InputSpec, OutputSpec

START_ID = 1
END_ID = 2

# Added to the scores of masked positions before the softmax (in float32).
_MASKED_SCORE = -1e9


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="keras_models")(cls)


def _masked_softmax(scores, mask):
    """Softmax over the last axis in float32; positions where `mask` is `False` weigh 0."""
    scores = ops.cast(scores, "float32")
    if mask is not None:
        scores = ops.where(mask, scores, _MASKED_SCORE)
    return ops.softmax(scores, axis=-1)


def _masked_softmax_attention(scores, values, key_mask):
    """Attends with (batch, Tq, S) `scores` over (batch, S, D) `values`; returns (context, weights)."""
    weights = _masked_softmax(scores, key_mask[:, None, :])
    return ops.matmul(ops.cast(weights, values.dtype), values), weights


# ------------------------------------------------------- RNN attention layers
# Neither uses `keras.ops.dot_product_attention`: Bahdanau's score is additive
# (`vᵀ tanh(W q + U h)`), not a dot product, and Luong's weights are always an
# output (the decoder's attention map), which the fused op does not return.


@_serializable
class BahdanauAttention(keras.layers.Layer):
    """Additive attention (Bahdanau et al. 2015): `e_j = vᵀ tanh(W_a q + U_a h_j)`.

    Args:
        units: int, width of the alignment model's hidden layer.

    Call args:
        query: (batch, Tq, Dq) decoder states.
        keys: (batch, S, Dk) encoder annotations, also the values.
        key_mask: (batch, S) bool, `False` at source padding.

    Returns:
        `(context, weights)`: (batch, Tq, Dk) and float32 (batch, Tq, S).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.query_dense = keras.layers.Dense(units, use_bias=False, name="W_a")
        self.key_dense = keras.layers.Dense(units, use_bias=False, name="U_a")
        self.score_dense = keras.layers.Dense(1, use_bias=False, name="v_a")

    def build(self, query_shape, keys_shape, key_mask_shape=None):
        self.query_dense.build(query_shape)
        self.key_dense.build(keys_shape)
        self.score_dense.build(tuple(keys_shape[:-1]) + (self.units,))

    def project_keys(self, keys):
        """`U_a h_j`, computed once per source sentence rather than at every decoder step."""
        return self.key_dense(keys)

    def attend(self, query, projected_keys, keys, key_mask):
        hidden = ops.tanh(self.query_dense(query)[:, :, None, :] + projected_keys[:, None, :, :])
        scores = ops.squeeze(self.score_dense(hidden), axis=-1)
        return _masked_softmax_attention(scores, keys, key_mask)

    def call(self, query, keys, key_mask):
        return self.attend(query, self.project_keys(keys), keys, key_mask)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@_serializable
class LuongAttention(keras.layers.Layer):
    """Multiplicative global attention (Luong et al. 2015): `dot` is `qᵀh_j`, `general` is `qᵀW_a h_j`.

    Args:
        score: str, `"dot"` or `"general"`.

    Call args:
        query: (batch, Tq, D) decoder states.
        keys: (batch, S, D) encoder states, also the values.
        key_mask: (batch, S) bool, `False` at source padding.

    Returns:
        `(context, weights)`: (batch, Tq, D) and float32 (batch, Tq, S).
    """

    def __init__(self, score: str = "general", **kwargs):
        super().__init__(**kwargs)
        if score not in ("dot", "general"):
            raise ValueError(f"LuongAttention score={score!r} must be 'dot' or 'general'.")
        self.score = score
        self.key_dense = None

    def build(self, query_shape, keys_shape, key_mask_shape=None):
        if self.score == "general":
            self.key_dense = keras.layers.Dense(query_shape[-1], use_bias=False, name="W_a")
            self.key_dense.build(keys_shape)
        elif query_shape[-1] != keys_shape[-1]:
            raise ValueError(
                "Dot attention needs equal query and key widths, "
                f"got {query_shape[-1]} and {keys_shape[-1]}."
            )

    def call(self, query, keys, key_mask):
        projected = self.key_dense(keys) if self.score == "general" else keys
        scores = ops.matmul(query, ops.transpose(projected, (0, 2, 1)))
        return _masked_softmax_attention(scores, keys, key_mask)

    def get_config(self):
        return {**super().get_config(), "score": self.score}


def _rnn_cell(cell: str, units: int, **kwargs):
    # reset_after=False is the GRU of Cho et al. 2014 used by Bahdanau et al.
    if cell == "gru":
        return keras.layers.GRUCell(units, reset_after=False, **kwargs)
    return keras.layers.LSTMCell(units, **kwargs)


def _rnn_layer(cell: str, units: int, **kwargs):
    if cell == "gru":
        return keras.layers.GRU(units, reset_after=False, **kwargs)
    return keras.layers.LSTM(units, **kwargs)


@_serializable
class BahdanauDecoder(keras.layers.Layer):
    """The attentive recurrent decoder of Bahdanau et al. 2015.

    At step `i` the previous state `s_{i-1}` attends over the annotations to
    give the context `c_i`, then `s_i = RNN(s_{i-1}, [E y_{i-1}; c_i])`. The
    context therefore feeds the recurrence, which is why this is a loop over
    target steps (`keras.ops.scan`) and not an RNN followed by attention.

    Args:
        units: int, decoder state width.
        attention_units: int, width of the alignment model.
        cell: str, `"gru"` (the paper) or `"lstm"`.

    Call args:
        target_embeddings: (batch, T, E) embedded `target_in`.
        annotations: (batch, S, Dk) encoder outputs.
        source_mask: (batch, S) bool.
        initial_state: list of (batch, units) tensors (one for GRU, `[h, c]` for LSTM).

    Returns:
        `(states, contexts, weights)`: (batch, T, units), (batch, T, Dk), float32 (batch, T, S).
    """

    def __init__(self, units: int, attention_units: int, cell: str = "gru", **kwargs):
        super().__init__(**kwargs)
        if cell not in ("gru", "lstm"):
            raise ValueError(f"BahdanauDecoder cell={cell!r} must be 'gru' or 'lstm'.")
        self.units = units
        self.attention_units = attention_units
        self.cell = cell
        self.attention = BahdanauAttention(attention_units, name="attention")
        self.rnn_cell = _rnn_cell(cell, units, name="cell")

    def build(self, target_embeddings_shape, annotations_shape, source_mask_shape, initial_state_shape):
        self.attention.build((None, None, self.units), annotations_shape)
        self.rnn_cell.build((None, target_embeddings_shape[-1] + annotations_shape[-1]))

    def call(self, target_embeddings, annotations, source_mask, initial_state):
        projected_keys = self.attention.project_keys(annotations)

        def step(carry, embedding):
            states, _, _ = carry
            context, weights = self.attention.attend(
                states[0][:, None, :], projected_keys, annotations, source_mask
            )
            context, weights = context[:, 0], weights[:, 0]
            _, new_states = self.rnn_cell(ops.concatenate([embedding, context], axis=-1), states)
            carry = ([ops.cast(s, self.compute_dtype) for s in new_states], context, weights)
            return carry, carry

        init = (
            [ops.cast(s, self.compute_dtype) for s in initial_state],
            ops.zeros_like(annotations[:, 0, :]),
            ops.zeros_like(ops.cast(source_mask, "float32")),
        )
        _, (states, contexts, weights) = ops.scan(
            step, init, ops.transpose(target_embeddings, (1, 0, 2))
        )
        return tuple(ops.transpose(x, (1, 0, 2)) for x in (states[0], contexts, weights))

    def compute_output_spec(self, target_embeddings, annotations, source_mask, initial_state):
        batch, steps = target_embeddings.shape[:2]
        return (
            keras.KerasTensor((batch, steps, self.units), dtype=self.compute_dtype),
            keras.KerasTensor((batch, steps, annotations.shape[-1]), dtype=self.compute_dtype),
            keras.KerasTensor((batch, steps, annotations.shape[1]), dtype="float32"),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "attention_units": self.attention_units,
            "cell": self.cell,
        }


@_serializable
class Maxout(keras.layers.Layer):
    """Maxout (Goodfellow et al. 2013): the maximum over groups of `pool_size` consecutive features.

    Args:
        pool_size: int, features per group; the last axis must be a multiple of it.
    """

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def call(self, inputs):
        groups = (inputs.shape[-1] // self.pool_size, self.pool_size)
        return ops.max(ops.reshape(inputs, tuple(ops.shape(inputs)[:-1]) + groups), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] // self.pool_size,)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


# ------------------------------------------------------------ Transformer layers


@_serializable
class TiedEmbedding(keras.layers.Layer):
    """A token embedding whose transpose is also the pre-softmax projection (Vaswani et al. 2017, §3.4).

    Args:
        vocab_size: int, number of token ids.
        output_dim: int, embedding width.

    Call args:
        inputs: token ids, or with `reverse=True` hidden states (..., output_dim).
        reverse: bool, project hidden states onto the vocabulary (logits).
    """

    def __init__(self, vocab_size: int, output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.output_dim = output_dim

    def build(self, inputs_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.vocab_size, self.output_dim),
            initializer=keras.initializers.RandomNormal(stddev=self.output_dim**-0.5),
            name="embeddings",
        )

    def call(self, inputs, reverse=False):
        embeddings = ops.cast(self.embeddings, self.compute_dtype)
        if reverse:
            return ops.matmul(inputs, ops.transpose(embeddings))
        return ops.take(embeddings, ops.cast(inputs, "int32"), axis=0)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor(inputs.shape[:-1] + (self.vocab_size,), dtype=self.compute_dtype)
        return keras.KerasTensor(inputs.shape + (self.output_dim,), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "output_dim": self.output_dim}


# ------------------------------------------------------------------ builders


def _check_specs(input_spec: InputSpec, output_spec: OutputSpec, model: str):
    if input_spec.vocab_size is None or output_spec.vocab_size is None:
        raise ValueError(
            f"Model {model!r} needs InputSpec.vocab_size (source) and OutputSpec.vocab_size (target)."
        )
    if len(input_spec.shape) != 1:
        raise ValueError(f"Model {model!r} takes token ids of shape (src_len,), got {input_spec.shape}.")


def _seq2seq_inputs(input_spec: InputSpec):
    source = keras.Input(shape=input_spec.shape, dtype="int32", name="source")
    target_in = keras.Input(shape=(None,), dtype="int32", name="target_in")
    return {"source": source, "target_in": target_in}


def seq2seq_attention_search_space(hp):
    return dict(
        attention=hp.Choice("attention", ["bahdanau", "luong_dot", "luong_general"]),
        cell=hp.Choice("cell", ["gru", "lstm"]),
        embed_dim=hp.Int("embed_dim", 32, 128, step=32),
        units=hp.Int("units", 64, 256, step=64),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
    )


@register_model(
    "seq2seq_attention",
    family="seq2seq",
    search_space=seq2seq_attention_search_space,
    paper=(
        "Bahdanau, Cho & Bengio 2015, Neural Machine Translation by Jointly Learning to Align "
        "and Translate; Luong, Pham & Manning 2015, Effective Approaches to Attention-based "
        "Neural Machine Translation"
    ),
    tasks=("seq2seq",),
)
def seq2seq_attention(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    attention: str = "bahdanau",
    cell: str = "gru",
    embed_dim: int = 64,
    units: int = 128,
    dropout: float = 0.1,
) -> keras.Model:
    """An RNN encoder–decoder, with attention over the source unless `attention="none"`.

    - `"bahdanau"` (Bahdanau et al. 2015): a bidirectional encoder; the
      decoder's initial state is `tanh(W_s ←h_1)`; at each step the previous
      decoder state scores every annotation additively, and the context feeds
      the recurrence; the output is a maxout deep output over
      `[s_i; E y_{i-1}; c_i]` (`units` maxout units, pool 2).
    - `"luong_dot"` / `"luong_general"` (Luong et al. 2015, global attention):
      a unidirectional encoder whose final state starts the decoder; each
      decoder state `h_t` scores the encoder states (`h_tᵀh̄_s` or
      `h_tᵀW_a h̄_s`), and `h̃_t = tanh(W_c[c_t; h_t])` feeds the softmax.
      One layer each and no input feeding (the paper stacks 4 LSTM layers).
    - `"none"` (Sutskever et al. 2014, one layer): the Luong encoder and
      decoder without attention; the encoder's final state is all the
      decoder learns of the source, the baseline attention is measured against.

    Source padding (id 0) is masked in the encoder and in the attention.

    Args:
        attention: `"bahdanau"`, `"luong_dot"`, `"luong_general"` or `"none"`.
        cell: `"gru"` (Cho et al. 2014, reset gate before the recurrent product) or `"lstm"`.
        embed_dim: source and target embedding width.
        units: encoder (per direction) and decoder state width.
        dropout: rate on the embeddings and on the features before the softmax.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("seq2seq_attention", InputSpec((12,), "int32", 40),
    ...                     OutputSpec("seq2seq", vocab_size=50), units=16, embed_dim=8)
    >>> model.output_shape
    (None, None, 50)
    """
    name = "seq2seq_attention"
    _check_specs(input_spec, output_spec, name)
    if attention not in ("bahdanau", "luong_dot", "luong_general", "none"):
        raise ValueError(
            f"Hyperparameter attention={attention!r} of model {name!r} must be "
            "'bahdanau', 'luong_dot', 'luong_general' or 'none'."
        )
    if cell not in ("gru", "lstm"):
        raise ValueError(f"Hyperparameter cell={cell!r} of model {name!r} must be 'gru' or 'lstm'.")
    require_range("embed_dim", embed_dim, 1, 4096, model=name)
    require_range("units", units, 1, 4096, model=name)
    require_range("dropout", dropout, 0.0, 0.9, model=name)

    inputs = _seq2seq_inputs(input_spec)
    source_mask = PaddingMask(name="source_mask")(inputs["source"])
    source = keras.layers.Embedding(input_spec.vocab_size, embed_dim, name="source_embedding")(
        inputs["source"]
    )
    target = keras.layers.Embedding(output_spec.vocab_size, embed_dim, name="target_embedding")(
        inputs["target_in"]
    )
    source = keras.layers.Dropout(dropout, name="source_dropout")(source)
    target = keras.layers.Dropout(dropout, name="target_dropout")(target)

    if attention == "bahdanau":
        encoder = keras.layers.Bidirectional(
            _rnn_layer(cell, units, return_sequences=True, return_state=True), name="encoder"
        )
        annotations, *final_states = encoder(source, mask=source_mask)
        backward_states = final_states[len(final_states) // 2:]
        initial_state = [
            keras.layers.Dense(units, activation="tanh", name=f"initial_state_{i}")(s)
            for i, s in enumerate(backward_states)
        ]
        states, contexts, _ = BahdanauDecoder(units, units, cell=cell, name="decoder")(
            target, annotations, source_mask, initial_state
        )
        features = keras.layers.Concatenate(name="deep_output_inputs")([states, target, contexts])
        features = keras.layers.Dense(2 * units, name="deep_output")(features)
        features = Maxout(2, name="maxout")(features)
    else:
        encoder = _rnn_layer(cell, units, return_sequences=True, return_state=True, name="encoder")
        encoder_states, *final_states = encoder(source, mask=source_mask)
        decoder = _rnn_layer(cell, units, return_sequences=True, name="decoder")
        states = decoder(target, initial_state=final_states)
        if attention == "none":
            features = states
        else:
            contexts, _ = LuongAttention(attention.removeprefix("luong_"), name="attention")(
                states, encoder_states, source_mask
            )
            features = keras.layers.Concatenate(name="attentional_inputs")([contexts, states])
            attentional = keras.layers.Dense(units, activation="tanh", use_bias=False, name="attentional")
            features = attentional(features)

    features = keras.layers.Dropout(dropout, name="output_dropout")(features)
    probabilities = keras.layers.Dense(
        output_spec.vocab_size, activation="softmax", dtype="float32", name="probabilities"
    )(features)
    return keras.Model(inputs, probabilities, name=f"seq2seq_{attention}")


def transformer_search_space(hp):
    return dict(
        d_model=hp.Choice("d_model", [64, 128, 256]),
        num_heads=hp.Choice("num_heads", [2, 4, 8]),
        ff_dim=hp.Choice("ff_dim", [128, 256, 512, 1024]),
        num_layers=hp.Int("num_layers", 1, 4),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
    )


@register_model(
    "transformer",
    family="seq2seq",
    search_space=transformer_search_space,
    paper="Vaswani et al. 2017, Attention Is All You Need",
    tasks=("seq2seq",),
)
def transformer(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    d_model: int = 128,
    num_heads: int = 4,
    ff_dim: int = 512,
    num_layers: int = 2,
    dropout: float = 0.1,
) -> keras.Model:
    """The Transformer encoder–decoder (Vaswani et al. 2017), post-norm as in the paper.

    Embeddings scaled by `sqrt(d_model)` plus sinusoidal positions, `num_layers`
    encoder layers (self-attention, FFN) and decoder layers (causal
    self-attention, cross-attention, FFN), each sublayer wrapped as
    `LayerNorm(x + Dropout(sublayer(x)))`. Source padding is masked in the
    encoder and cross-attention; the decoder's self-attention is causal and
    masks target padding. The target embedding is tied to the pre-softmax
    projection (§3.4); the source embedding is separate because source and
    target vocabularies differ here. The paper's base model is
    `d_model=512, num_heads=8, ff_dim=2048, num_layers=6, dropout=0.1`.

    Args:
        d_model: model width, even and divisible by `num_heads`.
        num_heads: attention heads.
        ff_dim: inner width of the position-wise feed-forward networks.
        num_layers: encoder layers, and as many decoder layers.
        dropout: rate on embeddings+positions and on every sublayer output.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("transformer", InputSpec((12,), "int32", 40),
    ...                     OutputSpec("seq2seq", vocab_size=50), d_model=16, num_heads=2, ff_dim=32)
    >>> model.output_shape
    (None, None, 50)
    """
    name = "transformer"
    _check_specs(input_spec, output_spec, name)
    require_range("d_model", d_model, 2, 8192, model=name)
    require_range("num_heads", num_heads, 1, d_model, model=name)
    require_range("ff_dim", ff_dim, 1, 65536, model=name)
    require_range("num_layers", num_layers, 1, 24, model=name)
    require_range("dropout", dropout, 0.0, 0.9, model=name)
    if d_model % num_heads or d_model % 2:
        raise ValueError(
            f"Hyperparameter d_model={d_model} of model {name!r} must be even and divisible "
            f"by num_heads={num_heads}."
        )

    inputs = _seq2seq_inputs(input_spec)
    source_mask = PaddingMask(name="source_mask")(inputs["source"])
    target_mask = PaddingMask(name="target_mask")(inputs["target_in"])
    source_embedding = keras.layers.Embedding(
        input_spec.vocab_size,
        d_model,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=d_model**-0.5),
        name="source_embedding",
    )
    target_embedding = TiedEmbedding(output_spec.vocab_size, d_model, name="target_embedding")

    x = PositionalEncoding(name="source_positions")(source_embedding(inputs["source"]))
    x = keras.layers.Dropout(dropout, name="source_dropout")(x)
    for i in range(num_layers):
        x = TransformerEncoderLayer(num_heads, ff_dim, dropout, name=f"encoder_{i}")(x, source_mask)
    encoder_outputs = x

    x = PositionalEncoding(name="target_positions")(target_embedding(inputs["target_in"]))
    x = keras.layers.Dropout(dropout, name="target_dropout")(x)
    for i in range(num_layers):
        x = TransformerDecoderLayer(num_heads, ff_dim, dropout, name=f"decoder_{i}")(
            x, target_mask, encoder_outputs, source_mask
        )
    logits = target_embedding(x, reverse=True)
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name="transformer")


# ------------------------------------------------- attention maps for plots

class _CrossAttentionProbe(keras.Model):
    """Re-runs a Transformer's last decoder layer on its inputs, returning its cross-attention over heads.

    A subclassed model, because the decoder layer's second call returns the
    attention weights as well, which a functional model cannot hold beside its first call.
    """

    def __init__(self, model: keras.Model, layer: TransformerDecoderLayer):
        super().__init__(name=f"{model.name}_attention")
        self.layer_inputs = keras.Model(model.input, layer.input)
        self.decoder_layer = layer

    def call(self, inputs):
        _, weights = self.decoder_layer(*self.layer_inputs(inputs), return_attention_scores=True)
        return ops.mean(weights, axis=1)


def attention_model(model: keras.Model) -> keras.Model:
    """A model with the same inputs returning the attention over the source, (batch, tgt_len, src_len).

    That is the decoder's attention for the RNN models, and the last decoder
    layer's cross-attention averaged over heads for the Transformer.
    """
    layers = [
        layer for layer in model.layers
        if isinstance(layer, (BahdanauDecoder, LuongAttention, TransformerDecoderLayer))
    ]
    if not layers:
        raise ValueError(f"Model {model.name!r} has no attention layer over the source.")
    if isinstance(layers[-1], TransformerDecoderLayer):
        return _CrossAttentionProbe(model, layers[-1])
    return keras.Model(model.input, layers[-1].output[-1], name=f"{model.name}_attention")


def save_attention_heatmap(weights, src_tokens, tgt_tokens, path) -> None:
    """Writes one example's attention (tgt_len, src_len) as a PNG heatmap, rows cropped to the tokens.

    Uses matplotlib's Agg canvas directly, so it never touches pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = np.asarray(weights, dtype="float32")[: len(tgt_tokens), : len(src_tokens)]
    figure = Figure(figsize=(1.0 + 0.35 * len(src_tokens), 1.0 + 0.35 * len(tgt_tokens)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(src_tokens)), labels=[str(t) for t in src_tokens], rotation=90)
    axes.set_yticks(range(len(tgt_tokens)), labels=[str(t) for t in tgt_tokens])
    axes.set_xlabel("source")
    axes.set_ylabel("target")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)


# --------------------------------------------------------- training objects


@_serializable
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5)` (Vaswani et al. 2017, §5.3).

    Rises linearly for `warmup_steps`, peaks at `step == warmup_steps` with
    `(d_model · warmup_steps)^-0.5`, then decays as `step^-0.5`. Step 0 (the
    optimizer's first update) is treated as step 1.

    Args:
        d_model: int, model width.
        warmup_steps: int, steps of linear warm-up.
    """

    def __init__(self, d_model: int, warmup_steps: int = 4000):
        self.d_model = d_model
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.maximum(ops.cast(step, "float32"), 1.0)
        return self.d_model**-0.5 * ops.minimum(ops.rsqrt(step), step * self.warmup_steps**-1.5)

    def get_config(self):
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps}


@_serializable
class MaskedLabelSmoothedCrossEntropy(keras.losses.Loss):
    """Sparse cross-entropy on probabilities with label smoothing, ignoring padding labels (`PAD_ID`).

    The target distribution is `(1 - smoothing)·onehot(y) + smoothing/V`
    (Szegedy et al. 2016; 0.1 in Vaswani et al. 2017). With the default
    `sum_over_batch_size` reduction the loss is the mean over the real
    (non-padding) target tokens of the batch.

    Args:
        smoothing: float in [0, 1), probability mass spread uniformly over the vocabulary.
        name: str, loss name.
        reduction: str, a Keras loss reduction.
        dtype: dtype of the loss computation, float32 by default.
    """

    def __init__(
        self,
        smoothing: float = 0.1,
        name: str = "masked_label_smoothed_cross_entropy",
        reduction: str = "sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing={smoothing!r} must be in [0, 1).")
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0))
        nll = -ops.squeeze(ops.take_along_axis(log_probs, y_true[..., None], axis=-1), axis=-1)
        uniform = -ops.mean(log_probs, axis=-1)
        losses = (1.0 - self.smoothing) * nll + self.smoothing * uniform
        mask = ops.cast(ops.not_equal(y_true, PAD_ID), "float32")
        if self.reduction == "sum_over_batch_size":
            # The reduction divides by every position; reweight so it divides by real tokens only.
            mask = mask * ops.sum(ops.ones_like(mask)) / ops.maximum(ops.sum(mask), 1.0)
        return losses * mask

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def masked_label_smoothed_loss(smoothing: float = 0.1) -> MaskedLabelSmoothedCrossEntropy:
    """The seq2seq training loss: label-smoothed sparse cross-entropy that ignores padding."""
    return MaskedLabelSmoothedCrossEntropy(smoothing)
