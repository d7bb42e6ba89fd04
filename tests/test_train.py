"""The train component: its learning rate (a linear warm-up from 0, then held or a cosine to 0), its clean session."""

import keras
import numpy as np
import pytest

from components.artifact_io import load_transformed
from components.train import learning_rate_schedule
from tasks import get_task
from tests.helpers import config_for, run_component


def rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_warmup_rises_from_zero_then_holds_or_follows_a_cosine_to_zero():
    settings = config_for(epochs=10, **{"train.warmup_epochs": 2}).train
    held = learning_rate_schedule(0.01, settings, steps_per_epoch=5)
    assert rates(held, [0, 5, 10, 30, 50]) == pytest.approx([0, 0.005, 0.01, 0.01, 0.01])
    cosine = learning_rate_schedule(0.01, settings.model_copy(update={"decay": "cosine"}), steps_per_epoch=5)
    assert rates(cosine, [5, 10, 30, 50]) == pytest.approx([0.005, 0.01, 0.005, 0], abs=1e-7)
    assert learning_rate_schedule(0.01, config_for(epochs=10).train, steps_per_epoch=5) == 0.01


def test_warmup_longer_than_the_fit_is_refused():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=r"warmup_epochs=5 must be below epochs=5"):
        config_for(epochs=5, **{"train.warmup_epochs": 5})


def test_the_fit_warms_up_over_its_own_steps_and_still_learns(iris_preprocessed, tmp_path, local_mlflow):
    config = config_for(epochs=60, **{"train.warmup_epochs": 5, "train.decay": "cosine"})
    inputs = {"ingest": iris_preprocessed / "ingest", "preprocess": iris_preprocessed / "preprocess"}
    keras.optimizers.Adam()  # as a tuning trial in the same process would: the next Adam would be "adam_1"
    run_component("train", config, inputs, tmp_path / "train")
    model = keras.saving.load_model(tmp_path / "train" / "model.keras")
    # Named from a clean session, so a resumed build names its optimizer as the killed one did.
    assert model.optimizer.name == "adam"
    schedule = model.optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "CosineDecay"
    steps_per_epoch = -(-len(load_transformed(iris_preprocessed / "preprocess", "train", get_task(config.task))[1])
                        // config.train.batch_size)
    assert schedule["config"]["warmup_steps"] == 5 * steps_per_epoch
    assert schedule["config"]["warmup_target"] == pytest.approx(config.train.learning_rate)
    x, y, _ = load_transformed(iris_preprocessed / "preprocess", "test", get_task(config.task))
    accuracy = float((np.asarray(model.predict(x, verbose=0)).argmax(-1) == y).mean())
    assert accuracy >= 0.9
