import json
from pathlib import Path

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
    classes = ["setosa", "versicolor", "virginica"]
    assert schema["label"] == {"name": "species", "kind": "categorical", "classes": classes, "values": classes,
                               "dtype": "string"}
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


def _with(fields: list[str], index: int, value: str) -> list[str]:
    return fields[:index] + [value] + fields[index + 1:]


@pytest.fixture
def damaged_penguins(tmp_path):
    """The penguins CSV with four bad rows among its 344: too wide, a typo, an overflow, no label."""
    lines = (Path(__file__).resolve().parents[1] / "data" / "penguins" / "penguins.csv").read_text().splitlines()
    lines[10] += ",extra"
    lines[20] = ",".join(_with(lines[20].split(","), 2, "3x.9"))
    lines[30] = ",".join(_with(lines[30].split(","), 5, "1e999"))
    lines[40] = "," + lines[40].split(",", 1)[1]
    path = tmp_path / "penguins.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_are_named_by_file_row_column_and_reason(damaged_penguins):
    raw = read_source(str(damaged_penguins), label="species")
    assert len(raw.frame) == 340
    problems = {(p.row, p.column, p.reason) for p in raw.rejected.itertuples()}
    assert problems == {
        (11, None, "9 fields where the header has 8"),
        (21, "bill_length_mm", "not a number, in a numeric column"),
        (31, "body_mass_g", "infinite value"),
        (41, "species", "missing label"),
    }


def test_bad_rows_fail_the_ingest_by_default_and_nothing_is_written(damaged_penguins, tmp_path, local_mlflow):
    from pipeline.runner import run_pipeline

    config = config_for("penguins_mlp", output_dir=str(tmp_path / "out"), **{"data.source": str(damaged_penguins)})
    with pytest.raises(SourceError, match=r"(?s)4 row\(s\) cannot be used:.*penguins.csv row 21, column "
                                          r"'bill_length_mm': not a number.*'3x\..*data.bad_rows_policy: quarantine"):
        run_pipeline(config, ["ingest"])
    assert [p.name for p in (tmp_path / "out" / "ingest").iterdir() if not p.name.startswith(".lock")] == []


def test_quarantine_sets_bad_rows_aside_up_to_the_allowed_fraction(damaged_penguins, tmp_path, local_mlflow):
    import mlflow

    overrides = {"data.source": str(damaged_penguins), "data.bad_rows_policy": "quarantine"}
    with pytest.raises(SourceError, match=r"4 of 344 rows \(1.2%\) cannot be used, more than "
                                          r"data.max_bad_rows_fraction = 0.01"):
        run_component("ingest", config_for("penguins_mlp", **overrides), {}, tmp_path / "strict")
    config = config_for("penguins_mlp", **overrides, **{"data.max_bad_rows_fraction": 0.02})
    summary = run_component("ingest", config, {}, tmp_path / "lenient")
    assert summary["rows_rejected"] == 4 and sum(summary["row_counts"].values()) == 340
    rejected = pd.read_csv(tmp_path / "lenient" / "rejected_rows.csv")
    assert sorted(rejected["row"]) == [11, 21, 31, 41]
    run = mlflow.search_runs(filter_string="attributes.run_name = 'ingest'").iloc[0]
    assert run["metrics.rows_rejected"] == 4


def test_an_empty_split_after_setting_bad_rows_aside_is_an_error(tmp_path, local_mlflow):
    penguins = Path(__file__).resolve().parents[1] / "data" / "penguins" / "penguins.csv"
    header, *rows = penguins.read_text().splitlines()
    unlabelled = tmp_path / "test.csv"
    unlabelled.write_text("\n".join([header] + ["," + row.split(",", 1)[1] for row in rows[:3]]) + "\n")
    config = config_for("penguins_mlp", **{"data.test_source": str(unlabelled), "data.bad_rows_policy": "quarantine",
                                           "data.max_bad_rows_fraction": 0.5})
    with pytest.raises(SourceError, match=r"split\(s\) \['test'\] are empty, after setting 3 bad row\(s\) aside"):
        run_component("ingest", config, {}, tmp_path / "out")
    assert not (tmp_path / "out" / "train").exists()


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


def test_ingest_declares_its_outputs_so_a_lost_split_is_not_published(tmp_path, local_mlflow):
    from pipeline.artifacts import check_outputs

    summary = run_component("ingest", config_for(), {}, tmp_path)
    assert summary["output_rows"] == {"train": 105, "eval": 22, "test": 23}
    assert check_outputs(tmp_path, summary) == []
    (tmp_path / "test" / "data.parquet").unlink()
    assert any("test" in problem for problem in check_outputs(tmp_path, summary))


def test_a_headerless_tab_separated_file_with_integer_columns_is_read_as_rows_without_library_hints(
        tmp_path, local_mlflow):
    """`.tsv` is delimited rows like any CSV; MLflow's hint about integer columns in signatures is not shown."""
    import warnings

    rows = ["Zürich\t111.6\t3\t13050", "Genève\t34.6\t6\t12097", "Bâle\t80.0\t2\t9100", "Lugano\t163.6\t1\t11442"]
    (tmp_path / "rents.tsv").write_text("\n".join(rows * 10) + "\n", encoding="latin-1")
    config = config_for(**{"data.source": str(tmp_path / "rents.tsv"), "data.label": "column_4",
                           "task.type": "tabular_regression"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_component("ingest", config, {}, tmp_path / "ingest")
    assert not [w for w in caught if "Inferred schema contains integer" in str(w.message)]
    schema = json.loads((tmp_path / "ingest" / "schema.json").read_text())
    assert [f["name"] for f in schema["features"]] == ["column_1", "column_2", "column_3"]
    assert schema["source"]["csv"]["delimiter"] == "\t" and schema["source"]["csv"]["encoding"] != "utf-8"
    train = pq.read_table(tmp_path / "ingest" / "train" / "data.parquet").to_pandas()
    assert set(train["column_1"]) <= {"Zürich", "Genève", "Bâle", "Lugano"}
