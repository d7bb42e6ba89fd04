"""The fully convolutional network (FCN) for time series of Wang, Yan & Oates (2017)."""

from __future__ import annotations

import math

import keras

from keras_models.architectures._series import TASKS, sequence_input
from keras_models.heads import require_range, task_head
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec


def cnn1d_search_space(hp):
    return dict(
        filters=hp.Choice("filters", [32, 64, 128]),
        kernel_size=hp.Choice("kernel_size", [3, 5, 8], default=8),
        num_blocks=hp.Int("num_blocks", 1, 4, default=3),
    )


def fcn_layout(filters: int, kernel_size: int, num_blocks: int) -> list[tuple[int, int]]:
    """(width, kernel size) of each block, following the FCN's 128-256-128 / 8-5-3 shape.

    Inner blocks are twice as wide as the first and last; kernels taper as
    8 → 5 → 3, scaled by `kernel_size / 8`, so the defaults are the paper's network.

    >>> fcn_layout(128, 8, 3)
    [(128, 8), (256, 5), (128, 3)]
    """
    layout = []
    for i in range(num_blocks):
        width = filters if i in (0, num_blocks - 1) else 2 * filters
        if i == 0:
            kernel = kernel_size
        elif i == num_blocks - 1:
            kernel = max(1, math.ceil(kernel_size * 3 / 8))
        else:
            kernel = max(1, math.ceil(kernel_size * 5 / 8))
        layout.append((width, kernel))
    return layout


@register_model(
    "cnn1d",
    family="sequence",
    search_space=cnn1d_search_space,
    paper="Wang, Yan & Oates 2017, Time Series Classification from Scratch with Deep Neural Networks: A Strong Baseline",
    tasks=TASKS,
    example=Example(InputSpec((12, 1)), OutputSpec("forecasting", 3), dict(filters=8, num_blocks=2)),
    reference=Example(InputSpec((24, 1)), OutputSpec("classification", 2),
                      description="ItalyPowerDemand, 24 steps × 1 channel → 2 classes"),
)
def cnn1d(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    filters: int = 128,
    kernel_size: int = 8,
    num_blocks: int = 3,
    embedding_dim: int = 64,
) -> keras.Model:
    """The fully convolutional network (FCN) for time series of Wang et al. 2017.

    `num_blocks` × (Conv1D "same" → BatchNorm → ReLU), global average pooling
    over time, then the task head. Block widths and kernels follow
    `fcn_layout`; the defaults give the paper's 128/256/128 filters with
    kernels 8/5/3. Batch-norm statistics use momentum 0.9 (PyTorch's
    default) rather than Keras's 0.99, so that inference statistics settle
    within the few hundred steps a small UCR training set gives.

    Args:
        filters: width of the first and last block (inner blocks are twice as wide).
        kernel_size: kernel of the first block, 2 to 64; later blocks taper as in the paper.
        num_blocks: convolutional blocks, 1 to 8.
        embedding_dim: width of the token embedding, for token-id inputs only.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("cnn1d", InputSpec((24, 1)), OutputSpec("classification", 2), filters=32)
    >>> model.output_shape
    (None, 2)
    """
    require_range("filters", filters, 1, 4096, model="cnn1d")
    require_range("kernel_size", kernel_size, 2, 64, model="cnn1d")
    require_range("num_blocks", num_blocks, 1, 8, model="cnn1d")
    inputs, x = sequence_input(input_spec, "cnn1d", embedding_dim, mask_zero=False)
    for i, (width, kernel) in enumerate(fcn_layout(filters, kernel_size, num_blocks)):
        x = keras.layers.Conv1D(width, kernel, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="cnn1d")
