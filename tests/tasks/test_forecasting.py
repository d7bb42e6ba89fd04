"""Forecasting on the airline passengers series: time splits, Beam scaling, windows, serving, baselines."""

import json
from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from components.artifact_io import read_columns
from data.splits import read_frame
from data.sources import SourceError
from pipeline.config import DataConfig
from tasks.options import ForecastingOptions as Options
from tasks.forecasting import (
    HISTORY,
    WINDOW,
    Forecasting,
    MomentsFn,
    build_serving_model,
    raw_inputs,
    windows,
)
from tasks.layers import SeasonalUndifference
from tasks.serving import Predictor
from tests.helpers import config_for, run_component, run_train, use_mlflow_store

ROOT = Path(__file__).resolve().parents[2]
AIRLINE = ROOT / "data" / "airline_passengers" / "airline-passengers.csv"
SEASON, WINDOW_STEPS, HORIZON = 12, 24, 12
HISTORY_STEPS = WINDOW_STEPS + SEASON
N_TRAIN, N_EVAL = 98, 23  # the airline recipes: 23 test months (12 rolling origins), 23 eval months


def airline_values() -> np.ndarray:
    return np.loadtxt(AIRLINE, delimiter=",", skiprows=1, usecols=1)


def task(**options) -> Forecasting:
    defaults = dict(type="forecasting", time_column="Month", window=WINDOW_STEPS, horizon=HORIZON,
                    seasonality=SEASON, seasonal_difference=True, test_periods=23, eval_periods=23)
    return Forecasting(Options(**{**defaults, **options}))


def read_splits(path: Path, **options):
    return task(**options).read_splits(DataConfig(source=str(path), label="Passengers"), seed=0)


@pytest.fixture(scope="module")
def airline_artifacts(tmp_path_factory):
    """Ingest and Beam preprocess of the airline recipe (differenced, window 24, horizon 12)."""
    root = tmp_path_factory.mktemp("airline")
    use_mlflow_store(root)
    config = config_for("airline_lstm")
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    return root


def load_transform(root: Path) -> dict:
    return json.loads((root / "preprocess" / "transform" / "transform.json").read_text())


def scaled_differences(transform) -> np.ndarray:
    """`z[t] = (y[t] - y[t-12] - mean) / std`, NaN for the first season."""
    y = airline_values()
    d = np.full_like(y, np.nan)
    d[SEASON:] = y[SEASON:] - y[:-SEASON]
    return (d - transform["mean"]) / np.sqrt(transform["variance"])


# ---- ingest --------------------------------------------------------------


def test_splits_by_time_with_each_rows_history(tmp_path):
    shuffled = tmp_path / "shuffled.csv"
    lines = AIRLINE.read_text().splitlines()
    rows = lines[1:]
    np.random.default_rng(0).shuffle(rows)
    shuffled.write_text("\n".join([lines[0], *rows]) + "\n")

    _, splits = read_splits(shuffled)
    assert [len(splits[s]) for s in ("train", "eval", "test")] == [N_TRAIN, 23, 23]
    assert str(splits["train"]["month"].iloc[-1].date()) == "1957-02-01"
    assert str(splits["test"]["month"].iloc[0].date()) == "1959-02-01"
    y = airline_values()
    np.testing.assert_array_equal(splits["test"]["passengers"], y[-23:])
    first_test = np.asarray(splits["test"][HISTORY].iloc[0])
    np.testing.assert_array_equal(first_test, y[121 - HISTORY_STEPS : 121])
    assert np.isnan(splits["train"][HISTORY].iloc[0]).all() and not np.isnan(splits["train"][HISTORY].iloc[36]).any()


def test_duplicate_timestamp_is_an_error_naming_file_and_timestamp(tmp_path):
    path = tmp_path / "duplicated.csv"
    path.write_text(AIRLINE.read_text() + "1953-06,999\n")
    with pytest.raises(SourceError, match=r"duplicated\.csv: time column 'month' has duplicate timestamps "
                                          r"\['1953-06-01 00:00:00'\]"):
        read_splits(path)


def test_missing_period_is_an_error_naming_file_and_gap(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("\n".join(line for line in AIRLINE.read_text().splitlines()
                              if not line.startswith(("1955-03", "1955-04"))) + "\n")
    with pytest.raises(SourceError, match=r"gap\.csv: time column 'month' is not regular at frequency MS: "
                                          r"1955-02-01 00:00:00 is followed by 1955-05-01 00:00:00 "
                                          r"\(missing \['1955-03-01 00:00:00', '1955-04-01 00:00:00'\]\)"):
        read_splits(path)


def test_bad_values_and_options_are_errors_naming_them(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(AIRLINE.read_text().replace("1950-02,126", "1950-02,lots"))
    with pytest.raises(SourceError, match=r"bad\.csv: column 'passengers' .* not numbers.*\{14: 'lots'\}"):
        read_splits(path)
    with pytest.raises(SourceError, match=r"time column 'date' \(task.time_column\) not found"):
        read_splits(AIRLINE, time_column="date")
    with pytest.raises(SourceError, match="one training forecast needs 156"):
        read_splits(AIRLINE, window=132)
    with pytest.raises(SourceError, match="leave test_source unset"):
        task().read_splits(DataConfig(source=str(AIRLINE), test_source=str(AIRLINE), label="Passengers"), 0)
    with pytest.raises(ValidationError, match="eval_periods=6 is shorter than horizon=12"):
        Options(type="forecasting", time_column="month", eval_periods=6)
    with pytest.raises(ValidationError, match="test_periods=12 with horizon=12 holds 1 forecast origin.*at least 14"):
        Options(type="forecasting", time_column="month", test_periods=12)
    with pytest.raises(ValidationError, match="series_column needs scaling: window"):
        Options(type="forecasting", time_column="month", series_column="store")


# ---- preprocess ----------------------------------------------------------


def test_scaling_is_fit_on_the_train_period_only(airline_artifacts):
    transform = load_transform(airline_artifacts)
    y = airline_values()
    train_differences = y[SEASON:N_TRAIN] - y[: N_TRAIN - SEASON]
    assert transform["mean"] == pytest.approx(train_differences.mean(), rel=1e-12)
    assert transform["variance"] == pytest.approx(train_differences.var(), rel=1e-12)
    everything = y[SEASON:] - y[:-SEASON]
    assert abs(transform["mean"] - everything.mean()) > 1.0  # eval and test grow faster
    assert transform["num_train_rows"] == N_TRAIN and transform["history_length"] == HISTORY_STEPS


def test_analyzer_merges_batches_exactly(airline_artifacts):
    table = pq.read_table(airline_artifacts / "ingest" / "train" / "data.parquet")
    for lag in (None, SEASON):
        fn = MomentsFn("passengers", HISTORY_STEPS, lag)
        whole = fn.add_input(fn.create_accumulator(), table)
        parts = [fn.add_input(fn.create_accumulator(), table.slice(i, 17)) for i in range(0, N_TRAIN, 17)]
        merged = fn.merge_accumulators(parts[::-1])
        y = airline_values()[:N_TRAIN]
        expected = y if lag is None else y[lag:] - y[:-lag]
        for acc in (whole, merged):
            assert acc["rows"] == N_TRAIN and acc["count"] == expected.size
            assert acc["mean"] == pytest.approx(expected.mean(), rel=1e-12)
            assert acc["m2"] / acc["count"] == pytest.approx(expected.var(), rel=1e-10)


def test_windows_of_every_split_start_in_the_periods_before_it(airline_artifacts):
    transform = load_transform(airline_artifacts)
    z = scaled_differences(transform)
    splits = {s: windows(read_columns(airline_artifacts / "preprocess" / "transformed" / s), transform)
              for s in ("train", "eval", "test")}
    x, y = splits["train"]
    assert x.shape == (N_TRAIN - HISTORY_STEPS - HORIZON + 1, WINDOW_STEPS, 1) and y.shape == (x.shape[0], HORIZON)
    for j, t in [(0, HISTORY_STEPS), (len(x) - 1, N_TRAIN - HORIZON)]:  # first and last origin
        np.testing.assert_allclose(x[j, :, 0], z[t - WINDOW_STEPS : t], atol=1e-6)
        np.testing.assert_allclose(y[j], z[t : t + HORIZON], atol=1e-6)
    for split, t in [("eval", N_TRAIN), ("test", N_TRAIN + N_EVAL)]:  # the first window in the split before
        x, y = splits[split]
        assert x.shape == (23 - HORIZON + 1, WINDOW_STEPS, 1)
        np.testing.assert_allclose(x[0, :, 0], z[t - WINDOW_STEPS : t], atol=1e-6)
        np.testing.assert_allclose(y[0], z[t : t + HORIZON], atol=1e-6)


# ---- serving -------------------------------------------------------------


def last_steps_network(window: int, horizon: int) -> keras.Model:
    """A fixed network that forecasts the last `horizon` (scaled) values of its window."""
    inputs = keras.Input((window, 1))
    dense = keras.layers.Dense(horizon, use_bias=False)
    outputs = dense(keras.layers.Flatten()(inputs))
    kernel = np.zeros((window, horizon), "float32")
    kernel[window - horizon + np.arange(horizon), np.arange(horizon)] = 1.0
    dense.set_weights([kernel])
    return keras.Model(inputs, outputs)


def test_exported_preprocessing_matches_beam(airline_artifacts, tmp_path):
    """Served windows equal Beam's, and Beam's targets served back out are the raw values: no skew."""
    transform = load_transform(airline_artifacts)
    path = tmp_path / "serving.keras"
    build_serving_model(last_steps_network(WINDOW_STEPS, HORIZON), transform).save(path)
    serving = keras.saving.load_model(path, safe_mode=True)
    scaled = keras.Model(serving.inputs, serving.get_layer("scale").output)
    for split in ("train", "eval", "test"):
        raw = read_frame(airline_artifacts / "ingest" / split).sort_values("month")
        beam = read_columns(airline_artifacts / "preprocess" / "transformed" / split)
        beam_windows = beam[WINDOW][np.argsort(beam["month"])]
        complete = ~np.isnan(beam_windows).any(1)
        assert complete.sum() == len(raw) - (HISTORY_STEPS if split == "train" else 0)
        served = scaled.predict(raw_inputs(raw[complete], transform), verbose=0)[..., 0]
        np.testing.assert_allclose(served, beam_windows[complete], atol=1e-5)

    eval_raw = read_frame(airline_artifacts / "ingest" / "eval").sort_values("month")
    x, y = windows(read_columns(airline_artifacts / "preprocess" / "transformed" / "eval"), transform)
    z_in, history = keras.Input((HORIZON,)), keras.Input((HISTORY_STEPS,))
    unscale = serving.get_layer("seasonal_undifference")([serving.get_layer("unscale")(z_in), history])
    targets = keras.Model([z_in, history], unscale).predict([y[:1], raw_inputs(eval_raw.head(1), transform)],
                                                            verbose=0)
    np.testing.assert_allclose(targets[0], eval_raw["passengers"].head(HORIZON), atol=1e-3)

    # With the fixed network the forecast is last season's change added to last season: numpy agrees.
    forecast = serving.predict(raw_inputs(eval_raw.head(1), transform), verbose=0)[0]
    past = airline_values()[:N_TRAIN]
    np.testing.assert_allclose(forecast, 2 * past[-12:] - past[-24:-12], atol=1e-3)


def test_undifference_adds_forecasts_past_the_first_season():
    lag, horizon = 3, 7
    history = np.arange(10, 16, dtype="float32")[None]
    differences = np.arange(1, horizon + 1, dtype="float32")[None]
    out = keras.ops.convert_to_numpy(SeasonalUndifference(lag)([differences, history]))[0]
    expected = []
    for k in range(horizon):
        base = history[0, -lag + k] if k < lag else expected[k - lag]
        expected.append(differences[0, k] + base)
    np.testing.assert_allclose(out, expected)


def test_raw_inputs_reject_short_or_missing_history(airline_artifacts):
    transform = load_transform(airline_artifacts)
    raw = read_frame(airline_artifacts / "ingest" / "test").head(2)
    with pytest.raises(ValueError, match="lack column 'history'"):
        raw_inputs(raw.drop(columns=[HISTORY]), transform)
    raw[HISTORY] = [np.arange(5.0), np.arange(36.0)]
    with pytest.raises(ValueError, match="row 0 .* must hold 36 values without gaps; got 5 values"):
        raw_inputs(raw, transform)


# ---- evaluate ------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_forecast_beats_the_baselines(airline_artifacts):
    """A small GRU trained briefly beats seasonal naive on MASE over the 12 rolling origins."""
    root = airline_artifacts
    config = config_for("airline_lstm", **{
        "model.name": "gru", "model.hparams": {"units": 16}, "train.epochs": 20, "train.learning_rate": 0.01,
    })
    inputs = {"ingest": root / "ingest", "preprocess": root / "preprocess"}
    trained = run_train(config, inputs, root / "train")
    summary = run_component("evaluate", config, {**inputs, "train": root / "train"}, root / "evaluate")
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    origins = metrics["per_origin"]["None"]
    assert len(origins) == 12 and origins[0]["origin"] == "1959-02-01 00:00:00"
    test = metrics["test"]
    assert test["mase"] < metrics["baseline"]["mase"], metrics
    assert test["mase"] == pytest.approx(np.mean([o["model"]["mase"] for o in origins]))
    assert metrics["references"]["naive"]["mase"] > metrics["baseline"]["mase"]  # the airline series is seasonal
    assert summary["blessed"] and (root / "evaluate" / "forecast.png").stat().st_size > 10_000

    predictor = Predictor(root / "train" / "serving.keras", root / "train" / "transform.json")
    served = predictor.predict(read_frame(root / "ingest" / "test").head(1))
    assert list(served.columns) == [f"forecast_{k}" for k in range(1, 13)]
    actual = airline_values()[N_TRAIN + N_EVAL : N_TRAIN + N_EVAL + HORIZON]
    first = np.abs(served.iloc[0].to_numpy() - actual).mean()
    assert first == pytest.approx(origins[0]["model"]["mae"], rel=1e-5)
