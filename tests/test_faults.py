"""Injected faults: each one stops with an error that names where it happened, and loses nothing."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.callbacks import NonFiniteLossError, StopOnNonFiniteLoss
from tests.helpers import config_for, run_component, use_mlflow_store


def test_a_nan_loss_stops_training_naming_its_epoch_and_batch(iris):
    import keras

    import keras_models
    from keras_models.specs import InputSpec, OutputSpec

    x, y = iris
    x = x.copy()
    x[70, 0] = np.inf  # in batch 3 of 32-row batches: its loss is clipped, its update poisons batch 4
    model = keras_models.build_model("mlp", InputSpec((4,)), OutputSpec("classification", 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    epochs = []
    seen = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(epoch))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, batch [34] \(step [34]\)\. Lower "):
        model.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0, callbacks=[StopOnNonFiniteLoss(), seen])
    assert epochs == []


def test_the_train_component_fails_on_a_diverging_loss_and_publishes_nothing(tmp_path, monkeypatch):
    from pipeline.artifacts import ArtifactStore
    from pipeline.runner import run_pipeline

    use_mlflow_store(tmp_path)
    config = config_for(epochs=3, tuner="none", output_dir=str(tmp_path / "artifacts"))
    first = run_pipeline(config, ["preprocess"])
    train_split = first.components["preprocess"].artifact.path / "transformed" / "train"
    for file in train_split.glob("*.parquet"):  # an inf feature value, as a broken upstream step could write
        table = pq.read_table(file).to_pandas()
        table.loc[0, "sepal_length_cm"] = np.inf
        table.to_parquet(file)
    monkeypatch.setattr(ArtifactStore, "verify", staticmethod(lambda path, manifest: None))  # let it through
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, batch \d+ \(step \d+\)"):
        run_pipeline(config, ["train"])
    assert not list((tmp_path / "artifacts" / "train").glob("*/manifest.json"))
