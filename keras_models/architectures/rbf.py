"""The radial basis function network, and its k-means initialisation (Moody & Darken 1989)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_models.heads import require_range, task_head
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec


@keras.saving.register_keras_serializable(package="keras_models")
class RBFLayer(keras.layers.Layer):
    """Gaussian radial basis functions with learnable centres and widths.

    Unit `k` outputs `exp(-||x - c_k||² / (2 σ_k²))`. Each width is stored as
    `log σ_k` so that gradient steps keep it positive. Distances are computed in
    float32 (the expanded `||x||² - 2 x·c + ||c||²` cancels badly in bfloat16).

    Args:
        num_centres: int, number of basis functions.
        initial_width: float, the width σ of every unit before training or
            k-means initialisation.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.

    Example:
    >>> layer = RBFLayer(num_centres=5)
    >>> tuple(layer(np.zeros((2, 3), "float32")).shape)
    (2, 5)
    """

    def __init__(self, num_centres: int, initial_width: float = 1.0, **kwargs):
        # No autocasting: the centres stay float32 under mixed precision.
        super().__init__(autocast=False, **kwargs)
        self.num_centres = num_centres
        self.initial_width = initial_width

    def build(self, input_shape):
        self.centres = self.add_weight(
            shape=(self.num_centres, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            name="centres",
        )
        self.log_widths = self.add_weight(
            shape=(self.num_centres,),
            initializer=keras.initializers.Constant(float(np.log(self.initial_width))),
            name="log_widths",
        )

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        centres = ops.convert_to_tensor(self.centres)
        squared_distances = ops.maximum(
            ops.sum(ops.square(x), axis=-1, keepdims=True)
            - 2.0 * ops.matmul(x, ops.transpose(centres))
            + ops.sum(ops.square(centres), axis=-1),
            0.0,
        )
        widths = ops.exp(ops.convert_to_tensor(self.log_widths))
        outputs = ops.exp(-squared_distances / (2.0 * ops.square(widths)))
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_centres)

    def get_config(self):
        config = super().get_config()
        config.update({"num_centres": self.num_centres, "initial_width": self.initial_width})
        return config


def init_rbf_centres_from_kmeans(model: keras.Model, x, seed: int = 0):
    """Sets the RBF centres to k-means centroids of `x` and each width to the
    distance from its centre to the nearest other centre (Moody & Darken 1989).

    Args:
        model: a model with one `RBFLayer` among its layers, e.g. built by `build_model("rbf", ...)`.
        x: training features, shape `(n, *input_spec.shape)` with `n >= num_centres`.
        seed: random state of the k-means initialisation.

    Returns:
        `(centres, widths)` as numpy arrays, as set on the layer.
    """
    from sklearn.cluster import KMeans

    layers = [layer for layer in model.layers if isinstance(layer, RBFLayer)]
    if len(layers) != 1:
        raise ValueError(f"Model {model.name!r} has {len(layers)} RBFLayer layers; expected one.")
    layer = layers[0]
    x = np.asarray(x, dtype="float64").reshape(len(x), -1)
    if len(x) < layer.num_centres:
        raise ValueError(f"k-means needs at least num_centres={layer.num_centres} rows; got {len(x)}.")
    centres = KMeans(n_clusters=layer.num_centres, n_init=10, random_state=seed).fit(x).cluster_centers_
    if layer.num_centres == 1:
        widths = np.full(1, max(float(np.linalg.norm(x - centres, axis=1).mean()), 1e-3))
    else:
        distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        np.fill_diagonal(distances, np.inf)
        widths = distances.min(axis=1)
        positive = widths[widths > 0]
        widths = np.where(widths > 0, widths, positive.mean() if positive.size else 1.0)
    layer.centres.assign(centres.astype("float32"))
    layer.log_widths.assign(np.log(widths).astype("float32"))
    return centres.astype("float32"), widths.astype("float32")


def rbf_search_space(hp):
    """The centre count alone: the registered k-means initializer sets every width, whatever `initial_width` says."""
    return dict(num_centres=hp.Int("num_centres", 4, 64, step=4))


@register_model(
    "rbf",
    family="dense",
    search_space=rbf_search_space,
    paper="Broomhead & Lowe 1988, Multivariable functional interpolation and adaptive networks; "
    "Moody & Darken 1989, Fast learning in networks of locally-tuned processing units",
    tasks=("classification", "regression"),
    example=Example(InputSpec((4,)), OutputSpec("classification", 3), dict(num_centres=6)),
    reference=Example(InputSpec((4,)), OutputSpec("classification", 3), description="Iris, 4 features → 3 classes"),
    initializer=init_rbf_centres_from_kmeans,
)
def rbf(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    num_centres: int = 16,
    initial_width: float = 1.0,
) -> keras.Model:
    """A radial basis function network: one layer of Gaussian units, then a linear task head.

    Centres and widths are trained with the head by backpropagation, starting
    from k-means of the training data (`init_rbf_centres_from_kmeans`, Moody &
    Darken 1989), which the trainer applies as the model's registered initializer.

    Args:
        num_centres: Gaussian units, 1 to 4096.
        initial_width: width σ of every unit before training, in [1e-3, 1e3].

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("rbf", InputSpec((4,)), OutputSpec("classification", 3), num_centres=6)
    >>> model.output_shape
    (None, 3)
    """
    require_range("num_centres", num_centres, 1, 4096, model="rbf")
    require_range("initial_width", initial_width, 1e-3, 1e3, model="rbf")
    inputs = keras.Input(shape=input_spec.shape, name="features")
    x = keras.layers.Flatten()(inputs) if len(input_spec.shape) > 1 else inputs
    x = RBFLayer(num_centres, initial_width, name="rbf")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="rbf")
