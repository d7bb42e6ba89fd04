"""Tune: Keras Tuner over the search space the model declares in the registry.

Every trial is a nested MLflow run (its hyperparameters, per-epoch metrics,
score, and whether it was cut short) under the tune run. The tuner's state
lives in the staging directory, so a killed search resumes with the trials
it had finished. With `tune.workers` > 0 the search runs as Keras Tuner's own
distributed mode on this host (`components/tuning_cluster.py`): a chief
process holds the oracle and that many worker processes train the trials.
Outputs `best_hparams.json` (the builder's keyword arguments and the
learning rate), which the train component reads, and `trials.json`. Trials
run under `train.strategy`; the stored learning rate is the single-replica
one, which train scales by its own replica count.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from pathlib import Path
from typing import Any

from components.artifact_io import load_transformed, read_json
from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="tune",
    inputs=("preprocess",),
    config_sections=("model", "tune", "train.batch_size", "train.strategy", "task", "seed"),
    code=("components/tune.py", "components/tuning_cluster.py", "components/distribution.py",
          "components/base.py", "components/callbacks.py", "components/artifact_io.py", "data/splits.py",
          "components/input_pipeline.py", "keras_models", "tasks"),
    resumable=True,
    description="Keras Tuner search (random, bayesian, hyperband); each trial a nested MLflow run.",
)
LEARNING_RATE = "learning_rate"
EARLY_STOPPING_PATIENCE = 10


def make_hypermodel(model_name: str, task, transform: dict[str, Any], learning_rate_scale: float = 1.0):
    """One HyperModel for every registry model: its declared space plus the learning rate.

    The model is compiled with the sampled rate times `learning_rate_scale`
    (the replica count), so the search space stays that of one replica. A
    model registered with an initializer (the RBF network's k-means centres)
    starts each trial from it, as the train component's fit does, once
    `train_features` is set: trials are scored as the winner will be trained.
    """
    import keras_tuner

    import keras_models

    scale = learning_rate_scale
    initializer = keras_models.get_entry(model_name).initializer

    class RegistryHyperModel(keras_tuner.HyperModel):
        learning_rate_scale = scale
        train_features = None
        seed = 0

        def build(self, hp):
            hparams = keras_models.search_space(model_name, hp)
            learning_rate = hp.Float(LEARNING_RATE, 1e-4, 3e-2, sampling="log")
            model = task.build_model(model_name, transform, hparams, learning_rate * learning_rate_scale)
            if initializer is not None and self.train_features is not None:
                initializer(model, self.train_features, seed=self.seed)
            return model

    return RegistryHyperModel(name=model_name)


def discard_killed_attempts(trial_id: str, tune_run) -> None:
    """Deletes the MLflow runs of earlier attempts at a trial, under the tune run.

    Keras Tuner reruns from scratch a trial that was running when the
    search was killed; its half-logged run would show the trial twice.
    """
    import mlflow

    client = mlflow.MlflowClient()
    for run in client.search_runs(
        [tune_run.info.experiment_id],
        f"tags.mlflow.parentRunId = '{tune_run.info.run_id}' and tags.trial_id = '{trial_id}'",
    ):
        client.delete_run(run.info.run_id)


def stop_tags(histories, epochs_asked: int, budget: int, hp_values: dict[str, Any]) -> dict[str, str]:
    """Tags saying whether a trial trained its whole budget, and what cut it short.

    `epochs_run` is the epoch the model reached, counting those of the
    Hyperband trial it continues; `epochs_budget` is `tune.epochs`. A trial
    that stops before the epochs it was given was stopped by EarlyStopping;
    one that ran them all but fewer than the budget was a Hyperband bracket
    trained on a few epochs, whose best models go on in new trials.
    """
    reached = max((h.epoch[-1] + 1 for h in histories if getattr(h, "epoch", None)), default=0)
    tags = {"epochs_run": str(reached), "epochs_budget": str(budget), "stopped_early": "false"}
    if "tuner/bracket" in hp_values:
        tags.update({"hyperband_bracket": str(hp_values["tuner/bracket"]),
                     "hyperband_round": str(hp_values["tuner/round"])})
        if hp_values.get("tuner/trial_id"):
            tags["continues_trial"] = str(hp_values["tuner/trial_id"])
    if reached < epochs_asked:
        tags.update(stopped_early="true", stopped_by="early_stopping",
                    stopped_reason=f"EarlyStopping: val_loss did not improve for {EARLY_STOPPING_PATIENCE} epochs")
    elif reached < budget:
        tags.update(stopped_early="true", stopped_by="hyperband",
                    stopped_reason=f"Hyperband bracket {hp_values.get('tuner/bracket')} round "
                                   f"{hp_values.get('tuner/round')} trains {epochs_asked} of {budget} epochs; "
                                   "only the best of the round go on, in new trials")
    return tags


def make_tuner(kind: str, hypermodel, directory: Path, config, tune_run_id: str):
    """A Keras Tuner of `kind` whose trials each run inside an MLflow run nested under `tune_run_id`.

    The parent is named explicitly, not taken from the active run, so that
    worker processes, which have none, log their trials under the same run.
    """
    import keras_tuner
    import mlflow
    from keras_tuner.errors import FailedTrialError

    from components.callbacks import CacheSavingSkipsets, EpochMlflowCallback, StopOnNonFiniteLoss

    base = {
        "random": keras_tuner.RandomSearch,
        "bayesian": keras_tuner.BayesianOptimization,
        "hyperband": keras_tuner.Hyperband,
    }[kind]
    tune_run = mlflow.MlflowClient().get_run(tune_run_id)
    budget = config.tune.epochs

    class MlflowTuner(base):
        def run_trial(self, trial, *args, **kwargs):
            discard_killed_attempts(trial.trial_id, tune_run)
            values = trial.hyperparameters.values
            # Tags given at creation are written at once; `set_tags` under asynchronous logging is
            # queued, and a killed process would leave a run that `discard_killed_attempts` cannot find.
            tags = {"component": "tune", "trial_id": trial.trial_id, "tuner": kind, "tuner_id": self.tuner_id}
            with mlflow.start_run(run_name=f"trial-{trial.trial_id}", nested=True, parent_run_id=tune_run_id,
                                  experiment_id=tune_run.info.experiment_id, tags=tags):
                mlflow.log_params({k: v for k, v in values.items() if v not in (None, "")})
                if LEARNING_RATE in values:
                    mlflow.log_param("scaled_learning_rate",
                                     values[LEARNING_RATE] * self.hypermodel.learning_rate_scale)
                kwargs["callbacks"] = [*kwargs.get("callbacks", []), StopOnNonFiniteLoss(FailedTrialError),
                                       CacheSavingSkipsets(), EpochMlflowCallback()]
                try:
                    results = super().run_trial(trial, *args, **kwargs)
                except FailedTrialError as e:
                    mlflow.set_tags({"trial_status": "failed", "failure": str(e)[:500]})
                    raise
                histories = results if isinstance(results, list) else [results]
                mlflow.set_tags(stop_tags(histories, values.get("tuner/epochs", kwargs.get("epochs", budget)),
                                          budget, values))
                objective = self.oracle.objective.name
                scores = [max(h.history[objective]) if self.oracle.objective.direction == "max"
                          else min(h.history[objective]) for h in histories if hasattr(h, "history")]
                if scores:
                    mlflow.log_metric(f"best_{objective}", sum(scores) / len(scores))
                return results

    tune = config.tune
    common = dict(
        hypermodel=hypermodel,
        objective=keras_tuner.Objective(tune.objective, "min" if "loss" in tune.objective else "max"),
        directory=str(directory),
        project_name="search",
        seed=config.seed,
        overwrite=False,
    )
    if kind == "hyperband":
        return MlflowTuner(max_epochs=tune.epochs, factor=3, hyperband_iterations=1, **common)
    return MlflowTuner(max_trials=tune.max_trials, **common)


def build_tuner(preprocess_dir: Path, output: Path, config, tune_run_id: str, learning_rate_scale: float = 1.0):
    """The tuner over the staging directory's state, as every process of a search builds it."""
    import keras

    from tasks import get_task

    task = get_task(config.task)
    transform = read_json(Path(preprocess_dir) / "transform" / "transform.json")
    keras.utils.set_random_seed(config.seed)
    hypermodel = make_hypermodel(config.model.name, task, transform, learning_rate_scale)
    return make_tuner(config.tune.tuner, hypermodel, output / "tuner", config, tune_run_id)


@contextlib.contextmanager
def loaded_objects_frozen():
    """Keeps the objects alive on entry out of the garbage collector's sight until exit.

    Keras Tuner clears the Keras session and collects garbage before each
    trial: two full collections, which with TensorFlow loaded walk some
    600,000 objects (docs/benchmarks.md has the cost). Frozen after one last collection,
    the libraries' objects are not walked again, and each collection only
    looks at what the search made since; on exit they are collectable again.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def search(tuner, preprocess_dir: Path, config, plan) -> None:
    """Runs (or, as a worker, joins) the search on the transformed train and eval splits."""
    import keras

    from components import distribution
    from components.callbacks import progress_verbosity
    from components.input_pipeline import fit_arrays
    from tasks import get_task

    task = get_task(config.task)
    x_train, y_train, _ = load_transformed(preprocess_dir, "train", task)
    x_eval, y_eval, _ = load_transformed(preprocess_dir, "eval", task)
    tuner.hypermodel.train_features, tuner.hypermodel.seed = x_train, config.seed
    with loaded_objects_frozen(), distribution.distributed(plan):
        tuner.search(
            **fit_arrays(plan.shard(x_train), plan.shard(y_train), (plan.shard(x_eval), plan.shard(y_eval)),
                         plan.local_batch_size(config.train.batch_size), seed=config.seed),
            epochs=config.tune.epochs,
            verbose=progress_verbosity(),
            callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=EARLY_STOPPING_PATIENCE)],
        )


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import mlflow

    import keras_models
    from components import distribution, tuning_cluster
    from tasks import get_task

    plan = distribution.resolve(config.train.strategy)
    # The winner is trained and served by the train component: fail before the search, not after it.
    get_task(config.task).check_serving_model(read_json(inputs["preprocess"] / "transform" / "transform.json"))
    tune_run_id = mlflow.active_run().info.run_id
    workers = config.tune.workers
    mlflow.log_params({"tuner": config.tune.tuner, "max_trials": config.tune.max_trials,
                       "objective": config.tune.objective, "model": config.model.name, "tune_workers": workers,
                       **plan.mlflow_params(config.train.batch_size)})
    if workers:
        if plan.processes > 1:
            raise ValueError(f"tune.workers runs its {workers} workers on this host; it cannot be combined with "
                             f"the {plan.processes}-process strategy {plan.name!r}.")
        tuning_cluster.run_cluster("components.tune", workers, inputs["preprocess"], output, config, tune_run_id)
        tuner = build_tuner(inputs["preprocess"], output, config, tune_run_id, plan.scaled_learning_rate(1.0))
        tuner.oracle.reload()  # the chief's record of every trial
    else:
        tuner = build_tuner(inputs["preprocess"], output, config, tune_run_id, plan.scaled_learning_rate(1.0))
        search(tuner, inputs["preprocess"], config, plan)

    best_trial = tuner.oracle.get_best_trials(1)[0]
    # Replaying the search space on the winner's values gives the builder's keyword arguments.
    hparams = keras_models.search_space(config.model.name, best_trial.hyperparameters.copy())
    learning_rate = best_trial.hyperparameters.get(LEARNING_RATE)
    best = {
        "model": config.model.name,
        "hparams": hparams,
        "learning_rate": learning_rate,
        "objective": config.tune.objective,
        "score": best_trial.score,
        "trial_id": best_trial.trial_id,
    }
    trials = [
        {"trial_id": t.trial_id, "status": t.status, "score": t.score, "hyperparameters": t.hyperparameters.values}
        for t in tuner.oracle.trials.values()
    ]
    (output / "best_hparams.json").write_text(json.dumps(best, indent=2))
    (output / "trials.json").write_text(json.dumps(trials, indent=2, default=str))
    mlflow.log_params({f"best_{k}": v for k, v in {**hparams, LEARNING_RATE: learning_rate}.items()})
    mlflow.log_metric(f"best_{config.tune.objective}", best_trial.score)
    mlflow.log_artifact(str(output / "best_hparams.json"))
    return {"best_score": best_trial.score, "num_trials": len(trials)}


def cluster_process(preprocess: Path, output: Path, config, tune_run_id: str) -> int:
    """One process of a distributed search: the chief serves the oracle; a worker trains the trials it is given."""
    import mlflow

    from components import distribution

    mlflow.config.enable_async_logging(True)
    if os.environ["KERASTUNER_TUNER_ID"] == "chief":
        build_tuner(preprocess, output, config, tune_run_id).search()
        return 0
    plan = distribution.resolve(config.train.strategy)
    tuner = build_tuner(preprocess, output, config, tune_run_id, plan.scaled_learning_rate(1.0))
    search(tuner, preprocess, config, plan)
    mlflow.flush_async_logging()
    return 0


if __name__ == "__main__":
    # A process of a distributed search, started by `tuning_cluster.run_cluster`. It runs the functions of
    # `components.tune` as imported, as every other process does, rather than this script's copies.
    from components import tune, tuning_cluster

    tuning_cluster.process_main(tune.cluster_process)
