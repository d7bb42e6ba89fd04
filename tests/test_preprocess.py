import json
import os
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.artifact_io import read_columns
from tasks.tabular import AnalyzeFn, feature_matrix, transform_batch
from tests.helpers import config_for, run_component, use_mlflow_store


@pytest.fixture(scope="module")
def penguins_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("penguins")
    use_mlflow_store(root)
    config = config_for(**{"data.source": "data/penguins/penguins.csv", "data.label": "species"})
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    return root


def test_statistics_are_full_pass_over_train_only(penguins_artifacts):
    train = pq.read_table(penguins_artifacts / "ingest" / "train" / "data.parquet").to_pandas()
    transform = json.loads((penguins_artifacts / "preprocess" / "transform" / "transform.json").read_text())
    for name in ("bill_length_mm", "body_mass_g", "year"):
        assert transform["numeric"][name]["mean"] == pytest.approx(train[name].mean(), rel=1e-6)
        assert transform["numeric"][name]["variance"] == pytest.approx(train[name].var(ddof=0), rel=1e-6)
    island_counts = train["island"].value_counts()
    assert transform["categorical"]["island"]["vocabulary"] == list(island_counts.index)
    assert transform["label"]["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert transform["num_train_rows"] == len(train)


def test_every_split_is_transformed_with_train_statistics(penguins_artifacts):
    transform = json.loads((penguins_artifacts / "preprocess" / "transform" / "transform.json").read_text())
    for split in ("train", "eval", "test"):
        raw = pq.read_table(penguins_artifacts / "ingest" / split / "data.parquet").to_pandas()
        out = read_columns(penguins_artifacts / "preprocess" / "transformed" / split)
        assert len(out["species"]) == len(raw)
        stats = transform["numeric"]["flipper_length_mm"]
        expected = ((raw["flipper_length_mm"] - stats["mean"]) / np.sqrt(stats["variance"])).fillna(0.0)
        np.testing.assert_allclose(np.sort(out["flipper_length_mm"]), np.sort(expected), rtol=1e-5, atol=1e-5)
        assert not np.isnan(out["bill_depth_mm"]).any()  # missing values imputed with the train mean
    train = read_columns(penguins_artifacts / "preprocess" / "transformed" / "train")
    assert abs(train["year"].mean()) < 1e-5 and abs(train["year"].std() - 1) < 1e-4


def test_exported_preprocessing_matches_beam(penguins_artifacts):
    """The serving model's Keras preprocessing gives the features Beam wrote: no skew."""
    import keras

    from tasks.tabular import build_serving_model, raw_inputs

    transform = json.loads((penguins_artifacts / "preprocess" / "transform" / "transform.json").read_text())
    raw = pq.read_table(penguins_artifacts / "ingest" / "test" / "data.parquet").to_pandas()
    beam = read_columns(penguins_artifacts / "preprocess" / "transformed" / "test")
    features = keras.Input((feature_matrix(beam, transform).shape[1],))
    identity = keras.Model(features, keras.layers.Identity()(features))
    serving = build_serving_model(identity, transform)
    served = serving.predict(raw_inputs(raw, transform), verbose=0)
    np.testing.assert_allclose(served, feature_matrix(beam, transform), atol=1e-5)

    odd = raw.head(2).copy()
    odd.loc[odd.index[0], ["bill_length_mm", "sex"]] = [np.nan, None]
    odd.loc[odd.index[1], "island"] = "Atlantis"
    expected = transform_batch(pa.Table.from_pandas(odd, preserve_index=False), transform, "test")
    expected = feature_matrix({n: expected.column(n).to_numpy() for n in expected.column_names}, transform)
    np.testing.assert_allclose(serving.predict(raw_inputs(odd, transform), verbose=0), expected, atol=1e-5)


def test_analyzer_merges_batches_exactly():
    rng = np.random.default_rng(0)
    values = rng.normal(5, 3, size=1000).astype("float32")
    values[::17] = np.nan
    labels = np.array(["a", "b", "a", "c"] * 250)
    batches = [pa.table({"x": values[i:i + 137], "y": labels[i:i + 137]}) for i in range(0, 1000, 137)]
    fn = AnalyzeFn(["x"], [], "y")
    accumulators = [fn.add_input(fn.create_accumulator(), b) for b in batches]
    merged = fn.merge_accumulators(accumulators)
    clean = values[~np.isnan(values)].astype("float64")
    assert merged["count"][0] == clean.size
    assert merged["mean"][0] == pytest.approx(clean.mean(), rel=1e-9)
    assert merged["m2"][0] / merged["count"][0] == pytest.approx(clean.var(), rel=1e-9)
    assert merged["counts"]["y"] == {"a": 500, "b": 250, "c": 250}


def test_unseen_label_names_the_split_and_value():
    transform = {"numeric": {}, "categorical": {}, "label": {"name": "y", "classes": ["a", "b"]}}
    with pytest.raises(ValueError, match=r"Split 'test' has label value\(s\) \['c'\] never seen in the train split"):
        transform_batch(pa.table({"y": ["a", "c"]}), transform, "test")


def preprocess_in_row_groups(tmp_path, monkeypatch, workers: int):
    """Iris ingested in row groups of about 1 KiB (about 30 rows), then preprocessed on `workers` Beam workers."""
    from components import artifact_io

    monkeypatch.setattr(artifact_io, "ROW_GROUP_BYTES", 1024)
    config = config_for(**{"preprocess.direct_num_workers": workers,
                           "preprocess.direct_running_mode": "multi_processing" if workers > 1 else "in_memory"})
    run_component("ingest", config, {}, tmp_path / "ingest")
    assert pq.ParquetFile(tmp_path / "ingest" / "train" / "data.parquet").num_row_groups >= 3
    run_component("preprocess", config, {"ingest": tmp_path / "ingest"}, tmp_path / "preprocess")
    return json.loads((tmp_path / "preprocess" / "transform" / "transform.json").read_text())


class PidRecordingTask:
    """A task that notes, in `directory`, which process transforms each row group of each split."""

    def __init__(self, task, directory):
        self.task, self.directory = task, directory

    def __getattr__(self, name):
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)

    def transform_batch(self, batch, transform, split):
        (self.directory / f"{split}-{os.getpid()}-{uuid.uuid4().hex}").touch()
        return self.task.transform_batch(batch, transform, split)


def test_two_worker_processes_share_each_split(tmp_path, local_mlflow, monkeypatch):
    """The train split's row groups are dealt to both workers: each transforms and writes its own part files."""
    import tasks
    from data.splits import split_files

    pids = tmp_path / "pids"
    pids.mkdir()
    get_task = tasks.get_task
    monkeypatch.setattr(tasks, "get_task", lambda config: PidRecordingTask(get_task(config), pids))
    transform = preprocess_in_row_groups(tmp_path, monkeypatch, workers=2)
    writers = {int(name.split("-")[1]) for name in os.listdir(pids) if name.startswith("train-")}
    assert len(writers) == 2 and os.getpid() not in writers
    parts = split_files(tmp_path / "preprocess" / "transformed" / "train")
    row_groups = pq.ParquetFile(tmp_path / "ingest" / "train" / "data.parquet").num_row_groups
    assert len(parts) == row_groups and all(pq.ParquetFile(part).metadata.num_rows > 0 for part in parts)
    frame = pd.DataFrame(read_columns(tmp_path / "preprocess" / "transformed" / "train"))
    assert len(frame) == transform["num_train_rows"] == 105 and abs(frame["sepal_length_cm"].mean()) < 1e-5


def test_one_worker_keeps_the_rows_in_order(tmp_path, local_mlflow, monkeypatch):
    transform = preprocess_in_row_groups(tmp_path, monkeypatch, workers=1)
    raw = pq.read_table(tmp_path / "ingest" / "train" / "data.parquet").to_pandas()
    out = read_columns(tmp_path / "preprocess" / "transformed" / "train")
    stats = transform["numeric"]["petal_width_cm"]
    expected = (raw["petal_width_cm"] - stats["mean"]) / np.sqrt(stats["variance"])
    np.testing.assert_allclose(out["petal_width_cm"], expected, rtol=1e-5, atol=1e-5)
