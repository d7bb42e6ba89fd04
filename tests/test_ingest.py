import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from data.sources import SourceError, read_source
from tests.helpers import config_for, run_component


def test_iris_splits_are_stratified_deterministic_and_disjoint(tmp_path, local_mlflow):
    config = config_for()
    run_component("ingest", config, {}, tmp_path / "a")
    run_component("ingest", config, {}, tmp_path / "b")
    frames = {s: pq.read_table(tmp_path / "a" / s / "data.parquet").to_pandas() for s in ("train", "eval", "test")}
    assert {s: len(f) for s, f in frames.items()} == {"train": 105, "eval": 22, "test": 23}
    for frame in frames.values():  # every class in every split, in proportion
        assert frame["species"].value_counts().min() >= 7
    again = pq.read_table(tmp_path / "b" / "train" / "data.parquet").to_pandas()
    pd.testing.assert_frame_equal(frames["train"], again)
    rows = pd.concat(frames.values())
    assert not rows.duplicated().any() or rows.duplicated().sum() == load_iris_duplicates()
    schema = json.loads((tmp_path / "a" / "schema.json").read_text())
    assert schema["label"] == {"name": "species", "kind": "categorical", "classes": ["setosa", "versicolor", "virginica"]}
    assert [f["name"] for f in schema["features"]][:2] == ["sepal_length_cm", "sepal_width_cm"]
    stats = json.loads((tmp_path / "a" / "statistics.json").read_text())
    assert stats["train"]["num_rows"] == 105
    assert stats["train"]["columns"]["petal_length_cm"]["min"] >= 1.0


def load_iris_duplicates():
    from sklearn.datasets import load_iris

    return int(load_iris(as_frame=True).frame.duplicated().sum())


def test_penguins_csv_keeps_missing_values_and_categoricals(tmp_path, local_mlflow):
    config = config_for(**{"data.source": "data/penguins/penguins.csv", "data.label": "species"})
    run_component("ingest", config, {}, tmp_path)
    schema = json.loads((tmp_path / "schema.json").read_text())
    kinds = {f["name"]: f["kind"] for f in schema["features"]}
    assert kinds["island"] == "categorical" and kinds["sex"] == "categorical"
    assert kinds["bill_length_mm"] == "numeric"
    stats = json.loads((tmp_path / "statistics.json").read_text())
    missing = sum(stats[s]["columns"]["sex"]["missing"] for s in ("train", "eval", "test"))
    assert missing == 11  # the NA values of the source file


def test_malformed_csv_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,x\n3,4,y,5\n")
    with pytest.raises(SourceError, match=r"bad.csv: malformed CSV: .*line 3"):
        read_source(str(bad))


def test_missing_label_column_lists_the_columns(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]}).to_parquet(path)
    with pytest.raises(SourceError, match=r"label column 'target' not found; columns are: x, y"):
        read_source(str(path), label="target")


def test_unknown_sklearn_dataset_lists_the_available_ones():
    with pytest.raises(SourceError, match=r"available: iris, wine, breast_cancer"):
        read_source("sklearn:iriss")


def test_tfds_source_reads_a_catalog_dataset(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30, data_dir=str(tmp_path)):
        raw = read_source("tfds:iris", tfds_data_dir=str(tmp_path))
    assert raw.label == "label"
    assert [c for c in raw.frame.columns if c.startswith("features_")] == [f"features_{i}" for i in range(4)]
    assert set(raw.frame["label"]) <= {"Iris-setosa", "Iris-versicolor", "Iris-virginica"}
    assert len(raw.frame) >= 30
