"""FNet (Lee-Thorp et al. 2021): BERT's encoder with self-attention replaced by a 2D Fourier transform.

Inputs, heads and the `"encoder"` sub-model are BERT's (`keras_models.architectures.bert`).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_models.architectures.bert import check_common, text_embeddings, text_model
from keras_models.layers import PostNormBlock, bert_initializer
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec


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
    >>> tuple(block(keras.ops.zeros((1, 3, 4))).shape)
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
    example=Example(InputSpec((12,), "int32", 50), OutputSpec("classification", 2), dict(d_model=16, ff_dim=32, num_layers=1, max_len=16)),
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
    check_common("fnet", input_spec, d_model=d_model, ff_dim=ff_dim, num_layers=num_layers,
                  dropout=dropout, max_len=max_len, pooling=pooling)
    token_ids, x = text_embeddings(
        input_spec, d_model=d_model, max_len=max_len, dropout=dropout, projection=True
    )
    for i in range(num_layers):
        x = FNetBlock(ff_dim, dropout, name=f"block_{i}")(x)
    encoder = keras.Model(token_ids, x, name="encoder")
    return text_model(
        "fnet", encoder, input_spec, output_spec, d_model=d_model, dropout=dropout, pooling=pooling
    )

