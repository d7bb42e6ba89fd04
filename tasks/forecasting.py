"""Time-series forecasting: one regular series, split by time, forecast `horizon` steps at once.

Ingest sorts the series by its time column, checks that it is regular (no
duplicate timestamps, no missing periods, at the frequency pandas infers)
and splits it by time: the last `test_periods` rows are the test split, the
`eval_periods` before them the eval split, the rest the train split.

Windows of the eval and test splits start in the periods before them, yet
every stage sees one split at a time. So ingest stores, with each row, the
raw values of the steps before it (`history`; NaN before the series
starts): a row is then a self-contained forecast origin, any split can be
turned into windows on its own, and the stored history is exactly the raw
input the serving model takes. Nothing leaks: a row's history is only the
past, and the analyzer reads the train rows' own values only.

Preprocess fits the scaling on the train split in one Beam pass (mergeable
count/mean/M2 moments). With `seasonal_difference` the model learns on
`y[t] - y[t - seasonality]`, which needs `seasonality` more steps of
history; the serving model differences the raw history, scales it, runs the
network, unscales and undoes the differencing, so it maps raw values to
forecasts in the series' own units.

The model is judged on the test period, forecast from the window that
precedes it, against the seasonal-naive forecast (the last season repeated).
Persistence (the last value repeated) and seasonal naive plus the train
split's mean seasonal change are reported beside it: within one season the
latter is what a seasonally differenced model forecasts when its network
outputs zero, so a model that beats it has learned more than the
differencing gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from data.sources import RawData, SourceError, column_name
from keras_models.specs import InputSpec, OutputSpec
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


class MomentsFn:
    """Count, mean and M2 of the train rows' target-space values, merged with Chan et al.'s update.

    It follows Beam's `CombineFn` protocol over Arrow record batches; rows
    whose value is undefined (the first `seasonality` rows when differencing)
    are left out of the moments but counted as train rows.
    """

    def __init__(self, value: str, history_length: int, lag: int | None):
        self.value, self.history_length, self.lag = value, history_length, lag

    def create_accumulator(self):
        return {"rows": 0, "count": 0, "mean": 0.0, "m2": 0.0}

    def add_input(self, acc, batch: pa.Table):
        values = batch.column(self.value).to_numpy(zero_copy_only=False).astype("float64")
        history = list_matrix(batch.column(HISTORY), self.history_length, HISTORY)
        target = target_space(values, history, self.lag)
        target = target[~np.isnan(target)]
        part = {"rows": len(values), "count": target.size, "mean": float(target.mean()) if target.size else 0.0,
                "m2": float(((target - target.mean()) ** 2).sum()) if target.size else 0.0}
        return self._merge(acc, part)

    @staticmethod
    def _merge(a, b):
        count = a["count"] + b["count"]
        if count == 0:
            return {**a, "rows": a["rows"] + b["rows"]}
        delta = b["mean"] - a["mean"]
        return {
            "rows": a["rows"] + b["rows"],
            "count": count,
            "mean": a["mean"] + delta * b["count"] / count,
            "m2": a["m2"] + b["m2"] + delta**2 * a["count"] * b["count"] / count,
        }

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            merged = self._merge(merged, acc)
        return merged

    def extract_output(self, acc):
        return acc


def transform_batch(batch: pa.Table, transform: dict[str, Any], split: str) -> pa.Table:
    """Each row's target-space value and its input window, scaled with the train statistics."""
    lag = transform["seasonality"] if transform["seasonal_difference"] else None
    values = batch.column(transform["value"]).to_numpy(zero_copy_only=False).astype("float64")
    history = list_matrix(batch.column(HISTORY), transform["history_length"], HISTORY)
    target = target_space(values, history, lag)
    inputs = history if lag is None else history[:, lag:] - history[:, :-lag]
    mean, std = transform["mean"], np.sqrt(transform["variance"])
    window = ((inputs - mean) / std).astype("float32")
    return pa.Table.from_arrays(
        [
            batch.column(transform["time"]).cast(pa.timestamp("ns")),
            pa.array(((target - mean) / std).astype("float32"), pa.float32()),
            pa.FixedSizeListArray.from_arrays(pa.array(window.ravel(), pa.float32()), transform["window"]),
        ],
        schema=output_schema(transform["time"], transform["value"], transform["window"]),
    )


def output_schema(time: str, value: str, window: int) -> pa.Schema:
    return pa.schema([
        pa.field(time, pa.timestamp("ns")),
        pa.field(value, pa.float32()),
        pa.field(WINDOW, pa.list_(pa.float32(), window)),
    ])


def windows(columns: dict[str, np.ndarray], transform: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Every forecast origin of one transformed split: its window → the next `horizon` values.

    An origin is a row whose window is complete and whose next `horizon`
    rows are in the split, so no target crosses into the next split.
    """
    order = np.argsort(columns[transform["time"]], kind="stable")
    values = np.asarray(columns[transform["value"]], "float32")[order]
    inputs = np.asarray(columns[WINDOW], "float32").reshape(len(values), -1)[order]
    horizon = transform["horizon"]
    origins = [
        i for i in range(len(values) - horizon + 1)
        if not np.isnan(inputs[i]).any() and not np.isnan(values[i : i + horizon]).any()
    ]
    if not origins:
        raise ValueError(
            f"A split of {len(values)} rows has no complete forecast: each needs a full window of "
            f"{transform['history_length']} earlier values and {horizon} values after it."
        )
    x = inputs[origins][..., None]
    y = np.stack([values[i : i + horizon] for i in origins])
    return x, y


def build_serving_model(network: keras.Model, transform: dict[str, Any]) -> keras.Model:
    """Raw history (series units) → difference, scale → `network` → unscale, undifference → forecasts."""
    import keras

    from tasks.layers import SeasonalDifference, SeasonalUndifference

    length = transform["history_length"]
    history = keras.Input(shape=(length,), name=HISTORY, dtype="float32")
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


def error_metrics(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in the series' units, MAPE in percent."""
    from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, root_mean_squared_error

    return {
        "rmse": float(root_mean_squared_error(actual, forecast)),
        "mae": float(mean_absolute_error(actual, forecast)),
        "mape": float(100 * mean_absolute_percentage_error(actual, forecast)),
    }


def seasonal_naive(series: np.ndarray, origin: int, horizon: int, season: int) -> np.ndarray:
    """The last season before `origin` repeated: `ŷ[origin + k] = y[origin + k - season·(k // season + 1)]`."""
    if origin < season:
        raise ValueError(f"Seasonal naive needs {season} values before the forecast origin; there are {origin}.")
    k = np.arange(horizon)
    return np.asarray(series, "float64")[origin + k - season * (k // season + 1)]


def save_forecast_plot(times, series, start: int, forecast, naive, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(times[: start + 1], series[: start + 1], color="0.45", label="history (train + eval)")
    ax.plot(times[start:], series[start:], color="black", marker=".", label="actual (test)")
    ax.plot(times[start:], forecast, color="tab:blue", marker="o", markersize=3, label="forecast")
    ax.plot(times[start:], naive, color="tab:orange", linestyle="--", label="seasonal naive")
    ax.axvline(times[start], color="0.7", linewidth=1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class Forecasting(Task):
    name = "forecasting"
    head = "forecasting"
    primary_metric = "rmse"
    error_metrics = frozenset({"rmse", "mae", "mape"})

    @property
    def lag(self) -> int | None:
        return self.options.seasonality if self.options.seasonal_difference else None

    @property
    def history_length(self) -> int:
        """Raw steps a forecast reads: the window, plus one season to difference it."""
        return self.options.window + (self.lag or 0)

    # ---- ingest ---------------------------------------------------------

    def series(self, raw: RawData) -> pd.DataFrame:
        """The source as a sorted, regular `(time, value, history)` frame, or an error naming what is wrong."""
        time, value = column_name(self.options.time_column), raw.label
        frame = raw.frame
        if time not in frame.columns:
            raise SourceError(
                f"{raw.origin}: time column {time!r} (task.time_column) not found; columns are: "
                f"{', '.join(frame.columns)}."
            )
        if time == value:
            raise SourceError(f"{raw.origin}: task.time_column and data.label both name column {time!r}.")
        if HISTORY in (time, value):
            raise SourceError(f"{raw.origin}: column name {HISTORY!r} is reserved for the input window.")
        times = pd.to_datetime(frame[time], errors="coerce")
        values = pd.to_numeric(frame[value], errors="coerce")
        for name, parsed, what in [(time, times, "timestamps"), (value, values, "numbers")]:
            bad = np.flatnonzero(parsed.isna().to_numpy())
            if bad.size:
                shown = {int(i) + 1: frame[name].iloc[i] for i in bad[:10]}
                raise SourceError(
                    f"{raw.origin}: column {name!r} has {bad.size} value(s) that are missing or not {what}, "
                    f"at row(s) counted from 1 after the header: {shown}."
                )
        series = pd.DataFrame({time: times.to_numpy(), value: values.to_numpy("float64")})
        series = series.sort_values(time, kind="stable").reset_index(drop=True)
        regular_frequency(series[time], raw.origin, time)
        series[HISTORY] = list(history_matrix(series[value].to_numpy(), self.history_length))
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
        options = self.options
        n_train = len(series) - options.test_periods - options.eval_periods
        needed = max(self.history_length, options.seasonality) + options.horizon
        if n_train < needed:
            raise SourceError(
                f"{origin}: {len(series)} periods leave {n_train} for training after "
                f"test_periods={options.test_periods} and eval_periods={options.eval_periods}; "
                f"one training forecast needs {needed} (history of {self.history_length}, horizon {options.horizon})."
            )
        n_eval = n_train + options.eval_periods
        return {"train": series.iloc[:n_train], "eval": series.iloc[n_train:n_eval], "test": series.iloc[n_eval:]}

    def schema(self, train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
        time = column_name(self.options.time_column)
        return {
            "time": {"name": time, "frequency": pd.infer_freq(pd.DatetimeIndex(train[time])),
                     "train_start": str(train[time].iloc[0]), "train_end": str(train[time].iloc[-1])},
            "label": {"name": raw.label, "kind": "numeric"},
            "history": {"name": HISTORY, "length": self.history_length},
        }

    def to_arrow(self, frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        time, value, length = schema["time"]["name"], schema["label"]["name"], schema["history"]["length"]
        history = np.stack(frame[HISTORY].to_numpy()).reshape(len(frame), length)
        return pa.Table.from_arrays(
            [
                pa.array(frame[time].to_numpy("datetime64[ns]"), pa.timestamp("ns")),
                pa.array(frame[value].to_numpy("float64"), pa.float64()),
                pa.FixedSizeListArray.from_arrays(pa.array(history.ravel(), pa.float64()), length),
            ],
            names=[time, value, HISTORY],
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
            "history_length": schema["history"]["length"],
            "mean": acc["mean"],
            "variance": acc["m2"] / acc["count"],
            "num_train_rows": acc["rows"],
        }

    def transform_batch(self, batch, transform, split):
        return transform_batch(batch, transform, split)

    def output_schema(self, schema) -> pa.Schema:
        return output_schema(schema["time"]["name"], schema["label"]["name"], self.options.window)

    # ---- train ----------------------------------------------------------

    def specs(self, transform):
        return InputSpec((transform["window"], 1)), OutputSpec("forecasting", transform["horizon"])

    def arrays(self, columns, transform):
        return windows(columns, transform)

    def compile_args(self, transform):
        return {"loss": "mse", "metrics": ["mae"]}

    example_rows = None

    def serving_example(self, train: pd.DataFrame, transform: dict[str, Any]) -> pd.DataFrame:
        """The raw history before the last three train rows that have a complete one."""
        complete = train[[not np.isnan(np.asarray(h, "float64")).any() for h in train[HISTORY]]]
        return complete[[HISTORY]].tail(3).reset_index(drop=True)

    def serving_model(self, network, transform):
        return build_serving_model(network, transform)

    def raw_inputs(self, frame, transform):
        return raw_inputs(frame, transform)

    def outputs_frame(self, outputs, transform, index=None) -> pd.DataFrame:
        outputs = np.asarray(outputs, "float64")
        return pd.DataFrame({f"forecast_{k + 1}": outputs[:, k] for k in range(outputs.shape[1])}, index=index)

    # ---- evaluate -------------------------------------------------------

    def evaluate(self, predictor, test: pd.DataFrame, ingest_dir: Path, output: Path, config) -> Evaluation:
        """Forecasts the test period from the window before it, `horizon` steps per origin."""
        from components.artifact_io import read_frame

        transform = predictor.transform
        time, value, horizon = transform["time"], transform["value"], transform["horizon"]
        season = transform["seasonality"]
        past = [read_frame(ingest_dir / split) for split in ("train", "eval")]
        series = pd.concat([*past, test]).sort_values(time, kind="stable").reset_index(drop=True)
        start = len(series) - len(test)
        test = series.iloc[start:]
        starts = list(range(0, len(test), horizon))  # one origin per horizon, so every test step is forecast once
        forecast = predictor.outputs(test.iloc[starts]).reshape(-1)[: len(test)]

        values = series[value].to_numpy("float64")
        actual = values[start:]
        naive = np.concatenate([seasonal_naive(values, start + s, horizon, season) for s in starts])[: len(test)]
        persistence = np.concatenate([np.full(horizon, values[start + s - 1]) for s in starts])[: len(test)]
        train_values = past[0].sort_values(time)[value].to_numpy("float64")
        drift = naive + (train_values[season:] - train_values[:-season]).mean()

        headline = error_metrics(actual, forecast)
        baseline = error_metrics(actual, naive)
        times = series[time]
        plot = save_forecast_plot(
            times.to_numpy(), values, start, forecast, naive, output / "forecast.png",
            f"{config.model.name} on {config.name}: test RMSE {headline['rmse']:.1f} "
            f"(seasonal naive {baseline['rmse']:.1f})",
        )
        table = pd.DataFrame({
            "time": times.iloc[start:].astype(str).to_numpy(), "actual": actual, "forecast": forecast,
            "seasonal_naive": naive, "persistence": persistence,
        })
        return Evaluation(
            headline=headline,
            baseline=baseline,
            details={
                "baseline_name": f"seasonal naive (season {season})",
                "persistence": error_metrics(actual, persistence),
                "seasonal_naive_with_drift": error_metrics(actual, drift),
                "forecast_origins": [str(times.iloc[start + s]) for s in starts],
                "forecast": table.to_dict(orient="records"),
            },
            plots=[plot],
        )


TASK = Forecasting
