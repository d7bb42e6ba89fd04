import keras
import numpy as np
from keras.src.saving import saving_lib

from components.callbacks import CacheSavingSkipsets


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
