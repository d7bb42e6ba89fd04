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

from keras_models.layers import PAD_ID
from keras_models.specs import InputSpec, OutputSpec

__all__ = ["PAD_ID", "START_ID", "END_ID", "check_specs", "seq2seq_inputs"]

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
