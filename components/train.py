"""Train: build the model from the registry, fit it on the transformed splits, export it.

Outputs `model.keras` (the network on transformed features), `serving.keras`
(the same network behind the preprocessing rebuilt from `transform.json`, so
it takes raw features), `history.json`, and an MLflow pyfunc model whose
signature is the raw feature columns. Early stopping picks the epoch;
`BackupAndRestore` lets a killed run resume from its last finished epoch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from components.artifact_io import load_transformed, read_columns, read_json
from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="train",
    inputs=("ingest", "preprocess"),
    optional_inputs=("tune",),
    config_sections=("model", "train", "seed"),
    code=("components/train.py", "components/base.py", "components/artifact_io.py", "keras_models"),
    resumable=True,
    description="Fit the registry model with early stopping and BackupAndRestore; export it with its preprocessing.",
)


def model_settings(config, inputs: dict[str, Path]) -> tuple[dict[str, Any], float]:
    """The hyperparameters and learning rate: the tuner's winner when it ran, else the recipe's."""
    if "tune" in inputs:
        best = read_json(inputs["tune"] / "best_hparams.json")
        return best["hparams"], best["learning_rate"]
    return dict(config.model.hparams), config.train.learning_rate


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import keras
    import mlflow
    import pandas as pd

    import keras_models
    from keras_models.serving import build_serving_model, log_pyfunc_model, predictions_frame, raw_inputs

    x_train, y_train, transform = load_transformed(inputs["preprocess"], "train")
    x_eval, y_eval, _ = load_transformed(inputs["preprocess"], "eval")
    hparams, learning_rate = model_settings(config, inputs)
    settings = config.train
    mlflow.log_params({
        "model": config.model.name, "learning_rate": learning_rate, "batch_size": settings.batch_size,
        "epochs": settings.epochs, **{f"hp_{k}": v for k, v in hparams.items()},
    })

    keras.utils.set_random_seed(config.seed)
    network = keras_models.build_model(
        config.model.name,
        keras_models.InputSpec((x_train.shape[1],)),
        keras_models.OutputSpec("classification", len(transform["label"]["classes"])),
        **hparams,
    )
    network.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    backup = output / "backup"
    history = network.fit(
        x_train, y_train,
        validation_data=(x_eval, y_eval),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        verbose=0,
        callbacks=[
            keras.callbacks.BackupAndRestore(str(backup)),
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=settings.early_stopping_patience, restore_best_weights=True
            ),
            mlflow.keras.MlflowCallback(),
        ],
    )
    shutil.rmtree(backup, ignore_errors=True)

    network.save(output / "model.keras")
    serving = build_serving_model(network, transform)
    serving.save(output / "serving.keras")
    transform_path = output / "transform.json"
    transform_path.write_text(json.dumps(transform, indent=2))
    (output / "history.json").write_text(json.dumps(history.history, indent=2))

    example = pd.DataFrame(read_columns(inputs["ingest"] / "train")).drop(columns=[transform["label"]["name"]]).head(5)
    probabilities = serving.predict(raw_inputs(example, transform), verbose=0)
    info = log_pyfunc_model(
        output / "serving.keras", transform_path, example,
        predictions_frame(probabilities, transform["label"]["classes"]),
    )
    best_epoch = int(min(range(len(history.history["val_loss"])), key=history.history["val_loss"].__getitem__))
    summary = {
        "mlflow_model_uri": info.model_uri,
        "epochs_trained": len(history.history["loss"]),
        "best_epoch": best_epoch,
        "val_accuracy": float(history.history["val_accuracy"][best_epoch]),
    }
    mlflow.log_metrics({"best_epoch": best_epoch, "best_val_accuracy": summary["val_accuracy"]})
    return summary
