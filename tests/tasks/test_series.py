"""Time-series classification: the `.ts` reader, per-series preprocessing, serving without skew, and a real run."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.artifact_io import read_columns, read_json
from data.sources import SourceError, read_source
from data.ucr import read_ts
from tasks.layers import PadSeries, SeriesZNormalization
from tasks.series import AnalyzeFn, SeriesClassification, prepare, znormalize
from tests.helpers import config_for, run_component, run_train, use_mlflow_store

HEADER = "# a comment\n@problemName Toy\n@missing true\n@univariate {univariate}\n{extra}@classLabel true a b\n@data\n"


def write_ts(tmp_path, body, univariate="true", extra=""):
    path = tmp_path / "toy.ts"
    path.write_text(HEADER.format(univariate=univariate, extra=extra) + body)
    return path


# ---- reader ---------------------------------------------------------------


def test_reads_ucr_files_with_their_shapes():
    train = read_ts("data/ucr_timeseries/GunPoint_TRAIN.ts")
    assert len(train) == 50 and {s.shape for s in train["series"]} == {(150,)}
    assert sorted(train["label"].unique()) == ["1", "2"]
    raw = read_source("data/ucr_timeseries/ItalyPowerDemand_TEST.ts")  # `.ts` is a registered suffix
    assert raw.label == "label" and len(raw.frame) == 1029 and raw.frame["series"].iloc[0].shape == (24,)
    assert raw.frame["series"].iloc[0][0] == pytest.approx(0.47297301)


def test_reads_unequal_lengths_and_missing_values(tmp_path):
    frame = read_ts(write_ts(tmp_path, "1,2,3:a\n4,?,6,7.5:b\n\n-1e-3:a\n", extra="@equalLength false\n"))
    assert [s.shape for s in frame["series"]] == [(3,), (4,), (1,)]
    np.testing.assert_array_equal(frame["series"][1], [4, np.nan, 6, 7.5])
    assert frame["label"].tolist() == ["a", "b", "a"]


def test_reads_multivariate_series_as_steps_by_channels(tmp_path):
    frame = read_ts(write_ts(tmp_path, "1,2,3:4,5,6:b\n7,8:?,9:a\n", univariate="false", extra="@dimensions 2\n"))
    np.testing.assert_array_equal(frame["series"][0], [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(frame["series"][1], [[7, np.nan], [8, 9]])


@pytest.mark.parametrize("body, univariate, extra, message", [
    ("1,2:a\n1,x2:b\n", "true", "", r"toy\.ts, line 8: dimension 1, value 2 is not a number: 'x2'"),
    ("1,2:a\n1,2:c\n", "true", "", r"toy\.ts, line 8: class label 'c' is not one of @classLabel \['a', 'b'\]"),
    ("1,2:a\n1,2:3,4:b\n", "true", "", r"toy\.ts, line 8: 2 dimension\(s\), expected 1"),
    ("1,2:3,4:a\n1,2:b\n", "false", "", r"toy\.ts, line 8: 1 dimension\(s\), expected 2"),
    ("1,2:3:a\n", "false", "", r"toy\.ts, line 7: dimensions have unequal lengths \[2, 1\]"),
    ("1,2:a\n1,2,3:b\n", "true", "@equalLength true\n@seriesLength 2\n",
     r"toy\.ts, line 10: series of length 3, but @seriesLength is 2"),
    ("1,2,3\n", "true", "", r"toy\.ts, line 7: no ':<label>' after the values"),
])
def test_reader_errors_name_file_and_line(tmp_path, body, univariate, extra, message):
    with pytest.raises(SourceError, match=message):
        read_ts(write_ts(tmp_path, body, univariate, extra))


def test_reader_rejects_a_file_without_data_section(tmp_path):
    path = tmp_path / "empty.ts"
    path.write_text("@problemName x\n@classLabel true a\n")
    with pytest.raises(SourceError, match=r"empty\.ts: no @data tag"):
        read_ts(path)


# ---- preprocessing --------------------------------------------------------


def odd_series():
    """Unequal lengths, a missing value, a constant series, one longer than the padded length."""
    rng = np.random.default_rng(0)
    series = [rng.normal(3, 2, (n, 2)) for n in (5, 9, 12, 1)]
    series[0][2, 1] = np.nan
    series[2][:, 0] = 4.0
    return [s.astype("float32") for s in series]


def spec(**changes):
    return {"length": 8, "channels": 2, "znormalize": True, "padding": "pre", "mask_channel": False, **changes}


def test_prepare_normalises_each_series_then_pads_with_zeros():
    series = odd_series()
    values, observed = prepare(series, spec())
    assert values.shape == observed.shape == (4, 8, 2)
    # pre: the short series ends at the last step, the long one keeps its last 8 steps.
    expected = znormalize(series[0])
    np.testing.assert_allclose(values[0, 3:, 0], expected[:, 0], rtol=1e-6)
    assert (values[0, :3] == 0).all() and (observed[0, :3] == 0).all() and observed[0, 3 + 2, 1] == 0
    np.testing.assert_allclose(values[1, :, 1], znormalize(series[1])[1:, 1], rtol=1e-6)
    full = znormalize(series[1].astype("float64"))
    assert abs(full.mean(0)).max() < 1e-12 and np.allclose(full.std(0), 1)
    assert (values[2, :, 0] == 0).all() and observed[2].all()  # constant: centred, not scaled
    post, post_observed = prepare(series, spec(padding="post"))
    np.testing.assert_allclose(post[1, :, 1], znormalize(series[1])[:8, 1], rtol=1e-6)
    assert post_observed[3, 0].all() and not post_observed[3, 1:].any()
    raw, _ = prepare(series, spec(znormalize=False))
    np.testing.assert_allclose(raw[3, -1], series[3][0])


@pytest.mark.parametrize("padding, mask_channel", [("pre", False), ("post", True)])
def test_serving_reproduces_beam_on_unequal_multivariate_series(tmp_path, padding, mask_channel):
    """Ingest → analyze → Beam transform → training arrays equal the serving model's preprocessing of raw rows."""
    import keras

    from data.sources import RawData
    from tasks.options import SeriesClassificationOptions as Options

    task = SeriesClassification(Options(type="series_classification", padding=padding,
                                        mask_channel=mask_channel, max_length=8))
    frame = pd.DataFrame({"series": odd_series(), "label": ["a", "b", "a", "b"]})
    schema = task.schema(frame, RawData(frame, "label", "toy", {}))
    assert schema["series"] == {"name": "series", "channels": 2, "min_length": 1, "max_length": 12}
    table = task.to_arrow(frame, schema)
    analyzer = task.analyzer(schema, None)
    transform = task.finalize(analyzer.add_input(analyzer.create_accumulator(), table), schema, None)
    transformed = task.transform_batch(table, transform, "train")
    assert transformed.schema.equals(task.output_schema(schema))
    (tmp_path / "split").mkdir()
    pq.write_table(transformed, tmp_path / "split" / "part.parquet")
    x, y = task.arrays(read_columns(tmp_path / "split"), transform)
    assert x.shape == (4, 8, 4 if mask_channel else 2) and y.tolist() == [0, 1, 0, 1]
    values, observed = prepare(odd_series(), transform["series"])
    np.testing.assert_array_equal(x, np.concatenate([values, observed], -1) if mask_channel else values)

    inputs = keras.Input(x.shape[1:])
    serving = task.serving_model(keras.Model(inputs, keras.layers.Identity()(inputs)), transform)
    served = serving.predict(task.raw_inputs(frame.drop(columns="label"), transform), verbose=0)
    np.testing.assert_allclose(served, x, atol=2e-6)


def test_layers_round_trip_through_keras_serialization():
    import keras

    for layer in (SeriesZNormalization(epsilon=1e-6), PadSeries(7, "post", True)):
        clone = keras.layers.deserialize(keras.layers.serialize(layer))
        assert clone.get_config() == layer.get_config()


def test_analyzer_merges_batches_exactly():
    lengths = [3, 7, 2, 9, 9, 4, 1]
    labels = ["a", "b", "a", "a", "c", "b", "a"]
    table = pa.table({"series": pa.array([np.zeros(2 * n, "float32") for n in lengths], pa.list_(pa.float32())),
                      "label": labels})
    fn = AnalyzeFn("series", 2, "label")
    parts = [fn.add_input(fn.create_accumulator(), table.slice(i, 3)) for i in range(0, 7, 3)]
    merged = fn.merge_accumulators([fn.create_accumulator(), *parts, fn.add_input(fn.create_accumulator(), table[:0])])
    assert (merged["max_length"], merged["min_length"], merged["rows"]) == (9, 1, 7)
    assert merged["labels"] == {"a": 4, "b": 2, "c": 1}


def test_to_arrow_names_the_row_with_the_wrong_channel_count():
    from tasks.options import SeriesClassificationOptions as Options

    task = SeriesClassification(Options(type="series_classification"))
    schema = {"series": {"name": "series", "channels": 2}, "label": {"name": "label"}}
    frame = pd.DataFrame({"series": [np.zeros((3, 2)), np.zeros((3, 3))], "label": ["a", "b"]}, index=[10, 11])
    with pytest.raises(ValueError, match=r"Row 11, column 'series': series has 3 channels, expected 2"):
        task.to_arrow(frame, schema)


# ---- end to end -----------------------------------------------------------


@pytest.fixture(scope="module")
def italy_power_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("italy_power")
    use_mlflow_store(root)
    config = config_for("italypower_cnn1d", **{
        "model.hparams": {"filters": 16, "kernel_size": 8, "num_blocks": 2},
        "train.epochs": 30, "train.learning_rate": 0.01, "train.early_stopping_patience": 30,
    })
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    return root, config


def test_preprocess_pads_to_the_longest_train_series(italy_power_run):
    root, _ = italy_power_run
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    assert transform["series"]["length"] == transform["series"]["train_max_length"] == 24
    assert transform["label"]["classes"] == ["1", "2"] and transform["num_train_rows"] == 55
    schema = read_json(root / "ingest" / "schema.json")
    assert schema["series"]["channels"] == 1
    test = read_columns(root / "preprocess" / "transformed" / "test")
    assert test["series"].shape == (1029, 24) and test["series_mask"].all()
    np.testing.assert_allclose(test["series"].mean(1), 0, atol=1e-5)  # every series on its own
    np.testing.assert_allclose(test["series"].std(1), 1, atol=1e-4)


def test_exported_preprocessing_matches_beam(italy_power_run):
    """The serving model's Keras layers on raw test rows give what Beam wrote: no skew."""
    import keras

    from tasks.series import build_serving_model, raw_inputs

    root, _ = italy_power_run
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    raw = pq.read_table(root / "ingest" / "test" / "data.parquet").to_pandas()
    beam = read_columns(root / "preprocess" / "transformed" / "test")["series"][..., None]
    inputs = keras.Input((24, 1))
    serving = build_serving_model(keras.Model(inputs, keras.layers.Identity()(inputs)), transform)
    np.testing.assert_allclose(serving.predict(raw_inputs(raw, transform), verbose=0), beam, atol=2e-6)


@pytest.mark.slow
def test_learns_italy_power_demand_end_to_end(italy_power_run):
    from tasks.serving import Predictor

    root, config = italy_power_run
    inputs = {"ingest": root / "ingest", "preprocess": root / "preprocess"}
    summary = run_train(config, inputs, root / "train")
    run_component("evaluate", config, {**inputs, "train": root / "train"}, root / "evaluate")
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.85, metrics["test"]
    assert metrics["baseline"]["accuracy"] < 0.55
    assert (root / "evaluate" / "confusion_matrix.png").is_file()

    predictor = Predictor(root / "train" / "serving.keras", root / "train" / "transform.json")
    day = read_ts("data/ucr_timeseries/ItalyPowerDemand_TEST.ts").head(3)
    rescaled = day.assign(series=[s * 1000 + 5 for s in day["series"]])  # scale and offset do not matter
    np.testing.assert_allclose(predictor.outputs(rescaled), predictor.outputs(day), atol=1e-5)
    assert predictor.predict(day)["prediction"].isin(["1", "2"]).all()
