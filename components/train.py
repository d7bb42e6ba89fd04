"""Train: build the model from the registry, fit it on the transformed splits, export it.

Outputs `model.keras` (the network on transformed features), `serving.keras`
(the same network behind the task's preprocessing, rebuilt from
`transform.json`, so it takes raw inputs), `history.json`, and an MLflow
pyfunc model whose signature is the raw input columns. Early stopping picks
the epoch; `BackupAndRestore` lets a killed run resume from its last epoch;
a NaN or infinite loss stops it with an error naming the step. The model
is built, compiled and fit under `train.strategy` (see `components/distribution.py`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.artifact_io import load_transformed, read_json
from data.splits import read_frame
from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="train",
    inputs=("ingest", "preprocess"),
    optional_inputs=("tune",),
    config_sections=("model", "train", "task", "seed"),
    code=("components/train.py", "components/distribution.py", "components/base.py", "components/callbacks.py",
          "components/artifact_io.py", "data/splits.py", "components/input_pipeline.py", "keras_models", "tasks"),
    resumable=True,
    description="Fit the registry model with early stopping and BackupAndRestore; export it with its preprocessing.",
)


def model_settings(config, inputs: dict[str, Path]) -> tuple[dict[str, Any], float]:
    """The hyperparameters and learning rate: the tuner's winner when it ran, else the recipe's."""
    if "tune" in inputs:
        best = read_json(inputs["tune"] / "best_hparams.json")
        return best["hparams"], best["learning_rate"]
    return dict(config.model.hparams), config.train.learning_rate


def learning_rate_schedule(learning_rate: float, settings, steps_per_epoch: int):
    """The rate `fit` steps with: `learning_rate`, or Keras's warm-up and cosine schedule when the recipe asks.

    `CosineDecay` warms up linearly from 0 over `warmup_epochs`, then decays
    to 0 (`alpha=0`) or holds the rate (`alpha=1`) for the remaining epochs.
    """
    import keras

    warmup_steps = round(settings.warmup_epochs * steps_per_epoch)
    if not warmup_steps and settings.decay == "constant":
        return learning_rate
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate,
        decay_steps=max(1, settings.epochs * steps_per_epoch - warmup_steps),
        alpha=1.0 if settings.decay == "constant" else 0.0,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


@dataclass
class TrainingData:
    """What `fit` reads: arrays of the whole split, or row-group streams (`components/input_pipeline.py`)."""

    fit_arguments: dict[str, Any]
    pretrain_x: Any
    streaming: bool
    rows: int


def training_data(preprocess_dir: Path, task, transform: dict[str, Any], config, plan) -> TrainingData:
    """Streams when `train.input` asks for it (or `auto` finds a large split) and one replica trains.

    Several replicas need every batch, the last included, to split evenly
    over them, which the whole-split arrays guarantee (`plan.shard`).
    Pretraining reads the train split as arrays.
    """
    import keras

    from components.input_pipeline import fit_arrays, should_stream, streamed

    settings = config.train
    train_dir = preprocess_dir / "transformed" / "train"
    stream = plan.replicas == 1 and should_stream(settings.input, train_dir, task, transform,
                                                  settings.stream_above_mib)
    if settings.input == "stream" and not stream:
        raise ValueError(
            f"train.input=stream needs one replica; strategy {plan.name!r} has {plan.replicas}. "
            "Use train.input=memory (or auto)."
        )
    if not stream:
        x_train, y_train, _ = load_transformed(preprocess_dir, "train", task)
        x_eval, y_eval, _ = load_transformed(preprocess_dir, "eval", task)
        x_train = plan.shard(x_train)
        arguments = fit_arrays(x_train, plan.shard(y_train), (plan.shard(x_eval), plan.shard(y_eval)),
                               plan.local_batch_size(settings.batch_size), seed=config.seed)
        return TrainingData(arguments, x_train, streaming=False, rows=len(keras.tree.flatten(x_train)[0]))
    batches = {split: streamed(preprocess_dir / "transformed" / split, task, transform, settings.batch_size,
                               shuffle=split == "train", seed=config.seed)
               for split in ("train", "eval")}
    pretrain_x = load_transformed(preprocess_dir, "train", task)[0] if task.pretrains(config) else None
    return TrainingData({"x": batches["train"], "validation_data": batches["eval"], "shuffle": False},
                        pretrain_x, streaming=True, rows=transform["num_train_rows"])


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import keras
    import mlflow

    from components import distribution
    from components.callbacks import progress_verbosity, training_callbacks
    from tasks import get_task
    from tasks.serving import SOURCE_KEY, log_pyfunc_model

    settings = config.train
    plan = distribution.resolve(settings.strategy)
    task = get_task(config.task)
    transform = read_json(inputs["preprocess"] / "transform" / "transform.json")
    task.check_serving_model(transform)
    data = training_data(inputs["preprocess"], task, transform, config, plan)
    hparams, learning_rate = model_settings(config, inputs)
    params = {
        "model": config.model.name, "learning_rate": learning_rate, "batch_size": settings.batch_size,
        "epochs": settings.epochs, "warmup_epochs": settings.warmup_epochs, "decay": settings.decay,
        "input": "stream" if data.streaming else "memory",
        **{f"hp_{k}": v for k, v in hparams.items()},
        **plan.mlflow_params(settings.batch_size, learning_rate),
    }
    mlflow.log_params({k: v for k, v in params.items() if v not in (None, "")})

    # Keras names layers and optimizers by what the process built before (tuning trials, in the same
    # process or not): from a clean session they are the same in a resumed build as in the killed one,
    # so its `model_summary.txt` and checkpoints name the same objects.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(config.seed)
    backup = output / "backup"
    with distribution.distributed(plan):
        steps_per_epoch = -(-data.rows // plan.local_batch_size(settings.batch_size))
        schedule = learning_rate_schedule(plan.scaled_learning_rate(learning_rate), settings, steps_per_epoch)
        network = task.build_model(config.model.name, transform, hparams, schedule)
        if data.pretrain_x is not None:
            task.pretrain(network, data.pretrain_x, transform, config)
        history = network.fit(
            **data.fit_arguments,
            epochs=settings.epochs,
            verbose=progress_verbosity(),
            callbacks=training_callbacks(backup, settings.early_stopping_patience),
        )
    shutil.rmtree(backup, ignore_errors=True)

    network.save(output / "model.keras")
    task.serving_model(network, transform).save(output / "serving.keras")
    transform_path = output / "transform.json"
    # The served model's transform carries the source file's original column names and CSV format.
    served_transform = {**transform, SOURCE_KEY: read_json(inputs["ingest"] / "schema.json").get("source")}
    transform_path.write_text(json.dumps(served_transform, indent=2))
    (output / "history.json").write_text(json.dumps(history.history, indent=2))

    example = task.serving_example(read_frame(inputs["ingest"] / "train", task.example_rows), transform)
    info = log_pyfunc_model(output / "serving.keras", transform_path, example)
    val_loss = history.history["val_loss"]
    best_epoch = int(min(range(len(val_loss)), key=val_loss.__getitem__))
    best = {f"best_{k}": float(v[best_epoch]) for k, v in history.history.items() if k.startswith("val_")}
    mlflow.log_metrics({"best_epoch": best_epoch, **best})
    return {
        "mlflow_model_uri": info.model_uri,
        "mlflow_model_id": info.model_id,
        "epochs_trained": len(val_loss),
        "best_epoch": best_epoch,
        **best,
    }
