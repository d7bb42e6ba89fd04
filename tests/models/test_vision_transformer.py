import keras
import numpy as np
import pytest

from keras_models import InputSpec, OutputSpec, build_model
from keras_models.architectures.vit import attention_maps, attention_rollout, load_weights_with_resize
from keras_models.plots import save_attention_png
from tests.models.checks import count_params_unallocated

DIGITS_IN, DIGITS_OUT = InputSpec((8, 8, 1)), OutputSpec("classification", 10)
TINY = dict(patch_size=2, hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64, dropout=0.0)
TOKENS = 1 + (8 // 2) ** 2


@pytest.fixture(scope="module")
def trained(digits):
    """A tiny ViT trained once on the 8×8 digits, with its loss before and after."""
    keras.utils.set_random_seed(0)
    x, y = digits
    model = build_model("vit", DIGITS_IN, DIGITS_OUT, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    before = float(model.evaluate(x, y, batch_size=64, verbose=0))
    model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    after = float(model.evaluate(x, y, batch_size=64, verbose=0))
    return model, before, after


def test_vit_learns_digits(trained, digits):
    model, before, after = trained
    assert model.output_shape == (None, 10)
    assert after < 0.3 * before, (before, after)
    assert (model.predict(digits[0], verbose=0).argmax(1) == digits[1]).mean() > 0.9


def test_vit_b16_parameter_count():
    # Dosovitskiy et al. 2020, Table 1: ViT-Base, 86M; the exact count at 224×224×3 with 1000 classes.
    spec_in, spec_out = InputSpec((224, 224, 3)), OutputSpec("classification", 1000)
    assert count_params_unallocated("vit", spec_in, spec_out) == 86_567_656


def test_vit_parameter_count_matches_formula():
    hparams = dict(patch_size=4, hidden_dim=8, num_layers=2, num_heads=2, mlp_dim=16)
    d, tokens = 8, 1 + 4
    block = 2 * 2 * d + 4 * (d * d + d) + (d * 16 + 16) + (16 * d + d)
    expected = (4 * 4 * 3 * d + d) + d + tokens * d + 2 * block + 2 * d + (d * 10 + 10)
    assert count_params_unallocated("vit", InputSpec((8, 8, 3)), DIGITS_OUT, **hparams) == expected


def test_attention_softmax_is_float32_under_mixed_bfloat16(digits):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model("vit", DIGITS_IN, DIGITS_OUT, **TINY)
        maps = attention_maps(model, digits[0][:4])
    finally:
        keras.config.set_dtype_policy(previous)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)


def test_attention_maps_and_rollout(trained, digits, tmp_path):
    model, images = trained[0], digits[0][:5]
    maps = attention_maps(model, images)
    assert maps.shape == (5, 2, 2, TOKENS, TOKENS)
    assert (maps >= 0).all()
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)

    rollout = attention_rollout(model, images)
    assert rollout.shape == (5, 8, 8)
    np.testing.assert_allclose(rollout.max(axis=(1, 2)), 1.0, rtol=1e-6)
    assert (rollout > 0).all()
    # Each 2×2 patch carries one value.
    np.testing.assert_array_equal(rollout[:, ::2, ::2], rollout[:, 1::2, 1::2])
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(model, images, head_fusion="median")

    path = save_attention_png(images[0], rollout[0], tmp_path / "rollout.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(path).ndim == 3


def _bilinear_half_pixel(grid, size):
    """Reference bilinear resize with half-pixel centres and clamped edges, in NumPy."""

    def axis(n_out, n_in):
        coord = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(coord).astype(int)
        return low, np.minimum(low + 1, n_in - 1), coord - low

    (r0, r1, fr), (c0, c1, fc) = axis(size[0], grid.shape[0]), axis(size[1], grid.shape[1])
    rows = grid[r0] * (1 - fr)[:, None, None] + grid[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def test_position_embeddings_interpolate_to_a_higher_resolution(trained, digits, tmp_path):
    low, x, y = trained[0], digits[0], digits[1]
    old = low.get_layer("position_embedding")
    high = build_model("vit", InputSpec((16, 16, 1)), DIGITS_OUT, **TINY)
    upsampled = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    untrained_accuracy = (high.predict(upsampled, verbose=0).argmax(1) == y).mean()

    load_weights_with_resize(high, low)
    new = high.get_layer("position_embedding")
    old_grid = keras.ops.convert_to_numpy(old.grid_embedding)
    assert new.grid_embedding.shape == (8, 8, 32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new.grid_embedding), _bilinear_half_pixel(old_grid, (8, 8)), atol=1e-6
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(new.class_embedding), keras.ops.convert_to_numpy(old.class_embedding)
    )
    for name in ("patch_embedding", "class_token", "encoder_block_1", "head"):
        for a, b in zip(high.get_layer(name).weights, low.get_layer(name).weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))

    # A working model: on 2× upsampled digits it beats chance and its untrained self.
    accuracy = (high.predict(upsampled, verbose=0).argmax(1) == y).mean()
    assert accuracy > max(0.2, untrained_accuracy + 0.1), (accuracy, untrained_accuracy)

    # `model.load_weights` on a weights file resizes the same way.
    path = tmp_path / "low.weights.h5"
    low.save_weights(path)
    again = build_model("vit", InputSpec((16, 16, 1)), DIGITS_OUT, **TINY)
    again.load_weights(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again.get_layer("position_embedding").grid_embedding),
        keras.ops.convert_to_numpy(new.grid_embedding),
        atol=1e-7,
    )


def test_rejects_bad_hparams():
    with pytest.raises(ValueError, match="patch_size=3 .* must divide the image size 8x8"):
        build_model("vit", DIGITS_IN, DIGITS_OUT, patch_size=3)
    with pytest.raises(ValueError, match="num_heads=3 .* must divide hidden_dim=32"):
        build_model("vit", DIGITS_IN, DIGITS_OUT, patch_size=2, hidden_dim=32, num_heads=3)
    with pytest.raises(ValueError, match="dropout=1.0 .* out of range"):
        build_model("vit", DIGITS_IN, DIGITS_OUT, patch_size=2, dropout=1.0)

