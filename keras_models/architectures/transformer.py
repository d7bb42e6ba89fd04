"""The Transformer encoder–decoder for translation (Vaswani et al. 2017), post-norm as in the paper.

Inputs, outputs and token ids are those of every seq2seq model (`keras_models.seq2seq`).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_models.heads import require_range
from keras_models.layers import PaddingMask, PositionalEncoding, TransformerDecoderLayer, TransformerEncoderLayer
from keras_models.registry import Example, register_model
from keras_models.seq2seq import check_specs, seq2seq_inputs
from keras_models.specs import InputSpec, OutputSpec


@keras.saving.register_keras_serializable(package="keras_models")
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
    example=Example(InputSpec((10,), "int32", 30), OutputSpec("seq2seq", vocab_size=40), dict(d_model=16, num_heads=2, ff_dim=32, num_layers=1)),
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
    check_specs(input_spec, output_spec, name)
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

    inputs = seq2seq_inputs(input_spec)
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

