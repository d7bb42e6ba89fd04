"""Tabular tasks: numeric features z-scored, categorical ones looked up in a vocabulary.

The Beam analyzer combines per-batch partial statistics (count/mean/M2 for
numeric columns, value counts for categorical ones and a class label) into
one accumulator, as TensorFlow Transform's analyzers do. Missing numbers
become the train mean; categories outside the train vocabulary share index
0. The serving model rebuilds the same steps as Keras layers from
`transform.json`. `TabularTask` holds this feature side; classification
(here) and regression (`tasks/regression.py`) add their label's.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data.sources import RawData, column_name
from keras_models.specs import InputSpec, OutputSpec
from tasks.base import Task, pretrain_by_epoch, require_tensorflow_backend
from tasks.analyzers import Analyzer, count_values, empty_moments, merge_moments, moments_of, variance, vocabulary
from tasks.classification import ClassificationTask, encode_labels, label_array, label_schema, label_spec

if TYPE_CHECKING:
    import keras


def _is_categorical(series: pd.Series, forced: tuple[str, ...]) -> bool:
    return series.name in forced or not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


class AnalyzeFn(Analyzer):
    """Merges per-batch statistics; numeric moments use Chan et al.'s parallel update.

    A class label, when given, is counted like a categorical column; a numeric
    target is one of the `numeric` columns.
    """

    def __init__(self, numeric: list[str], categorical: list[str], label: str | None = None):
        self.numeric, self.categorical, self.label = numeric, categorical, label

    def create_accumulator(self):
        n = len(self.numeric)
        counted = [*self.categorical, *([self.label] if self.label is not None else [])]
        return {**empty_moments((n,)), "counts": {name: Counter() for name in counted}}

    def add_input(self, acc, batch: pa.Table):
        if self.numeric:
            columns = [batch.column(name).to_numpy(zero_copy_only=False).astype("float64") for name in self.numeric]
            parts = [moments_of(values[~np.isnan(values)]) for values in columns]
            acc = merge_moments(acc, {key: np.array([part[key] for part in parts]) for key in ("count", "mean", "m2")})
        for name in acc["counts"]:
            acc["counts"][name].update(count_values(batch.column(name)))
        return acc

    def merge(self, acc, other):
        acc = merge_moments(acc, other)
        for name, counts in other["counts"].items():
            acc["counts"][name].update(counts)
        return acc


def moments(acc, numeric: list[str]) -> dict[str, dict[str, float]]:
    """Each numeric column's train mean and (population) variance; an error names columns with no values."""
    if numeric and acc["count"].min() == 0:
        empty = [n for n, c in zip(numeric, acc["count"]) if c == 0]
        raise ValueError(f"Numeric column(s) {empty} have no values in the train split.")
    return {name: {"mean": float(m), "variance": float(v)} for name, m, v in zip(numeric, acc["mean"], variance(acc))}


def transform_features(batch: pa.Table, transform: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """z-scores numeric features (missing → mean), indexes categoricals (0 = out of vocabulary)."""
    columns = []
    for name, stats in transform["numeric"].items():
        values = batch.column(name).to_numpy(zero_copy_only=False).astype("float32")
        scale = np.sqrt(stats["variance"]) or 1.0
        columns.append(np.nan_to_num((values - stats["mean"]) / scale, nan=0.0).astype("float32"))
    for name, stats in transform["categorical"].items():
        index = pc.index_in(batch.column(name), value_set=pa.array(stats["vocabulary"], pa.string()))
        columns.append(pc.fill_null(pc.add(index, 1), 0).cast(pa.int64()))
    return columns, [*transform["numeric"], *transform["categorical"]]


def transform_batch(batch: pa.Table, transform: dict[str, Any], split: str) -> pa.Table:
    """The features as `transform_features` makes them, and the label as an index into the train classes."""
    columns, names = transform_features(batch, transform)
    columns.append(encode_labels(batch, transform["label"], split))
    return pa.Table.from_arrays(columns, names=[*names, transform["label"]["name"]])


def feature_dim(transform: dict[str, Any]) -> int:
    """Width of the feature vector: one per numeric feature, one-hot (plus OOV) per categorical."""
    return len(transform["numeric"]) + sum(len(c["vocabulary"]) + 1 for c in transform["categorical"].values())


def feature_names(transform: dict[str, Any]) -> list[str]:
    """One name per column of `feature_matrix`: `island=Biscoe`, with `island=<oov>` for unseen values."""
    names = list(transform["numeric"])
    for name, spec in transform["categorical"].items():
        names += [f"{name}=<oov>", *(f"{name}={value}" for value in spec["vocabulary"])]
    return names


def feature_matrix(columns: dict[str, np.ndarray], transform: dict[str, Any]) -> np.ndarray:
    """Assembles Beam-transformed columns into the vector the network was trained on."""
    parts = [np.asarray(columns[name], "float32")[:, None] for name in transform["numeric"]]
    for name, spec in transform["categorical"].items():
        parts.append(np.eye(len(spec["vocabulary"]) + 1, dtype="float32")[np.asarray(columns[name])])
    return np.concatenate(parts, axis=1)


def raw_feature_matrix(frame: pd.DataFrame, transform: dict[str, Any]) -> np.ndarray:
    """Rows as ingest stored them → the feature vectors the network reads, through the Beam transform's code."""
    features = [{"name": n, "kind": "numeric"} for n in transform["numeric"]]
    features += [{"name": n, "kind": "categorical"} for n in transform["categorical"]]
    table = TabularTask.features_to_arrow(frame, {"features": features})
    columns, names = transform_features(table, transform)
    return feature_matrix({name: np.asarray(column) for name, column in zip(names, columns)}, transform)


def build_serving_model(network: keras.Model, transform: dict[str, Any], output_layer=None) -> keras.Model:
    """Raw feature inputs → the same preprocessing as Beam → `network` (→ `output_layer`, when given)."""
    import keras

    from tasks.layers import FillMissing

    inputs, parts = {}, []
    for name, stats in transform["numeric"].items():
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
        x = FillMissing(stats["mean"], name=f"fill_{name}")(inputs[name])
        parts.append(keras.layers.Normalization(
            mean=stats["mean"], variance=stats["variance"] or 1.0, name=f"normalize_{name}")(x))
    for name, stats in transform["categorical"].items():
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="string")
        parts.append(keras.layers.StringLookup(
            vocabulary=stats["vocabulary"], num_oov_indices=1, output_mode="one_hot",
            name=f"lookup_{name}")(inputs[name]))
    features = keras.layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    outputs = network(features)
    if output_layer is not None:
        outputs = output_layer(outputs)
    return keras.Model(inputs, outputs, name=f"serving_{network.name}")


def raw_inputs(frame: pd.DataFrame, transform: dict[str, Any]) -> dict[str, Any]:
    """A DataFrame of raw rows → the serving model's input dict.

    String columns become string tensors: Keras's `StringLookup` takes them
    on the TensorFlow backend, which serves models with categorical features.
    """
    missing = [n for n in [*transform["numeric"], *transform["categorical"]] if n not in frame.columns]
    if missing:
        raise ValueError(f"Input rows lack feature column(s) {missing}.")
    inputs = {
        name: pd.to_numeric(frame[name], errors="raise").to_numpy("float32")[:, None]
        for name in transform["numeric"]
    }
    for name in transform["categorical"]:
        import tensorflow as tf

        inputs[name] = tf.constant(frame[name].astype("string").fillna("").to_numpy(dtype=object)[:, None])
    return inputs


class TabularTask(Task):
    """The feature side of tabular task types: schema, Arrow columns, analyzer statistics, serving layers.

    Subclasses add the label: its schema entry, its Arrow column, its
    statistics and its transformed column.
    """

    @property
    def ignored(self) -> set[str]:
        """The columns `task.ignore` names, as ingest normalises them."""
        return {column_name(name) for name in self.options.ignore}

    def feature_schema(self, train: pd.DataFrame, label: str) -> list[dict[str, Any]]:
        features = []
        for name in train.columns:
            if name == label or name in self.ignored:
                continue
            column = train[name]
            if _is_categorical(column, self.options.categorical):
                values = column.dropna().astype(str)
                features.append({"name": name, "kind": "categorical", "dtype": "string",
                                 "vocabulary": sorted(values.unique().tolist())})
            else:
                features.append({"name": name, "kind": "numeric", "dtype": "float32",
                                 "min": float(column.min()), "max": float(column.max())})
        return features

    @staticmethod
    def features_to_arrow(frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        columns, fields = [], []
        for feature in schema["features"]:
            column = frame[feature["name"]]
            if feature["kind"] == "categorical":
                values = pa.array(column.astype("string").to_numpy(na_value=None), pa.string())
            else:
                values = pa.array(column.to_numpy(dtype="float32", na_value=np.nan), pa.float32())
            columns.append(values)
            fields.append(pa.field(feature["name"], values.type))
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))

    @staticmethod
    def _kinds(schema: dict[str, Any]) -> tuple[list[str], list[str], str]:
        numeric = [f["name"] for f in schema["features"] if f["kind"] == "numeric"]
        categorical = [f["name"] for f in schema["features"] if f["kind"] == "categorical"]
        return numeric, categorical, schema["label"]["name"]

    @staticmethod
    def feature_transform(acc, numeric: list[str], categorical: list[str], settings) -> dict[str, Any]:
        """The features' part of `transform.json`: moments of numeric ones, vocabularies of categorical ones."""
        return {
            "numeric": moments(acc, numeric),
            "categorical": {
                name: {"vocabulary": vocabulary(acc["counts"][name], settings.vocabulary_max_size,
                                                settings.vocabulary_min_frequency)}
                for name in categorical
            },
        }

    def feature_fields(self, schema: dict[str, Any]) -> list[pa.Field]:
        numeric, categorical, _ = self._kinds(schema)
        return [pa.field(n, pa.float32()) for n in numeric] + [pa.field(n, pa.int64()) for n in categorical]

    def input_spec(self, transform: dict[str, Any]) -> InputSpec:
        return InputSpec((feature_dim(transform),))

    def serving_model(self, network, transform):
        return build_serving_model(network, transform)

    def check_serving_model(self, transform):
        if transform["categorical"]:
            columns = ", ".join(repr(name) for name in transform["categorical"])
            require_tensorflow_backend(
                self.name, f"its serving model looks up categorical column(s) {columns} with Keras StringLookup",
                "encode those columns as numbers in the source data (numeric features need no TensorFlow)",
            )

    def raw_inputs(self, frame, transform):
        return raw_inputs(frame, transform)

    def serving_example(self, train: pd.DataFrame, transform: dict[str, Any]) -> pd.DataFrame:
        """The feature columns of a few train rows: the served model asks for no ignored column."""
        return train.drop(columns=[transform["label"]["name"], *self.ignored & set(train.columns)]).head(5)

    def feature_mask_plots(self, predictor, test: pd.DataFrame, output: Path, config) -> list[Path]:
        """TabNet's per-step feature masks on the test rows: which features each decision step reads."""
        if config.model.name != "tabnet":
            return []
        from keras_models.architectures.tabnet import tabnet_feature_masks
        from keras_models.plots import save_feature_mask_png

        transform = predictor.transform
        x = raw_feature_matrix(test, transform)
        masks, _ = tabnet_feature_masks(predictor.model.get_layer("tabnet"), x)
        path = output / "tabnet_feature_masks.png"
        save_feature_mask_png(masks, feature_names(transform), path)
        return [path]


class TabularClassification(TabularTask, ClassificationTask):
    name = "tabular_classification"

    def schema(self, train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
        return {"features": self.feature_schema(train, raw.label), "label": label_schema(train, raw)}

    def to_arrow(self, frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        table = self.features_to_arrow(frame, schema)
        return table.append_column(pa.field(schema["label"]["name"], pa.string()), label_array(frame, schema["label"]))

    def analyzer(self, schema, settings):
        return AnalyzeFn(*self._kinds(schema))

    def finalize(self, acc, schema, settings) -> dict[str, Any]:
        numeric, categorical, label = self._kinds(schema)
        return {
            **self.feature_transform(acc, numeric, categorical, settings),
            "label": label_spec(acc["counts"][label], schema["label"]),
            "num_train_rows": int(sum(acc["counts"][label].values())),
        }

    def transform_batch(self, batch, transform, split):
        return transform_batch(batch, transform, split)

    def output_schema(self, schema) -> pa.Schema:
        return pa.schema([*self.feature_fields(schema), pa.field(schema["label"]["name"], pa.int64())])

    def specs(self, transform):
        return self.input_spec(transform), OutputSpec("classification", len(transform["label"]["classes"]))

    def arrays(self, columns, transform):
        return feature_matrix(columns, transform), np.asarray(columns[transform["label"]["name"]], "int32")

    def pretrains(self, config) -> bool:
        return super().pretrains(config) or bool(self.options.pretrain_epochs)

    def pretrain(self, model, x_train, transform, config) -> None:
        """The model's initializer, then TabNet's self-supervised pretraining of its encoder on the train features.

        Each epoch hides a fresh `mask_rate` share of every row's features; the
        loss of each epoch is logged to MLflow as `pretrain_loss`.
        """
        super().pretrain(model, x_train, transform, config)
        options = self.options
        epochs = options.pretrain_epochs
        if not epochs:
            return
        if config.model.name != "tabnet":
            raise ValueError(
                f"task.pretrain_epochs={epochs} pretrains TabNet's encoder; model {config.model.name!r} has none. "
                "Use model.name=tabnet or task.pretrain_epochs=0."
            )
        import keras

        from keras_models.architectures.tabnet import TabNetPretrainer, hide_features, reconstruction_loss

        x_train = np.asarray(x_train, "float32")
        pretrainer = TabNetPretrainer(model.get_layer("tabnet_encoder"), x_train.shape[1], name="tabnet_pretrainer")
        learning_rate = options.pretrain_learning_rate or config.train.learning_rate
        pretrainer.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=reconstruction_loss(x_train.std(0)))
        rng = np.random.default_rng(config.seed)

        def hidden_features(_epoch):
            hidden = hide_features(rng, x_train.shape, options.mask_rate)
            return (x_train, hidden), np.concatenate([x_train, hidden], axis=1)

        pretrain_by_epoch(pretrainer, epochs, config.train.batch_size, hidden_features)

    def extra_plots(self, predictor, test, y_true, y_pred, output, config):
        return self.feature_mask_plots(predictor, test, output, config)


TASK = TabularClassification
