"""The whole pipeline against a real MLflow tracking server on localhost."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from tests.helpers import free_port, mlflow_server_command, start_mlflow_server, stop_mlflow_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    process = start_mlflow_server(mlflow_server_command(root, port), root / "server.log")
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(process)


@pytest.fixture(scope="module")
def pipeline_run(mlflow_server, tmp_path_factory):
    import mlflow

    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        config = load_config("iris_mlp", {"output_dir": str(tmp_path_factory.mktemp("artifacts")),
                                          "max_trials": 3, "tune.epochs": 8, "epochs": 40})
        first = run_pipeline(config)
        second = run_pipeline(config)
        retrained = run_pipeline(load_config("iris_mlp", {**config.model_dump(include={"output_dir"}),
                                                          "max_trials": 3, "tune.epochs": 8, "epochs": 41}))
        yield config, first, second, retrained
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        while mlflow.active_run():
            mlflow.end_run()


def test_run_tree_metrics_and_registry(pipeline_run, mlflow_server):
    from mlflow import MlflowClient

    config, first, _, retrained = pipeline_run
    client = MlflowClient(mlflow_server)
    parent = client.get_run(first.run_id)
    assert parent.data.metrics["test_accuracy"] >= 0.9
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{first.run_id}'")
    by_name = {r.info.run_name: r for r in children}
    assert set(by_name) == {"ingest", "preprocess", "tune", "train", "evaluate"}
    trials = client.search_runs([parent.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{by_name['tune'].info.run_id}'")
    assert len(trials) >= 3
    history = client.get_metric_history(by_name["train"].info.run_id, "val_loss")
    assert len(history) >= 5 and [m.step for m in history] == list(range(len(history)))
    evaluate = by_name["evaluate"]
    assert evaluate.data.metrics["test_macro_f1"] >= 0.9
    assert evaluate.data.metrics["test_accuracy"] > evaluate.data.metrics["baseline_accuracy"]
    plots = [a.path for a in client.list_artifacts(evaluate.info.run_id, "plots")]
    assert plots == ["plots/confusion_matrix.png"]
    inputs = client.get_run(by_name["ingest"].info.run_id).inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "sklearn:iris"
    versions = client.search_model_versions(f"name = '{config.registered_model_name}'")
    assert sorted(v.run_id for v in versions) == sorted(
        [by_name["train"].info.run_id, retrained.components["train"].artifact.manifest["mlflow_run_id"]]
    )  # the all-cached re-run registered nothing new
    champion = client.get_model_version_by_alias(config.registered_model_name, "champion")
    assert champion.run_id == retrained.components["train"].artifact.manifest["mlflow_run_id"]


def test_registered_model_predicts_from_raw_rows(pipeline_run, mlflow_server):
    import mlflow

    config, _, _, _ = pipeline_run
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/{config.registered_model_name}@champion")
    iris = load_iris(as_frame=True)
    rows = iris.frame.drop(columns="target").rename(columns=lambda c: c.replace(" (cm)", "_cm").replace(" ", "_"))
    predictions = model.predict(rows)
    truth = np.asarray(iris.target_names)[iris.target]
    assert (predictions["label"].to_numpy() == truth).mean() >= 0.9
    probabilities = predictions.filter(like="probability_").to_numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)
    names = [spec.name for spec in model.metadata.get_input_schema().inputs]
    assert names == list(rows.columns)
    files = mlflow.artifacts.list_artifacts(f"models:/{config.registered_model_name}@champion")
    assert "python_model.pkl" not in {Path(f.path).name for f in files}  # logged as code: loading unpickles nothing


def test_unchanged_components_are_reused_and_training_change_reruns_downstream(pipeline_run):
    _, first, second, retrained = pipeline_run
    assert not any(c.cache_hit for c in first.components.values())
    assert all(c.cache_hit for c in second.components.values())
    assert {n for n, c in retrained.components.items() if c.cache_hit} == {"ingest", "preprocess", "tune"}
    assert retrained.components["train"].artifact.path != first.components["train"].artifact.path
    assert isinstance(pd.DataFrame([first.test_metrics]), pd.DataFrame)


def test_basic_auth_server_takes_credentials_from_the_environment_and_never_logs_them(tmp_path):
    import secrets
    import subprocess
    import sys

    import mlflow

    password = f"pw-{secrets.token_hex(12)}"
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"  # one PBKDF2 check per minute, not per request
    )
    port = free_port()
    server_env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                  "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    command = mlflow_server_command(tmp_path, port, "--app-name", "basic-auth")
    server = start_mlflow_server(command, tmp_path / "server.log", env=server_env)
    url = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parents[1]
    run = ["run", "--recipe", "iris_mlp", "--tuner", "none", "--epochs", "5", "--output-dir", str(tmp_path / "out")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": "auth"}
    try:
        refused = subprocess.run([sys.executable, "-m", "pipeline.cli", *run], cwd=root, env=env,
                                 capture_output=True, text=True)
        assert refused.returncode == 1 and "error code 401" in refused.stderr
        assert "Traceback" not in refused.stderr
        credentials = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *run], cwd=root, env={**env, **credentials},
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert password not in done.stdout + done.stderr

        os.environ.update(credentials)
        mlflow.set_tracking_uri(url)
        client = mlflow.MlflowClient()
        runs = client.search_runs([client.get_experiment_by_name("auth").experiment_id])
        assert {r.info.run_name for r in runs} >= {"iris_mlp", "ingest", "preprocess", "train", "evaluate"}
        for logged in runs:
            assert all(password not in str(v) for v in {**logged.data.params, **logged.data.tags}.values())
            downloaded = Path(mlflow.artifacts.download_artifacts(run_id=logged.info.run_id,
                                                                 dst_path=str(tmp_path / logged.info.run_id)))
            files = [f for f in downloaded.rglob("*") if f.is_file()]
            assert all(password.encode() not in f.read_bytes() for f in files)
        assert all(password.encode() not in f.read_bytes() for f in (tmp_path / "out").rglob("*") if f.is_file())
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
        stop_mlflow_server(server)
