"""What a task type decides at each stage of the pipeline.

The components are the same for every task: ingest writes Parquet splits,
preprocess runs one Beam pipeline (analyze the train split in a full pass,
then transform every split with those statistics), train fits a registry
model, evaluate scores the exported model on the raw test split. A `Task`
fills in what differs: how rows are split, what the analyzers compute, how a
transformed split becomes model inputs, which head, loss and metrics the
model gets, what the serving model wraps around it, and which baseline and
plots judge it. A new dataset of a known task type is then a recipe only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

from data.sources import RawData, SourceError, read_source

SPLITS = ("train", "eval", "test")


class TensorFlowRequiredError(RuntimeError):
    """A task needs Keras's TensorFlow backend; the message says what needs it and how to go on."""


def require_tensorflow_backend(task: str, needs: str, alternative: str = "") -> None:
    """Raises `TensorFlowRequiredError` unless Keras runs on TensorFlow.

    Keras's string preprocessing layers (`StringLookup`, `TextVectorization`)
    run on `tf.lookup` and `tf.strings` whatever the backend, and only the
    TensorFlow backend takes string tensors as model inputs (JAX arrays have
    no string dtype): a serving model that reads raw strings needs both.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    try:
        import tensorflow  # noqa: F401
    except ImportError as e:
        problem = f"TensorFlow cannot be imported here ({e})"
        fix = "install tensorflow-cpu (or tensorflow) and set KERAS_BACKEND=tensorflow"
    else:
        problem = f"Keras runs on {backend!r}"
        fix = "set KERAS_BACKEND=tensorflow"
    raise TensorFlowRequiredError(
        f"Task {task!r}: {needs}, string preprocessing that needs TensorFlow (Keras runs it on tf.lookup and "
        f"tf.strings, and only its TensorFlow backend takes string inputs), but {problem}. "
        f"To train it, {fix}{', or ' + alternative if alternative else ''}."
    )


def pretrain_by_epoch(model, epochs: int, batch_size: int, epoch_data) -> None:
    """Fits `model` one epoch at a time on `epoch_data(epoch)` → `(x, y)`, drawn afresh each epoch.

    Self-supervised objectives mask their inputs anew every epoch (masked
    tokens, hidden features). Each epoch's loss goes to the active MLflow run
    as `pretrain_loss`.
    """
    import mlflow

    for epoch in range(epochs):
        x, y = epoch_data(epoch)
        history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        if mlflow.active_run():
            mlflow.log_metric("pretrain_loss", float(history.history["loss"][-1]), step=epoch)


@dataclass
class Evaluation:
    """Test metrics of the model and of its baselines, and the plots made on the way.

    `headline` holds the scalar metrics logged to MLflow and compared with
    thresholds; `baseline` the metrics of the task's simplest baseline (the
    majority class, the train mean); `references` those of the other systems
    computed beside it, by name (a translation memory, a ridge regression).
    Which of them the blessing must beat is the task's `blessing_baselines`;
    the others inform and do not block. `details` holds anything else worth
    keeping in `metrics.json`.
    """

    headline: dict[str, float]
    baseline: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    references: dict[str, dict[str, float]] = field(default_factory=dict)


class Task:
    """Defaults shared by the task types; each subclass overrides what its data needs."""

    name: ClassVar[str]
    head: ClassVar[str]  # the `OutputSpec.head` of the model
    primary_metric: ClassVar[str]  # compared with the baselines for the blessing
    error_metrics: ClassVar[frozenset[str]] = frozenset()  # lower is better
    baseline_name: ClassVar[str] = "baseline"  # what `Evaluation.baseline` is, as reports name it
    # The blessing must beat the strongest of these on the primary metric: "baseline" is
    # `Evaluation.baseline`, any other name a key of `Evaluation.references`.
    blessing_baselines: ClassVar[tuple[str, ...]] = ("baseline",)

    def __init__(self, options):
        self.options = options

    # ---- ingest ---------------------------------------------------------

    def read(self, data) -> RawData:
        return read_source(data.source, data.label, data.tfds_data_dir, csv=data.csv.model_dump())

    def read_splits(self, data, seed: int) -> tuple[RawData, dict[str, pd.DataFrame]]:
        """Reads the source and splits it; a dataset's own test set, when given, stays the test split."""
        raw = self.read(data)
        if data.test_source is None:
            return raw, self.split(raw, data.split.train, data.split.eval, data.split.test, seed)
        test = read_source(data.test_source, raw.label, data.tfds_data_dir, csv=data.csv.model_dump())
        missing = sorted(set(raw.frame.columns) - set(test.frame.columns))
        if missing:
            raise SourceError(f"{data.test_source}: lacks column(s) {missing} that {data.source} has.")
        fractions = data.split.train + data.split.eval
        splits = self.split(raw, data.split.train / fractions, data.split.eval / fractions, 0.0, seed)
        splits["test"] = test.frame[raw.frame.columns]
        return replace(raw, rejected=pd.concat([raw.rejected, test.rejected], ignore_index=True)), splits

    def split(self, raw: RawData, train: float, eval: float, test: float, seed: int) -> dict[str, pd.DataFrame]:
        """Random split, stratified on the label; the same seed always gives the same rows."""
        from sklearn.model_selection import train_test_split

        frame, label = raw.frame, raw.label
        counts = frame[label].value_counts()
        rare = counts[counts < 3]
        if not rare.empty:
            raise SourceError(
                f"{raw.origin}: label {label!r} values {rare.index.tolist()} have fewer than 3 rows; "
                "each class needs a row in every split."
            )
        first, rest = train_test_split(frame, train_size=train, stratify=frame[label], random_state=seed)
        if not test:
            return {"train": first, "eval": rest}
        evaluation, held_out = train_test_split(
            rest, test_size=test / (eval + test), stratify=rest[label], random_state=seed
        )
        return {"train": first, "eval": evaluation, "test": held_out}

    def schema(self, train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
        raise NotImplementedError

    def to_arrow(self, frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        raise NotImplementedError

    # ---- preprocess (Beam) ----------------------------------------------

    def analyzer(self, schema: dict[str, Any], settings):
        """A `tasks.analyzers.Analyzer` (Beam's `CombineFn` protocol) over Arrow record batches of the train split."""
        raise NotImplementedError

    def finalize(self, accumulator, schema: dict[str, Any], settings) -> dict[str, Any]:
        """The analyzer's result → the JSON transform spec every later stage reads."""
        raise NotImplementedError

    def transform_batch(self, batch: pa.Table, transform: dict[str, Any], split: str) -> pa.Table:
        raise NotImplementedError

    def output_schema(self, schema: dict[str, Any]) -> pa.Schema:
        """The Arrow schema of transformed batches, known from the ingest schema before Beam runs."""
        raise NotImplementedError

    # ---- train ----------------------------------------------------------

    def specs(self, transform: dict[str, Any]):
        """The `(InputSpec, OutputSpec)` the registry builds the model for."""
        raise NotImplementedError

    def arrays(self, columns: dict[str, np.ndarray], transform: dict[str, Any]) -> tuple[Any, Any]:
        """A transformed split's columns → `(x, y)` for `model.fit`."""
        raise NotImplementedError

    def compile_args(self, transform: dict[str, Any]) -> dict[str, Any]:
        return {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}

    def build_model(self, model_name: str, transform: dict[str, Any], hparams: dict[str, Any], learning_rate: float):
        """The registry model for this task's specs, compiled with its loss and metrics.

        The trainer and every tuning trial build through here, so both fit the same model.
        """
        import keras

        import keras_models

        input_spec, output_spec = self.specs(transform)
        model = keras_models.build_model(model_name, input_spec, output_spec, **hparams)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), **self.compile_args(transform))
        return model

    def pretrains(self, config) -> bool:
        """Whether `pretrain` does anything for this recipe (then the trainer hands it the train arrays)."""
        import keras_models

        return keras_models.get_entry(config.model.name).initializer is not None

    def pretrain(self, model, x_train, transform: dict[str, Any], config) -> None:
        """Weights from the train features before `fit`: the model's registered initializer, if any.

        Task types add self-supervised pretraining (masked-LM for text, TabNet's encoder).
        """
        import keras_models

        initializer = keras_models.get_entry(config.model.name).initializer
        if initializer is not None:
            initializer(model, x_train, seed=config.seed)

    # How many leading train rows `serving_example` reads (None: the whole split).
    example_rows: ClassVar[int | None] = 64

    def serving_example(self, train: pd.DataFrame, transform: dict[str, Any]) -> pd.DataFrame:
        """A few raw inputs for the MLflow signature and input example."""
        return train.drop(columns=[transform["label"]["name"]]).head(5)

    def serving_model(self, network, transform: dict[str, Any]):
        """Raw inputs → the preprocessing Beam applied → `network`."""
        raise NotImplementedError

    def check_serving_model(self, transform: dict[str, Any]) -> None:
        """Fails when the serving model cannot run here; the trainer calls it before fitting.

        A task whose serving model preprocesses raw strings calls `require_tensorflow_backend`,
        so a JAX run fails in seconds rather than after training, when the model is exported.
        """

    def raw_inputs(self, frame: pd.DataFrame, transform: dict[str, Any]) -> Any:
        """Rows as ingest stored them → the serving model's inputs."""
        raise NotImplementedError

    def predict_outputs(self, model, frame: pd.DataFrame, transform: dict[str, Any]) -> np.ndarray:
        """The serving model's outputs for raw rows; tasks that decode step by step override it."""
        return np.asarray(model.predict(self.raw_inputs(frame, transform), verbose=0))

    def outputs_frame(self, outputs: np.ndarray, transform: dict[str, Any], index=None) -> pd.DataFrame:
        """The serving model's outputs as the DataFrame the pyfunc model returns."""
        raise NotImplementedError

    # ---- evaluate -------------------------------------------------------

    def evaluate(self, predictor, test: pd.DataFrame, ingest_dir: Path, output: Path, config) -> Evaluation:
        raise NotImplementedError
