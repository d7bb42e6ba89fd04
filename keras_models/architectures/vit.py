"""The Vision Transformer (ViT), its attention maps, and resolution changes of its weights.

Dosovitskiy et al. 2020: an image is cut into P×P patches, each linearly
embedded; a learned [class] token is prepended, learned position embeddings are
added, and a stack of pre-norm Transformer encoder layers feeds the head from
the class token's final state.

Besides the builder, this module offers:
- `attention_maps(model, images)`: every block's per-head attention weights;
- `attention_rollout(model, images)`: Abnar & Zuidema 2020's rollout as an
  (H, W) map per image (`keras_models.plots.save_attention_png` draws it over the image);
- `load_weights_with_resize(model, source)`: loads weights trained at another
  resolution, resizing the position-embedding grid bilinearly (as the paper
  does to fine-tune at a higher resolution, section 3.2). `model.load_weights`
  does the same, since `ViTPositionEmbedding` resizes in `load_own_variables`.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
from keras import ops

from keras_models.heads import require_range, task_head
from keras_models.layers import PreNormEncoderLayer, ViTPositionEmbedding
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec


@keras.saving.register_keras_serializable(package="keras_models")
class ViTClassToken(keras.layers.Layer):
    """Prepends a learned [class] token to a sequence of patch embeddings (ViT eq. 1).

    Its variable has shape `(1, 1, dim)` and starts at zero, as in the paper's code.

    Example:
    >>> tuple(ViTClassToken()(keras.ops.ones((2, 4, 8))).shape)
    (2, 5, 8)
    """

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros", name="token")

    def call(self, inputs):
        token = ops.cast(self.token, inputs.dtype)
        token = ops.broadcast_to(token, (ops.shape(inputs)[0], 1, ops.shape(inputs)[-1]))
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, input_shape[2])



def vit_search_space(hp):
    return dict(
        patch_size=hp.Choice("patch_size", [2, 4]),
        hidden_dim=hp.Choice("hidden_dim", [32, 64, 128]),
        num_layers=hp.Int("num_layers", 2, 6),
        num_heads=hp.Choice("num_heads", [2, 4]),
        mlp_dim=hp.Choice("mlp_dim", [64, 128, 256]),
        dropout=hp.Float("dropout", 0.0, 0.3, step=0.1),
    )


@register_model(
    "vit",
    family="attention_vision",
    search_space=vit_search_space,
    paper="Dosovitskiy et al. 2020, An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
    tasks=("classification",),
    example=Example(InputSpec((8, 8, 1)), OutputSpec("classification", 10), dict(patch_size=4, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)),
    reference=Example(InputSpec((224, 224, 3)), OutputSpec("classification", 1000), description="ImageNet, 224×224×3 → 1,000 classes"),
)
def vit(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    patch_size: int = 16,
    hidden_dim: int = 768,
    num_layers: int = 12,
    num_heads: int = 12,
    mlp_dim: int = 3072,
    dropout: float = 0.1,
    attention_dropout: float = 0.0,
) -> keras.Model:
    """Vision Transformer: patch embedding, class token, position embedding, pre-norm encoder, head.

    The patch embedding is a convolution with kernel and stride `patch_size`;
    the head reads the class token after a final layer normalisation. The
    defaults are ViT-B/16 (86,567,656 parameters at 224×224×3 with 1000 classes).

    Args:
        patch_size: side of the square patches; must divide the image's height and width.
        hidden_dim: embedding size D.
        num_layers: encoder blocks.
        num_heads: attention heads; must divide `hidden_dim`.
        mlp_dim: hidden width of each block's MLP.
        dropout: dropout after the embeddings, in the MLPs and on the residual branches.
        attention_dropout: dropout on the attention weights.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("vit", InputSpec((8, 8, 1)), OutputSpec("classification", 10),
    ...                     patch_size=4, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    >>> model.output_shape
    (None, 10)
    """
    shape = tuple(input_spec.shape)
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"Model 'vit' needs images of a fixed (height, width, channels) shape; got {shape}.")
    height, width, _ = shape
    require_range("patch_size", patch_size, 1, min(height, width), model="vit")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"Hyperparameter patch_size={patch_size} of model 'vit' must divide the image size {height}x{width}."
        )
    require_range("hidden_dim", hidden_dim, 1, 8192, model="vit")
    require_range("num_layers", num_layers, 1, 48, model="vit")
    require_range("num_heads", num_heads, 1, hidden_dim, model="vit")
    if hidden_dim % num_heads:
        raise ValueError(f"Hyperparameter num_heads={num_heads} of model 'vit' must divide hidden_dim={hidden_dim}.")
    require_range("mlp_dim", mlp_dim, 1, 65536, model="vit")
    require_range("dropout", dropout, 0.0, 0.9, model="vit")
    require_range("attention_dropout", attention_dropout, 0.0, 0.9, model="vit")
    grid = (height // patch_size, width // patch_size)

    inputs = keras.Input(shape=shape, name="images")
    x = keras.layers.Conv2D(hidden_dim, patch_size, strides=patch_size, name="patch_embedding")(inputs)
    x = keras.layers.Reshape((grid[0] * grid[1], hidden_dim), name="patch_sequence")(x)
    x = ViTClassToken(name="class_token")(x)
    x = ViTPositionEmbedding(grid, name="position_embedding")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(num_layers):
        x = PreNormEncoderLayer(num_heads, mlp_dim, dropout, attention_dropout, name=f"encoder_block_{i}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="encoder_norm")(x)
    return keras.Model(inputs, task_head(x[:, 0], output_spec), name="vit")


def _encoder_blocks(model: keras.Model) -> list[PreNormEncoderLayer]:
    blocks = [layer for layer in model.layers if isinstance(layer, PreNormEncoderLayer)]
    if not blocks:
        raise ValueError(f"Model {model.name!r} has no PreNormEncoderLayer layers.")
    return blocks


class _AttentionProbe(keras.Model):
    """Runs a ViT's embedding and blocks, returning the stacked attention weights.

    A subclassed model, because a functional one cannot hold a second call of a
    layer whose outputs differ in structure from its first call.
    """

    def __init__(self, vit_model: keras.Model):
        super().__init__(name=f"{vit_model.name}_attention")
        self.encoder_blocks = _encoder_blocks(vit_model)
        self.embedding = keras.Model(vit_model.input, self.encoder_blocks[0].input)

    def call(self, images):
        x, maps = self.embedding(images), []
        for block in self.encoder_blocks:
            x, weights = block(x, return_attention_scores=True)
            maps.append(weights)
        return ops.stack(maps, axis=1)


def attention_maps(model: keras.Model, images, batch_size: int = 32) -> np.ndarray:
    """Attention weights of every block and head, shaped `(images, layers, heads, tokens, tokens)`.

    Token 0 is the class token; row `i` of a map is how token `i` attends to every token.
    """
    probe = _AttentionProbe(model)
    maps = probe.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(maps, dtype="float32")


def attention_rollout(model: keras.Model, images, head_fusion: str = "mean") -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020): how much the class token draws on each pixel.

    Heads are fused (`"mean"`, `"max"` or `"min"`), the residual connection is
    accounted for as `0.5 * A + 0.5 * I` with rows renormalised, and the layers'
    matrices are multiplied from the first to the last. The class token's row
    over the patches, scaled to a maximum of 1, is returned as an `(H, W)` map
    per image (each patch's value fills its P×P pixels).
    """
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion={head_fusion!r} must be one of {sorted(fuse)}.")
    maps = fuse[head_fusion](attention_maps(model, images).astype("float64"), axis=2)
    tokens = maps.shape[-1]
    identity = np.eye(tokens)
    rollout = np.broadcast_to(identity, (maps.shape[0], tokens, tokens))
    for layer in range(maps.shape[1]):
        mixed = 0.5 * maps[:, layer] + 0.5 * identity
        rollout = (mixed / mixed.sum(-1, keepdims=True)) @ rollout
    grid_h, grid_w = model.get_layer("position_embedding").grid_size
    relevance = rollout[:, 0, 1:].reshape(-1, grid_h, grid_w)
    relevance = relevance / relevance.max(axis=(1, 2), keepdims=True)
    height, width = model.input_shape[1:3]
    pixels = np.repeat(np.repeat(relevance, height // grid_h, axis=1), width // grid_w, axis=2)
    return pixels.astype("float32")



def load_weights_with_resize(model: keras.Model, source) -> keras.Model:
    """Loads `source` (a ViT model or a weights file) into `model`, built at any resolution.

    Every variable must match except the position-embedding grid, which
    `ViTPositionEmbedding.load_own_variables` resizes bilinearly to `model`'s grid.
    """
    if isinstance(source, keras.Model):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "source.weights.h5")
            source.save_weights(path)
            model.load_weights(path)
    else:
        model.load_weights(source)
    return model
