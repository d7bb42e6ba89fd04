import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from tests.helpers import config_for, new_sqlite_store, run_component


def assert_each_trial_is_a_nested_run(summary: dict, output: Path) -> None:
    """The tune run's trials are its nested runs, and the best one is the lowest `val_loss` of them."""
    tune_run = mlflow.search_runs(filter_string="attributes.run_name = 'tune'").iloc[0]
    best = json.loads((output / "best_hparams.json").read_text())
    assert set(best["hparams"]) == {"num_layers", "units", "activation", "dropout", "l2"}
    assert 1e-4 <= best["learning_rate"] <= 3e-2
    trials = json.loads((output / "trials.json").read_text())
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{tune_run.run_id}'")
    assert len(runs) == len(trials) == summary["num_trials"] >= 3
    assert runs["params.units"].notna().all() and runs["metrics.val_accuracy"].notna().all()
    assert best["objective"] == "val_loss"
    assert best["score"] == min(t["score"] for t in trials if t["score"] is not None)


@pytest.mark.parametrize("tuner", ["random", "bayesian"])  # Hyperband: its own test below
def test_each_tuner_logs_every_trial_as_a_nested_run(tuner, iris_preprocessed, tmp_path, local_mlflow):
    config = config_for(tuner=tuner, max_trials=3, **{"tune.epochs": 6})
    summary = run_component("tune", config, {"preprocess": iris_preprocessed / "preprocess"}, tmp_path)
    assert_each_trial_is_a_nested_run(summary, tmp_path)


def test_trials_of_a_model_with_an_initializer_start_from_it(iris_preprocessed):
    """The RBF network's trials start from k-means centres of the train features, as its final fit does."""
    import keras_tuner
    import numpy as np
    from sklearn.cluster import KMeans

    from components.artifact_io import load_transformed, read_json
    from components.tune import make_hypermodel
    from tasks import get_task

    config = config_for("iris_rbf")
    task = get_task(config.task)
    preprocess = iris_preprocessed / "preprocess"
    x_train = load_transformed(preprocess, "train", task)[0]
    hypermodel = make_hypermodel("rbf", task, read_json(preprocess / "transform" / "transform.json"))
    hypermodel.train_features, hypermodel.seed = x_train, 7
    model = hypermodel.build(keras_tuner.HyperParameters())
    layer = model.get_layer("rbf")
    expected = KMeans(n_clusters=layer.num_centres, n_init=10, random_state=7).fit(x_train).cluster_centers_
    np.testing.assert_allclose(np.asarray(layer.centres), expected, atol=1e-5)


def _trial_runs(tune_run_id: str):
    client = mlflow.MlflowClient()
    experiment = client.get_run(tune_run_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{tune_run_id}'")


def test_hyperband_trials_cut_short_are_tagged_with_the_epochs_they_ran(iris_preprocessed, tmp_path, local_mlflow):
    """With 3 epochs and factor 3, Hyperband's first bracket trains models for 1 epoch and continues the best."""
    config = config_for(tuner="hyperband", **{"tune.epochs": 3})
    summary = run_component("tune", config, {"preprocess": iris_preprocessed / "preprocess"}, tmp_path)
    assert_each_trial_is_a_nested_run(summary, tmp_path)
    runs = _trial_runs(mlflow.last_active_run().info.run_id)
    tags = [r.data.tags for r in runs]
    assert all(t["epochs_budget"] == "3" and t["stopped_early"] in ("true", "false") for t in tags)
    cut = [t for t in tags if t["stopped_early"] == "true"]
    assert cut and all(int(t["epochs_run"]) < 3 and t["stopped_by"] == "hyperband" for t in cut)
    full = [t for t in tags if t["stopped_early"] == "false"]
    assert full and all(t["epochs_run"] == "3" for t in full)
    continued = [t for t in tags if "continues_trial" in t]
    assert continued and all(t["epochs_run"] == "3" for t in continued)


def _children(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_killed_distributed_search_resumes_and_logs_each_trial_once(tmp_path):
    """A chief and 2 worker processes share the oracle over gRPC, the trials nested under the one tune run.

    SIGKILL the pipeline once a trial is logged: its chief and workers exit, and the same command finishes.
    """
    root = Path(__file__).resolve().parents[1]
    uri = new_sqlite_store(tmp_path)  # before the pipeline starts: two processes migrating a new one collide
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "resume"}
    command = [sys.executable, "-m", "pipeline.cli", "tune", "--output-dir", str(tmp_path / "artifacts"),
               "--tuner", "random", "--max-trials", "4", "--workers", "2", "--set", "tune.epochs=3"]
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    log = tmp_path / "killed.log"
    with open(log, "w") as handle:
        pipeline = subprocess.Popen(command, cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while not client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 "tags.trial_id != '' and attributes.status = 'FINISHED'"):
        assert pipeline.poll() is None and time.time() < deadline, \
            f"no trial finished before the deadline:\n{log.read_text(errors='replace')[-4000:]}"
        time.sleep(1)
    cluster = _children(pipeline.pid)
    os.kill(pipeline.pid, signal.SIGKILL)
    pipeline.wait()
    assert len(cluster) == 3  # the chief and the two workers
    deadline = time.time() + 30
    while any(_alive(pid) for pid in cluster) and time.time() < deadline:
        time.sleep(1)
    assert not any(_alive(pid) for pid in cluster), "the search went on without the pipeline"

    finished = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    experiment = client.get_experiment_by_name("resume").experiment_id
    (tune,) = client.search_runs([experiment], "attributes.run_name = 'tune' and tags.cache_hit = 'false'")
    assert tune.info.status == "FINISHED" and tune.data.tags["resumed"] == "true"
    assert tune.data.params["tune_workers"] == "2"
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{tune.info.run_id}'")
    trial_ids = sorted(r.data.tags["trial_id"] for r in runs)
    assert trial_ids == ["0", "1", "2", "3"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["tuner_id"] for r in runs} <= {"tuner0", "tuner1"}  # never the chief, never in-process
    assert all("val_accuracy" in r.data.metrics and "units" in r.data.params for r in runs)
    (best_file,) = (tmp_path / "artifacts").rglob("best_hparams.json")
    output = best_file.parent
    best = json.loads(best_file.read_text())
    trials = json.loads((output / "trials.json").read_text())
    assert sorted(t["trial_id"] for t in trials) == trial_ids
    assert best["trial_id"] in trial_ids and best["score"] == min(t["score"] for t in trials)
    logs = {p.name for p in (output / "tuner" / "cluster").glob("*.log")}
    assert logs == {"chief.log", "tuner0.log", "tuner1.log"}
