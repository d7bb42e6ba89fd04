"""The pipeline on JAX where TensorFlow is not installed, as on a GPU host with JAX only.

The tests run `.venv-notf/bin/python` (the lock without the TensorFlow
distributions, built by `make .venv-notf/.installed`): Iris goes through
every component there, its MLflow model serves from a process that names no
Keras backend, and recipes whose serving model needs TensorFlow's string
ops stop before training, saying what needs it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import new_sqlite_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTF_PYTHON = ROOT / ".venv-notf" / "bin" / "python"
EXPERIMENT = "no-tensorflow"
TENSORFLOW_PACKAGES = ("tensorboard", "tensorflow", "tensorflow_datasets", "tensorflow_metadata")

# The whole pipeline with the CLI (no tuner: the recipe's hyperparameters train Iris reliably), then a
# one-trial Keras Tuner search over the same artifacts; prints what they produced and which modules loaded.
IRIS_CHILD = f"""
import json, sys
from pathlib import Path

import keras

from components.artifact_io import read_json
from pipeline.cli import main

out = Path(sys.argv[1])
common = ["--recipe", "iris_mlp", "--output-dir", str(out)]
run_rc = main(["run", *common, "--tuner", "none", "--epochs", "80"])
tune_rc = main(["tune", *common, "--tuner", "random", "--max-trials", "1", "--set", "tune.epochs=3"])
summary = lambda name: read_json(next((out / name).glob("*/manifest.json")))["summary"]
print(json.dumps({{
    "rc": [run_rc, tune_rc],
    "backend": keras.backend.backend(),
    "test_metrics": summary("evaluate")["test_metrics"],
    "model_uri": summary("train")["mlflow_model_uri"],
    "tuned": sorted(p.name for p in (out / "tune").glob("*/best_hparams.json")),
    "tensorflow_modules": sorted(m for m in sys.modules if m.split(".")[0] in {TENSORFLOW_PACKAGES}),
}}))
"""

# Loads the logged MLflow model as a serving host would, and scores it on the raw test rows.
PYFUNC_CHILD = """
import json, sys
from pathlib import Path

import mlflow

from data.splits import read_frame

model = mlflow.pyfunc.load_model(sys.argv[1])
test = read_frame(next(Path(sys.argv[2]).glob("*/test")))
predicted = model.predict(test.drop(columns="species"))["prediction"].to_numpy()
print(json.dumps({
    "backend": sys.modules["keras"].backend.backend(),  # imported by the model as it loaded
    "accuracy": float((predicted == test["species"].to_numpy()).mean()),
    "requirements": Path(mlflow.pyfunc.get_model_dependencies(sys.argv[1])).read_text().split(),
}))
"""


@pytest.fixture(scope="module")
def notf_python() -> Path:
    if not NOTF_PYTHON.exists():
        pytest.fail(f"{NOTF_PYTHON} is missing: build the environment without TensorFlow with "
                    "`make .venv-notf/.installed`.", pytrace=False)
    return NOTF_PYTHON


def mlflow_store(directory: Path) -> str:
    """A SQLite store whose experiment keeps its artifacts in `directory` too, not under the working directory."""
    from mlflow import MlflowClient

    uri = new_sqlite_store(directory)
    MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=(directory / "mlartifacts").as_uri())
    return uri


def run_notf(python: Path, args: list[str], tracking_uri: str | None = None, *,
             backend: str | None = "jax") -> subprocess.CompletedProcess:
    """`python args` in the checkout, on `backend` (None: Keras's own choice), tracked in `tracking_uri`."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "KERAS_BACKEND", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
            "MLFLOW_TRACKING_URI"}
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env["MLFLOW_EXPERIMENT_NAME"] = EXPERIMENT
    if backend:
        env["KERAS_BACKEND"] = backend
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return subprocess.run([str(python), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def last_json_line(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def iris_run(notf_python, tmp_path_factory):
    root = tmp_path_factory.mktemp("iris-notf")
    uri = mlflow_store(root)
    result = last_json_line(run_notf(notf_python, ["-c", IRIS_CHILD, str(root / "out")], uri))
    return root / "out", uri, result


def test_tensorflow_is_not_installed(notf_python):
    done = run_notf(notf_python, ["-c", "import tensorflow"])
    assert done.returncode != 0 and "No module named 'tensorflow'" in done.stderr, done.stderr[-2000:]


def test_iris_pipeline_trains_tunes_and_evaluates_on_jax_without_tensorflow(iris_run):
    out, _, result = iris_run
    assert result["rc"] == [0, 0] and result["backend"] == "jax"
    assert result["tensorflow_modules"] == []
    assert result["test_metrics"]["accuracy"] >= 0.85  # the majority baseline is 1/3
    assert {p.name for p in (out / "train").glob("*/*.keras")} == {"model.keras", "serving.keras"}
    assert result["tuned"] == ["best_hparams.json"]


def test_the_mlflow_model_serves_on_jax_where_no_backend_is_named(notf_python, iris_run):
    out, uri, trained = iris_run
    served = last_json_line(run_notf(notf_python, ["-c", PYFUNC_CHILD, trained["model_uri"], str(out / "ingest")],
                                     uri, backend=None))
    assert served["backend"] == "jax"  # from the model's config: Keras would default to TensorFlow
    assert served["accuracy"] == pytest.approx(trained["test_metrics"]["accuracy"])
    assert any(r.startswith("jax==") for r in served["requirements"])
    assert not any(r.startswith("tensorflow") for r in served["requirements"])


@pytest.mark.parametrize("tuner", ["none", "random"])
def test_categorical_columns_stop_training_before_it_starts(notf_python, tmp_path, tuner):
    from mlflow import MlflowClient

    uri = mlflow_store(tmp_path)
    out = tmp_path / "out"
    done = run_notf(notf_python, ["-m", "pipeline.cli", "train", "--recipe", "penguins_mlp", "--output-dir", str(out),
                                  "--tuner", tuner], uri)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: Task 'tabular_classification'")
    for part in ("'island', 'sex'", "StringLookup", "needs TensorFlow", "cannot be imported",
                 "install tensorflow-cpu", "KERAS_BACKEND=tensorflow", "encode those columns as numbers"):
        assert part in error
    assert not list(out.rglob("*.keras"))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    stopped = next(r for r in runs if r.info.run_name == ("train" if tuner == "none" else "tune"))
    assert stopped.info.status == "FAILED"
    assert not stopped.data.metrics  # no epoch ran
    assert not [r for r in runs if r.info.run_name.startswith("trial-")]  # nor any trial
    assert {r.info.run_name for r in runs if r.info.status == "FINISHED"} >= {"ingest", "preprocess"}


def test_text_task_names_what_needs_tensorflow(notf_python, tmp_path):
    done = run_notf(notf_python, ["-m", "pipeline.cli", "train", "--recipe", "mr_cnn1d",
                                  "--output-dir", str(tmp_path / "out")], new_sqlite_store(tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: Task 'text_classification'")
    assert "TextVectorization" in error and "install tensorflow-cpu" in error
