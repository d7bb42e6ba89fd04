"""The multilayer perceptron."""

from __future__ import annotations

import keras

from keras_models.heads import require_range, task_head
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec


def mlp_search_space(hp):
    return dict(
        num_layers=hp.Int("num_layers", 1, 3),
        units=hp.Int("units", 16, 128, step=16),
        activation=hp.Choice("activation", ["relu", "gelu"]),
        dropout=hp.Float("dropout", 0.0, 0.4, step=0.1),
        l2=hp.Float("l2", 1e-6, 1e-2, sampling="log"),
    )


@register_model(
    "mlp",
    family="dense",
    search_space=mlp_search_space,
    paper="Rumelhart, Hinton & Williams 1986; GELU: Hendrycks & Gimpel 2016",
    tasks=("classification", "regression", "forecasting"),
    example=Example(InputSpec((4,)), OutputSpec("classification", 3), dict(units=8)),
    reference=Example(InputSpec((4,)), OutputSpec("classification", 3), description="Iris, 4 features → 3 classes"),
)
def mlp(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    num_layers: int = 2,
    units: int = 64,
    activation: str = "relu",
    dropout: float = 0.1,
    l2: float = 1e-4,
) -> keras.Model:
    """A multilayer perceptron: `num_layers` × (Dense → activation → Dropout), then the task head.

    Args:
        num_layers: hidden layers, 1 to 8.
        units: width of each hidden layer.
        activation: `"relu"` or `"gelu"`.
        dropout: dropout rate after each hidden layer, in [0, 0.9].
        l2: L2 penalty on the hidden kernels.

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("mlp", InputSpec((4,)), OutputSpec("classification", 3), units=8)
    >>> model.output_shape
    (None, 3)
    """
    require_range("num_layers", num_layers, 1, 8, model="mlp")
    require_range("units", units, 1, 65536, model="mlp")
    require_range("dropout", dropout, 0.0, 0.9, model="mlp")
    if activation not in ("relu", "gelu"):
        raise ValueError(f"Hyperparameter activation={activation!r} of model 'mlp' must be 'relu' or 'gelu'.")
    inputs = keras.Input(shape=input_spec.shape, name="features")
    x = keras.layers.Flatten()(inputs) if len(input_spec.shape) > 1 else inputs
    for i in range(num_layers):
        x = keras.layers.Dense(
            units,
            activation=activation,
            kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
            name=f"dense_{i}",
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    return keras.Model(inputs, task_head(x, output_spec), name="mlp")

