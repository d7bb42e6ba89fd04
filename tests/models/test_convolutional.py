import keras
import numpy as np
import pytest

from keras_models import InputSpec, OutputSpec, build_model
from keras_models.architectures.convolutional import GOOGLENET_MODULES, LocalResponseNormalization
from tests.models.checks import assert_training_lowers_loss, count_params_unallocated

DIGITS_IN, DIGITS_OUT = InputSpec((8, 8, 1)), OutputSpec("classification", 10)
IMAGENET_IN, IMAGENET_OUT = InputSpec((224, 224, 3)), OutputSpec("classification", 1000)

# Tiny widths for 8×8 digits on CPU; the architecture is otherwise the paper's.
TINY = {
    "lenet": dict(activation="relu"),
    "alexnet": dict(width_multiplier=1 / 16, fc_units=64, dropout=0.0),
    "vgg": dict(depth=11, width_multiplier=1 / 8, batch_norm=True, fc_units=64, dropout=0.0),
    "inception": dict(width_multiplier=1 / 8, dropout=0.0),
    "resnet": dict(depth=18, width_multiplier=1 / 8),
}


def _unallocated(name, input_spec, output_spec=DIGITS_OUT, **hparams):
    with keras.StatelessScope(initialize_variables=False):
        return build_model(name, input_spec, output_spec, **hparams)


@pytest.mark.learns
@pytest.mark.parametrize("name", sorted(TINY))
def test_learns_digits(name, digits):
    x, y = digits[0][:1024], digits[1][:1024]
    model = build_model(name, DIGITS_IN, DIGITS_OUT, **TINY[name])
    assert model.output_shape == (None, 10)
    assert_training_lowers_loss(
        model, x, y, loss="sparse_categorical_crossentropy", epochs=8, batch_size=64,
        learning_rate=2e-3, factor=0.5,
    )
    assert (model.predict(x, batch_size=64, verbose=0).argmax(1) == y).mean() > 0.75


def _googlenet_params():
    """Table 1 of Szegedy et al. 2014, biases included, counted by hand."""

    def conv(k, cin, cout):
        return k * k * cin * cout + cout

    total = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192)
    channels = 192
    for module in GOOGLENET_MODULES:
        if module == "M":
            continue
        _, c1, c3r, c3, c5r, c5, proj = module
        total += conv(1, channels, c1) + conv(1, channels, c3r) + conv(3, c3r, c3)
        total += conv(1, channels, c5r) + conv(5, c5r, c5) + conv(1, channels, proj)
        channels = c1 + c3 + c5 + proj
    return total + channels * 1000 + 1000


@pytest.mark.parametrize(
    "name, hparams, expected",
    [
        ("resnet", dict(depth=50), 25_557_032),  # He et al. 2015 / torchvision resnet50
        ("resnet", dict(depth=18), 11_689_512),
        ("vgg", dict(depth=16), 138_357_544),  # Simonyan & Zisserman, configuration D
        ("vgg", dict(depth=11), 132_863_336),  # configuration A
        ("alexnet", {}, 62_378_344),  # single-column AlexNet (no two-GPU grouping)
        ("inception", {}, _googlenet_params()),  # 6,998,552; the paper's table sums to ~6.8M
    ],
)
def test_reference_parameter_counts(name, hparams, expected):
    assert count_params_unallocated(name, IMAGENET_IN, IMAGENET_OUT, **hparams) == expected


def test_googlenet_count_is_close_to_the_paper():
    assert _googlenet_params() == 6_998_552
    assert abs(_googlenet_params() - 6.8e6) / 6.8e6 < 0.03


@pytest.mark.parametrize("shape", [(32, 32, 1), (28, 28, 1)])
def test_lenet5_parameter_count(shape):
    # C1 156 + C3 2,416 + C5 48,120 + F6 10,164 + output 850; 28×28 is padded to 32×32.
    assert count_params_unallocated("lenet", InputSpec(shape), DIGITS_OUT) == 61_706


@pytest.mark.parametrize(
    "size, stem, kernel", [(8, "auto", 3), (32, "auto", 3), (64, "auto", 7), (32, "imagenet", 7)]
)
def test_resnet_stem_follows_the_image_size(size, stem, kernel):
    model = _unallocated("resnet", InputSpec((size, size, 3)), depth=18, width_multiplier=0.125, stem=stem)
    assert model.get_layer("stem_conv").kernel.shape == (kernel, kernel, 3, 8)
    pooled = "stem_pool" in [layer.name for layer in model.layers]
    assert pooled == (kernel == 7)
    final = model.get_layer("avg_pool").input.shape
    assert final[1] == max(1, size // (32 if kernel == 7 else 8))


def test_resnet50_uses_bottleneck_projection_shortcuts():
    model = _unallocated("resnet", InputSpec((32, 32, 3)), depth=50, width_multiplier=0.25)
    assert model.get_layer("conv2_block1_3_conv").kernel.shape == (1, 1, 16, 64)
    assert model.get_layer("conv2_block1_shortcut_conv").kernel.shape == (1, 1, 16, 64)
    assert model.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert "conv2_block2_shortcut_conv" not in [layer.name for layer in model.layers]


def test_local_response_normalization_matches_the_formula():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 7)).astype("float32") * 10
    layer = LocalResponseNormalization(size=5, k=2.0, alpha=1e-2, beta=0.75)
    padded = np.pad(x**2, [(0, 0), (0, 0), (0, 0), (2, 2)])
    window = sum(padded[..., i : i + 7] for i in range(5))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), x / (2.0 + 1e-2 * window) ** 0.75, rtol=1e-5
    )
    assert LocalResponseNormalization.from_config(layer.get_config()).alpha == 1e-2


def test_rejects_bad_hparams():
    with pytest.raises(ValueError, match="depth=20 .* must be one of \\[18, 34, 50\\]"):
        build_model("resnet", DIGITS_IN, DIGITS_OUT, depth=20)
    with pytest.raises(ValueError, match="depth=19 .* must be one of \\[11, 16\\]"):
        build_model("vgg", DIGITS_IN, DIGITS_OUT, depth=19)
    with pytest.raises(ValueError, match="stem='tiny'"):
        build_model("inception", DIGITS_IN, DIGITS_OUT, stem="tiny")
    with pytest.raises(ValueError, match="width_multiplier=0 .* out of range"):
        build_model("alexnet", DIGITS_IN, DIGITS_OUT, width_multiplier=0)
    with pytest.raises(ValueError, match="fixed \\(height, width, channels\\)"):
        build_model("lenet", InputSpec((64,)), DIGITS_OUT)

