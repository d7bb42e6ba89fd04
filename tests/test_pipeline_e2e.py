"""The whole pipeline against a real MLflow tracking server on localhost."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from tests.helpers import mlflow_server as tracking_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A tracking server behind MLflow's basic-auth app; the module's clients take credentials from the environment."""
    root = tmp_path_factory.mktemp("server")
    password = f"pw-{secrets.token_hex(12)}"
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"  # one PBKDF2 check per minute, not per request
    )
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    with tracking_server(root, "--app-name", "basic-auth", env=env) as url, pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", url)
        patch.setenv(CREDENTIALS[0], "admin")
        patch.setenv(CREDENTIALS[1], password)
        yield url, password


@pytest.fixture(scope="module")
def pipeline_run(mlflow_server, tmp_path_factory):
    import mlflow

    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    try:
        config = load_config("iris_mlp", {"output_dir": str(tmp_path_factory.mktemp("artifacts")),
                                          "max_trials": 3, "tune.epochs": 8, "epochs": 40})
        first = run_pipeline(config)
        second = run_pipeline(config)
        retrained = run_pipeline(load_config("iris_mlp", {**config.model_dump(include={"output_dir"}),
                                                          "max_trials": 3, "tune.epochs": 8, "epochs": 41}))
        yield config, first, second, retrained
    finally:
        while mlflow.active_run():
            mlflow.end_run()


def test_run_tree_metrics_and_registry(pipeline_run, mlflow_server):
    from mlflow import MlflowClient

    config, first, _, retrained = pipeline_run
    client = MlflowClient(mlflow_server[0])
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
    assert plots == [f"plots/{name}.png" for name in ("calibration", "confusion_matrix", "pr_curve", "roc_curve")]
    inputs = client.get_run(by_name["ingest"].info.run_id).inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "sklearn:iris"
    versions = client.search_model_versions(f"name = '{config.registered_model_name}'")
    assert sorted(v.run_id for v in versions) == sorted(
        [by_name["train"].info.run_id, retrained.components["train"].artifact.manifest["mlflow_run_id"]]
    )  # the all-cached re-run registered nothing new
    champion = client.get_model_version_by_alias(config.registered_model_name, "champion")
    assert champion.run_id == retrained.components["train"].artifact.manifest["mlflow_run_id"]


def test_registered_model_predicts_from_raw_rows(pipeline_run, mlflow_server, tmp_path):
    import mlflow

    config, _, _, _ = pipeline_run
    mlflow.set_tracking_uri(mlflow_server[0])
    model = mlflow.pyfunc.load_model(f"models:/{config.registered_model_name}@champion")
    iris = load_iris(as_frame=True)
    rows = iris.frame.drop(columns="target").rename(columns=lambda c: c.replace(" (cm)", "_cm").replace(" ", "_"))
    predictions = model.predict(rows)
    truth = np.asarray(iris.target_names)[iris.target]
    assert (predictions["prediction"].to_numpy() == truth).mean() >= 0.9
    probabilities = predictions.filter(like="probability_").to_numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)
    names = [spec.name for spec in model.metadata.get_input_schema().inputs]
    assert names == [*iris.feature_names, *rows.columns]  # the file's own names, then the normalised ones
    files = mlflow.artifacts.list_artifacts(f"models:/{config.registered_model_name}@champion")
    assert "python_model.pkl" not in {Path(f.path).name for f in files}  # logged as code: loading unpickles nothing
    code = Path(mlflow.artifacts.download_artifacts(f"models:/{config.registered_model_name}@champion",
                                                    dst_path=str(tmp_path))) / "code"
    shipped = {p.relative_to(code).as_posix() for p in code.rglob("*") if p.is_file()}
    assert "data/sources.py" in shipped and "keras_models/index.json" in shipped
    assert {Path(p).suffix for p in shipped} == {".py", ".json"}  # no bundled datasets, no bytecode


def test_unchanged_components_are_reused_and_training_change_reruns_downstream(pipeline_run):
    _, first, second, retrained = pipeline_run
    assert not any(c.cache_hit for c in first.components.values())
    assert all(c.cache_hit for c in second.components.values())
    assert {n for n, c in retrained.components.items() if c.cache_hit} == {"ingest", "preprocess", "tune"}
    assert retrained.components["train"].artifact.path != first.components["train"].artifact.path
    assert isinstance(pd.DataFrame([first.test_metrics]), pd.DataFrame)


def test_basic_auth_server_takes_credentials_from_the_environment_and_never_logs_them(
    pipeline_run, mlflow_server, tmp_path
):
    """The CLI is refused without credentials; with them, nothing the pipelines wrote holds the password."""
    import mlflow

    config, _, _, retrained = pipeline_run
    url, password = mlflow_server
    # The retrained run's settings: every component is a cache hit, and the champion stays where it is.
    run = ["run", "--recipe", "iris_mlp", "--max-trials", "3", "--set", "tune.epochs=8", "--epochs", "41",
           "--output-dir", config.output_dir]
    without = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    refused = subprocess.run([sys.executable, "-m", "pipeline.cli", *run], cwd=ROOT, env=without,
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "error code 401" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *run], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert password not in done.stdout + done.stderr

    mlflow.set_tracking_uri(url)
    client = mlflow.MlflowClient()
    experiment = client.get_run(retrained.run_id).info.experiment_id
    runs = client.search_runs([experiment])
    assert {r.info.run_name for r in runs} >= {"iris_mlp · mlp", "ingest", "preprocess", "tune", "train", "evaluate"}
    for logged in runs:
        assert all(password not in str(v) for v in {**logged.data.params, **logged.data.tags}.values())
        downloaded = Path(mlflow.artifacts.download_artifacts(run_id=logged.info.run_id,
                                                             dst_path=str(tmp_path / logged.info.run_id)))
        files = [f for f in downloaded.rglob("*") if f.is_file()]
        assert all(password.encode() not in f.read_bytes() for f in files)
    assert all(password.encode() not in f.read_bytes() for f in Path(config.output_dir).rglob("*") if f.is_file())
