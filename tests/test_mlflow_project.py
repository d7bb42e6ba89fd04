"""`mlflow run .` as the README shows it: the local environment manager, on this project's environment."""

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow

REPO = Path(__file__).resolve().parents[1]


def test_mlflow_run_logs_the_pipeline_into_the_recipes_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # As after `source .venv/bin/activate`: the entry point's `python` is this environment's.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):  # left by mlflow.set_experiment
        env.pop(name, None)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "run", ".", "--env-manager", "local", "-P", "recipe=iris_mlp",
         "-P", "epochs=2", "-P", "tuner=none", "-P", f"output_dir={tmp_path / 'artifacts'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = re.search(r"^MLflow run: (\w+)", result.stdout, re.MULTILINE).group(1)
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(run_id)
    assert client.get_experiment(parent.info.experiment_id).name == "iris_mlp"
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(r.info.run_name for r in children) == ["evaluate", "ingest", "preprocess", "train"]
    assert int(client.get_run(next(r.info.run_id for r in children if r.info.run_name == "train"))
               .data.params["epochs"]) == 2
