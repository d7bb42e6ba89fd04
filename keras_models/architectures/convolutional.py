"""Convolutional networks for image classification: LeNet-5, AlexNet, VGG, GoogLeNet and ResNet.

Every builder reads the image size and channels from `input_spec.shape` (height,
width, channels). Networks designed for 224×224 ImageNet crops take a `stem`
hyperparameter: `"imagenet"` keeps the paper's strided stem, `"small"` swaps it
for a stride-1 3×3 stem without pooling (the usual CIFAR adaptation), and the
default `"auto"` picks `"small"` below 64 pixels, where the paper's stem would
shrink the image to nothing.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_models.heads import require_range, task_head
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec

SMALL_IMAGE_PIXELS = 64


def _image_shape(input_spec: InputSpec, model: str) -> tuple[int, int, int]:
    shape = tuple(input_spec.shape)
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            f"Model {model!r} needs images of a fixed (height, width, channels) shape; "
            f"got input shape {shape}."
        )
    return shape


def _resolve_stem(stem: str, height: int, width: int, model: str) -> str:
    if stem not in ("auto", "imagenet", "small"):
        raise ValueError(
            f"Hyperparameter stem={stem!r} of model {model!r} must be 'auto', 'imagenet' or 'small'."
        )
    if stem == "auto":
        return "small" if min(height, width) < SMALL_IMAGE_PIXELS else "imagenet"
    return stem


def _scaled(channels: int, width_multiplier: float) -> int:
    return max(1, int(round(channels * width_multiplier)))


def _check_width(width_multiplier: float, model: str) -> None:
    require_range("width_multiplier", width_multiplier, 0.01, 4.0, model=model)


@keras.saving.register_keras_serializable(package="keras_models")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels (Krizhevsky et al. 2012, section 3.3).

    `b_c = a_c / (k + alpha * sum_{c' within size/2 of c} a_{c'}^2) ** beta`, with the
    paper's constants as defaults (alpha is not divided by `size`, unlike Caffe).
    Computed in float32 so that the sum of squares does not lose precision in bfloat16.

    Args:
        size: int, number of adjacent channels in the window (n in the paper).
        k: float, additive constant.
        alpha: float, scale of the sum of squares.
        beta: float, exponent.

    Example:
    >>> layer = LocalResponseNormalization()
    >>> tuple(layer(keras.ops.ones((1, 2, 2, 8))).shape)
    (1, 2, 2, 8)
    """

    def __init__(self, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.k = k
        self.alpha = alpha
        self.beta = beta

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        half = self.size // 2
        pad = [[0, 0]] * (len(x.shape) - 1) + [[half, self.size - 1 - half]]
        squares = ops.pad(ops.square(x), pad)
        window_sum = sum(squares[..., i : i + channels] for i in range(self.size))
        outputs = x / ops.power(self.k + self.alpha * window_sum, self.beta)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "k": self.k, "alpha": self.alpha, "beta": self.beta}


# --------------------------------------------------------------------------- LeNet-5


def lenet_search_space(hp):
    return dict(activation=hp.Choice("activation", ["tanh", "relu"]))


@register_model(
    "lenet",
    family="convolutional",
    search_space=lenet_search_space,
    paper="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition",
    tasks=("classification",),
    example=Example(InputSpec((8, 8, 1)), OutputSpec("classification", 10)),
    reference=Example(InputSpec((32, 32, 1)), OutputSpec("classification", 10),
                      description="32×32×1 digits (MNIST padded, as in the paper) → 10 classes"),
)
def lenet(input_spec: InputSpec, output_spec: OutputSpec, *, activation: str = "tanh") -> keras.Model:
    """LeNet-5: conv 6@5×5 → avg-pool → conv 16@5×5 → avg-pool → dense 120 → 84 → head.

    Images smaller than 32×32 are zero-padded to 32×32, as the paper centres its
    28×28 MNIST digits in a 32×32 field, so C5 sees a 5×5 map. Modern
    simplifications of the paper: C3 connects to all six S2 maps (not the sparse
    table of Table I), subsampling is plain average pooling (no trainable
    coefficient and bias), the activation is plain tanh or ReLU (not 1.7159·tanh(2x/3)),
    and the Euclidean RBF output is a softmax head. At 32×32×1 with 10 classes
    this has 61,706 parameters (the paper's sparse C3 gives about 60,000).

    Args:
        activation: `"tanh"` (the paper) or `"relu"`.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> build_model("lenet", InputSpec((28, 28, 1)), OutputSpec("classification", 10)).count_params()
    61706
    """
    if activation not in ("tanh", "relu"):
        raise ValueError(f"Hyperparameter activation={activation!r} of model 'lenet' must be 'tanh' or 'relu'.")
    height, width, _ = _image_shape(input_spec, "lenet")
    inputs = keras.Input(shape=input_spec.shape, name="images")
    x = inputs
    pad_h, pad_w = max(0, 32 - height), max(0, 32 - width)
    if pad_h or pad_w:
        x = keras.layers.ZeroPadding2D(
            ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)), name="pad_to_32"
        )(x)
    x = keras.layers.Conv2D(6, 5, activation=activation, name="c1")(x)
    x = keras.layers.AveragePooling2D(2, name="s2")(x)
    x = keras.layers.Conv2D(16, 5, activation=activation, name="c3")(x)
    x = keras.layers.AveragePooling2D(2, name="s4")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(120, activation=activation, name="c5")(x)
    x = keras.layers.Dense(84, activation=activation, name="f6")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="lenet")


# --------------------------------------------------------------------------- AlexNet


def alexnet_search_space(hp):
    return dict(
        width_multiplier=hp.Choice("width_multiplier", [0.125, 0.25, 0.5]),
        fc_units=hp.Choice("fc_units", [128, 256, 512]),
        dropout=hp.Float("dropout", 0.0, 0.5, step=0.1),
        local_response_norm=hp.Boolean("local_response_norm"),
    )


@register_model(
    "alexnet",
    family="convolutional",
    search_space=alexnet_search_space,
    paper="Krizhevsky, Sutskever & Hinton 2012, ImageNet Classification with Deep Convolutional Neural Networks",
    tasks=("classification",),
    example=Example(InputSpec((8, 8, 1)), OutputSpec("classification", 10), dict(width_multiplier=1 / 16, fc_units=16)),
    reference=Example(InputSpec((224, 224, 3)), OutputSpec("classification", 1000), description="ImageNet, 224×224×3 → 1,000 classes"),
)
def alexnet(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    width_multiplier: float = 1.0,
    fc_units: int = 4096,
    dropout: float = 0.5,
    local_response_norm: bool = True,
    stem: str = "auto",
) -> keras.Model:
    """AlexNet: five convolutions (96@11×11/4, 256@5×5, 384, 384, 256@3×3) and three dense layers.

    Local response normalisation follows conv1 and conv2, overlapping 3×3/2 max
    pooling follows conv1, conv2 and conv5, and dropout follows both hidden dense
    layers, as in the paper. The paper's two-GPU split (grouped conv2, conv4, conv5)
    is not reproduced: every layer sees all channels of the previous one, which
    gives 62,378,344 parameters at 224×224×3 with 1000 classes (the paper: 60M).
    The `"small"` stem makes conv1 a 3×3/1 convolution and pools with "same"
    padding, so 8×8 to 63×63 images keep at least one pixel.

    Args:
        width_multiplier: scales every convolution's channels (1.0 = the paper).
        fc_units: width of the two hidden dense layers (4096 in the paper).
        dropout: dropout rate after each hidden dense layer, in [0, 0.9].
        local_response_norm: whether to apply local response normalisation.
        stem: `"auto"`, `"imagenet"` or `"small"` (see the module docstring).
    """
    _check_width(width_multiplier, "alexnet")
    require_range("fc_units", fc_units, 1, 65536, model="alexnet")
    require_range("dropout", dropout, 0.0, 0.9, model="alexnet")
    height, width, _ = _image_shape(input_spec, "alexnet")
    stem = _resolve_stem(stem, height, width, "alexnet")
    pool_padding = "valid" if stem == "imagenet" else "same"

    def conv(x, filters, kernel, name, **kwargs):
        return keras.layers.Conv2D(
            _scaled(filters, width_multiplier), kernel, activation="relu",
            kernel_initializer="he_normal", name=name, **kwargs,
        )(x)

    def pool(x, name):
        return keras.layers.MaxPooling2D(3, strides=2, padding=pool_padding, name=name)(x)

    inputs = keras.Input(shape=input_spec.shape, name="images")
    if stem == "imagenet":
        x = keras.layers.ZeroPadding2D(2, name="conv1_pad")(inputs)
        x = conv(x, 96, 11, "conv1", strides=4)
    else:
        x = conv(inputs, 96, 3, "conv1", padding="same")
    if local_response_norm:
        x = LocalResponseNormalization(name="lrn1")(x)
    x = pool(x, "pool1")
    x = conv(x, 256, 5, "conv2", padding="same")
    if local_response_norm:
        x = LocalResponseNormalization(name="lrn2")(x)
    x = pool(x, "pool2")
    x = conv(x, 384, 3, "conv3", padding="same")
    x = conv(x, 384, 3, "conv4", padding="same")
    x = conv(x, 256, 3, "conv5", padding="same")
    x = pool(x, "pool5")
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (6, 7):
        x = keras.layers.Dense(fc_units, activation="relu", kernel_initializer="he_normal", name=f"fc{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout{i}")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="alexnet")


# --------------------------------------------------------------------------- VGG

# Table 1 of the paper: configuration A (11 weight layers) and D (16); "M" is a 2×2/2 max pool.
VGG_CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def vgg_search_space(hp):
    return dict(
        depth=hp.Choice("depth", [11, 16]),
        width_multiplier=hp.Choice("width_multiplier", [0.125, 0.25]),
        batch_norm=hp.Boolean("batch_norm", default=True),
        fc_units=hp.Choice("fc_units", [128, 256, 512]),
        dropout=hp.Float("dropout", 0.0, 0.5, step=0.1),
    )


@register_model(
    "vgg",
    family="convolutional",
    search_space=vgg_search_space,
    paper="Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition",
    tasks=("classification",),
    example=Example(InputSpec((8, 8, 1)), OutputSpec("classification", 10), dict(depth=11, width_multiplier=1 / 16, fc_units=16)),
    reference=Example(InputSpec((224, 224, 3)), OutputSpec("classification", 1000), description="ImageNet, 224×224×3 → 1,000 classes"),
)
def vgg(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    depth: int = 16,
    width_multiplier: float = 1.0,
    batch_norm: bool = False,
    fc_units: int = 4096,
    dropout: float = 0.5,
) -> keras.Model:
    """VGG: stacks of 3×3 convolutions between five 2×2 max pools, then three dense layers.

    `depth` 11 and 16 are the paper's configurations A and D: 132,863,336 and
    138,357,544 parameters at 224×224×3 with 1000 classes. Pools use "same"
    padding, which changes nothing at 224×224 but keeps a 1×1 map for small
    images instead of an empty one. `batch_norm` inserts batch normalisation
    after every convolution (Ioffe & Szegedy 2015, not in the paper; it lets the
    deep configuration train from scratch without the paper's staged initialisation).

    Args:
        depth: 11 (configuration A) or 16 (configuration D).
        width_multiplier: scales every convolution's channels (1.0 = the paper).
        batch_norm: batch normalisation after each convolution.
        fc_units: width of the two hidden dense layers (4096 in the paper).
        dropout: dropout rate after each hidden dense layer, in [0, 0.9].
    """
    if depth not in VGG_CONFIGS:
        raise ValueError(f"Hyperparameter depth={depth!r} of model 'vgg' must be one of {sorted(VGG_CONFIGS)}.")
    _check_width(width_multiplier, "vgg")
    require_range("fc_units", fc_units, 1, 65536, model="vgg")
    require_range("dropout", dropout, 0.0, 0.9, model="vgg")
    _image_shape(input_spec, "vgg")
    inputs = keras.Input(shape=input_spec.shape, name="images")
    x = inputs
    block, index = 1, 1
    for item in VGG_CONFIGS[depth]:
        if item == "M":
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"block{block}_pool")(x)
            block, index = block + 1, 1
            continue
        name = f"block{block}_conv{index}"
        x = keras.layers.Conv2D(
            _scaled(item, width_multiplier), 3, padding="same", use_bias=not batch_norm,
            kernel_initializer="he_normal", name=name,
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        index += 1
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = keras.layers.Dense(fc_units, activation="relu", kernel_initializer="he_normal", name=f"fc{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout{i}")(x)
    return keras.Model(inputs, task_head(x, output_spec), name=f"vgg{depth}")


# --------------------------------------------------------------------------- GoogLeNet

# Table 1 of the paper: #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj; "M" is a 3×3/2 max pool.
GOOGLENET_MODULES = (
    ("3a", 64, 96, 128, 16, 32, 32),
    ("3b", 128, 128, 192, 32, 96, 64),
    "M",
    ("4a", 192, 96, 208, 16, 48, 64),
    ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64),
    ("4e", 256, 160, 320, 32, 128, 128),
    "M",
    ("5a", 256, 160, 320, 32, 128, 128),
    ("5b", 384, 192, 384, 48, 128, 128),
)


def inception_search_space(hp):
    return dict(
        width_multiplier=hp.Choice("width_multiplier", [0.125, 0.25, 0.5]),
        dropout=hp.Float("dropout", 0.0, 0.5, step=0.1),
    )


def _inception_module(x, filters, width_multiplier, name):
    """Four parallel branches concatenated: 1×1; 1×1→3×3; 1×1→5×5; 3×3 max pool→1×1 projection."""

    def conv(y, channels, kernel, suffix):
        return keras.layers.Conv2D(
            _scaled(channels, width_multiplier), kernel, padding="same", activation="relu",
            kernel_initializer="he_normal", name=f"{name}_{suffix}",
        )(y)

    c1, c3r, c3, c5r, c5, proj = filters
    branch1 = conv(x, c1, 1, "1x1")
    branch3 = conv(conv(x, c3r, 1, "3x3_reduce"), c3, 3, "3x3")
    branch5 = conv(conv(x, c5r, 1, "5x5_reduce"), c5, 5, "5x5")
    pooled = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branch_pool = conv(pooled, proj, 1, "pool_proj")
    return keras.layers.Concatenate(name=f"{name}_output")([branch1, branch3, branch5, branch_pool])


@register_model(
    "inception",
    family="convolutional",
    search_space=inception_search_space,
    paper="Szegedy et al. 2014, Going Deeper with Convolutions (GoogLeNet / Inception v1)",
    tasks=("classification",),
    example=Example(InputSpec((8, 8, 1)), OutputSpec("classification", 10), dict(width_multiplier=1 / 16)),
    reference=Example(InputSpec((224, 224, 3)), OutputSpec("classification", 1000), description="ImageNet, 224×224×3 → 1,000 classes"),
)
def inception(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    width_multiplier: float = 1.0,
    dropout: float = 0.4,
    local_response_norm: bool = True,
    stem: str = "auto",
) -> keras.Model:
    """GoogLeNet (Inception v1): a convolutional stem, nine inception modules, global average pooling.

    Each module runs 1×1, 3×3 and 5×5 convolutions and a 3×3 max pool in
    parallel; 1×1 bottlenecks reduce the channels before the 3×3 and 5×5
    convolutions and project the pooled branch (Table 1 of the paper). Dropout 0.4
    precedes the classifier. The two auxiliary classifiers, a training-time
    regulariser that the paper discards at inference, are omitted, so the model
    has one output like every model of the zoo. At 224×224×3 with 1000 classes
    this has 6,998,552 parameters, biases included (the paper's Table 1 sums
    to about 6.8M). The `"small"` stem makes conv1 3×3/1 and drops the stem's
    two max pools; the pools between module groups remain.

    Args:
        width_multiplier: scales every convolution's channels (1.0 = the paper).
        dropout: dropout rate before the classifier, in [0, 0.9].
        local_response_norm: local response normalisation in the stem, as in the paper.
        stem: `"auto"`, `"imagenet"` or `"small"` (see the module docstring).
    """
    _check_width(width_multiplier, "inception")
    require_range("dropout", dropout, 0.0, 0.9, model="inception")
    height, width, _ = _image_shape(input_spec, "inception")
    stem = _resolve_stem(stem, height, width, "inception")

    def conv(y, channels, kernel, name, strides=1):
        return keras.layers.Conv2D(
            _scaled(channels, width_multiplier), kernel, strides=strides, padding="same",
            activation="relu", kernel_initializer="he_normal", name=name,
        )(y)

    def pool(y, name):
        return keras.layers.MaxPooling2D(3, strides=2, padding="same", name=name)(y)

    inputs = keras.Input(shape=input_spec.shape, name="images")
    if stem == "imagenet":
        x = pool(conv(inputs, 64, 7, "conv1", strides=2), "pool1")
    else:
        x = conv(inputs, 64, 3, "conv1")
    if local_response_norm:
        x = LocalResponseNormalization(name="lrn1")(x)
    x = conv(conv(x, 64, 1, "conv2_reduce"), 192, 3, "conv2")
    if local_response_norm:
        x = LocalResponseNormalization(name="lrn2")(x)
    if stem == "imagenet":
        x = pool(x, "pool2")
    for i, module in enumerate(GOOGLENET_MODULES):
        if module == "M":
            x = pool(x, f"pool{GOOGLENET_MODULES[i - 1][0][0]}")
        else:
            x = _inception_module(x, module[1:], width_multiplier, f"inception_{module[0]}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="googlenet")


# --------------------------------------------------------------------------- ResNet

# Blocks per stage (conv2_x .. conv5_x) and block type, Table 1 of the paper.
RESNET_CONFIGS = {18: ((2, 2, 2, 2), "basic"), 34: ((3, 4, 6, 3), "basic"), 50: ((3, 4, 6, 3), "bottleneck")}


def resnet_search_space(hp):
    return dict(
        depth=hp.Choice("depth", [18, 34, 50]),
        width_multiplier=hp.Choice("width_multiplier", [0.125, 0.25, 0.5]),
    )


def _conv_bn(x, filters, kernel, strides, name, relu=True):
    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _residual_block(x, filters, strides, kind, name):
    """A basic (two 3×3) or bottleneck (1×1, 3×3, 1×1 ×4) block; projection shortcut when the shape changes."""
    out_channels = filters if kind == "basic" else 4 * filters
    if kind == "basic":
        y = _conv_bn(x, filters, 3, strides, f"{name}_1")
        y = _conv_bn(y, filters, 3, 1, f"{name}_2", relu=False)
    else:
        y = _conv_bn(x, filters, 1, strides, f"{name}_1")
        y = _conv_bn(y, filters, 3, 1, f"{name}_2")
        y = _conv_bn(y, out_channels, 1, 1, f"{name}_3", relu=False)
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = _conv_bn(x, out_channels, 1, strides, f"{name}_shortcut", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


@register_model(
    "resnet",
    family="convolutional",
    search_space=resnet_search_space,
    paper="He et al. 2015, Deep Residual Learning for Image Recognition",
    tasks=("classification",),
    example=Example(InputSpec((8, 8, 1)), OutputSpec("classification", 10), dict(depth=18, width_multiplier=1 / 16)),
    reference=Example(InputSpec((224, 224, 3)), OutputSpec("classification", 1000), description="ImageNet, 224×224×3 → 1,000 classes"),
)
def resnet(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    depth: int = 50,
    width_multiplier: float = 1.0,
    stem: str = "auto",
) -> keras.Model:
    """ResNet-18/34/50: a stem, four stages of residual blocks, global average pooling.

    18 and 34 use basic blocks (two 3×3 convolutions), 50 uses bottleneck blocks
    (1×1 reduce, 3×3, 1×1 expand ×4). Every convolution is followed by batch
    normalisation; shortcuts are identities except where the shape changes,
    where a strided 1×1 convolution projects them (option B of the paper). The
    first block of stages 3-5 downsamples with stride 2 in its first
    convolution, as in the paper (torchvision's "v1.5" moves it to the 3×3; the
    parameter count is the same). At 224×224×3 with 1000 classes: ResNet-18
    11,689,512, ResNet-34 21,797,672, ResNet-50 25,557,032 parameters.

    Args:
        depth: 18, 34 or 50.
        width_multiplier: scales every convolution's channels (1.0 = the paper's 64-128-256-512).
        stem: `"imagenet"` (7×7/2 convolution and 3×3/2 max pool), `"small"` (3×3/1
            convolution, no pool) or `"auto"`.
    """
    if depth not in RESNET_CONFIGS:
        raise ValueError(f"Hyperparameter depth={depth!r} of model 'resnet' must be one of {sorted(RESNET_CONFIGS)}.")
    _check_width(width_multiplier, "resnet")
    height, width, _ = _image_shape(input_spec, "resnet")
    stem = _resolve_stem(stem, height, width, "resnet")
    blocks_per_stage, kind = RESNET_CONFIGS[depth]

    inputs = keras.Input(shape=input_spec.shape, name="images")
    base = _scaled(64, width_multiplier)
    if stem == "imagenet":
        x = _conv_bn(inputs, base, 7, 2, "stem")
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    else:
        x = _conv_bn(inputs, base, 3, 1, "stem")
    for stage, blocks in enumerate(blocks_per_stage):
        filters = _scaled(64 * 2**stage, width_multiplier)
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, filters, strides, kind, f"conv{stage + 2}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, task_head(x, output_spec), name=f"resnet{depth}")
