import numpy as np
import pytest

from keras_models import InputSpec, OutputSpec, build_model, get_entry
from tests.models.checks import assert_training_lowers_loss, count_params

SPEC_IN, SPEC_OUT = InputSpec((4,)), OutputSpec("classification", 3)


@pytest.mark.learns
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_mlp_learns_iris(iris, activation):
    x, y = iris
    model = build_model("mlp", SPEC_IN, SPEC_OUT, units=32, activation=activation, dropout=0.0)
    assert model.output_shape == (None, 3)
    assert_training_lowers_loss(model, x, y, loss="sparse_categorical_crossentropy", epochs=30, learning_rate=1e-2, factor=0.5)
    accuracy = (model.predict(x, verbose=0).argmax(1) == y).mean()
    assert accuracy > 0.9


def test_mlp_parameter_count_matches_formula():
    model = build_model("mlp", SPEC_IN, SPEC_OUT, num_layers=2, units=10)
    assert count_params(model) == (4 * 10 + 10) + (10 * 10 + 10) + (10 * 3 + 3)


def test_mlp_rejects_bad_hparams():
    with pytest.raises(ValueError, match="dropout=1.5 .* out of range"):
        build_model("mlp", SPEC_IN, SPEC_OUT, dropout=1.5)
    with pytest.raises(ValueError, match="Unknown hyperparameter.*'width'.*Valid: activation"):
        build_model("mlp", SPEC_IN, SPEC_OUT, width=3)


def test_registry_refuses_duplicates_and_unknown_names():
    from keras_models import register_model

    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp", family="dense", search_space=lambda hp: {}, example=None)(lambda i, o: None)
    with pytest.raises(ValueError, match="Unknown model 'mpl'. Did you mean 'mlp'"):
        get_entry("mpl")

