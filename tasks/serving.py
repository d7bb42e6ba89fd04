"""The exported model as users call it: raw rows in, predictions out, in Python and in MLflow.

`serving.keras` is the trained network behind the task's preprocessing
layers; `transform.json` holds the Beam statistics and the task's options,
so the `Predictor` needs nothing else from the pipeline's artifacts.

Ingest normalises column names (`"sepal length (cm)"` → `"sepal_length_cm"`);
the train component copies what ingest recorded about the source file (its
original column names, its CSV format) into `transform.json`, so the served
model takes rows under the file's own headers as well as the normalised ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The project packages a logged model ships: what `Predictor` imports, and nothing of the pipeline above it.
CODE_PATHS = ("tasks", "keras_models", "data")
CODE_SUFFIXES = (".py", ".json")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYFUNC_MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
# The key of `transform.json` that holds the ingest schema's "source" entry: its `renamed_columns`
# (original name → normalised name) and `csv` (the resolved CSV format, or null). The key "source"
# itself already names the source-language column of seq2seq transforms.
SOURCE_KEY = "ingest_source"


def renamed_columns(transform: dict[str, Any]) -> dict[str, str]:
    """Original column name → normalised name, for the columns whose name ingest changed."""
    renamed = (transform.get(SOURCE_KEY) or {}).get("renamed_columns") or {}
    return {original: new for original, new in renamed.items() if original != new}


def normalise_columns(frame: pd.DataFrame, transform: dict[str, Any]) -> pd.DataFrame:
    """`frame` with the source file's original column names replaced by the normalised ones the model reads.

    Columns already under their normalised name are left as they are; a
    frame holding a feature under both names is refused, since either
    column could be the one meant.
    """
    renamed = {c: new for c, new in renamed_columns(transform).items() if c in frame.columns}
    both = [f"{original!r} and {new!r}" for original, new in renamed.items() if new in frame.columns]
    if both:
        raise ValueError(f"Input rows hold the same column under two names: {', '.join(both)}; keep one of each pair.")
    return frame.rename(columns=renamed) if renamed else frame


def task_from_transform(transform: dict[str, Any]):
    """The task recorded in a transform spec, with the options it was trained under."""
    from pydantic import TypeAdapter

    from tasks import get_task
    from tasks.options import TaskOptions

    return get_task(TypeAdapter(TaskOptions).validate_python(transform["task"]))


class Predictor:
    """A loaded serving model with its transform: a DataFrame of raw rows → predictions."""

    def __init__(self, model_path: str | Path, transform_path: str | Path):
        import keras

        import tasks.layers  # noqa: F401  (registers the preprocessing layers)
        from keras_models.registry import load_families

        load_families()  # registers the zoo's layers

        self.transform = json.loads(Path(transform_path).read_text())
        self.task = task_from_transform(self.transform)
        self.model = keras.saving.load_model(model_path, safe_mode=True)

    def outputs(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's raw outputs (probabilities, forecasts, token ids) for the rows of `frame`.

        Columns may carry the source file's original names or the normalised ones.
        """
        return self.task.predict_outputs(self.model, normalise_columns(frame, self.transform), self.transform)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.task.outputs_frame(self.outputs(frame), self.transform, frame.index)


try:
    import mlflow.pyfunc

    class KerasPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc flavour of the serving model."""

        def load_context(self, context):
            # Keras picks its backend when first imported: the one the model was trained on (a JAX-only
            # host has no TensorFlow to default to), unless the environment names one.
            backend = (context.model_config or {}).get("keras_backend")
            if backend and "keras" not in sys.modules:
                os.environ.setdefault("KERAS_BACKEND", backend)
            self.predictor = Predictor(context.artifacts["keras_model"], context.artifacts["transform"])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            return self.predictor.predict(model_input)

except ImportError:  # serving without MLflow installed needs only the Predictor
    KerasPyfunc = None  # type: ignore[assignment,misc]


def log_pyfunc_model(serving_path: Path, transform_path: Path, example: pd.DataFrame, registered_model_name=None):
    """Logs the serving model to the active MLflow run with a raw-input signature, as code: nothing pickled."""
    from importlib.metadata import PackageNotFoundError, version

    import keras
    import mlflow

    predictor = Predictor(serving_path, transform_path)
    # The signature and input example use the source file's own column names, so `mlflow models predict`
    # and `mlflow models serve` take the file as it is.
    example = example.rename(columns={new: original for original, new in renamed_columns(predictor.transform).items()})
    predictions = predictor.predict(example)
    # Numeric columns are declared as double: clients send float64, and float32 converts safely to it.
    example = example.astype({c: "float64" for c in example.columns if pd.api.types.is_float_dtype(example[c])})
    backend = keras.backend.backend()
    packages = ("keras", "tensorflow-cpu", *(("jax",) if backend == "jax" else ()),
                "numpy", "pandas", "pydantic", "scikit-learn")
    requirements = []
    for name in packages:
        with contextlib.suppress(PackageNotFoundError):
            requirements.append(f"{name}=={version(name)}")
    if predictor.transform.get("combine"):  # forecasts averaged with statsforecast's, fitted at serving time
        requirements.append(f"statsforecast=={version('statsforecast')}")
    with tempfile.TemporaryDirectory() as staging:
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_MODEL_CODE),
            artifacts={"keras_model": str(serving_path), "transform": str(transform_path)},
            code_paths=[str(code_only(PROJECT_ROOT / path, Path(staging) / path)) for path in CODE_PATHS],
            signature=signature(example, predictions, predictor.transform),
            input_example=example,
            pip_requirements=requirements,
            model_config={"keras_backend": backend},
            registered_model_name=registered_model_name,
        )


def signature(example: pd.DataFrame, predictions: pd.DataFrame, transform: dict[str, Any]):
    """The signature MLflow enforces: the example's columns, plus each renamed one under its normalised name.

    MLflow drops input columns its signature does not name and refuses rows
    that lack a required one. A column ingest renamed is therefore declared
    under both names, each optional, so rows with either name pass (the
    `Predictor` then refuses rows that lack a feature under both); every
    other column stays as `infer_signature` declares it.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    inferred = infer_signature(example, predictions)
    renamed = renamed_columns(transform)
    if not renamed or inferred.inputs.is_tensor_spec():
        return inferred
    columns, aliases = [], []
    for spec in inferred.inputs.inputs:
        if spec.name in renamed:
            columns.append(ColSpec(spec.type, spec.name, required=False))
            aliases.append(ColSpec(spec.type, renamed[spec.name], required=False))
        else:
            columns.append(spec)
    return ModelSignature(inputs=Schema(columns + aliases), outputs=inferred.outputs, params=inferred.params)


def code_only(package: Path, staging: Path) -> Path:
    """A copy of `package` with its modules (and the JSON they read) only.

    The `data` package also holds the bundled datasets: logged as they are,
    every model version would carry them.
    """

    def skipped(directory: str, names: list[str]) -> set[str]:
        return {name for name in names if name == "__pycache__"
                or not (Path(directory, name).is_dir() or name.endswith(CODE_SUFFIXES))}

    return Path(shutil.copytree(package, staging, ignore=skipped))
