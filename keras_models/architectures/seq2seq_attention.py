"""RNN encoder–decoders for translation, with the attention of Bahdanau et al. 2015 or Luong et al. 2015.

Inputs, outputs and token ids are those of every seq2seq model (`keras_models.seq2seq`).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_models.heads import require_range
from keras_models.layers import PaddingMask
from keras_models.registry import Example, register_model
from keras_models.seq2seq import check_specs, seq2seq_inputs
from keras_models.specs import InputSpec, OutputSpec

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
    example=Example(InputSpec((10,), "int32", 30), OutputSpec("seq2seq", vocab_size=40), dict(embed_dim=8, units=16)),
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
    check_specs(input_spec, output_spec, name)
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

    inputs = seq2seq_inputs(input_spec)
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

