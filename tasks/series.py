"""Time-series classification: one whole series per row, one class label.

Ingest stores each series as a Parquet list column of its values flattened
step by step (`t0c0, t0c1, …, t1c0, …`); the channel count is in the
schema. Preprocessing follows UCR practice: every series is z-normalised on
its own, per channel, over its observed values, so it needs no train
statistics. What the Beam analyzer computes in a full pass over the train
split is the longest series (the length every series is padded or truncated
to, unless `max_length` is set) and the label vocabulary.

After normalisation, padding and missing values (NaN, `?` in `.ts` files)
are both 0, the series' own mean. The `<series>_mask` column (and, with
`mask_channel`, one extra input channel per channel) is 1 where a step was
observed and 0 where it is padding or missing. `padding: pre` pads and
truncates at the start, so the last step is each series' own last value,
which is the step a causal model (TCN, recurrent nets) summarises; `post`
pads and truncates at the end.

The serving model takes the raw series batch-padded to its longest row
(`series`, `(batch, steps, channels)`) and each row's true length
(`length`), and redoes both steps as Keras layers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data.sources import RawData, SourceError
from keras_models.specs import InputSpec, OutputSpec
from tasks.analyzers import Analyzer, count_values
from tasks.classification import ClassificationTask, encode_labels, label_array, label_schema, label_spec

if TYPE_CHECKING:
    import keras

EPSILON = 1e-8  # a series whose standard deviation is below this is only centred, not scaled


def as_steps(value, channels: int | None, where: str) -> np.ndarray:
    """One row's series as a `(steps, channels)` float32 array.

    Takes `(steps,)`, `(steps, channels)`, or the flattened values Parquet
    stores (`steps × channels` long), with `where` naming the row in errors.
    """
    try:
        array = np.asarray(value, dtype="float32")
    except (TypeError, ValueError):
        raise ValueError(f"{where}: the series is not an array of numbers: {str(value)[:60]!r}.") from None
    if array.ndim == 2:
        if channels is not None and array.shape[1] != channels:
            raise ValueError(f"{where}: series has {array.shape[1]} channels, expected {channels}.")
        return array
    if array.ndim != 1:
        raise ValueError(f"{where}: a series must be 1-D or (steps, channels), got shape {array.shape}.")
    channels = channels or 1
    if array.size % channels:
        raise ValueError(f"{where}: {array.size} values do not split into steps of {channels} channels.")
    return array.reshape(-1, channels)


def znormalize(series: np.ndarray) -> np.ndarray:
    """`(steps, channels)` → each channel minus its mean, over its standard deviation, NaN kept.

    Statistics are over the observed (non-NaN) values; the population
    standard deviation (ddof 0), as tslearn and sktime scale UCR series.
    """
    series = series.astype("float64")
    observed = ~np.isnan(series)
    count = np.maximum(observed.sum(0), 1)
    mean = np.where(observed, series, 0.0).sum(0) / count
    std = np.sqrt(np.where(observed, (series - mean) ** 2, 0.0).sum(0) / count)
    return (series - mean) / np.where(std > EPSILON, std, 1.0)


def prepare(series: list[np.ndarray], spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Series of `(steps, channels)` → values and observed-mask, both `(rows, length, channels)`.

    The reference the Beam transform runs and the serving layers reproduce.
    """
    length, channels = spec["length"], spec["channels"]
    out = np.full((len(series), length, channels), np.nan)
    for i, values in enumerate(series):
        if spec["znormalize"]:
            values = znormalize(values)
        kept = values[-length:] if spec["padding"] == "pre" else values[:length]
        start = length - len(kept) if spec["padding"] == "pre" else 0
        out[i, start:start + len(kept)] = kept
    observed = ~np.isnan(out)
    return np.where(observed, out, 0.0).astype("float32"), observed.astype("int8")


def list_array(rows: list[np.ndarray], dtype: pa.DataType) -> pa.Array:
    """1-D arrays → an Arrow list array of them, without a Python loop over values."""
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype("int32")
    values = np.concatenate(rows) if rows else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, dtype))


def list_column_arrays(column, channels: int, split: str) -> list[np.ndarray]:
    """A Parquet list column → one `(steps, channels)` array per row."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count:
        raise ValueError(f"Split {split!r}: {column.null_count} row(s) have no series.")
    if not len(column):
        return []
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return [v.reshape(-1, channels) for v in np.split(values, np.cumsum(lengths)[:-1])]


class AnalyzeFn(Analyzer):
    """Longest and shortest series (in steps), row count and label counts of the train split."""

    def __init__(self, series: str, channels: int, label: str):
        self.series, self.channels, self.label = series, channels, label

    def create_accumulator(self):
        return {"max_length": 0, "min_length": None, "rows": 0, "labels": Counter()}

    def add_input(self, acc, batch: pa.Table):
        steps = pc.divide(pc.list_value_length(batch.column(self.series)), self.channels)
        if len(steps):
            acc = self.merge(acc, {"max_length": pc.max(steps).as_py(), "min_length": pc.min(steps).as_py(),
                                    "rows": batch.num_rows, "labels": count_values(batch.column(self.label))})
        return acc

    def merge(self, acc, other):
        acc["max_length"] = max(acc["max_length"], other["max_length"])
        if other["min_length"] is not None:
            acc["min_length"] = min(x for x in (acc["min_length"], other["min_length"]) if x is not None)
        acc["rows"] += other["rows"]
        acc["labels"].update(other["labels"])
        return acc


def build_serving_model(network: keras.Model, transform: dict[str, Any]) -> keras.Model:
    """Raw series and their lengths → per-series z-normalisation → padding → `network`."""
    import keras

    from tasks.layers import PadSeries, SeriesZNormalization

    spec = transform["series"]
    series = keras.Input(shape=(None, spec["channels"]), name="series", dtype="float32")
    length = keras.Input(shape=(), name="length", dtype="int32")
    x = SeriesZNormalization(EPSILON, name="znormalize")([series, length]) if spec["znormalize"] else series
    x = PadSeries(spec["length"], spec["padding"], spec["mask_channel"], name="pad")([x, length])
    return keras.Model({"series": series, "length": length}, network(x), name=f"serving_{network.name}")


def raw_inputs(frame: pd.DataFrame, transform: dict[str, Any]) -> dict[str, np.ndarray]:
    """Rows of raw series → `series` zero-padded to the batch's longest row, and each row's `length`."""
    name, channels = transform["series"]["name"], transform["series"]["channels"]
    if name not in frame.columns:
        raise ValueError(f"Input rows lack the series column {name!r}; columns are {list(frame.columns)}.")
    arrays = [as_steps(v, channels, f"Row {row!r}, column {name!r}") for row, v in zip(frame.index, frame[name])]
    length = np.array([len(a) for a in arrays], dtype="int32")
    series = np.zeros((len(arrays), max(int(length.max(initial=0)), 1), channels), dtype="float32")
    for i, values in enumerate(arrays):
        series[i, :len(values)] = values
    return {"series": series, "length": length}


def series_matrix(columns: dict[str, np.ndarray], transform: dict[str, Any]) -> np.ndarray:
    """Beam-transformed columns → the `(rows, length, channels)` input the network trains on."""
    spec = transform["series"]
    shape = (-1, spec["length"], spec["channels"])
    x = np.asarray(columns[spec["name"]], "float32").reshape(shape)
    if spec["mask_channel"]:
        x = np.concatenate([x, np.asarray(columns[spec["mask"]], "float32").reshape(shape)], axis=-1)
    return x


class SeriesClassification(ClassificationTask):
    name = "series_classification"

    # ---- ingest ---------------------------------------------------------

    def schema(self, train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
        name = self.options.series_column
        if name not in train.columns:
            raise SourceError(
                f"{raw.origin}: series column {name!r} not found (task.series_column); "
                f"columns are: {', '.join(train.columns)}."
            )
        first = as_steps(train[name].iloc[0], None, f"{raw.origin}: row {train.index[0]!r}, column {name!r}")
        steps = [len(as_steps(v, first.shape[1], f"{raw.origin}: row {row!r}, column {name!r}"))
                 for row, v in zip(train.index, train[name])]
        series = {"name": name, "channels": int(first.shape[1]),
                  "min_length": int(min(steps)), "max_length": int(max(steps))}
        return {"series": series, "label": label_schema(train, raw)}

    def to_arrow(self, frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        name, channels = schema["series"]["name"], schema["series"]["channels"]
        values = [as_steps(v, channels, f"Row {row!r}, column {name!r}").ravel()
                  for row, v in zip(frame.index, frame[name])]
        label = schema["label"]["name"]
        fields = [pa.field(name, pa.list_(pa.float32()), metadata={"channels": str(channels)}),
                  pa.field(label, pa.string())]
        return pa.Table.from_arrays(
            [list_array(values, pa.float32()), label_array(frame, schema["label"])],
            schema=pa.schema(fields),
        )

    # ---- preprocess -----------------------------------------------------

    def analyzer(self, schema, settings):
        return AnalyzeFn(schema["series"]["name"], schema["series"]["channels"], schema["label"]["name"])

    def finalize(self, acc, schema, settings) -> dict[str, Any]:
        if not acc["rows"]:
            raise ValueError("The train split has no series to analyze.")
        if not (self.options.max_length or acc["max_length"]):
            raise ValueError("Every series of the train split is empty; nothing to pad the others to.")
        name = schema["series"]["name"]
        series = {
            "name": name,
            "mask": f"{name}_mask",
            "channels": schema["series"]["channels"],
            "length": int(self.options.max_length or acc["max_length"]),
            "train_max_length": int(acc["max_length"]),
            "train_min_length": int(acc["min_length"]),
            "znormalize": self.options.znormalize,
            "padding": self.options.padding,
            "padding_value": 0.0,
            "mask_channel": self.options.mask_channel,
        }
        return {"series": series, "label": label_spec(acc["labels"], schema["label"]),
                "num_train_rows": int(acc["rows"])}

    def transform_batch(self, batch, transform, split):
        spec = transform["series"]
        values, observed = prepare(list_column_arrays(batch.column(spec["name"]), spec["channels"], split), spec)
        width = spec["length"] * spec["channels"]
        return pa.Table.from_arrays(
            [list_array(list(values.reshape(len(values), width)), pa.float32()),
             list_array(list(observed.reshape(len(values), width)), pa.int8()),
             encode_labels(batch, transform["label"], split)],
            schema=self.output_schema_for(spec["name"], transform["label"]["name"]),
        )

    @staticmethod
    def output_schema_for(series: str, label: str) -> pa.Schema:
        return pa.schema([pa.field(series, pa.list_(pa.float32())), pa.field(f"{series}_mask", pa.list_(pa.int8())),
                          pa.field(label, pa.int64())])

    def output_schema(self, schema) -> pa.Schema:
        return self.output_schema_for(schema["series"]["name"], schema["label"]["name"])

    # ---- train ----------------------------------------------------------

    def specs(self, transform):
        spec = transform["series"]
        channels = spec["channels"] * (2 if spec["mask_channel"] else 1)
        return InputSpec((spec["length"], channels)), OutputSpec("classification", len(transform["label"]["classes"]))

    def arrays(self, columns, transform):
        return series_matrix(columns, transform), np.asarray(columns[transform["label"]["name"]], "int32")

    def serving_example(self, train, transform):
        """A few raw series as float64 `(steps,)` or `(steps, channels)` arrays, as JSON clients send them."""
        spec = transform["series"]
        series = [as_steps(v, spec["channels"], f"Row {row!r}").astype("float64")
                  for row, v in train[spec["name"]].head(5).items()]
        return pd.DataFrame({spec["name"]: [s[:, 0] if spec["channels"] == 1 else s for s in series]})

    def serving_model(self, network, transform):
        return build_serving_model(network, transform)

    def raw_inputs(self, frame, transform):
        return raw_inputs(frame, transform)

    # ---- evaluate -------------------------------------------------------

    def extra_plots(self, predictor, test, y_true, y_pred, output: Path, config) -> list[Path]:
        """Up to eight misclassified test series, each titled with its true and predicted class."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        wrong = np.flatnonzero(y_true != y_pred)[:8]
        if not wrong.size:
            return []
        spec, classes = predictor.transform["series"], predictor.transform["label"]["classes"]
        columns = min(4, wrong.size)
        rows = -(-wrong.size // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(3.5 * columns, 2.5 * rows), squeeze=False)
        for ax, i in zip(axes.flat, wrong):
            ax.plot(as_steps(test[spec["name"]].iloc[i], spec["channels"], f"Test row {i}"), linewidth=1)
            ax.set_title(f"true {classes[y_true[i]]}, predicted {classes[y_pred[i]]}", fontsize=9)
        for ax in axes.flat[wrong.size:]:
            ax.axis("off")
        fig.suptitle(f"Misclassified test series: {config.model.name} on {config.name}")
        fig.tight_layout()
        path = output / "misclassified_series.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]


TASK = SeriesClassification
