"""What Keras's per-epoch evaluation costs with each kind of eval input, on the Iris MLP.

    python -m bench.validation_restart

Keras restarts the eval input every epoch. The same 60-epoch fit (the
train split as arrays, batch 16), after two warm-up epochs, with the eval
split given as the arrays Keras wraps itself, as the plain batched
`tf.data` dataset `components.input_pipeline.fit_arrays` hands it, and
without validation; best of two rounds, in milliseconds per epoch.
"""

from __future__ import annotations

import os
import time

EPOCHS, BATCH = 60, 16


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    x_train, x_eval, y_train, y_eval = train_test_split(x, y, test_size=0.15, stratify=y, random_state=42)
    variants = {
        "eval split as arrays": {"validation_data": (x_eval, y_eval), "validation_batch_size": BATCH},
        "eval split as a batched tf.data dataset": {
            "validation_data": tf.data.Dataset.from_tensor_slices((x_eval, y_eval)).batch(BATCH)},
        "no validation": {},
    }
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    best = {name: np.inf for name in variants}
    for _ in range(2):
        for name, arguments in variants.items():
            model.fit(x_train, y_train, epochs=2, batch_size=BATCH, verbose=0, **arguments)
            start = time.perf_counter()
            model.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, verbose=0, **arguments)
            best[name] = min(best[name], 1000 * (time.perf_counter() - start) / EPOCHS)
    print("| eval input | ms per epoch | of it evaluation |\n| --- | ---: | ---: |")
    for name, ms in best.items():
        print(f"| {name} | {ms:.1f} | {ms - best['no validation']:.1f} |")


if __name__ == "__main__":
    main()
