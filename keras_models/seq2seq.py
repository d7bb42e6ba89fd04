"""What every sequence-to-sequence model shares: token ids, inputs, and the attention over the source.

The models are `seq2seq_attention` (`keras_models.architectures.seq2seq_attention`)
and `transformer` (`keras_models.architectures.transformer`).

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

import keras
from keras import ops

from keras_models.layers import PAD_ID, TransformerDecoderLayer
from keras_models.specs import InputSpec, OutputSpec

__all__ = ["PAD_ID", "START_ID", "END_ID", "check_specs", "seq2seq_inputs", "attention_model"]

START_ID = 1
END_ID = 2

def check_specs(input_spec: InputSpec, output_spec: OutputSpec, model: str):
    if input_spec.vocab_size is None or output_spec.vocab_size is None:
        raise ValueError(
            f"Model {model!r} needs InputSpec.vocab_size (source) and OutputSpec.vocab_size (target)."
        )
    if len(input_spec.shape) != 1:
        raise ValueError(f"Model {model!r} takes token ids of shape (src_len,), got {input_spec.shape}.")


def seq2seq_inputs(input_spec: InputSpec):
    source = keras.Input(shape=input_spec.shape, dtype="int32", name="source")
    target_in = keras.Input(shape=(None,), dtype="int32", name="target_in")
    return {"source": source, "target_in": target_in}



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
    from keras_models.architectures.seq2seq_attention import BahdanauDecoder, LuongAttention

    layers = [
        layer for layer in model.layers
        if isinstance(layer, (BahdanauDecoder, LuongAttention, TransformerDecoderLayer))
    ]
    if not layers:
        raise ValueError(f"Model {model.name!r} has no attention layer over the source.")
    if isinstance(layers[-1], TransformerDecoderLayer):
        return _CrossAttentionProbe(model, layers[-1])
    return keras.Model(model.input, layers[-1].output[-1], name=f"{model.name}_attention")

