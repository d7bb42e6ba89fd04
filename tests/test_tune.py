import json

import mlflow
import pytest

from tests.helpers import config_for, run_component, use_mlflow_store


@pytest.fixture(scope="module")
def iris_preprocessed(tmp_path_factory):
    root = tmp_path_factory.mktemp("iris")
    use_mlflow_store(root)
    config = config_for()
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    return root


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_each_tuner_logs_every_trial_as_a_nested_run(tuner, iris_preprocessed, tmp_path, local_mlflow):
    config = config_for(tuner=tuner, max_trials=3, **{"tune.epochs": 6})
    summary = run_component("tune", config, {"preprocess": iris_preprocessed / "preprocess"}, tmp_path)
    tune_run = mlflow.search_runs(filter_string="attributes.run_name = 'tune'").iloc[0]
    best = json.loads((tmp_path / "best_hparams.json").read_text())
    assert set(best["hparams"]) == {"num_layers", "units", "activation", "dropout", "l2"}
    assert 1e-4 <= best["learning_rate"] <= 3e-2
    trials = json.loads((tmp_path / "trials.json").read_text())
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{tune_run.run_id}'")
    assert len(runs) == len(trials) == summary["num_trials"] >= 3
    assert runs["params.units"].notna().all() and runs["metrics.val_accuracy"].notna().all()
    assert best["objective"] == "val_loss"
    assert best["score"] == min(t["score"] for t in trials if t["score"] is not None)
