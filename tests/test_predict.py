"""Batch predictions (`keras-pipeline predict`) and served models that take the training file's own column names.

One model is trained per module on Iris written as a semicolon-separated CSV
whose headers have spaces and parentheses (`sepal length (cm)`); every file
predicted on is written under pytest's temporary directory, outside the checkout.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from pipeline.predict import PredictError, predict_file
from tests.helpers import config_for, run_component, run_train, use_mlflow_store

pytestmark = pytest.mark.slow
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
NORMALISED = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


def iris_frame() -> pd.DataFrame:
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame["Species"] = np.asarray(iris.target_names)[iris.target]
    return frame


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Iris trained through ingest, preprocess and train from `Iris Data.csv` (`;`), registered as `iris-names`."""
    import mlflow

    root = tmp_path_factory.mktemp("trained")
    uri = use_mlflow_store(root)
    source = root / "Iris Data.csv"
    iris_frame().to_csv(source, sep=";", index=False)
    config = config_for(**{"data.source": str(source), "data.label": "Species", "epochs": 40})
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    summary = run_train(config, {"ingest": root / "ingest", "preprocess": root / "preprocess"}, root / "train")
    version = mlflow.register_model(summary["mlflow_model_uri"], "iris-names")
    mlflow.MlflowClient().set_registered_model_alias("iris-names", "champion", version.version)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield {"uri": "models:/iris-names@champion", "tracking_uri": uri,
               "pyfunc": mlflow.pyfunc.load_model("models:/iris-names@champion")}


@pytest.fixture
def elsewhere(tmp_path_factory):
    return tmp_path_factory.mktemp("elsewhere")


def served(model, rows: pd.DataFrame) -> pd.DataFrame:
    """The served pyfunc model's predictions for `rows`."""
    return model["pyfunc"].predict(rows)


def assert_same_predictions(written: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert written["prediction"].tolist() == expected["prediction"].tolist()
    probabilities = [c for c in expected.columns if c.startswith("probability_")]
    assert probabilities == ["probability_setosa", "probability_versicolor", "probability_virginica"]
    np.testing.assert_allclose(written[probabilities].to_numpy(), expected[probabilities].to_numpy(), rtol=1e-6)


def test_the_served_model_takes_the_file_s_names_and_the_normalised_ones(model):
    schema = model["pyfunc"].metadata.get_input_schema()
    assert schema.input_names() == FEATURES + NORMALISED
    assert not any(spec.required for spec in schema.inputs)
    rows = iris_frame()
    by_file_names = served(model, rows[FEATURES])
    by_normalised_names = served(model, rows[FEATURES].set_axis(NORMALISED, axis=1))
    pd.testing.assert_frame_equal(by_file_names, by_normalised_names)
    assert (by_file_names["prediction"] == rows["Species"]).mean() >= 0.9  # the model learned
    with pytest.raises(Exception, match=r"same column under two names: 'sepal length \(cm\)' and 'sepal_length_cm'"):
        served(model, rows[FEATURES].assign(sepal_length_cm=1.0))


@pytest.mark.parametrize("names", [FEATURES, NORMALISED], ids=["file names", "normalised names"])
def test_predict_writes_each_row_with_the_served_model_s_predictions(model, elsewhere, names):
    rows = iris_frame().sample(frac=1, random_state=0).set_axis([*names, "Species"], axis=1)
    source = elsewhere / "new flowers.csv"
    rows.to_csv(source, sep=";", index=False)  # the training file's format, found in the model

    summary = predict_file(model["uri"], source, progress=False)

    assert summary.output_path == elsewhere / "new flowers.predictions.csv"
    assert (summary.rows_written, summary.rows_skipped, summary.chunks) == (150, 0, 1)
    written = pd.read_csv(summary.output_path)
    assert list(written.columns) == [*names, "Species", "prediction", "probability_setosa",
                                     "probability_versicolor", "probability_virginica"]
    pd.testing.assert_frame_equal(written[rows.columns], rows.reset_index(drop=True))
    assert_same_predictions(written, served(model, rows[names]))
    assert (written["prediction"] == written["Species"]).mean() >= 0.9


def test_parquet_in_parquet_out_and_small_chunks_give_the_same_rows_in_order(model, elsewhere):
    rows = iris_frame().sample(frac=1, random_state=1, ignore_index=True)
    source = elsewhere / "flowers.parquet"
    rows.to_parquet(source, index=False)

    whole = predict_file(model["uri"], source, progress=False)
    chunked = predict_file(model["uri"], source, elsewhere / "chunked.csv", chunk_rows=16, progress=False)

    assert whole.output_path == elsewhere / "flowers.predictions.parquet" and whole.chunks == 1
    assert chunked.chunks == 10 and chunked.rows_written == 150
    from_parquet = pd.read_parquet(whole.output_path)
    from_chunks = pd.read_csv(chunked.output_path)
    pd.testing.assert_frame_equal(from_parquet[rows.columns], rows)
    pd.testing.assert_frame_equal(from_chunks[rows.columns], rows)
    assert_same_predictions(from_parquet, served(model, rows[FEATURES]))
    assert_same_predictions(from_chunks, from_parquet)


def bad_file(path, edits: dict[int, tuple[str, str]]):
    """Iris as a `;` CSV with the values at file rows `edits` replaced: row → (column, text); `None` adds a field."""
    lines = iris_frame().to_csv(sep=";", index=False).splitlines()
    header = lines[0].split(";")
    for row, (column, text) in edits.items():
        fields = lines[row - 1].split(";")
        if column is None:
            fields.append(text)
        else:
            fields[header.index(column)] = text
        lines[row - 1] = ";".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_fail_by_file_row_and_nothing_is_written(model, elsewhere):
    source = bad_file(elsewhere / "bad.csv", {6: ("petal width (cm)", "0.2x"), 11: (None, "extra"),
                                              21: ("sepal length (cm)", "inf")})
    with pytest.raises(PredictError, match=r"(?s)3 row\(s\) cannot be predicted on:\n"
                                           r".*bad\.csv row 6, column 'petal width \(cm\)': not a number.*'0\.2x'"
                                           r".*bad\.csv row 11: 6 fields where the header has 5"
                                           r".*bad\.csv row 21, column 'sepal length \(cm\)': infinite value"
                                           r".*--bad-rows skip"):
        predict_file(model["uri"], source, progress=False)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["bad.csv"]

    # A bad row after two chunks were written: the output that was there is left as it was, and no temporary remains.
    late = bad_file(elsewhere / "late.csv", {121: ("petal length (cm)", "n/a?")})
    output = elsewhere / "late.predictions.csv"
    output.write_text("earlier predictions\n")
    with pytest.raises(PredictError, match=r"late\.csv row 121, column 'petal length \(cm\)'"):
        predict_file(model["uri"], late, chunk_rows=50, progress=False)
    assert output.read_text() == "earlier predictions\n"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["bad.csv", "late.csv", "late.predictions.csv"]


def test_bad_rows_are_skipped_and_reported(model, elsewhere):
    source = bad_file(elsewhere / "bad.csv", {6: ("petal width (cm)", "0.2x"), 11: (None, "extra"),
                                              21: ("sepal length (cm)", "-inf"), 140: ("sepal width (cm)", "abc")})
    summary = predict_file(model["uri"], source, bad_rows="skip", chunk_rows=64, progress=False)

    assert summary.rows_skipped == 4 and summary.rows_written == 146
    assert summary.rejected["row"].tolist() == [6, 11, 21, 140]
    assert summary.rejected["column"].tolist()[2:] == ["sepal length (cm)", "sepal width (cm)"]
    written = pd.read_csv(summary.output_path)
    kept = iris_frame().drop(index=[6 - 2, 11 - 2, 21 - 2, 140 - 2]).reset_index(drop=True)
    pd.testing.assert_frame_equal(written[kept.columns], kept)
    assert_same_predictions(written, served(model, kept[FEATURES]))


def test_command_line_reads_a_file_in_another_format_with_options(model, elsewhere, capsys):
    from pipeline.cli import main

    rows = iris_frame().head(40)
    source = elsewhere / "comma.csv"
    rows.to_csv(source, index=False)
    output = elsewhere / "out" / "predicted.parquet"
    output.parent.mkdir()

    status = main(["predict", model["uri"], str(source), "-o", str(output), "--delimiter", ",", "--no-progress"])

    assert status == 0
    assert f"wrote 40 row(s) with predictions to {output}" in capsys.readouterr().out
    assert_same_predictions(pd.read_parquet(output), served(model, rows[FEATURES]))
    assert main(["predict", model["uri"], str(source), "--no-progress"]) == 1  # read as `;`: one column
    assert "lacks column(s) ['sepal length (cm)'" in capsys.readouterr().err


def test_mlflow_models_predict_takes_the_file_as_it_is(model, elsewhere):
    rows = iris_frame().head(12)
    source = elsewhere / "flowers.csv"
    rows.to_csv(source, index=False)
    output = elsewhere / "predictions.json"
    subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", model["uri"], "-i", str(source),
                    "-t", "csv", "--env-manager", "local", "-o", str(output)],
                   check=True, env={**os.environ, "MLFLOW_TRACKING_URI": model["tracking_uri"]},
                   capture_output=True, timeout=600)
    predictions = pd.DataFrame(json.loads(output.read_text())["predictions"])
    assert_same_predictions(predictions, served(model, rows[FEATURES]))


def test_the_logged_model_ships_and_needs_only_the_serving_packages(model, elsewhere):
    """The model's code is `tasks`, `keras_models` and `data`: it loads and predicts with `pipeline` unimportable."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(model["uri"], dst_path=str(elsewhere / "model"))
    assert sorted(p.name for p in (elsewhere / "model" / "code").iterdir()) == ["data", "keras_models", "tasks"]
    rows = iris_frame().head(6)[FEATURES]
    script = (
        "import sys\n"
        "sys.modules['pipeline'] = sys.modules['components'] = None  # importing either raises ImportError\n"
        "import mlflow, pandas as pd\n"
        "rows = pd.read_json(sys.stdin, orient='split')\n"
        f"print(mlflow.pyfunc.load_model({path!r}).predict(rows).to_json(orient='split', double_precision=15))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], input=rows.to_json(orient="split"), cwd=elsewhere,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_predictions(pd.read_json(io.StringIO(result.stdout.splitlines()[-1]), orient="split"),
                            served(model, rows))
