"""Tabular regression on scikit-learn's diabetes data through the real components."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from data.sources import SourceError, read_source
from tasks.regression import TabularRegression
from tests.helpers import config_for, run_component, run_train, use_mlflow_store

EPOCHS = 80


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    """Diabetes through ingest, Beam preprocess, train and evaluate, once for the module."""
    root = tmp_path_factory.mktemp("diabetes")
    use_mlflow_store(root)
    config = config_for("diabetes_mlp", **{"train.epochs": EPOCHS})
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    inputs = {"ingest": root / "ingest", "preprocess": root / "preprocess"}
    run_train(config, inputs, root / "train")
    run_component("evaluate", config, {**inputs, "train": root / "train"}, root / "evaluate")
    return root, config


def test_the_mlp_learns_the_target_and_beats_the_train_mean(diabetes):
    root, _ = diabetes
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    test, baseline = metrics["test"], metrics["baseline"]
    assert test["r2"] > 0.3
    assert test["rmse"] < 0.85 * baseline["rmse"]
    assert abs(baseline["r2"]) < 0.05  # the train mean explains nothing of the test split
    assert set(test) == {"rmse", "mae", "r2", "mape"}  # every progression score is positive
    ridge = metrics["references"]["ridge"]
    assert set(ridge) == set(test) and ridge["r2"] > 0.3
    blessing = json.loads((root / "evaluate" / "blessing.json").read_text())
    assert blessing["blessed"]
    informational = [c for c in blessing["checks"] if c.get("informational")]
    assert [c["check"] for c in informational] == ["rmse <= ridge rmse"]
    assert informational[0]["gap"] == pytest.approx(test["rmse"] - ridge["rmse"])
    assert {p.name for p in (root / "evaluate").glob("*.png")} == {"predicted_vs_actual.png", "residuals.png"}


def test_reference_metrics_are_logged_to_mlflow(diabetes):
    import mlflow

    client = mlflow.MlflowClient()
    run = client.search_runs(client.get_experiment_by_name("tests").experiment_id,
                             filter_string="attributes.run_name = 'evaluate'")[0]
    assert {"ridge_rmse", "ridge_mae", "ridge_r2", "test_rmse", "baseline_rmse"} <= set(run.data.metrics)


def test_the_served_model_answers_in_original_units(diabetes):
    import keras

    from components.artifact_io import load_transformed
    from data.splits import read_frame
    from tasks.serving import Predictor

    root, config = diabetes
    predictor = Predictor(root / "train" / "serving.keras", root / "train" / "transform.json")
    test = read_frame(root / "ingest" / "test")
    served = predictor.predict(test.drop(columns=["disease_progression"]))
    assert list(served.columns) == ["prediction"] and served["prediction"].dtype == "float64"

    task = TabularRegression(config.task)
    x, y, transform = load_transformed(root / "preprocess", "test", task)
    network = keras.saving.load_model(root / "train" / "model.keras")
    label = transform["label"]
    expected = network.predict(x, verbose=0)[:, 0] * np.sqrt(label["variance"]) + label["mean"]
    np.testing.assert_allclose(served["prediction"].to_numpy(), expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(y[:, 0] * np.sqrt(label["variance"]) + label["mean"],
                               test["disease_progression"].to_numpy(), rtol=1e-5)


def test_huber_loss_trains_too(diabetes, tmp_path):
    import keras

    from components.artifact_io import load_transformed

    root, _ = diabetes
    config = config_for("diabetes_mlp", **{"task.loss": "huber", "train.epochs": 40})
    inputs = {"ingest": root / "ingest", "preprocess": root / "preprocess"}
    run_train(config, inputs, tmp_path / "train")
    network = keras.saving.load_model(tmp_path / "train" / "model.keras")
    assert isinstance(network.loss, keras.losses.Huber)
    x, y, _ = load_transformed(root / "preprocess", "eval", TabularRegression(config.task))
    residual = y[:, 0] - network.predict(x, verbose=0)[:, 0]
    assert 1 - residual.var() / y[:, 0].var() > 0.2  # eval R² on the standardised target


def test_analyzer_and_transform_of_the_target_match_numpy():
    config = config_for("diabetes_mlp")
    task = TabularRegression(config.task)
    raw = read_source("sklearn:diabetes")
    frame = raw.frame
    schema = task.schema(frame, raw)
    table = task.to_arrow(frame, schema)
    analyzer = task.analyzer(schema, config.preprocess)
    accumulators = [analyzer.add_input(analyzer.create_accumulator(), batch)
                    for batch in (table.slice(start, 100) for start in range(0, table.num_rows, 100))]
    transform = task.finalize(analyzer.merge_accumulators(accumulators), schema, config.preprocess)

    y = frame["disease_progression"].to_numpy("float64")
    assert transform["label"] == {"name": "disease_progression", "kind": "numeric",
                                  "mean": pytest.approx(y.mean(), rel=1e-12),
                                  "variance": pytest.approx(y.var(), rel=1e-12)}
    assert transform["num_train_rows"] == len(frame)
    assert transform["numeric"]["bmi"]["mean"] == pytest.approx(frame["bmi"].mean(), rel=1e-6)  # features are float32

    transformed = task.transform_batch(table, transform, "train")
    assert transformed.schema == task.output_schema(schema)
    np.testing.assert_allclose(transformed.column("disease_progression").to_numpy(), (y - y.mean()) / y.std(),
                               rtol=1e-5, atol=1e-6)


def test_destandardize_undoes_the_target_transform():
    import keras

    from tasks.layers import Destandardize

    y = read_source("sklearn:diabetes").frame["disease_progression"].to_numpy("float64")
    layer = Destandardize(y.mean(), y.var())
    restored = np.asarray(layer(((y - y.mean()) / y.std()).astype("float32")[:, None]))[:, 0]
    np.testing.assert_allclose(restored, y, rtol=1e-5)
    assert keras.layers.deserialize(keras.layers.serialize(layer)).get_config() == layer.get_config()


def test_splits_cover_the_range_of_the_target():
    config = config_for("diabetes_mlp")
    task = TabularRegression(config.task)
    raw, splits = task.read_splits(config.data, config.seed)
    assert sum(len(s) for s in splits.values()) == len(raw.frame)
    medians = [s["disease_progression"].median() for s in splits.values()]
    assert max(medians) - min(medians) < 0.2 * raw.frame["disease_progression"].std()


def test_a_text_target_is_refused_with_its_values():
    config = config_for("penguins_body_mass_mlp", **{"data.label": "species"})
    with pytest.raises(SourceError, match=r"target 'species' has \d+ value\(s\) that are not finite numbers "
                                          r"\(row 0: 'Adelie'"):
        TabularRegression(config.task).read_splits(config.data, config.seed)


def test_a_reference_informs_the_blessing_without_blocking_it():
    from components.evaluate import bless

    config = config_for("diabetes_mlp")
    task = TabularRegression(config.task)
    blessing = bless({"rmse": 55.0, "r2": 0.5}, {"rmse": 78.0, "r2": 0.0}, task, config.evaluate,
                     {"ridge": {"rmse": 54.0}})
    assert blessing["blessed"]
    assert blessing["checks"][-1] == {"check": "rmse <= ridge rmse", "value": 55.0, "reference": 54.0, "gap": 1.0,
                                      "passed": False, "informational": True}


def test_outputs_frame_is_one_float_column():
    frame = TabularRegression(config_for("diabetes_mlp").task).outputs_frame(
        np.array([[1.5], [2.0]], "float32"), {}, index=pa.array([7, 9]).to_pandas())
    assert frame.to_dict() == {"prediction": {7: 1.5, 9: 2.0}}


def test_the_task_module_loads_without_keras():
    """Beam workers import the task module to run its transforms; Keras stays out of them."""
    import subprocess
    import sys

    code = ("import sys\nfrom pipeline.config import load_config\nfrom tasks import get_task\n"
            "get_task(load_config('diabetes_mlp').task)\n"
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
