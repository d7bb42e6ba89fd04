"""Backtests, metrics, baselines, window scaling and many series in one forecasting model."""

import json
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest

from components.artifact_io import read_columns
from data.splits import read_frame
from components.evaluate import bless
from data.sources import RawData
from tasks.options import ForecastingOptions as Options
from tasks import backtest
from tasks.forecasting import (
    HISTORY,
    Forecasting,
    base_forecast,
    build_serving_model,
    default_settings,
    level_and_scale,
    windows,
)
from tasks.layers import WindowScale, WindowUnscale
from tasks.serving import Predictor
from tests.helpers import config_for, run_component, run_train, use_mlflow_store

ROOT = Path(__file__).resolve().parents[2]
PANEL = ROOT / "data" / "us_macro_panel" / "us_macro_quarterly.csv"
AIRLINE = ROOT / "data" / "airline_passengers" / "airline-passengers.csv"


def airline() -> np.ndarray:
    return np.loadtxt(AIRLINE, delimiter=",", skiprows=1, usecols=1)


# ---- metrics and origins -------------------------------------------------


def test_mase_and_smape_against_a_hand_computation():
    history = np.array([10.0, 20, 30, 12, 22, 32])  # season 3: seasonal differences 2, 2, 2
    assert backtest.mase_scale(history, 3) == 2.0
    assert backtest.mase_scale(history[:3], 3) == 10.0  # not longer than a season: lag 1
    actual, forecast = np.array([14.0, 24, 34]), np.array([12.0, 22, 40])
    found = backtest.errors(actual, forecast, backtest.mase_scale(history, 3))
    assert found["mae"] == pytest.approx((2 + 2 + 6) / 3)
    assert found["mase"] == pytest.approx((10 / 3) / 2)
    assert found["rmse"] == pytest.approx(np.sqrt((4 + 4 + 36) / 3))
    assert found["smape"] == pytest.approx(200 / 3 * (2 / 26 + 2 / 46 + 6 / 74))
    assert backtest.smape(np.zeros(2), np.zeros(2)) == 0.0


def test_origins_are_spread_over_the_test_window_and_each_forecast_fits_in_it():
    assert backtest.forecast_origins(100, 123, 12) == list(range(100, 112))
    assert backtest.forecast_origins(100, 123, 12, 3) == [100, 106, 111]
    with pytest.raises(ValueError, match="holds no forecast of horizon 12"):
        backtest.forecast_origins(100, 110, 12)


def test_no_origin_sees_its_own_future():
    """Every baseline forecast from an origin is unchanged when everything from the origin on is replaced."""
    y = airline()
    origins = [120, 126, 132]
    before = backtest.run_baselines(y, origins, 12, 12)
    for o in origins:
        altered = y.copy()
        altered[o:] = 1e6
        after = backtest.run_baselines(altered, [o], 12, 12)
        for name in backtest.BASELINES:
            np.testing.assert_allclose(after.forecasts[name][0], before.forecasts[name][origins.index(o)])
    np.testing.assert_array_equal(before.forecasts["seasonal_naive"][0], y[108:120])
    np.testing.assert_allclose(before.forecasts["drift"][0], y[119] + (y[119] - y[0]) / 119 * np.arange(1, 13))
    assert before.summary("auto_ets")["mase"] < before.summary("naive")["mase"]


def test_bless_requires_beating_the_strongest_benchmark_on_mase_and_reports_the_gap_to_auto_ets():
    task = Forecasting(Options(type="forecasting", time_column="t"))
    settings = SimpleNamespace(thresholds={}, must_beat_baseline=True)
    references = {"auto_ets": {"mase": 0.8}, "naive": {"mase": 1.5}, "drift": {"mase": 1.3}}
    won = bless({"mase": 0.9, "rmse": 50.0}, {"mase": 1.1, "rmse": 10.0}, task, settings, references)
    assert won["blessed"] and won["checks"][0]["check"] == "mase < seasonal naive mase"
    assert won["checks"][1]["informational"] and won["checks"][1]["gap"] == pytest.approx(0.1)
    assert len(won["checks"]) == 2  # naive and drift are blessing baselines, not references
    assert not bless({"mase": 1.2}, {"mase": 1.1}, task, settings, references)["blessed"]
    trending = {**references, "drift": {"mase": 0.85}}
    lost = bless({"mase": 0.9}, {"mase": 1.1}, task, settings, trending)
    assert not lost["blessed"] and lost["checks"][0]["outcome"] == "mase 0.9 >= drift 0.85"


def test_default_settings_follow_frequency_and_length_only():
    assert default_settings(12, 144) == {"window": 24, "horizon": 12, "test_periods": 23, "eval_periods": 23,
                                         "seasonality": 12, "seasonal_difference": True, "scaling": "window",
                                         "loss": "mae", "history": 144 - 2 * 23 - 12,
                                         "combine": ["auto_ets", "auto_theta"]}
    quarterly, weekly = default_settings(4, 89), default_settings(52, 2284)
    assert (quarterly["horizon"], quarterly["window"], quarterly["test_periods"]) == (8, 16, 15)
    assert (weekly["horizon"], weekly["window"], weekly["history"]) == (13, 104, 20 * 52)
    assert default_settings(12, 732)["history"] == 240
    assert default_settings(12, 40) is None
    for season, rows in [(12, 144), (4, 89), (52, 2284), (12, 60), (1, 40), (7, 100)]:
        Options(type="forecasting", time_column="t", **default_settings(season, rows))  # each one validates


# ---- window scaling --------------------------------------------------------


def test_window_scaling_layers_match_numpy_and_zero_output_is_seasonal_naive():
    y = airline()
    history = np.stack([y[i : i + 24] for i in range(0, 100, 7)])
    level, scale = level_and_scale(history, 12)
    np.testing.assert_allclose(level, history[:, -1])
    np.testing.assert_allclose(scale, np.abs(history[:, 12:] - history[:, :-12]).mean(1))
    scaled = keras.ops.convert_to_numpy(WindowScale(24, 12)(history.astype("float32")))[..., 0]
    np.testing.assert_allclose(scaled, (history - level[:, None]) / scale[:, None], rtol=1e-5, atol=1e-5)
    outputs = np.random.default_rng(0).normal(size=(len(history), 15)).astype("float32")
    forecast = keras.ops.convert_to_numpy(WindowUnscale(12, True)([outputs, history.astype("float32")]))
    base = base_forecast(history, 15, 12, True)
    np.testing.assert_array_equal(base[:, 12:], history[:, -12:-9])  # the season repeats past one season
    np.testing.assert_allclose(forecast, base + outputs * scale[:, None], rtol=1e-5)
    flat = keras.ops.convert_to_numpy(WindowUnscale(12, False)([np.zeros((1, 3), "float32"),
                                                                history[:1].astype("float32")]))
    np.testing.assert_allclose(flat[0], np.full(3, history[0, -1]))


def test_served_forecast_reads_the_last_window_and_averages_the_statistical_forecasts():
    """A history longer than the window: the network sees its last window only, and the served forecast is
    the mean of the network's and AutoETS's and AutoTheta's fitted on the whole history."""
    task = Forecasting(Options(type="forecasting", time_column="t", window=24, horizon=12, test_periods=23,
                               eval_periods=23, seasonality=12, seasonal_difference=True, scaling="window",
                               loss="mae", history=60, combine=["auto_ets", "auto_theta"]))
    transform = {"window": 24, "horizon": 12, "seasonality": 12, "seasonal_difference": True, "scaling": "window",
                 "history_length": task.history_length, "combine": ["auto_ets", "auto_theta"]}
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 1))
    network = keras.Model(inputs, keras.layers.Dense(12)(keras.layers.Flatten()(inputs)))
    serving = build_serving_model(network, transform)
    y = airline()
    history = np.stack([y[i : i + 60] for i in (0, 30, 60)])
    windowed = build_serving_model(network, {**transform, "history_length": 24})
    network_only = np.asarray(windowed.predict(history[:, -24:].astype("float32"), verbose=0), "float64")
    np.testing.assert_allclose(serving.predict(history.astype("float32"), verbose=0), network_only, rtol=1e-5)
    served = task.predict_outputs(serving, pd.DataFrame({HISTORY: list(history)}), transform)
    statistical = [backtest.statistical(h, 12, 12) for h in history.astype("float32").astype("float64")]
    expected = np.mean([network_only, *[np.stack([s[n] for s in statistical]) for n in ("auto_ets", "auto_theta")]],
                       axis=0)
    np.testing.assert_allclose(served, expected, rtol=1e-4)
    with pytest.raises(ValueError, match="history=12 needs scaling: window and at least window=24"):
        Options(type="forecasting", time_column="t", window=24, horizon=12, test_periods=23, eval_periods=23,
                seasonality=12, scaling="window", history=12)


# ---- many series -------------------------------------------------------------


def panel_task(**options) -> Forecasting:
    defaults = dict(type="forecasting", time_column="quarter", series_column="series", window=16, horizon=8,
                    test_periods=10, eval_periods=10, seasonality=4, seasonal_difference=True, scaling="window",
                    loss="mae", backtest_origins=3)
    return Forecasting(Options(**{**defaults, **options}))


def test_panel_histories_and_splits_stay_within_each_series():
    frame = pd.read_csv(PANEL).sample(frac=1.0, random_state=0)
    raw = RawData(frame=frame, label="value", origin=str(PANEL), renamed={})
    task = panel_task()
    splits = task.split_series(task.series(raw), raw.origin)
    assert [len(splits[s]) for s in ("train", "eval", "test")] == [8 * 183, 80, 80]
    cpi = frame[frame.series == "cpi"].sort_values("quarter")["value"].to_numpy()
    test_cpi = splits["test"][splits["test"].series == "cpi"]
    np.testing.assert_array_equal(test_cpi["value"], cpi[-10:])
    np.testing.assert_array_equal(test_cpi[HISTORY].iloc[0], cpi[-26:-10])
    first_gdp = splits["train"][splits["train"].series == "realgdp"][HISTORY].iloc[0]
    assert np.isnan(first_gdp).all()  # no history borrowed from the series before it

    bad = frame.copy()
    bad.loc[bad.index[0], "series"] = None
    with pytest.raises(Exception, match=r"column 'series' has 1 value\(s\) that are missing or not series names"):
        task.series(RawData(frame=bad, label="value", origin="panel.csv", renamed={}))


@pytest.fixture(scope="module")
def panel_run(tmp_path_factory):
    """The panel recipe, lean: ingest, Beam preprocess, 40 epochs of training, a backtest from 3 origins."""
    root = tmp_path_factory.mktemp("panel")
    use_mlflow_store(root)
    config = config_for("us_macro_panel_mlp", **{"task.test_periods": 10, "task.eval_periods": 10,
                                                 "task.backtest_origins": 3, "train.epochs": 40})
    inputs = {}
    for component in ("ingest", "preprocess"):
        run_component(component, config, dict(inputs), root / component)
        inputs[component] = root / component
    run_train(config, inputs, root / "train")
    summary = run_component("evaluate", config, {**inputs, "train": root / "train"}, root / "evaluate")
    return root, summary


def test_panel_windows_are_scaled_per_series_and_never_cross_series(panel_run):
    root, _ = panel_run
    transform = json.loads((root / "preprocess" / "transform" / "transform.json").read_text())
    columns = read_columns(root / "preprocess" / "transformed" / "train")
    x, y = windows(columns, transform)
    assert x.shape == (8 * (183 - 16 - 8 + 1), 16, 1)
    frame = pd.read_csv(PANEL)
    pop = frame[frame.series == "pop"]["value"].to_numpy()
    level, scale = level_and_scale(pop[None, :16], 4)
    order = np.lexsort((columns["quarter"], columns["series"].astype(str)))
    first_pop = int(np.flatnonzero(columns["series"][order] == "pop")[16])
    np.testing.assert_allclose(columns["window"][order][first_pop], (pop[:16] - level) / scale, rtol=1e-5)
    expected = (pop[16:24] - pop[12:16][np.arange(8) % 4]) / scale
    index = sorted(columns["series"].astype(str)).index("pop") // 183 * (183 - 16 - 8 + 1)
    np.testing.assert_allclose(y[index], expected, rtol=1e-4)


def test_panel_model_learns_and_serves_every_series(panel_run):
    root, summary = panel_run
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    assert set(metrics["per_series"]) == {"cpi", "m1", "pop", "realcons", "realdpi", "realgdp", "realgovt",
                                          "realinv"}
    assert all(len(v) == 3 for v in metrics["per_origin"].values())
    assert metrics["test"]["mase"] < metrics["baseline"]["mase"], metrics["test"]
    # Trending quarterly series: drift, not last year's values, is the strongest benchmark (1.65 against
    # seasonal naive's 2.14), and the blessing follows the model's margin over it.
    check = next(c for c in summary["checks"] if "margin" in c)
    assert check["baseline"] == "drift" and set(check["baselines"]) == {"seasonal naive", "naive", "drift"}
    assert summary["blessed"] is (check["margin"] > 0), check
    assert {"naive", "drift", "auto_ets", "auto_theta"} <= set(metrics["references"])
    assert len(metrics["error_by_step"]["model"]) == 8
    assert (root / "evaluate" / "forecast.png").stat().st_size > 20_000

    predictor = Predictor(root / "train" / "serving.keras", root / "train" / "transform.json")
    test = read_frame(root / "ingest" / "test")
    rows = test.groupby("series").head(1).sort_values("series")
    served = predictor.predict(rows.drop(columns=["series", "value"]))
    assert served.shape == (8, 8)
    per_series = metrics["per_origin"]
    for (_, row), (_, forecast) in zip(rows.iterrows(), served.iterrows()):
        actual = test[test.series == row.series]["value"].to_numpy()[:8]
        mae = np.abs(forecast.to_numpy() - actual).mean()
        assert mae == pytest.approx(per_series[row.series][0]["model"]["mae"], rel=1e-4)
