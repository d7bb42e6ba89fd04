"""Class labels of any type through the real components: canonical strings in Parquet, original values out.

Each case writes a CSV of real scikit-learn features whose label is re-coded
as integers, booleans, float codes or strings, and runs ingest, Beam
preprocess, train and evaluate on it, as a user's file would go.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from components.artifact_io import read_json
from data.splits import read_frame
from data.sources import RawData
from tasks.classification import canonical_label, label_schema, label_spec, probabilistic_metrics
from tests.helpers import config_for, run_component, run_train, use_mlflow_store


def _iris():
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    return data.frame.drop(columns="target"), data.target.to_numpy()


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    return data.frame.drop(columns="target"), data.target.to_numpy()


# label type → (features and class indices, the class values the CSV holds, their Python type)
CASES = {
    "integer": (_iris, [3, 10, 20], int),  # canonical strings sort as "10", "20", "3"
    "boolean": (_breast_cancer, [False, True], bool),
    "float": (_iris, [0.0, 1.0, 2.0], float),
    "string": (_breast_cancer, ["malignant", "benign"], str),
}


def _classes_in_order(dtype, values) -> list[tuple[str, object]]:
    """(canonical string, value) per class: numbers in numeric order, the rest by their canonical strings."""
    numeric = dtype in ("integer", "float")
    return sorted(((canonical_label(v), v) for v in values), key=lambda cv: cv[1] if numeric else cv[0])


@pytest.fixture(scope="module", params=list(CASES))
def labelled_run(request, tmp_path_factory):
    """A CSV with the case's label type through ingest → preprocess → train → evaluate, once per case."""
    dtype = request.param
    load, values, _ = CASES[dtype]
    root = tmp_path_factory.mktemp(f"labels_{dtype}")
    use_mlflow_store(root)
    features, target = load()
    frame = features.assign(outcome=np.asarray(values, dtype=object)[target])
    frame.to_csv(root / "rows.csv", index=False)
    config = config_for("iris_mlp", **{
        "data.source": str(root / "rows.csv"), "data.label": "outcome", "train.epochs": 15,
        "evaluate.thresholds": {}, "evaluate.registered_model_name": f"labels-{dtype}",
    })
    inputs = {"ingest": root / "ingest", "preprocess": root / "preprocess"}
    run_component("ingest", config, {}, inputs["ingest"])
    run_component("preprocess", config, {"ingest": inputs["ingest"]}, inputs["preprocess"])
    trained = run_train(config, inputs, root / "train")
    evaluated = run_component("evaluate", config, {**inputs, "train": root / "train"}, root / "evaluate")
    return dtype, root, trained, evaluated


def test_schema_and_transform_keep_the_classes_values_and_train_counts(labelled_run):
    dtype, root, _, _ = labelled_run
    _, values, kind = CASES[dtype]
    expected = _classes_in_order(dtype, values)
    label = read_json(root / "ingest" / "schema.json")["label"]
    assert label == {"name": "outcome", "kind": "categorical", "classes": [c for c, _ in expected],
                     "values": [v for _, v in expected], "dtype": dtype}
    assert all(type(v) is kind for v in label["values"])

    transform = read_json(root / "train" / "transform.json")["label"]
    statistics = read_json(root / "ingest" / "statistics.json")["train"]
    assert transform["counts"] == statistics["columns"]["outcome"]["top"]  # Beam's counts and pandas' agree
    assert sum(transform["counts"].values()) == statistics["num_rows"]
    stored = read_frame(root / "ingest" / "test")["outcome"]
    assert set(stored) == set(label["classes"])


def test_model_beats_the_majority_baseline_with_valid_probabilistic_metrics(labelled_run):
    dtype, root, _, evaluated = labelled_run
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    test, baseline = metrics["test"], metrics["baseline"]
    assert test["accuracy"] >= 0.85 and test["accuracy"] > baseline["accuracy"] + 0.2, metrics
    assert 0 < test["log_loss"] < baseline["log_loss"]
    binary = len(CASES[dtype][1]) == 2
    if binary:
        assert test["roc_auc"] > 0.9 and test["pr_auc"] > 0.9
        assert baseline["roc_auc"] == 0.5 and 0 < baseline["pr_auc"] < 1  # constant scores: chance and prevalence
        assert "roc_auc_ovr" not in test
        assert all((root / "evaluate" / name).read_bytes()[:4] == b"\x89PNG" for name in ("roc_curve.png", "pr_curve.png"))
    else:
        assert 0.9 < test["roc_auc_ovr"] <= 1 and baseline["roc_auc_ovr"] == 0.5
        assert "roc_auc" not in test and "pr_auc" not in test
        # The curves are one class against the rest, one line per class.
        assert all((root / "evaluate" / name).read_bytes()[:4] == b"\x89PNG" for name in ("roc_curve.png", "pr_curve.png"))
    assert evaluated["blessed"] and evaluated["registration"]["alias"] == "champion"


def test_predictions_come_back_in_the_labels_own_type(labelled_run):
    import mlflow

    from tasks.serving import Predictor

    dtype, root, trained, _ = labelled_run
    _, values, kind = CASES[dtype]
    rows = read_frame(root / "ingest" / "test")
    features = rows.drop(columns="outcome")
    predicted = Predictor(root / "train" / "serving.keras", root / "train" / "transform.json").predict(features)
    classes = [c for c, _ in _classes_in_order(dtype, values)]
    assert list(predicted.columns) == ["prediction", *(f"probability_{c}" for c in classes)]
    assert all(isinstance(v, kind) or np.asarray(v).dtype.kind == np.asarray(values).dtype.kind
               for v in predicted["prediction"])
    assert predicted["prediction"].dtype == np.asarray(values).dtype or dtype == "string"
    assert set(predicted["prediction"]) <= set(values)
    correct = [canonical_label(p) == t for p, t in zip(predicted["prediction"], rows["outcome"])]
    assert np.mean(correct) >= 0.85

    served = mlflow.pyfunc.load_model(trained["mlflow_model_uri"]).predict(features)
    pd.testing.assert_frame_equal(served, predicted)
    output = mlflow.models.get_model_info(trained["mlflow_model_uri"]).signature.outputs.to_dict()
    expected_type = {"integer": "long", "boolean": "boolean", "float": "double", "string": "string"}[dtype]
    assert output[0] == {"type": expected_type, "name": "prediction", "required": True}


# ---- canonical strings, without training ------------------------------------


def test_canonical_strings_do_not_depend_on_how_pandas_holds_a_number():
    assert [canonical_label(v) for v in (1, np.int64(1), 1.0, np.float32(1.0), True, np.bool_(False), 0.25, "01")] == [
        "1", "1", "1", "1", "true", "false", "0.25", "01"]


def test_an_integer_label_column_with_a_missing_value_keeps_integer_classes(tmp_path, local_mlflow):
    """A missing label is set aside, and the classes stay integers: "1", not "1.0".

    The values' type is the CSV's declared column type when it has one.
    """
    features, target = _iris()
    frame = features.assign(outcome=pd.array(target, dtype="Int64"))
    frame.loc[5, "outcome"] = pd.NA
    frame.to_csv(tmp_path / "rows.csv", index=False)
    data = {"data.source": str(tmp_path / "rows.csv"), "data.label": "outcome", "data.bad_rows_policy": "quarantine"}
    summary = run_component("ingest", config_for("iris_mlp", **data), {}, tmp_path / "sniffed")
    assert summary["rows_rejected"] == 1
    label = read_json(tmp_path / "sniffed" / "schema.json")["label"]
    assert label["classes"] == ["0", "1", "2"] and label["values"] == [0, 1, 2]
    assert label["dtype"] == "integer"  # pyarrow read integers: the missing value does not make them floats
    top = read_json(tmp_path / "sniffed" / "statistics.json")["train"]["columns"]["outcome"]["top"]
    assert set(top) == {"0", "1", "2"}
    assert set(read_frame(tmp_path / "sniffed" / "train")["outcome"]) == {"0", "1", "2"}

    declared = config_for("iris_mlp", **data, **{"data.csv": {"column_types": {"outcome": "integer"}}})
    run_component("ingest", declared, {}, tmp_path / "declared")
    label = read_json(tmp_path / "declared" / "schema.json")["label"]
    assert label["dtype"] == "integer" and [type(v) for v in label["values"]] == [int, int, int]


def test_numeric_classes_are_ordered_by_value_not_by_their_strings():
    train = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4], "grade": [13, 3, 23, 3]})
    raw = RawData(frame=train, label="grade", origin="test", renamed={})
    label = label_schema(train, raw)
    assert label["classes"] == ["3", "13", "23"] and label["values"] == [3, 13, 23]
    spec = label_spec(Counter({"23": 1, "13": 1, "3": 2}), label)
    assert spec["classes"] == ["3", "13", "23"] and spec["counts"] == {"3": 2, "13": 1, "23": 1}


def test_a_train_class_the_schema_lacks_is_an_error_naming_it():
    from data.sources import RawData

    frame = pd.DataFrame({"y": [1, 2, 2]})
    label = label_schema(frame, RawData(frame=frame, label="y", origin="rows.csv", renamed={"y": "y"}))
    assert label["dtype"] == "integer" and label_spec(Counter({"1": 1, "2": 2}), label)["counts"] == {"1": 1, "2": 2}
    with pytest.raises(ValueError, match=r"Label 'y': train value\(s\) \['3'\] are not in the ingest schema"):
        label_spec(Counter({"1": 1, "3": 2}), label)


def test_probabilistic_metrics_skip_what_a_split_cannot_define():
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    metrics = probabilistic_metrics(np.array([0, 1, 0, 1]), probabilities)  # class 2 absent from the split
    assert metrics["roc_auc_ovr"] == 1.0 and metrics["log_loss"] == pytest.approx(-np.log([.8, .7, .6, .8]).mean())
    assert set(probabilistic_metrics(np.array([1, 1]), np.array([[0.3, 0.7], [0.4, 0.6]]))) == {"log_loss"}
