"""Time-series forecasting: one regular series, split by time, forecast `horizon` steps at once.

Each row carries the raw values of the steps before it, so any split turns
into windows on its own; why, and how scaling and the backtest work, is in
docs/design.md ("Forecasting").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from data.sources import RawData, SourceError, column_name
from data.timestamps import parse_timestamps
from keras_models.specs import InputSpec, OutputSpec
from tasks.analyzers import Analyzer, empty_moments, merge_moments, moments_of, variance
from tasks.base import Evaluation, Task

if TYPE_CHECKING:
    import keras

HISTORY = "history"  # ingest: raw values of the steps before each row
WINDOW = "window"  # transformed: the model's input window before each row, scaled


def regular_frequency(times: pd.Series, origin: str, column: str) -> str:
    """The pandas frequency of sorted `times`; duplicate or missing periods are errors naming the timestamps."""
    duplicated = times[times.duplicated(keep=False)]
    if not duplicated.empty:
        shown = [str(t) for t in sorted(set(duplicated))[:10]]
        raise SourceError(
            f"{origin}: time column {column!r} has duplicate timestamps {shown}; "
            "a series needs exactly one value per period."
        )
    index = pd.DatetimeIndex(times)
    if len(index) < 3:
        raise SourceError(f"{origin}: {len(index)} timestamps; at least 3 are needed to infer the frequency.")
    frequency = pd.infer_freq(index)
    if frequency is not None:
        return frequency
    if pd.infer_freq(index[:3]) is None:
        raise SourceError(
            f"{origin}: time column {column!r} starts {[str(t) for t in index[:3]]}, "
            "which follow no regular frequency."
        )
    regular, irregular = 3, len(index)  # the longest regular prefix ends where the first gap starts
    while irregular - regular > 1:
        middle = (regular + irregular) // 2
        regular, irregular = (middle, irregular) if pd.infer_freq(index[:middle]) else (regular, middle)
    frequency = pd.infer_freq(index[:regular])
    before, after = index[regular - 1], index[regular]
    missing = pd.date_range(before, after, freq=frequency, inclusive="neither")
    detail = (f"missing {[str(t) for t in missing[:10]]}{' ...' if len(missing) > 10 else ''}" if len(missing)
              else f"{after} is off the {frequency} grid")
    raise SourceError(
        f"{origin}: time column {column!r} is not regular at frequency {frequency}: "
        f"{before} is followed by {after} ({detail})."
    )


def history_matrix(values: np.ndarray, length: int) -> np.ndarray:
    """Row `t` holds `values[t - length : t]`, NaN before the series starts."""
    padded = np.concatenate([np.full(length, np.nan), np.asarray(values, "float64")])
    return np.lib.stride_tricks.sliding_window_view(padded, length)[: len(values)].copy()


def list_matrix(column: pa.ChunkedArray | pa.Array, width: int, name: str) -> np.ndarray:
    """A list column of an Arrow batch as a `(rows, width)` float64 matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype("float64")
    if values.size != len(column) * width:
        raise ValueError(f"Column {name!r} must hold {width} values per row; got {values.size} for {len(column)} rows.")
    return values.reshape(len(column), width)


def target_space(values: np.ndarray, history: np.ndarray, lag: int | None) -> np.ndarray:
    """The values the model learns on: the series itself, or its seasonal difference at `lag`."""
    return values if lag is None else values - history[:, -lag]


def level_and_scale(history: np.ndarray, season: int) -> tuple[np.ndarray, np.ndarray]:
    """Each history row's level (its last value) and scale (its mean absolute seasonal difference).

    Window scaling divides by the scale MASE uses, so a network trained on
    mean absolute error in this space minimises each window's MASE, and
    series of any size share one model. A flat history gets a scale of
    1e-6 of its level (or 1e-6) so nothing divides by 0.
    """
    history = np.asarray(history, "float64")
    lag = season if history.shape[1] > season else 1
    scale = np.abs(history[:, lag:] - history[:, :-lag]).mean(axis=1)
    floor = 1e-6 * np.maximum(np.abs(history).mean(axis=1), 1.0)
    return history[:, -1], np.maximum(scale, floor)


def base_forecast(history: np.ndarray, horizon: int, season: int, seasonal: bool) -> np.ndarray:
    """What a window-scaled model forecasts when its network outputs 0: the last season repeated, or the last value."""
    history = np.asarray(history, "float64")
    if not seasonal:
        return np.repeat(history[:, -1:], horizon, axis=1)
    return history[:, -season:][:, np.arange(horizon) % season]


class MomentsFn(Analyzer):
    """Moments of the train rows' target-space values (`tasks.analyzers`), and the train row count.

    Its inputs are Arrow record batches; rows whose value is undefined (the first `seasonality` rows when differencing)
    are left out of the moments but counted as train rows.
    """

    def __init__(self, value: str, history_length: int, lag: int | None):
        self.value, self.history_length, self.lag = value, history_length, lag

    def create_accumulator(self):
        return {"rows": 0, **empty_moments()}

    def add_input(self, acc, batch: pa.Table):
        values = batch.column(self.value).to_numpy(zero_copy_only=False).astype("float64")
        history = list_matrix(batch.column(HISTORY), self.history_length, HISTORY)
        target = target_space(values, history, self.lag)
        return self.merge(acc, {"rows": len(values), **moments_of(target[~np.isnan(target)])})

    def merge(self, acc, other):
        return {**merge_moments(acc, other), "rows": acc["rows"] + other["rows"]}


SCALE = "scale"  # transformed, window scaling: each row's scale
BASE = "base"  # transformed, window scaling: what the row's forecast is when the network outputs 0


def transform_batch(batch: pa.Table, transform: dict[str, Any], split: str) -> pa.Table:
    """Each row's target and its input window: scaled with the train moments, or by the window's own history."""
    values = batch.column(transform["value"]).to_numpy(zero_copy_only=False).astype("float64")
    history = list_matrix(batch.column(HISTORY), transform["history_length"], HISTORY)
    series = transform.get("series")
    keys = [batch.column(transform["time"]).cast(pa.timestamp("ns"))]
    if series:
        keys.append(batch.column(series).cast(pa.string()))
    if transform.get("scaling") == "window":
        season, horizon = transform["seasonality"], transform["horizon"]
        recent = history[:, -transform["window"] :]
        level, scale = level_and_scale(recent, season)
        window = ((recent - level[:, None]) / scale[:, None]).astype("float32")
        base = base_forecast(history, horizon, season, transform["seasonal_difference"])
        columns = [
            *keys,
            pa.array(values, pa.float64()),
            pa.FixedSizeListArray.from_arrays(pa.array(window.ravel(), pa.float32()), transform["window"]),
            pa.array(scale, pa.float64()),
            pa.FixedSizeListArray.from_arrays(pa.array(base.ravel(), pa.float64()), horizon),
        ]
    else:
        lag = transform["seasonality"] if transform["seasonal_difference"] else None
        target = target_space(values, history, lag)
        inputs = history if lag is None else history[:, lag:] - history[:, :-lag]
        mean, std = transform["mean"], np.sqrt(transform["variance"])
        window = ((inputs - mean) / std).astype("float32")
        columns = [
            *keys,
            pa.array(((target - mean) / std).astype("float32"), pa.float32()),
            pa.FixedSizeListArray.from_arrays(pa.array(window.ravel(), pa.float32()), transform["window"]),
        ]
    return pa.Table.from_arrays(columns, schema=output_schema(
        transform["time"], transform["value"], transform["window"], series,
        transform["horizon"] if transform.get("scaling") == "window" else None))


def output_schema(time: str, value: str, window: int, series: str | None = None,
                  horizon: int | None = None) -> pa.Schema:
    """The transformed columns; `horizon` is given for window scaling, whose rows keep their raw value,
    scale and base forecast."""
    fields = [pa.field(time, pa.timestamp("ns"))]
    if series:
        fields.append(pa.field(series, pa.string()))
    if horizon is None:
        return pa.schema([*fields, pa.field(value, pa.float32()), pa.field(WINDOW, pa.list_(pa.float32(), window))])
    return pa.schema([*fields, pa.field(value, pa.float64()), pa.field(WINDOW, pa.list_(pa.float32(), window)),
                      pa.field(SCALE, pa.float64()), pa.field(BASE, pa.list_(pa.float64(), horizon))])


def windows(columns: dict[str, np.ndarray], transform: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Every forecast origin of one transformed split: its window → the next `horizon` targets.

    An origin is a row whose window is complete and whose next `horizon`
    rows are in the split and of the same series, so no target crosses into
    the next split or another series. With window scaling a target is
    `(y - base) / scale` with the origin's own base and scale.
    """
    time, series, horizon = transform["time"], transform.get("series"), transform["horizon"]
    times = np.asarray(columns[time])
    keys = np.asarray(columns[series]).astype(str) if series else np.zeros(len(times), "U1")
    order = np.lexsort((times, keys))
    keys = keys[order]
    values = np.asarray(columns[transform["value"]], "float64")[order]
    inputs = np.asarray(columns[WINDOW], "float32").reshape(len(values), -1)[order]
    windowed = transform.get("scaling") == "window"
    if windowed:
        scale = np.asarray(columns[SCALE], "float64")[order]
        base = np.asarray(columns[BASE], "float64").reshape(len(values), horizon)[order]
    origins = [
        i for i in range(len(values) - horizon + 1)
        if keys[i] == keys[i + horizon - 1]
        and not np.isnan(inputs[i]).any() and not np.isnan(values[i : i + horizon]).any()
    ]
    if not origins:
        raise ValueError(
            f"A split of {len(values)} rows has no complete forecast: each needs a full window of "
            f"{transform['history_length']} earlier values and {horizon} values after it."
        )
    x = inputs[origins][..., None]
    y = np.stack([values[i : i + horizon] for i in origins])
    if windowed:
        y = (y - base[origins]) / scale[origins][:, None]
    return x, y.astype("float32")


def build_serving_model(network: keras.Model, transform: dict[str, Any]) -> keras.Model:
    """Raw history (series units) → difference, scale → `network` → unscale, undifference → forecasts."""
    import keras

    from tasks.layers import LastSteps, SeasonalDifference, SeasonalUndifference, WindowScale, WindowUnscale

    length = transform["history_length"]
    history = keras.Input(shape=(length,), name=HISTORY, dtype="float32")
    if transform.get("scaling") == "window":
        recent = history if length == transform["window"] else LastSteps(transform["window"], name="window")(history)
        x = WindowScale(transform["window"], transform["seasonality"], name="window_scale")(recent)
        y = WindowUnscale(transform["seasonality"], transform["seasonal_difference"], name="window_unscale")(
            [network(x), recent])
        return keras.Model(history, y, name=f"serving_{network.name}")
    x = keras.layers.Reshape((length, 1), name="steps")(history)
    if transform["seasonal_difference"]:
        x = SeasonalDifference(transform["seasonality"], name="seasonal_difference")(x)
    stats = {"axis": None, "mean": transform["mean"], "variance": transform["variance"]}
    x = keras.layers.Normalization(**stats, name="scale")(x)
    y = keras.layers.Normalization(**stats, invert=True, name="unscale")(network(x))
    if transform["seasonal_difference"]:
        y = SeasonalUndifference(transform["seasonality"], name="seasonal_undifference")([y, history])
    return keras.Model(history, y, name=f"serving_{network.name}")


def raw_inputs(frame: pd.DataFrame, transform: dict[str, Any]) -> np.ndarray:
    """Rows with a `history` of raw values → the serving model's `(rows, history_length)` input."""
    length = transform["history_length"]
    if HISTORY not in frame.columns:
        raise ValueError(f"Input rows lack column {HISTORY!r}: the last {length} values before each forecast.")
    rows = [np.asarray(v, "float64").ravel() for v in frame[HISTORY]]
    for position, row in enumerate(rows):
        if row.size != length or np.isnan(row).any():
            raise ValueError(
                f"Input row {position} ({frame.index[position]!r}): {HISTORY!r} must hold {length} values "
                f"without gaps; got {row.size} values, {int(np.isnan(row).sum())} missing."
            )
    return np.stack(rows).astype("float32") if rows else np.zeros((0, length), "float32")


def combined_forecasts(network: np.ndarray, histories: np.ndarray, transform: dict[str, Any]) -> np.ndarray:
    """The network's forecasts averaged with the statistical forecasts `transform["combine"]` names, each
    fitted on the row's raw history.

    An equal-weight mean needs no choice among candidates (nothing to fit on
    any split) and is at least as accurate in MAE as the mean of its parts'
    errors; the network's errors and those of exponential smoothing and
    Theta differ in kind, so they partly cancel.
    """
    from tasks.backtest import statistical

    names = transform.get("combine") or []
    network = np.asarray(network, "float64")
    if not names:
        return network
    parts = [network]
    fits = [statistical(row, transform["horizon"], transform["seasonality"]) for row in histories]
    parts.extend(np.stack([fit[name] for fit in fits]) for name in names)
    return np.mean(parts, axis=0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_backtest_plots(results: dict, times: dict, path: Path, title: str) -> Path:
    """One panel per series: its recent past, the test period, and the model's, seasonal naive's and AutoETS's
    forecasts from every `horizon`-th origin (so the forecasts tile the test period)."""
    plt = _pyplot()
    count = len(results)
    columns = min(count, 3)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.4 * rows), squeeze=False)
    for ax, (name, result) in zip(axes.ravel(), results.items()):
        stamps = times[name].to_numpy()
        first = result.origins[0]
        shown = max(0, first - 3 * result.horizon)
        ax.plot(stamps[shown : first + 1], result.values[shown : first + 1], color="0.45", label="history")
        ax.plot(stamps[first:], result.values[first:], color="black", marker=".", markersize=3, label="actual")
        for i in range(0, len(result.origins), result.horizon):
            steps = stamps[result.origins[i] : result.origins[i] + result.horizon]
            for forecaster, style in [("model", dict(color="tab:blue")),
                                      ("seasonal_naive", dict(color="tab:orange", linestyle="--")),
                                      ("auto_ets", dict(color="tab:green", linestyle=":"))]:
                ax.plot(steps, result.forecasts[forecaster][i], **style,
                        label={"model": "model", "seasonal_naive": "seasonal naive", "auto_ets": "AutoETS"}[forecaster]
                        if i == 0 else None)
        mase = result.summary("model")["mase"]
        ax.set_title(f"{name + ': ' if name is not None else ''}MASE {mase:.2f} "
                     f"(seasonal naive {result.summary('seasonal_naive')['mase']:.2f}, "
                     f"AutoETS {result.summary('auto_ets')['mase']:.2f})", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[count:]:
        ax.set_visible(False)
    axes.ravel()[0].legend(loc="upper left", fontsize=7)
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_error_by_step(runs: list, path: Path, title: str) -> Path:
    """MASE at each horizon step, averaged over origins and series, for the model and the baselines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("model", "seasonal_naive", "naive", "drift", "auto_ets", "auto_theta"):
        by_step = np.mean([r.by_step(name)["mase"] for r in runs], axis=0)
        ax.plot(np.arange(1, len(by_step) + 1), by_step, marker="o" if name == "model" else None,
                linewidth=2.5 if name == "model" else 1.2, label=name.replace("_", " "))
    ax.set_xlabel("horizon step")
    ax.set_ylabel("MASE")
    ax.set_title(f"{title}: error by horizon step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


HORIZONS = {1: 6, 4: 8, 7: 14, 12: 12, 24: 24, 52: 13}  # season → horizon, close to the M4 competition's
MIN_TRAIN_WINDOWS = 24  # training forecasts the default settings leave before the eval and test splits
# The served model reads this much raw history (at most; less when the train split is short) and averages the
# network's forecast with AutoETS's and AutoTheta's fitted on it.
HISTORY_SEASONS, MIN_HISTORY = 20, 240
DEFAULT_COMBINE = ("auto_ets", "auto_theta")

# The default model for a series (what `keras-pipeline init` writes and `bench/forecasting.py` measures):
# a multilayer perceptron on window-scaled inputs that learns the correction to seasonal naive, with MAE loss.
DEFAULT_MODEL = {"name": "mlp", "hparams": {"num_layers": 2, "units": 64, "activation": "relu", "dropout": 0.0,
                                            "l2": 0.0001}}
DEFAULT_TRAINING = {"epochs": 300, "batch_size": 16, "learning_rate": 0.001, "early_stopping_patience": 30}


def default_settings(season: int, rows: int) -> dict[str, Any] | None:
    """Task options for a series of `rows` periods with season length `season`, from those two numbers only.

    The horizon follows the frequency (monthly 12, quarterly 8, weekly 13);
    the eval and test splits each hold `horizon` rolling origins (at least
    3), the window is two seasons or two horizons, whichever is longer. A
    short series gets fewer origins, then a shorter window, then a shorter
    horizon, until `MIN_TRAIN_WINDOWS` training forecasts remain. The
    served model reads up to 20 seasons (at least 240 steps) of raw history,
    no more than the train split holds before its last horizon, and averages
    the network's forecast with AutoETS's and AutoTheta's on that history.
    None when even the smallest settings do not fit.
    """
    season = max(int(season), 1)
    horizon = HORIZONS.get(season, max(season, 4))
    while horizon >= 1:
        for origins in dict.fromkeys((horizon, 3) if horizon > 3 else (3,)):
            for window in dict.fromkeys((2 * max(season, horizon), season + max(horizon, 2), season + 1)):
                if window <= season:
                    continue
                periods = horizon + origins - 1
                train = rows - 2 * periods
                if train - window - horizon + 1 >= MIN_TRAIN_WINDOWS:
                    history = max(window, min(train - horizon, max(HISTORY_SEASONS * season, MIN_HISTORY)))
                    return {"window": window, "horizon": horizon, "test_periods": periods, "eval_periods": periods,
                            "seasonality": season, "seasonal_difference": season > 1, "scaling": "window",
                            "loss": "mae", "history": history, "combine": list(DEFAULT_COMBINE)}
        horizon //= 2
    return None


class Forecasting(Task):
    name = "forecasting"
    head = "forecasting"
    primary_metric = "mase"
    error_metrics = frozenset({"mase", "smape", "rmse", "mae"})
    baseline_name = "seasonal naive"
    # The benchmark methods with nothing fitted; AutoETS and AutoTheta are fitted models, references.
    blessing_baselines = ("baseline", "naive", "drift")

    @property
    def lag(self) -> int | None:
        return self.options.seasonality if self.options.seasonal_difference else None

    @property
    def history_length(self) -> int:
        """Raw steps a forecast reads: the window, plus one season to difference it (series scaling)."""
        if self.options.scaling == "window":
            return self.options.history or self.options.window
        return self.options.window + (self.lag or 0)

    # ---- ingest ---------------------------------------------------------

    def series(self, raw: RawData) -> pd.DataFrame:
        """The source as a sorted, regular `(time, [series,] value, history)` frame, or an error naming what is wrong.

        With `series_column` each series is checked and given its history on its own.
        """
        time, value = column_name(self.options.time_column), raw.label
        key = column_name(self.options.series_column) if self.options.series_column else None
        frame = raw.frame
        for column, what in [(time, "time"), (key, "series")]:
            if column is not None and column not in frame.columns:
                raise SourceError(
                    f"{raw.origin}: {what} column {column!r} (task.{what}_column) not found; columns are: "
                    f"{', '.join(frame.columns)}."
                )
        if len({time, value, key} - {None}) < 2 + (key is not None):
            raise SourceError(f"{raw.origin}: task.time_column, task.series_column and data.label must name "
                              f"different columns; got {time!r}, {key!r} and {value!r}.")
        if HISTORY in (time, value, key):
            raise SourceError(f"{raw.origin}: column name {HISTORY!r} is reserved for the input window.")
        times = parse_timestamps(frame[time])
        values = pd.to_numeric(frame[value], errors="coerce")
        checks = [(time, times, "timestamps"), (value, values, "numbers")]
        if key is not None:
            checks.append((key, frame[key].where(frame[key].notna(), None), "series names"))
        for name, parsed, what in checks:
            bad = np.flatnonzero(parsed.isna().to_numpy())
            if bad.size:
                shown = {int(i) + 1: frame[name].iloc[i] for i in bad[:10]}
                raise SourceError(
                    f"{raw.origin}: column {name!r} has {bad.size} value(s) that are missing or not {what}, "
                    f"at row(s) counted from 1 after the header: {shown}."
                )
        series = pd.DataFrame({time: times.to_numpy(), value: values.to_numpy("float64")})
        if key is None:
            series = series.sort_values(time, kind="stable").reset_index(drop=True)
            regular_frequency(series[time], raw.origin, time)
            series[HISTORY] = list(history_matrix(series[value].to_numpy(), self.history_length))
            return series
        series.insert(1, key, frame[key].astype(str).to_numpy())
        series = series.sort_values([key, time], kind="stable").reset_index(drop=True)
        frequencies = {}
        histories = []
        for name, group in series.groupby(key, sort=False):
            frequencies[name] = regular_frequency(group[time], f"{raw.origin} (series {name!r})", time)
            histories.extend(history_matrix(group[value].to_numpy(), self.history_length))
        if len(set(frequencies.values())) > 1:
            raise SourceError(f"{raw.origin}: the series do not share one frequency: {frequencies}.")
        series[HISTORY] = histories
        return series

    def read_splits(self, data, seed: int) -> tuple[RawData, dict[str, pd.DataFrame]]:
        """Splits by time: the last `test_periods` rows test, the `eval_periods` before them eval."""
        if data.test_source is not None:
            raise SourceError(
                f"data.test_source={data.test_source!r}: a forecasting test split is the last "
                "task.test_periods periods of data.source; leave test_source unset."
            )
        raw = self.read(data)
        return raw, self.split_series(self.series(raw), raw.origin)

    def split_series(self, series: pd.DataFrame, origin: str) -> dict[str, pd.DataFrame]:
        """Each series' last `test_periods` rows are test and the `eval_periods` before them eval."""
        key = column_name(self.options.series_column) if self.options.series_column else None
        groups = series.groupby(key, sort=False) if key else [(None, series)]
        parts: dict[str, list[pd.DataFrame]] = {"train": [], "eval": [], "test": []}
        options = self.options
        for name, group in groups:
            n_train = len(group) - options.test_periods - options.eval_periods
            read = options.window if options.scaling == "window" else self.history_length
            needed = max(read, options.seasonality) + options.horizon
            if n_train < needed:
                raise SourceError(
                    f"{origin}{f' (series {name!r})' if key else ''}: {len(group)} periods leave {n_train} for "
                    f"training after test_periods={options.test_periods} and eval_periods={options.eval_periods}; "
                    f"one training forecast needs {needed} (window of {read}, "
                    f"horizon {options.horizon})."
                )
            n_eval = n_train + options.eval_periods
            for split, rows in [("train", group.iloc[:n_train]), ("eval", group.iloc[n_train:n_eval]),
                                ("test", group.iloc[n_eval:])]:
                parts[split].append(rows)
        return {split: pd.concat(frames) for split, frames in parts.items()}

    def schema(self, train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
        time = column_name(self.options.time_column)
        return {
            "time": {"name": time, "frequency": pd.infer_freq(pd.DatetimeIndex(train[time])),
                     "train_start": str(train[time].iloc[0]), "train_end": str(train[time].iloc[-1])},
            "label": {"name": raw.label, "kind": "numeric"},
            "history": {"name": HISTORY, "length": self.history_length},
            "series": ({"name": column_name(self.options.series_column), "count": int(train[column_name(
                self.options.series_column)].nunique())} if self.options.series_column else None),
        }

    def to_arrow(self, frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        time, value, length = schema["time"]["name"], schema["label"]["name"], schema["history"]["length"]
        history = np.stack(frame[HISTORY].to_numpy()).reshape(len(frame), length)
        series = (schema.get("series") or {}).get("name")
        keys = [pa.array(frame[series].astype(str).to_numpy(), pa.string())] if series else []
        return pa.Table.from_arrays(
            [
                pa.array(frame[time].to_numpy("datetime64[ns]"), pa.timestamp("ns")),
                *keys,
                pa.array(frame[value].to_numpy("float64"), pa.float64()),
                pa.FixedSizeListArray.from_arrays(pa.array(history.ravel(), pa.float64()), length),
            ],
            names=[time, *([series] if series else []), value, HISTORY],
        )

    # ---- preprocess (Beam) ----------------------------------------------

    def analyzer(self, schema, settings):
        return MomentsFn(schema["label"]["name"], schema["history"]["length"], self.lag)

    def finalize(self, acc, schema, settings) -> dict[str, Any]:
        value = schema["label"]["name"]
        if acc["count"] < 2 or acc["m2"] <= 0:
            raise ValueError(
                f"Column {value!r} is constant (or has under 2 values) over the train split's "
                f"{acc['rows']} rows{' after seasonal differencing' if self.lag else ''}; it cannot be scaled."
            )
        return {
            "time": schema["time"]["name"],
            "frequency": schema["time"]["frequency"],
            "value": value,
            "label": {"name": value},
            "window": self.options.window,
            "horizon": self.options.horizon,
            "seasonality": self.options.seasonality,
            "seasonal_difference": self.options.seasonal_difference,
            "scaling": self.options.scaling,
            "loss": self.options.loss,
            "combine": list(self.options.combine),
            "series": (schema.get("series") or {}).get("name"),
            "history_length": schema["history"]["length"],
            "mean": float(acc["mean"]),
            "variance": float(variance(acc)),
            "num_train_rows": acc["rows"],
        }

    def transform_batch(self, batch, transform, split):
        return transform_batch(batch, transform, split)

    def output_schema(self, schema) -> pa.Schema:
        return output_schema(schema["time"]["name"], schema["label"]["name"], self.options.window,
                             (schema.get("series") or {}).get("name"),
                             self.options.horizon if self.options.scaling == "window" else None)

    # ---- train ----------------------------------------------------------

    def specs(self, transform):
        return InputSpec((transform["window"], 1)), OutputSpec("forecasting", transform["horizon"])

    def arrays(self, columns, transform):
        return windows(columns, transform)

    def compile_args(self, transform):
        return {"loss": transform.get("loss", "mse"), "metrics": ["mae"]}

    example_rows = None

    def serving_example(self, train: pd.DataFrame, transform: dict[str, Any]) -> pd.DataFrame:
        """The raw history before the last three train rows that have a complete one."""
        complete = train[[not np.isnan(np.asarray(h, "float64")).any() for h in train[HISTORY]]]
        return complete[[HISTORY]].tail(3).reset_index(drop=True)

    def serving_model(self, network, transform):
        return build_serving_model(network, transform)

    def raw_inputs(self, frame, transform):
        return raw_inputs(frame, transform)

    def predict_outputs(self, model, frame, transform) -> np.ndarray:
        """The serving model's forecasts, averaged with the statistical ones `combine` names (fitted in Python)."""
        histories = self.raw_inputs(frame, transform)
        network = np.asarray(model.predict(histories, verbose=0)) if len(histories) else np.zeros(
            (0, transform["horizon"]))
        return combined_forecasts(network, histories.astype("float64"), transform)

    def outputs_frame(self, outputs, transform, index=None) -> pd.DataFrame:
        outputs = np.asarray(outputs, "float64")
        return pd.DataFrame({f"forecast_{k + 1}": outputs[:, k] for k in range(outputs.shape[1])}, index=index)

    # ---- evaluate -------------------------------------------------------

    def evaluate(self, predictor, test: pd.DataFrame, ingest_dir: Path, output: Path, config) -> Evaluation:
        """A rolling-origin backtest over each series' test split, the baselines forecasting from the same origins.

        The headline is the model's mean over origins (and over series) of
        MASE, sMAPE, RMSE and MAE. `baseline` is seasonal naive; the blessing
        requires beating the strongest of it, naive and drift (`blessing_baselines`);
        AutoETS and AutoTheta are references.
        """
        from data.splits import read_frame
        from tasks import backtest

        transform = predictor.transform
        time, value, horizon, season = transform["time"], transform["value"], transform["horizon"], \
            transform["seasonality"]
        key = transform.get("series")
        whole = pd.concat([read_frame(ingest_dir / "train"), read_frame(ingest_dir / "eval"), test])
        groups = list(whole.groupby(key, sort=True)) if key else [(None, whole)]
        test_rows = test[key].astype(str).value_counts().to_dict() if key else {None: len(test)}
        results: dict[Any, backtest.Backtest] = {}
        times: dict[Any, pd.Series] = {}
        for name, frame in groups:
            frame = frame.sort_values(time, kind="stable").reset_index(drop=True)
            start = len(frame) - test_rows[name]
            origins = backtest.forecast_origins(start, len(frame), horizon, self.options.backtest_origins)
            result = backtest.run_baselines(frame[value].to_numpy("float64"), origins, horizon, season)
            result.forecasts["model"] = np.asarray(predictor.outputs(frame.iloc[origins]), "float64")
            results[name], times[name] = result, frame[time]
        runs = list(results.values())
        headline = backtest.pooled(runs, "model")
        references = {n: backtest.pooled(runs, n) for n in backtest.BASELINES if n != "seasonal_naive"}
        label = f"{config.model.name} on {config.name}"
        plots = [save_backtest_plots(results, times, output / "forecast.png", label),
                 save_error_by_step(runs, output / "error_by_step.png", label)]
        details = {
            "baseline_name": f"seasonal naive (season {season})",
            "backtest": {"origins_per_series": {str(k): len(r.origins) for k, r in results.items()},
                         "horizon": horizon, "metrics": list(backtest.METRICS)},
            "gap_to_auto_ets": {m: headline[m] - references["auto_ets"][m] for m in backtest.METRICS},
            "error_by_step": {n: np.mean([r.by_step(n)["mase"] for r in runs], axis=0).tolist()
                              for n in ("model", "seasonal_naive", "auto_ets")},
            "per_origin": {str(k): [{"origin": str(times[k].iloc[o]), **{n: r.per_origin(n)[i] for n in
                                                                       ("model", "seasonal_naive", "auto_ets")}}
                                    for i, o in enumerate(r.origins)] for k, r in results.items()},
        }
        if key:
            details["per_series"] = {str(k): {n: r.summary(n) for n in ("model", *backtest.BASELINES)}
                                     for k, r in results.items()}
        return Evaluation(headline=headline, baseline=backtest.pooled(runs, "seasonal_naive"), details=details,
                          plots=plots, references=references)


TASK = Forecasting
