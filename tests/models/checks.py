"""Checks every zoo model must pass, so each model's test is a few lines.

Run on whichever backend `KERAS_BACKEND` selects; `make test` runs this
directory on TensorFlow and again on JAX.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_models import build_model
from keras_models.registry import count_parameters


def assert_save_load_identical(model: keras.Model, inputs, tmp_path, atol=1e-5) -> None:
    """`.keras` round trip under `safe_mode=True` gives identical outputs."""
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    expected = model.predict(inputs, verbose=0)
    actual = restored.predict(inputs, verbose=0)
    for e, a in zip(keras.tree.flatten(expected), keras.tree.flatten(actual)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol, rtol=1e-5)


def assert_training_lowers_loss(
    model: keras.Model, x, y, *, loss, epochs: int = 5, batch_size: int = 32,
    learning_rate: float = 1e-3, factor: float = 0.9,
) -> list[float]:
    """A few epochs on a small real batch bring the loss below `factor` × its start."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    before = float(model.evaluate(x, y, verbose=0, batch_size=batch_size))
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    after = float(model.evaluate(x, y, verbose=0, batch_size=batch_size))
    assert after < factor * before, f"{model.name}: loss {before:.4f} -> {after:.4f}"
    return [before, after]


def assert_runs_mixed_bfloat16(name, input_spec, output_spec, inputs, **hparams) -> None:
    """Builds under `mixed_bfloat16`: variables stay float32, outputs are finite float32.

    The forward pass is the compiled predict step, as in training and serving: called eagerly, JAX
    would compile every op on its own (20 s against 5 s for GoogLeNet on this project's CPU machine).
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(name, input_spec, output_spec, **hparams)
        outputs = model.predict_on_batch(inputs)
    finally:
        keras.config.set_dtype_policy(previous)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    for out in keras.tree.flatten(outputs):
        out = keras.ops.convert_to_numpy(out)
        assert out.dtype == np.float32, out.dtype
        assert np.isfinite(out).all()


def count_params(model: keras.Model) -> int:
    return int(sum(np.prod(v.shape) for v in model.weights if v.trainable))


def count_params_unallocated(name, input_spec, output_spec, **hparams) -> int:
    """Trainable parameters of a reference-size model, without allocating its weights."""
    return count_parameters(name, input_spec, output_spec, **hparams)
