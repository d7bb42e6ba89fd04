"""Tune: Keras Tuner over the search space the model declares in the registry.

Every trial is a nested MLflow run (its hyperparameters, per-epoch metrics,
score) under the tune run. The tuner's state lives in the staging directory,
so a killed search resumes with the trials it had finished. Outputs
`best_hparams.json` (the builder's keyword arguments and the learning rate),
which the train component reads, and `trials.json`. Trials run under
`train.strategy`; the stored learning rate is the single-replica one, which
train scales by its own replica count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.artifact_io import load_transformed
from components.base import ComponentSpec

SPEC = ComponentSpec(
    name="tune",
    inputs=("preprocess",),
    config_sections=("model", "tune", "train.batch_size", "train.strategy", "task", "seed"),
    code=("components/tune.py", "components/distribution.py", "components/base.py", "components/callbacks.py", "components/artifact_io.py", "keras_models", "tasks"),
    resumable=True,
    description="Keras Tuner search (random, bayesian, hyperband); each trial a nested MLflow run.",
)
LEARNING_RATE = "learning_rate"


def make_hypermodel(model_name: str, task, transform: dict[str, Any], learning_rate_scale: float = 1.0):
    """One HyperModel for every registry model: its declared space plus the learning rate.

    The model is compiled with the sampled rate times `learning_rate_scale`
    (the replica count), so the search space stays that of one replica.
    """
    import keras_tuner

    import keras_models

    scale = learning_rate_scale

    class RegistryHyperModel(keras_tuner.HyperModel):
        learning_rate_scale = scale

        def build(self, hp):
            hparams = keras_models.search_space(model_name, hp)
            learning_rate = hp.Float(LEARNING_RATE, 1e-4, 3e-2, sampling="log")
            return task.build_model(model_name, transform, hparams, learning_rate * learning_rate_scale)

    return RegistryHyperModel(name=model_name)


def discard_killed_attempts(trial_id: str) -> None:
    """Deletes the MLflow runs of earlier attempts at a trial, under the active tune run.

    Keras Tuner reruns from scratch a trial that was running when the
    search was killed; its half-logged run would show the trial twice.
    """
    import mlflow

    parent = mlflow.active_run()
    client = mlflow.MlflowClient()
    for run in client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.trial_id = '{trial_id}'",
    ):
        client.delete_run(run.info.run_id)


def make_tuner(kind: str, hypermodel, directory: Path, config):
    """A Keras Tuner of `kind` whose trials each run inside a nested MLflow run."""
    import keras_tuner
    import mlflow
    from keras_tuner.errors import FailedTrialError

    from components.callbacks import StopOnNonFiniteLoss

    base = {
        "random": keras_tuner.RandomSearch,
        "bayesian": keras_tuner.BayesianOptimization,
        "hyperband": keras_tuner.Hyperband,
    }[kind]

    class MlflowTuner(base):
        def run_trial(self, trial, *args, **kwargs):
            discard_killed_attempts(trial.trial_id)
            with mlflow.start_run(run_name=f"trial-{trial.trial_id}", nested=True):
                mlflow.set_tags({"component": "tune", "trial_id": trial.trial_id, "tuner": kind})
                mlflow.log_params(trial.hyperparameters.values)
                if LEARNING_RATE in trial.hyperparameters.values:
                    mlflow.log_param("scaled_learning_rate", trial.hyperparameters.values[LEARNING_RATE]
                                     * self.hypermodel.learning_rate_scale)
                kwargs["callbacks"] = [*kwargs.get("callbacks", []), StopOnNonFiniteLoss(FailedTrialError),
                                       mlflow.keras.MlflowCallback()]
                try:
                    results = super().run_trial(trial, *args, **kwargs)
                except FailedTrialError as e:
                    mlflow.set_tags({"trial_status": "failed", "failure": str(e)[:500]})
                    raise
                histories = results if isinstance(results, list) else [results]
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


def run(inputs: dict[str, Path], output: Path, config) -> dict[str, Any]:
    import keras
    import mlflow

    from components import distribution
    from tasks import get_task

    plan = distribution.resolve(config.train.strategy)
    task = get_task(config.task)
    x_train, y_train, transform = load_transformed(inputs["preprocess"], "train", task)
    x_eval, y_eval, _ = load_transformed(inputs["preprocess"], "eval", task)
    keras.utils.set_random_seed(config.seed)
    hypermodel = make_hypermodel(config.model.name, task, transform, plan.scaled_learning_rate(1.0))
    tuner = make_tuner(config.tune.tuner, hypermodel, output / "tuner", config)
    mlflow.log_params({"tuner": config.tune.tuner, "max_trials": config.tune.max_trials,
                       "objective": config.tune.objective, "model": config.model.name,
                       **plan.mlflow_params(config.train.batch_size)})
    with distribution.distributed(plan):
        tuner.search(
            plan.shard(x_train), plan.shard(y_train),
            validation_data=(plan.shard(x_eval), plan.shard(y_eval)),
            epochs=config.tune.epochs,
            batch_size=plan.local_batch_size(config.train.batch_size),
            verbose=0,
            callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=10)],
        )
    import keras_models

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
