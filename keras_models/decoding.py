"""Greedy and beam-search decoding for the seq2seq models, sequence scoring, and their attention maps.

Both decoders re-run the model on the whole target prefix at every step (no
key/value cache): simple, and correct for every model of `keras_models.seq2seq`
because step `t` only sees `target_in[:, :t + 1]`. The prefix lives in a
fixed-size buffer padded with `PAD_ID`, so the compiled predict function is
traced once per batch shape instead of once per prefix length.

Returned sequences exclude `START_ID`, end with `END_ID` when the model emits
it, and are at most `max_len` tokens long.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_models.architectures.seq2seq_attention import BahdanauDecoder, LuongAttention
from keras_models.layers import TransformerDecoderLayer
from keras_models.seq2seq import END_ID, PAD_ID, START_ID


def _as_batch(source_ids):
    source = np.asarray(source_ids, dtype="int32")
    return (source[None], True) if source.ndim == 1 else (source, False)


def _probabilities(model, source, target_in):
    probs = model.predict_on_batch({"source": source, "target_in": target_in})
    return np.asarray(probs, dtype="float64")


def greedy_decode(model, source_ids, max_len: int = 50):
    """The most probable next token at every step, until `END_ID` or `max_len` tokens.

    Args:
        model: a seq2seq model taking `{"source", "target_in"}`.
        source_ids: one source `(src_len,)` or a batch `(batch, src_len)` of token ids.
        max_len: most tokens generated per sequence, the end token included.

    Returns:
        A list of token ids for one source, a list of such lists for a batch.
    """
    source, single = _as_batch(source_ids)
    batch = len(source)
    target_in = np.full((batch, max_len), PAD_ID, dtype="int32")
    target_in[:, 0] = START_ID
    sequences = [[] for _ in range(batch)]
    finished = np.zeros(batch, dtype=bool)
    for step in range(max_len):
        tokens = _probabilities(model, source, target_in)[:, step].argmax(-1)
        for row in np.flatnonzero(~finished):
            sequences[row].append(int(tokens[row]))
        finished |= tokens == END_ID
        if finished.all() or step + 1 == max_len:
            break
        target_in[:, step + 1] = np.where(finished, PAD_ID, tokens)
    return sequences[0] if single else sequences


def _length_penalty(length: int, alpha: float) -> float:
    # Wu et al. 2016 (GNMT): ((5 + |Y|) / 6) ** alpha; alpha = 0 compares raw log-probabilities.
    return ((5.0 + length) / 6.0) ** alpha


def _beam_search_one(model, source, beam_width, max_len, length_penalty):
    def normalised(hypothesis):
        return hypothesis[1] / _length_penalty(len(hypothesis[0]), length_penalty)

    sources = np.repeat(source[None], beam_width, axis=0)
    target_in = np.full((beam_width, max_len), PAD_ID, dtype="int32")
    target_in[:, 0] = START_ID
    live = [((), 0.0)]  # (tokens, log-probability) of the open prefixes, best first
    finished = []
    for step in range(max_len):
        for row, (tokens, _) in enumerate(live):
            target_in[row, 1 : step + 1] = tokens
        log_probs = np.log(np.maximum(_probabilities(model, sources, target_in)[:, step], 1e-300))
        candidates = []
        for row, (tokens, score) in enumerate(live):
            for token in np.argsort(-log_probs[row], kind="stable")[:beam_width]:
                candidates.append((tokens + (int(token),), score + log_probs[row, token]))
        candidates.sort(key=lambda c: -c[1])
        live = []
        for candidate in candidates:
            if candidate[0][-1] == END_ID:
                finished.append(candidate)
            elif len(live) < beam_width:
                live.append(candidate)
        if not live:
            break
        # A prefix's log-probability only falls as it grows, so its best normalised score is
        # bounded by dividing by the largest penalty it can still reach.
        reachable = max(_length_penalty(step + 2, length_penalty), _length_penalty(max_len, length_penalty))
        if finished and max(map(normalised, finished)) >= live[0][1] / reachable:
            break
    # An open prefix's score lacks its ending, so it only stands in when nothing finished.
    best, _ = max(finished or live, key=normalised)
    return list(best)


def beam_search_decode(
    model, source_ids, beam_width: int = 4, max_len: int = 50, length_penalty: float = 0.6
):
    """Beam search: keeps the `beam_width` most probable prefixes at every step.

    A hypothesis that emits `END_ID` leaves the beam as finished, and the beam
    keeps `beam_width` open prefixes. The search stops once no open prefix can
    still reach a better score than the best finished hypothesis, no prefix is
    left, or `max_len` tokens were generated. The result is the finished
    hypothesis with the best `log p / ((5 + length) / 6) ** length_penalty`
    (Wu et al. 2016); the open prefixes compete, on the same score, only when
    no hypothesis finished within `max_len` tokens. With `beam_width=1` this is
    greedy decoding.

    Args:
        model: a seq2seq model taking `{"source", "target_in"}`.
        source_ids: one source `(src_len,)` or a batch `(batch, src_len)` of token ids.
        beam_width: hypotheses kept per step.
        max_len: most tokens generated per sequence, the end token included.
        length_penalty: exponent `alpha` of the length normalisation; 0 disables it.

    Returns:
        A list of token ids for one source, a list of such lists for a batch.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width={beam_width} must be at least 1.")
    source, single = _as_batch(source_ids)
    sequences = [
        _beam_search_one(model, row, beam_width, max_len, length_penalty) for row in source
    ]
    return sequences[0] if single else sequences


def sequence_log_prob(model, source_ids, sequences) -> np.ndarray:
    """`log p(sequence | source)` under the model for each (source, sequence) pair, as float64.

    Args:
        model: a seq2seq model taking `{"source", "target_in"}`.
        source_ids: (batch, src_len) token ids.
        sequences: `batch` lists of target token ids, without `START_ID`.
    """
    source, _ = _as_batch(source_ids)
    length = max(len(s) for s in sequences)
    target_in = np.full((len(source), length), PAD_ID, dtype="int32")
    labels = np.full((len(source), length), PAD_ID, dtype="int32")
    target_in[:, 0] = START_ID
    for row, sequence in enumerate(sequences):
        target_in[row, 1 : len(sequence)] = sequence[:-1]
        labels[row, : len(sequence)] = sequence
    probs = _probabilities(model, source, target_in)
    picked = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    real = np.arange(length)[None, :] < np.array([len(s) for s in sequences])[:, None]
    return np.where(real, np.log(np.maximum(picked, 1e-300)), 0.0).sum(axis=1)


# ------------------------------------------------- the attention over the source


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

