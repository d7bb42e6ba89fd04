import numpy as np
import pytest
import keras

from keras_models import InputSpec, OutputSpec, build_model
from keras_models.architectures.rbf import RBFLayer, init_rbf_centres_from_kmeans
from tests.models.checks import assert_training_lowers_loss, count_params

SPEC_IN, SPEC_OUT = InputSpec((4,)), OutputSpec("classification", 3)


def test_rbf_layer_is_a_gaussian_of_the_distance():
    layer = RBFLayer(num_centres=3)
    x = np.random.default_rng(0).normal(size=(5, 2)).astype("float32")
    layer.build(x.shape)
    centres = np.array([[0.0, 0.0], [1.0, -1.0], [2.0, 0.5]], "float32")
    widths = np.array([0.5, 1.0, 2.0], "float32")
    layer.centres.assign(centres)
    layer.log_widths.assign(np.log(widths))
    expected = np.exp(-((x[:, None] - centres) ** 2).sum(-1) / (2 * widths**2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_rbf_heads_and_parameter_count():
    model = build_model("rbf", InputSpec((4,)), OutputSpec("regression", 2), num_centres=7)
    assert model.output_shape == (None, 2)
    assert count_params(model) == (7 * 4 + 7) + (7 * 2 + 2)  # centres, widths; linear head
    assert build_model("rbf", SPEC_IN, SPEC_OUT).output_shape == (None, 3)


def test_kmeans_init_sets_centroids_and_nearest_centre_widths(iris):
    from sklearn.cluster import KMeans

    x, _ = iris
    model = build_model("rbf", SPEC_IN, SPEC_OUT, num_centres=5)
    centres, widths = init_rbf_centres_from_kmeans(model, x, seed=3)
    expected = KMeans(n_clusters=5, n_init=10, random_state=3).fit(x).cluster_centers_
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("rbf").centres), expected, atol=1e-5)
    distances = np.linalg.norm(expected[:, None] - expected[None], axis=-1) + np.diag(np.full(5, np.inf))
    np.testing.assert_allclose(widths, distances.min(1), rtol=1e-5)
    np.testing.assert_allclose(np.exp(keras.ops.convert_to_numpy(model.get_layer("rbf").log_widths)), widths, rtol=1e-5)


@pytest.mark.learns
def test_kmeans_centres_give_better_features_than_random_ones(iris):
    """With the Gaussian layer frozen (Moody & Darken's two-stage training), only the head learns."""
    x, y = iris
    losses = {}
    for init in ("random", "kmeans"):
        keras.utils.set_random_seed(1)
        model = build_model("rbf", SPEC_IN, SPEC_OUT, num_centres=9)
        if init == "kmeans":
            init_rbf_centres_from_kmeans(model, x, seed=0)
        model.get_layer("rbf").trainable = False
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=10, batch_size=32, verbose=0)
        losses[init] = float(model.evaluate(x, y, verbose=0))
    assert losses["kmeans"] < 0.8 * losses["random"], losses


@pytest.mark.learns
def test_rbf_from_kmeans_learns_iris(iris):
    x, y = iris
    model = build_model("rbf", SPEC_IN, SPEC_OUT, num_centres=9)
    init_rbf_centres_from_kmeans(model, x, seed=0)
    assert_training_lowers_loss(model, x, y, loss="sparse_categorical_crossentropy", epochs=10, learning_rate=0.05, factor=0.5)
    assert (model.predict(x, verbose=0).argmax(1) == y).mean() >= 0.9


def test_rbf_rejects_bad_hparams():
    with pytest.raises(ValueError, match="num_centres=0 .* out of range"):
        build_model("rbf", SPEC_IN, SPEC_OUT, num_centres=0)

