"""The callbacks the train and tune components fit with; `make test` runs this file on TensorFlow and on JAX."""

import threading

import keras
import numpy as np
import pytest
from keras.src.saving import saving_lib

from components.callbacks import CacheSavingSkipsets, NonFiniteLossError, training_callbacks
from tests.helpers import use_mlflow_store


def _model():
    import keras_models
    from keras_models.specs import InputSpec, OutputSpec

    model = keras_models.build_model("mlp", InputSpec((4,)), OutputSpec("classification", 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_checkpoints_reuse_the_saving_skipsets_and_still_restore(tmp_path):
    keras.backend.clear_session()
    CacheSavingSkipsets().on_train_begin()
    assert saving_lib.get_attr_skipset("Layer") is saving_lib.get_attr_skipset("Layer")
    assert saving_lib.get_attr_skipset("Optimizer") is saving_lib.get_attr_skipset("Optimizer")

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    def model():
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    trained = model()
    trained.fit(x, y, epochs=3, verbose=0, callbacks=[CacheSavingSkipsets(), keras.callbacks.BackupAndRestore(tmp_path, delete_checkpoint=False)])
    restored = model()
    restored.load_weights(tmp_path / "latest.weights.h5")
    for a, b in zip(trained.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_batch_hooks_run_off_the_training_thread_where_the_backend_allows(tmp_path, iris):
    """None of the train component's callbacks makes Keras run batch hooks in line, so JAX never waits on a step."""
    import mlflow

    use_mlflow_store(tmp_path)
    threads = []
    probe = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: threads.append(threading.get_ident()))
    probe.async_safe = True
    with mlflow.start_run() as run:
        history = _model().fit(*iris, batch_size=32, epochs=3, validation_split=0.2, verbose=0,
                               callbacks=[*training_callbacks(tmp_path / "backup", 5), probe])
    assert len(threads) == 3 * 4
    off_the_training_thread = {ident != threading.get_ident() for ident in threads}
    assert off_the_training_thread == {keras.backend.backend() != "tensorflow"}  # TF's backend is not thread-safe
    logged = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")
    assert [m.value for m in logged] == pytest.approx(history.history["val_loss"])


def test_a_nan_loss_stops_fitting_before_its_epoch_is_checkpointed(tmp_path, iris):
    import mlflow

    use_mlflow_store(tmp_path)
    x, y = iris
    x = x.copy()
    x[70, 0] = np.inf  # in batch 3 of 32-row batches
    with mlflow.start_run(), pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, batch [34] "):
        _model().fit(x, y, batch_size=32, epochs=3, shuffle=False, validation_split=0.2, verbose=0,
                     callbacks=training_callbacks(tmp_path / "backup", 5))
    assert not list((tmp_path / "backup").glob("*.weights.h5"))
