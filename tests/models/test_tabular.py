import keras
import numpy as np
import pytest

from keras_models import InputSpec, OutputSpec, build_model
from keras_models.architectures.tabnet import (
    TabNetPretrainer,
    hide_features,
    reconstruction_loss,
    sparsemax,
    tabnet_feature_masks,
)
from keras_models.plots import save_feature_mask_png
from tests.models.checks import assert_training_lowers_loss, count_params

SPEC_IN, SPEC_OUT = InputSpec((30,)), OutputSpec("classification", 2)
SMALL = dict(n_d=8, n_a=8, n_steps=2, n_shared=1, n_independent=1, momentum=0.9)


@pytest.fixture(scope="module")
def breast_cancer():
    """scikit-learn's breast-cancer data: 569 rows, 30 standardised features, binary label."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = ((data.data - data.data.mean(0)) / data.data.std(0)).astype("float32")
    return x, data.target.astype("int32"), list(data.feature_names)


def sparsemax_reference(z):
    """Sparsemax by bisection on the threshold τ with Σ max(z - τ, 0) = 1 (no sorting)."""
    low, high = z.min(-1, keepdims=True) - 1.0, z.max(-1, keepdims=True)
    for _ in range(100):
        tau = (low + high) / 2
        over = np.maximum(z - tau, 0).sum(-1, keepdims=True) > 1
        low, high = np.where(over, tau, low), np.where(over, high, tau)
    return np.maximum(z - (low + high) / 2, 0)


def test_sparsemax_matches_reference_with_exact_zeros():
    z = np.random.default_rng(0).normal(scale=2.0, size=(64, 10)).astype("float32")
    p = keras.ops.convert_to_numpy(sparsemax(z))
    np.testing.assert_allclose(p, sparsemax_reference(z.astype("float64")), atol=1e-5)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert (p == 0).mean() > 0.3 and (p >= 0).all()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sparsemax(np.array([[0.0, 0.5, 3.0]]))), [[0, 0, 1]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sparsemax(np.array([[1.0, 1.2, -2.0]]))), [[0.4, 0.6, 0]],
                               atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sparsemax(z.T, axis=0)), p.T, atol=1e-6)


def tabnet_params(features, n_d, n_a, n_steps, n_shared, n_independent, units):
    width = n_d + n_a
    glu = lambda inputs: inputs * 2 * width  # noqa: E731  (dense layers have no bias)
    shared = sum(glu(features if j == 0 else width) for j in range(n_shared))
    independent = sum(glu(features if n_shared + j == 0 else width) for j in range(n_independent))
    norms = (n_shared + n_independent) * 2 * (2 * width)  # γ and β of each block's batch norm
    attention = n_a * features + 2 * features
    return 2 * features + shared + (n_steps + 1) * (independent + norms) + n_steps * attention + n_d * units + units


@pytest.mark.parametrize("n_shared,n_independent", [(2, 2), (0, 1)])
def test_tabnet_heads_and_parameter_count(n_shared, n_independent):
    model = build_model("tabnet", SPEC_IN, SPEC_OUT, n_shared=n_shared, n_independent=n_independent)
    assert model.output_shape == (None, 2)
    assert count_params(model) == tabnet_params(30, 8, 8, 3, n_shared, n_independent, 2)
    assert build_model("tabnet", SPEC_IN, OutputSpec("regression", 3), **SMALL).output_shape == (None, 3)


def test_tabnet_adds_the_mask_entropy_loss(breast_cancer):
    x = breast_cancer[0][:32]
    model = build_model("tabnet", SPEC_IN, SPEC_OUT, sparsity_coefficient=0.01, **SMALL)
    encoder = model.get_layer("tabnet_encoder")
    _, masks, _ = encoder(x, training=False, return_masks=True)
    masks = keras.ops.convert_to_numpy(masks)
    entropy = (-masks * np.log(masks + 1e-15)).sum(-1).mean(-1).sum() / SMALL["n_steps"]
    assert len(encoder.losses) == 1
    np.testing.assert_allclose(float(encoder.losses[0]), 0.01 * entropy, rtol=1e-4)


@pytest.mark.learns
def test_tabnet_learns_breast_cancer_with_readable_masks(breast_cancer, tmp_path):
    x, y, names = breast_cancer
    model = build_model("tabnet", SPEC_IN, SPEC_OUT, **SMALL)
    assert_training_lowers_loss(model, x, y, loss="sparse_categorical_crossentropy", epochs=6, learning_rate=1e-2,
                                factor=0.6)
    assert (model.predict(x, verbose=0).argmax(1) == y).mean() >= 0.9

    masks, importance = tabnet_feature_masks(model, x[:50])
    assert masks.shape == (2, 50, 30) and importance.shape == (50, 30)
    np.testing.assert_allclose(masks.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(importance.sum(-1), 1.0, atol=1e-5)
    assert (masks == 0).any() and (masks >= 0).all()
    save_feature_mask_png(masks, names, tmp_path / "masks.png")
    assert (tmp_path / "masks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.learns
def test_tabnet_pretraining_reconstructs_hidden_features_in_the_classifiers_encoder(breast_cancer):
    x = breast_cancer[0]
    train, held_out = x[:450], x[450:]
    model = build_model("tabnet", SPEC_IN, SPEC_OUT, **SMALL)
    encoder = model.get_layer("tabnet_encoder")
    before = encoder.get_weights()
    pretrainer = TabNetPretrainer(encoder, 30)
    loss = reconstruction_loss(train.std(0))
    pretrainer.compile(optimizer=keras.optimizers.Adam(2e-2), loss=loss)

    hidden = hide_features(np.random.default_rng(1), held_out.shape, 0.5)
    assert set(np.unique(hidden)) == {0.0, 1.0} and abs(hidden.mean() - 0.5) < 0.05
    targets = np.concatenate([held_out, hidden], axis=1)
    held_out_loss = lambda: float(np.mean(keras.ops.convert_to_numpy(  # noqa: E731
        loss(targets, pretrainer.predict((held_out, hidden), verbose=0)))))
    # Guessing the train mean of every feature scores about 1 (each error is scaled by 1/variance).
    assert held_out_loss() > 0.9
    rng = np.random.default_rng(0)
    for _ in range(20):
        train_hidden = hide_features(rng, train.shape, 0.5)
        pretrainer.fit((train, train_hidden), np.concatenate([train, train_hidden], axis=1),
                       batch_size=64, epochs=1, verbose=0)
    assert held_out_loss() < 0.75

    # The hidden values never reach the reconstruction, and the classifier's own encoder was trained.
    scrambled = np.where(hidden == 1, np.random.default_rng(2).normal(size=held_out.shape), held_out)
    np.testing.assert_allclose(pretrainer.predict((scrambled.astype("float32"), hidden), verbose=0),
                               pretrainer.predict((held_out, hidden), verbose=0), atol=1e-5)
    assert any(not np.allclose(a, b) for a, b in zip(encoder.get_weights(), before))


def test_tabnet_rejects_bad_hparams():
    with pytest.raises(ValueError, match="gamma=0.5 .* out of range"):
        build_model("tabnet", SPEC_IN, SPEC_OUT, gamma=0.5)
    with pytest.raises(ValueError, match="n_shared \\+ n_independent >= 1"):
        build_model("tabnet", SPEC_IN, SPEC_OUT, n_shared=0, n_independent=0)

