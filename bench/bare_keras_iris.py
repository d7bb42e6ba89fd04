"""The default pipeline's work as one hand-written Keras script, for the overhead benchmark.

Same data (Iris, same stratified splits and seed), same model and
hyperparameters, same epochs per tuning trial and for the final fit, same
early stopping; no Beam, no MLflow, no artifacts. Reads the trials the
pipeline ran so both do identical training work. With `--epochs-run` (the
epochs each trial and the final fit of the pipeline ran, as JSON) every fit
runs exactly that long, so the shuffling's effect on where early stopping
lands does not count as the pipeline's cost.
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()

import keras  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.metrics import accuracy_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_models  # noqa: E402


def fit(x, y, xe, ye, hparams, learning_rate, epochs, batch_size, patience, seed):
    keras.utils.set_random_seed(seed)
    model = keras_models.build_model("mlp", keras_models.InputSpec((4,)), keras_models.OutputSpec("classification", 3),
                                     **hparams)
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, validation_data=(xe, ye), epochs=epochs, batch_size=batch_size, verbose=0,
                        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                                 restore_best_weights=True)])
    return model, len(history.epoch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", help="trials.json of the pipeline's tune artifact")
    parser.add_argument("--best", help="best_hparams.json of the pipeline's tune artifact")
    parser.add_argument("--tune-epochs", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--epochs-run", type=json.loads, default={},
                        help='JSON: {"trials": {trial_id: epochs}, "final": epochs}')
    args = parser.parse_args()
    exact = args.epochs_run
    x, y = load_iris(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.3, stratify=y, random_state=42)
    x_eval, x_test, y_eval, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=42)
    mean, std = x_train.mean(0), x_train.std(0)
    x_train, x_eval, x_test = [((a - mean) / std).astype("float32") for a in (x_train, x_eval, x_test)]
    epochs = 0
    if args.trials:
        for trial in json.load(open(args.trials)):
            hp = dict(trial["hyperparameters"])
            lr = hp.pop("learning_rate")
            n = exact["trials"][trial["trial_id"]] if exact else args.tune_epochs
            epochs += fit(x_train, y_train, x_eval, y_eval, hp, lr, n, 16, n if exact else 10, 42)[1]
    if args.best:
        best = json.load(open(args.best))
        hparams, lr = best["hparams"], best["learning_rate"]
    else:
        hparams, lr = dict(num_layers=2, units=32, activation="relu", dropout=0.1, l2=1e-4), 0.01
    n = exact["final"] if exact else args.epochs
    model, final_epochs = fit(x_train, y_train, x_eval, y_eval, hparams, lr, n, 16, n if exact else 20, 42)
    accuracy = accuracy_score(y_test, model.predict(x_test, verbose=0).argmax(1))
    print(json.dumps({"test_accuracy": accuracy, "epochs": epochs + final_epochs,
                      "seconds": time.perf_counter() - START}))


if __name__ == "__main__":
    main()
