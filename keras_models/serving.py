"""The exported model: raw features in, class probabilities out.

The preprocessing that Beam applied during training (z-scores with the train
split's mean and variance, vocabulary lookups, mean imputation) is rebuilt
here from `transform.json` as Keras layers in front of the trained network,
so serving sees the same features training did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd


@keras.saving.register_keras_serializable(package="keras_models")
class FillMissing(keras.layers.Layer):
    """Replaces NaN with `value` (the train mean), as the Beam transform does.

    Args:
        value: the fill value.
    """

    def __init__(self, value: float, **kwargs):
        super().__init__(**kwargs)
        self.value = float(value)

    def call(self, inputs):
        return keras.ops.where(keras.ops.isnan(inputs), keras.ops.cast(self.value, inputs.dtype), inputs)

    def get_config(self):
        return {**super().get_config(), "value": self.value}


def feature_dim(transform: dict[str, Any]) -> int:
    """Width of the feature vector: one per numeric feature, one-hot (plus OOV) per categorical."""
    return len(transform["numeric"]) + sum(len(c["vocabulary"]) + 1 for c in transform["categorical"].values())


def feature_matrix(columns: dict[str, np.ndarray], transform: dict[str, Any]) -> np.ndarray:
    """Assembles Beam-transformed columns into the vector the network was trained on."""
    parts = [np.asarray(columns[name], "float32")[:, None] for name in transform["numeric"]]
    for name, spec in transform["categorical"].items():
        parts.append(np.eye(len(spec["vocabulary"]) + 1, dtype="float32")[np.asarray(columns[name])])
    return np.concatenate(parts, axis=1)


def build_serving_model(network: keras.Model, transform: dict[str, Any]) -> keras.Model:
    """Raw feature inputs → the same preprocessing as Beam → `network`."""
    inputs, parts = {}, []
    for name, stats in transform["numeric"].items():
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
        x = FillMissing(stats["mean"], name=f"fill_{name}")(inputs[name])
        parts.append(keras.layers.Normalization(
            mean=stats["mean"], variance=stats["variance"] or 1.0, name=f"normalize_{name}")(x))
    for name, stats in transform["categorical"].items():
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="string")
        parts.append(keras.layers.StringLookup(
            vocabulary=stats["vocabulary"], num_oov_indices=1, output_mode="one_hot",
            name=f"lookup_{name}")(inputs[name]))
    features = keras.layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    return keras.Model(inputs, network(features), name=f"serving_{network.name}")


def raw_inputs(frame: pd.DataFrame, transform: dict[str, Any]) -> dict[str, Any]:
    """A DataFrame of raw rows → the serving model's input dict.

    String columns become string tensors: Keras's `StringLookup` takes them
    on the TensorFlow backend, which serves models with categorical features.
    """
    missing = [n for n in [*transform["numeric"], *transform["categorical"]] if n not in frame.columns]
    if missing:
        raise ValueError(f"Input rows lack feature column(s) {missing}.")
    inputs = {
        name: pd.to_numeric(frame[name], errors="raise").to_numpy("float32")[:, None]
        for name in transform["numeric"]
    }
    for name in transform["categorical"]:
        import tensorflow as tf

        inputs[name] = tf.constant(frame[name].astype("string").fillna("").to_numpy(dtype=object)[:, None])
    return inputs


def predictions_frame(probabilities: np.ndarray, classes: list[str], index=None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {f"probability_{c}": probabilities[:, i].astype("float64") for i, c in enumerate(classes)}, index=index
    )
    frame.insert(0, "label", np.asarray(classes)[probabilities.argmax(1)])
    return frame


class ServingModel:
    """A loaded serving `.keras` model with its transform: DataFrame of raw rows → predictions."""

    def __init__(self, model_path: str | Path, transform_path: str | Path):
        self.model = keras.saving.load_model(model_path, safe_mode=True)
        self.transform = json.loads(Path(transform_path).read_text())
        self.classes = self.transform["label"]["classes"]

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict(raw_inputs(frame, self.transform), verbose=0))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return predictions_frame(self.probabilities(frame), self.classes, frame.index)


try:
    import mlflow.pyfunc

    class KerasPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc flavour of the serving model: raw rows in, label and probabilities out."""

        def load_context(self, context):
            import keras_models  # noqa: F401  (registers the custom layers)

            self.serving = ServingModel(context.artifacts["keras_model"], context.artifacts["transform"])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            return self.serving.predict(model_input)

except ImportError:  # serving without MLflow installed needs only ServingModel
    KerasPyfunc = None  # type: ignore[assignment,misc]


def log_pyfunc_model(
    serving_path: Path, transform_path: Path, example: pd.DataFrame, predictions: pd.DataFrame,
    registered_model_name: str | None = None,
):
    """Logs the serving model to the active MLflow run with a raw-feature signature."""
    import importlib.metadata

    import mlflow
    from mlflow.models import infer_signature

    # Numeric columns are declared as double: clients send float64, and float32 converts safely to it.
    example = example.astype({c: "float64" for c in example.columns if pd.api.types.is_float_dtype(example[c])})
    requirements = [
        f"{name}=={importlib.metadata.version(name)}"
        for name in ("keras", "tensorflow-cpu", "numpy", "pandas")
        if _installed(name)
    ]
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=KerasPyfunc(),
        artifacts={"keras_model": str(serving_path), "transform": str(transform_path)},
        code_paths=[str(Path(__file__).resolve().parent)],
        signature=infer_signature(example, predictions),
        input_example=example,
        pip_requirements=requirements,
        registered_model_name=registered_model_name,
    )


def _installed(name: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False
