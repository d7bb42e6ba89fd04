"""Does the input pipeline keep up with training? Streamed Parquet against the same data preloaded.

    python -m bench.input_pipeline                     # mnist_lenet and mr_cnn1d
    python -m bench.input_pipeline --recipes mnist_resnet --epochs 2
    KERAS_BACKEND=jax python -m bench.input_pipeline --recipes mnist_lenet mnist_resnet

For each recipe: the real ingest and Beam preprocess components, then the
recipe's model trained for whole epochs two ways, alternating, on the same
transformed train split with the same batch size:
- **preloaded**: the split as numpy arrays in memory (`train.input: memory`);
- **streamed**: `components.input_pipeline.streamed`, what the train component
  streams from (`train.input: stream`): row groups read from Parquet, handed
  to `tf.data` in chunks on the TensorFlow backend; on JAX, batches cut on a
  thread and put on the device two ahead (`DevicePrefetch`);
- on JAX also **streamed, no prefetch**: the bare `ParquetBatches`, each
  batch cut on the training loop's thread when Keras asks for it (the JAX
  path before `DevicePrefetch`).

The first epoch of each (tracing and compilation) is not timed; the table
gives the best of the timed epochs in samples per second, and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEFAULT_RECIPES = ("mnist_lenet", "mr_cnn1d")


def prepared(recipe: str, work: Path):
    """The recipe's config, task, and its ingest and preprocess artifacts built in `work`."""
    import mlflow

    from components import ingest, preprocess
    from pipeline.config import load_config
    from tasks import get_task

    config = load_config(recipe)
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    with mlflow.start_run(run_name=f"bench-{recipe}"):
        for component, inputs in ((ingest, {}), (preprocess, {"ingest": work / "ingest"})):
            output = work / component.SPEC.name
            output.mkdir()
            component.run(inputs, output, config)
    return config, get_task(config.task)


def epoch_seconds(model, fit_arguments: dict, epochs: int) -> list[float]:
    import keras

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(**fit_arguments, epochs=epochs, verbose=0, callbacks=[Timer()])
    return times


def measure(recipe: str, epochs: int, rounds: int) -> dict[str, float]:
    import keras

    from components.artifact_io import load_transformed
    from components.input_pipeline import ParquetBatches, streamed

    with tempfile.TemporaryDirectory(prefix=f"bench-input-{recipe}-") as work:
        work = Path(work)
        config, task = prepared(recipe, work)
        split = work / "preprocess" / "transformed" / "train"
        x, y, transform = load_transformed(work / "preprocess", "train", task)
        batch_size = config.train.batch_size
        fits = {
            "preloaded": {"x": x, "y": y, "batch_size": batch_size, "shuffle": True},
            "streamed": {"x": streamed(split, task, transform, batch_size, shuffle=True, seed=config.seed),
                         "shuffle": False},
        }
        if keras.backend.backend() == "jax":
            fits["streamed, no prefetch"] = {
                "x": ParquetBatches(split, task, transform, batch_size, shuffle=True, seed=config.seed),
                "shuffle": False}
        keras.utils.set_random_seed(config.seed)
        model = task.build_model(config.model.name, transform, dict(config.model.hparams), config.train.learning_rate)
        best = {name: float("inf") for name in fits}
        for _ in range(rounds):
            for name, arguments in fits.items():
                times = epoch_seconds(model, arguments, epochs + 1)[1:]
                best[name] = min(best[name], *times)
        return {"rows": len(y), "steps": -(-len(y) // batch_size),
                **{name: len(y) / seconds for name, seconds in best.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES))
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per round and input")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import keras

    rows = [(recipe, measure(recipe, args.epochs, args.rounds)) for recipe in args.recipes]
    jax = keras.backend.backend() == "jax"
    print(f"Keras {keras.__version__}, {keras.backend.backend()} backend; samples/s (steps/s)")
    print("| recipe | train rows | preloaded | streamed | streamed / preloaded |"
          + (" streamed, no prefetch | no prefetch / preloaded |" if jax else ""))
    print("| --- | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if jax else ""))

    def rate(r, name):
        return f"{r[name]:,.0f} ({r[name] * r['steps'] / r['rows']:,.1f})"

    for recipe, r in rows:
        print(f"| {recipe} | {r['rows']:,} | {rate(r, 'preloaded')} | {rate(r, 'streamed')} | "
              f"{r['streamed'] / r['preloaded']:.2f} |"
              + (f" {rate(r, 'streamed, no prefetch')} | {r['streamed, no prefetch'] / r['preloaded']:.2f} |"
                 if jax else ""))


if __name__ == "__main__":
    main()
