"""`init` and `run --data`: recipes inferred from data files, and the checks that fail before any MLflow run."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import PROJECT_ROOT, ROOTS_ENV, ConfigError, RECIPES_DIR, list_recipes, load_config
from pipeline.recipe_from_data import column_table, infer_recipe, recipe_yaml
from tasks import get_task

INFERRED_TASKS = ("tabular_classification", "tabular_regression", "forecasting")


def _shipped(recipe: str) -> dict:
    tree = yaml.safe_load((RECIPES_DIR / f"{recipe}.yaml").read_text())
    tree.setdefault("task", {}).setdefault("type", "tabular_classification")
    return tree


def _source(source: str) -> str:
    return source if ":" in source else str(PROJECT_ROOT / source)


@pytest.fixture()
def outside(tmp_path, monkeypatch):
    """A directory outside the checkout and outside every allowed root, as a user's own data folder is."""
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert not tmp_path.is_relative_to(PROJECT_ROOT)
    return tmp_path


@pytest.fixture(scope="module")
def iris_frame():
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame["species"] = np.asarray(bunch.target_names)[bunch.target]
    return frame


@pytest.mark.parametrize("recipe", list_recipes())
def test_init_infers_the_task_of_every_shipped_dataset_or_refuses_it(recipe):
    """Rows and dated series (one, or many in a long table) give the shipped recipe's task; images, whole series
    and text are refused, and
    sentence pairs, read as rows, lack the label, with the recipe to start from."""
    shipped = _shipped(recipe)
    data, task = shipped["data"], shipped["task"]
    if task["type"] == "seq2seq":
        with pytest.raises(ConfigError, match=r"no column 'target' for the label .* If the file holds sentence "
                                              r"pairs, one pair a line, start from pipeline/recipes/\w+\.yaml"):
            infer_recipe(_source(data["source"]), data["label"])
        return
    if task["type"] not in INFERRED_TASKS:
        with pytest.raises(ConfigError, match=r"`init` infers recipes for tabular rows and dated series .*; this is "
                                              r".*start from pipeline/recipes/\w+\.yaml"):
            infer_recipe(_source(data["source"]), data.get("label") or "label")
        return
    inferred = infer_recipe(_source(data["source"]), data["label"])
    assert inferred.task_type == task["type"]
    assert inferred.recipe["data"]["label"] == data["label"]
    if task["type"] == "forecasting":
        shape = ("time_column", "series_column", "window", "horizon", "test_periods", "eval_periods", "seasonality",
                 "seasonal_difference")
        assert {k: inferred.recipe["task"].get(k) for k in shape} == {k: task.get(k) for k in shape}
    else:
        assert sorted(inferred.recipe["task"].get("categorical", [])) == sorted(task.get("categorical", []))


def test_headerless_semicolon_latin1_file(tmp_path, iris_frame):
    """The sniffed format is what the recipe's data.csv says, and the headerless columns are named."""
    path = tmp_path / "fleurs.csv"
    frame = iris_frame.assign(species=iris_frame["species"].map({"setosa": "sétosa", "versicolor": "versicolör",
                                                                  "virginica": "virginica"}))
    frame.to_csv(path, sep=";", header=False, index=False, encoding="latin-1")
    inferred = infer_recipe(path, "column_5")
    assert inferred.task_type == "tabular_classification"
    csv = inferred.recipe["data"]["csv"]
    assert csv["delimiter"] == ";" and csv["header"] is False and csv["encoding"] != "utf-8"
    label = next(c for c in inferred.columns if c.role == "label")
    assert (label.name, label.type, label.distinct) == ("column_5", "string", 3)
    assert [c.role for c in inferred.columns[:4]] == ["numeric"] * 4


def test_integer_labels_are_classes_and_many_floats_a_regression(tmp_path, iris_frame):
    codes = iris_frame.assign(species=iris_frame["species"].astype("category").cat.codes)
    codes.to_csv(tmp_path / "codes.csv", index=False)
    inferred = infer_recipe(tmp_path / "codes.csv", "species")
    assert inferred.task_type == "tabular_classification"
    assert any("3 distinct integers" in note for note in inferred.notes)

    codes.to_parquet(tmp_path / "codes.parquet")
    infer = infer_recipe(tmp_path / "codes.parquet", "petal length (cm)")
    assert infer.task_type == "tabular_regression" and "csv" not in infer.recipe["data"]
    assert infer.recipe["data"]["label"] == "petal_length_cm"
    assert infer.recipe["model"]["name"] == "mlp" and infer.recipe["train"]["batch_size"] == 16


def test_a_dated_numeric_series_is_a_forecast_with_its_frequency(tmp_path):
    """A daily series: a weekly season, a two-week horizon, and eval and test periods of 14 origins each."""
    days = pd.date_range("2024-01-01", periods=200, freq="D")
    rng = np.random.default_rng(0)
    visits = 100 + 20 * np.sin(2 * np.pi * np.arange(200) / 7) + rng.normal(0, 3, 200)
    pd.DataFrame({"Day": days.strftime("%Y-%m-%d"), "Visits": visits.round(1)}).to_csv(tmp_path / "v.csv",
                                                                                        index=False)
    inferred = infer_recipe(tmp_path / "v.csv", "Visits")
    task = inferred.recipe["task"]
    assert task == {"type": "forecasting", "time_column": "day", "window": 28, "horizon": 14, "test_periods": 27,
                    "eval_periods": 27, "seasonality": 7, "seasonal_difference": True, "scaling": "window",
                    "loss": "mae", "history": 200 - 2 * 27 - 14, "combine": ["auto_ets", "auto_theta"]}
    assert inferred.recipe["model"]["name"] == "mlp"
    assert [c.role for c in inferred.columns] == ["time", "label"]

    quarters = pd.DataFrame({"quarter": pd.date_range("2000-01-01", periods=60, freq="QS").strftime("%Y-%m-%d"),
                             "sales": np.arange(60) * 1.5})
    quarters.to_csv(tmp_path / "q.csv", index=False)
    task = infer_recipe(tmp_path / "q.csv", "sales", time_column="quarter").recipe["task"]
    assert (task["seasonality"], task["horizon"], task["test_periods"], task["window"]) == (4, 8, 10, 5)
    with pytest.raises(ConfigError, match=r"time column 'sales' holds values that are not all dates"):
        infer_recipe(tmp_path / "q.csv", "quarter", time_column="sales")


def test_a_series_dated_day_first_in_a_semicolon_file_is_a_weekly_forecast(tmp_path):
    """`;`, decimal commas and dates written day first (`13/01/2019`), as a spreadsheet in much of Europe saves them."""
    weeks = pd.date_range("2019-01-06", periods=160, freq="W")
    sales = 100 + 15 * np.sin(2 * np.pi * np.arange(160) / 52) + np.random.default_rng(0).normal(0, 3, 160)
    pd.DataFrame({"Woche": weeks.strftime("%d/%m/%Y"), "Absatz": sales.round(1)}).to_csv(
        tmp_path / "absatz.csv", sep=";", decimal=",", index=False)
    inferred = infer_recipe(tmp_path / "absatz.csv", "Absatz")
    task = inferred.recipe["task"]
    assert task["type"] == "forecasting" and task["time_column"] == "woche" and task["seasonality"] == 52
    assert any(note.startswith("weekly series") for note in inferred.notes)

    config = load_config(inferred.recipe)
    _, splits = get_task(config.task).read_splits(config.data, seed=0)
    times = pd.concat([splits[s]["woche"] for s in ("train", "eval", "test")])
    assert times.tolist() == weeks.tolist()


def test_an_identifier_column_is_left_out_of_the_features(tmp_path, iris_frame):
    iris_frame.assign(**{"Order ID": [f"A-{i:04d}" for i in range(len(iris_frame))]}).to_csv(
        tmp_path / "orders.csv", index=False)
    inferred = infer_recipe(tmp_path / "orders.csv", "species")
    assert inferred.recipe["task"]["ignore"] == ["order_id"] and "categorical" not in inferred.recipe["task"]
    assert {c.name: c.role for c in inferred.columns}["Order ID"] == "ignored"
    assert any("'Order ID' has a different value in almost every row" in note for note in inferred.notes)
    assert load_config(inferred.recipe).task.ignore == ("order_id",)

    iris_frame.sample(frac=1, random_state=0).to_csv(tmp_path / "shuffled.csv")  # pandas writes its index unnamed
    inferred = infer_recipe(tmp_path / "shuffled.csv", "species")
    assert inferred.recipe["task"]["ignore"] == ["f_"]
    assert any(note.startswith("column '' numbers the rows") for note in inferred.notes)
    iris_frame.assign(population=range(1000, 1000 + len(iris_frame))).to_csv(tmp_path / "counts.csv", index=False)
    roles = {c.name: c.role for c in infer_recipe(tmp_path / "counts.csv", "species").columns}
    assert roles["population"] == "numeric"  # distinct integers under a feature's name stay a feature


def test_a_long_table_of_several_series_is_one_panel_forecast(tmp_path):
    """Shuffled rows of five weekly series, dated day first: the store column tells them apart."""
    weeks = pd.date_range("2021-01-03", periods=120, freq="W")
    rng = np.random.default_rng(0)
    frame = pd.concat([pd.DataFrame({"Store": f"S{s}", "Week": weeks.strftime("%d.%m.%Y"),
                                     "Sales": (100 * (s + 1) + rng.normal(0, 5, len(weeks))).round(2)})
                       for s in range(5)]).sample(frac=1, random_state=0)
    frame.to_csv(tmp_path / "stores.csv", index=False)
    inferred = infer_recipe(tmp_path / "stores.csv", "Sales")
    task = inferred.recipe["task"]
    assert (task["type"], task["time_column"], task["series_column"], task["seasonality"]) == (
        "forecasting", "week", "store", 52)
    assert {c.name: c.role for c in inferred.columns} == {"Store": "series", "Week": "time", "Sales": "label"}
    config = load_config(inferred.recipe)
    _, splits = get_task(config.task).read_splits(config.data, seed=0)
    assert splits["test"].groupby("store").size().tolist() == [task["test_periods"]] * 5

    frame.assign(Region=frame["Store"].map(lambda s: f"R{s}")).to_csv(tmp_path / "two_keys.csv", index=False)
    with pytest.raises(ConfigError, match=r"each of the columns \['Store', 'Region'\] holds one series per value: "
                                          r"name the one .* task.series_column"):
        infer_recipe(tmp_path / "two_keys.csv", "Sales", time_column="Week")
    frame.drop(columns="Store").to_csv(tmp_path / "no_key.csv", index=False)
    with pytest.raises(ConfigError, match=r"time column 'Week' repeats .*, and no column tells series apart"):
        infer_recipe(tmp_path / "no_key.csv", "Sales", time_column="Week")


def test_the_written_recipe_loads_names_the_model_after_its_file_and_reads_the_data_beside_it(
        outside, iris_frame, capsys, monkeypatch):
    iris_frame.to_csv(outside / "Iris Flowers.csv", index=False)
    assert main(["init", "Iris Flowers.csv", "--label", "species"]) == 0
    assert "run it:  keras-pipeline run --recipe iris_flowers.yaml" in capsys.readouterr().out
    text = (outside / "iris_flowers.yaml").read_text()
    assert text.startswith("# Recipe for Iris Flowers.csv, predicting 'species'")
    assert "  source: Iris Flowers.csv\n" in text and "  csv: {delimiter: ',', encoding: utf-8, header: true" in text
    config = load_config(str(outside / "iris_flowers.yaml"))
    assert config.name == "iris_flowers" and config.registered_model_name == "iris-flowers"
    assert config.data.source == str(outside / "Iris Flowers.csv")
    assert config.data.csv.delimiter == "," and config.task.type == "tabular_classification"
    shutil.copy(outside / "iris_flowers.yaml", outside / "copy.yaml")
    assert load_config(str(outside / "copy.yaml")).registered_model_name == "copy"
    assert main(["init", "Iris Flowers.csv", "--label", "species", "--name", "Fleurs", "-o", "other.yaml"]) == 0
    assert "\nname: fleurs\n" in (outside / "other.yaml").read_text()
    assert load_config(str(outside / "other.yaml")).registered_model_name == "fleurs"

    # Elsewhere than beside the data, the recipe holds the file's absolute path, which stays confined.
    assert main(["init", "Iris Flowers.csv", "--label", "species", "-o", "recipes/flowers.yaml"]) == 0
    assert f"run it:  PIPELINE_DATA_ROOTS={outside} keras-pipeline run --recipe recipes/flowers.yaml" in (
        capsys.readouterr().out)
    written = outside / "recipes" / "flowers.yaml"
    assert f"  source: {outside / 'Iris Flowers.csv'}\n" in written.read_text()
    with pytest.raises(ConfigError, match=r"data.source '.*Iris Flowers.csv' resolves to .*outside the allowed roots"):
        load_config(str(written))
    monkeypatch.setenv(ROOTS_ENV, str(outside))
    assert load_config(str(written)).name == "flowers"


def test_init_refuses_to_overwrite_and_names_a_missing_label(outside, iris_frame, capsys):
    iris_frame.to_csv(outside / "iris.csv", index=False)
    (outside / "iris.yaml").write_text("mine\n")
    assert main(["init", "iris.csv", "--label", "species"]) == 2
    assert capsys.readouterr().err == "error: iris.yaml exists; pass --force to overwrite it, or -o another file.\n"
    assert main(["init", "iris.csv", "--label", "specis", "--force"]) == 2
    assert "no column 'specis' (did you mean 'species'?) for the label (--label)" in capsys.readouterr().err
    assert (outside / "iris.yaml").read_text() == "mine\n"
    assert main(["init", "iris.csv", "--label", "species", "--force"]) == 0
    printed = capsys.readouterr().out
    assert "sepal length (cm) (sepal_length_cm)  float" in printed
    assert "run it:  keras-pipeline run --recipe iris.yaml" in printed


def test_a_copied_recipe_takes_its_own_file_name(outside):
    shutil.copy(RECIPES_DIR / "penguins_mlp.yaml", outside / "mine.yaml")
    shutil.copy(PROJECT_ROOT / "data" / "penguins" / "penguins.csv", outside / "penguins.csv")
    (outside / "mine.yaml").write_text((outside / "mine.yaml").read_text().replace("data/penguins/", ""))
    config = load_config(str(outside / "mine.yaml"))
    assert (config.name, config.registered_model_name) == ("mine", "mine")


def test_column_table_and_yaml_round_trip(tmp_path):
    inferred = infer_recipe(PROJECT_ROOT / "data" / "penguins" / "penguins.csv", "species")
    table = column_table(inferred).splitlines()
    assert table[0].split() == ["column", "type", "role", "missing", "distinct"]
    assert table[7].split() == ["sex", "string", "categorical", "11", "2"]
    assert yaml.safe_load(recipe_yaml(inferred)) == inferred.recipe


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--recipe", "penguins_mlp", "--model", "resnet"],
     "error: model: 'resnet' (convolutional) cannot read the inputs of task 'tabular_classification'; "
     "use one of mlp, rbf, tabnet, e.g. --model mlp."),
    (["--recipe", "penguins_mlp", "--set", "data.label=nope"],
     "error: data.label: {root}/data/penguins/penguins.csv has no column 'nope'; its columns are species, island, "
     "bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g, sex, year. Set data.label to one of them "
     "(--set data.label=COLUMN)."),
    (["--recipe", "penguins_mlp", "--set", "data.source=data/penguins/gone.csv"],
     "error: data.source: data file data/penguins/gone.csv does not exist; fix the path in the recipe or pass "
     "--set data.source=PATH."),
    (["--recipe", "airline_lstm", "--set", "task.time_column=date"],
     "error: task.time_column: {root}/data/airline_passengers/airline-passengers.csv has no column 'date'; its "
     "columns are month, passengers. Set task.time_column to one of them (--set task.time_column=COLUMN)."),
    (["--recipe", "typo.yaml"],
     "error: Invalid configuration from recipe typo.yaml: data.labl: unknown key (did you mean 'label'?); "
     "valid keys: bad_rows_policy, csv, label, max_bad_rows_fraction, source, split, test_source, tfds_data_dir"),
    (["--recipe", "broken.yaml"],
     "error: Recipe {tmp}/broken.yaml is not valid YAML at line 2, column 1: expected ',' or '}}', but got "
     "'<stream end>'; fix the file there."),
    (["--data", "iris.csv", "--label", "kind"],
     "error: {tmp}/iris.csv: no column 'kind' for the label (--label); the columns are: sepal length (cm), "
     "sepal width (cm), petal length (cm), petal width (cm), species."),
    (["--data", "iris.csv"], "error: --data needs --label COLUMN, the column to predict."),
])
def test_bad_runs_fail_in_one_line_before_any_mlflow_run(outside, iris_frame, capsys, monkeypatch, args, message):
    (outside / "typo.yaml").write_text("data: {source: penguins.csv, labl: species}\n")
    (outside / "broken.yaml").write_text("data: {source: penguins.csv, label: species\n")
    iris_frame.to_csv(outside / "iris.csv", index=False)
    store = outside / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    before = sorted(outside.iterdir())
    assert main(["run", *args]) == 2
    assert _one_error_line(capsys) == message.format(root=PROJECT_ROOT, tmp=outside)
    assert sorted(outside.iterdir()) == before and not store.parent.exists()  # no tracking store, no artifacts


def test_run_data_trains_and_registers_under_the_data_file_name(outside, iris_frame, capsys, monkeypatch):
    """A CSV outside the checkout and every allowed root, through the command line, to a registered model."""
    import mlflow

    from tests.helpers import new_sqlite_store

    (outside / "data").mkdir()
    iris_frame.to_csv(outside / "data" / "Iris Flowers.csv", index=False)
    uri = new_sqlite_store(outside)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    status = main(["run", "--data", "data/Iris Flowers.csv", "--label", "species", "--epochs", "15",
                   "--output-dir", str(outside / "artifacts")])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "registered: models:/iris-flowers@champion (version 1)" in printed
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version_by_alias("iris-flowers", "champion")
    run = client.get_run(version.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "iris_flowers"
    accuracy = float(printed.split("accuracy=")[1].split(",")[0])
    assert accuracy >= 0.8
