"""Checks every zoo model must pass, so each model's own test says only what is special about it.

`run_model_test` is the zoo-wide harness (keras-hub's `run_backbone_test` and
`run_model_saving_test` in one): `tests/models/test_zoo.py` runs it on the
example every model is registered with. Run on whichever backend
`KERAS_BACKEND` selects; `make test` runs this directory on TensorFlow and
again on JAX, all but the tests marked `learns`, which train to a quality bar.
"""

from __future__ import annotations

import json

import keras
import keras_tuner
import numpy as np

from keras_models import build_model, search_space
from keras_models.registry import ModelEntry, count_parameters


def example_batch(entry: ModelEntry, batch: int = 2, target_len: int = 5, seed: int = 0):
    """Inputs and targets of `batch` random examples for `entry.example`'s specs."""
    rng = np.random.default_rng(seed)
    input_spec, output_spec = entry.example.input_spec, entry.example.output_spec
    if input_spec.vocab_size is not None:
        x = rng.integers(2, input_spec.vocab_size, (batch, *input_spec.shape)).astype("int32")
        x[:, -1] = 0  # one padded position
    else:
        x = rng.normal(size=(batch, *input_spec.shape)).astype("float32")
    head = output_spec.head
    if head == "seq2seq":
        target = rng.integers(3, output_spec.vocab_size, (batch, target_len)).astype("int32")
        x = {"source": x, "target_in": np.concatenate([np.ones((batch, 1), "int32"), target[:, :-1]], axis=1)}
        return x, target
    if head == "masked_lm":
        return x, rng.integers(2, output_spec.vocab_size or input_spec.vocab_size, x.shape).astype("int32")
    if head == "classification":
        return x, rng.integers(0, output_spec.units, batch).astype("int32")
    return x, rng.normal(size=(batch, output_spec.units)).astype("float32")


def _loss(entry: ModelEntry) -> str:
    head = entry.example.output_spec.head
    return "mse" if head in ("regression", "forecasting") else "sparse_categorical_crossentropy"


def _numpy(outputs) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]


def run_model_test(entry: ModelEntry, tmp_path) -> None:
    """Builds `entry.example`, runs it forward, trains one step and round-trips it through `.keras`."""
    example = entry.example
    model = build_model(entry.name, example.input_spec, example.output_spec, **example.hparams)
    x, y = example_batch(entry)
    outputs = model.predict_on_batch(x)
    for out in _numpy(outputs):
        assert out.dtype == np.float32 and np.isfinite(out).all(), entry.name
    assert _numpy(outputs)[0].shape[0] == len(y)

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_loss(entry))
    before = [np.array(v) for v in _numpy(model.trainable_variables)]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss), (entry.name, loss)
    after = _numpy(model.trainable_variables)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), f"{entry.name}: one step changed nothing"

    assert_save_load_identical(model, x, tmp_path)


def run_mixed_precision_test(entry: ModelEntry) -> None:
    """Under `mixed_bfloat16` the variables stay float32 and the outputs are finite float32."""
    example = entry.example
    x, _ = example_batch(entry)
    assert_runs_mixed_bfloat16(entry.name, example.input_spec, example.output_spec, x, **example.hparams)


def run_search_space_test(entry: ModelEntry) -> None:
    """The search space declares exactly what it samples, and its first point builds on the example's specs."""
    hp = keras_tuner.HyperParameters()
    hparams = search_space(entry.name, hp)
    assert {p.name for p in hp.space} == set(hparams), entry.name
    example = entry.example
    with keras.StatelessScope(initialize_variables=False):  # shapes only
        model = build_model(entry.name, example.input_spec, example.output_spec, **hparams)
    reference = build_model(entry.name, example.input_spec, example.output_spec, **example.hparams)
    assert model.output_shape == reference.output_shape, entry.name


def assert_config_round_trips(layer: keras.layers.Layer) -> None:
    """`from_config(get_config())` gives the same config, and the config holds every `__init__` argument."""
    config = layer.get_config()
    revived = type(layer).from_config(config)
    assert json.dumps(revived.get_config(), sort_keys=True, default=str) == json.dumps(
        config, sort_keys=True, default=str
    ), type(layer).__name__


def assert_save_load_identical(model: keras.Model, inputs, tmp_path, atol=1e-5) -> None:
    """`.keras` round trip under `safe_mode=True` gives identical outputs."""
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    expected = model.predict_on_batch(inputs)
    actual = restored.predict_on_batch(inputs)
    for e, a in zip(_numpy(expected), _numpy(actual)):
        np.testing.assert_allclose(a, e, atol=atol, rtol=1e-5)


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
    would compile every op on its own, several times slower (docs/benchmarks.md §4).
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(name, input_spec, output_spec, **hparams)
        outputs = model.predict_on_batch(inputs)
    finally:
        keras.config.set_dtype_policy(previous)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    for out in _numpy(outputs):
        assert out.dtype == np.float32, out.dtype
        assert np.isfinite(out).all()


def count_params(model: keras.Model) -> int:
    return int(sum(np.prod(v.shape) for v in model.weights if v.trainable))


def count_params_unallocated(name, input_spec, output_spec, **hparams) -> int:
    """Trainable parameters of a reference-size model, without allocating its weights."""
    return count_parameters(name, input_spec, output_spec, **hparams)
