"""A team's tracking server: MLflow on PostgreSQL with proxied artifacts, and pipelines from several processes.

One PostgreSQL cluster and one MLflow server for the module. Two pipelines
start at once from two processes, over one output directory outside the
checkout: iris_mlp with a two-worker distributed search, and iris_rbf. A third
process then runs iris_rbf again from another directory. Everything is read
back through `MlflowClient`, artifacts through the server's proxy.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from tests.helpers import mlflow_server, postgres_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "team"
COMPONENTS = {"ingest", "preprocess", "tune", "train", "evaluate"}
EPOCHS = 20
COMMON = ["--epochs", str(EPOCHS), "--set", "train.early_stopping_patience=40",
          "--set", "evaluate.thresholds={accuracy: 0.7}"]
COMMANDS = {
    "iris_mlp": ["run", "--recipe", "iris_mlp", "--tuner", "random", "--max-trials", "2", "--workers", "2",
                 "--set", "tune.epochs=3", *COMMON],
    "iris_rbf": ["run", "--recipe", "iris_rbf", "--tuner", "none", *COMMON],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """PostgreSQL on a free port of 127.0.0.1 and MLflow on it, artifacts proxied to the server's own directory."""
    import mlflow

    root = tmp_path_factory.mktemp("team-server")
    with postgres_server() as database, mlflow_server(root, backend_store_uri=database) as url:
        mlflow.MlflowClient(url).create_experiment(EXPERIMENT)  # before two pipelines race to create it
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_URI", url)
            yield url, database


@pytest.fixture(scope="module")
def pipelines(server, tmp_path_factory):
    """The two pipelines started at once, then iris_rbf once more from another working directory."""
    shared = tmp_path_factory.mktemp("shared-output")  # outside the checkout, as a shared mount would be
    env = {**os.environ, "MLFLOW_TRACKING_URI": server[0], "MLFLOW_EXPERIMENT_NAME": EXPERIMENT}
    logs = tmp_path_factory.mktemp("logs")

    def start(recipe: str, cwd: Path, log: Path) -> subprocess.Popen:
        command = [sys.executable, "-m", "pipeline.cli", *COMMANDS[recipe], "--output-dir", str(shared)]
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def finish(process: subprocess.Popen, log: Path) -> None:
        assert process.wait(900) == 0, log.read_text(errors="replace")[-4000:]

    together = {recipe: start(recipe, ROOT, logs / f"{recipe}.log") for recipe in COMMANDS}
    for recipe, process in together.items():
        finish(process, logs / f"{recipe}.log")
    again = start("iris_rbf", tmp_path_factory.mktemp("elsewhere"), logs / "again.log")
    finish(again, logs / "again.log")
    return shared


def _runs(url: str):
    from mlflow import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    parents = sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    children = {p.info.run_id: {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId")
                                == p.info.run_id} for p in parents}
    return client, runs, parents, children


def test_every_run_param_and_metric_of_both_pipelines_and_the_distributed_search_is_on_postgres(server, pipelines):
    import psycopg2
    from sqlalchemy.engine import make_url

    client, runs, parents, children = _runs(server[0])
    assert [p.info.run_name for p in parents][2:] == ["iris_rbf · rbf"]
    assert sorted(p.info.run_name for p in parents[:2]) == ["iris_mlp · mlp", "iris_rbf · rbf"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    for parent in parents:
        assert set(children[parent.info.run_id]) == COMPONENTS - ({"tune"} if parent.info.run_name == "iris_rbf · rbf"
                                                                  else set())
        assert parent.data.params["epochs"] == str(EPOCHS)
        assert parent.data.metrics["test_accuracy"] >= 0.8  # learned: the majority class is a third of Iris
    mlp = children[next(p.info.run_id for p in parents if p.info.run_name == "iris_mlp · mlp")]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == mlp["tune"].info.run_id]
    assert sorted(t.data.tags["trial_id"] for t in trials) == ["0", "1"]
    assert {t.data.tags["tuner_id"] for t in trials} <= {"tuner0", "tuner1"}  # trained by the worker processes
    for trial in trials:
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "val_loss")] == [0, 1, 2]
    for components in children.values():
        train = components["train"]
        if train.data.tags["cache_hit"] == "false":
            history = client.get_metric_history(train.info.run_id, "loss")
            assert [m.step for m in history] == list(range(EPOCHS))
            assert all(np.isfinite(m.value) for m in history)

    url = make_url(server[1])  # the runs really are in PostgreSQL
    with psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'")
            assert cursor.fetchone()[0] == len(runs)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _written(artifact: Path, logged: str) -> Path | None:
    """The file of a component's artifact that was logged as `logged` (same name), when there is one."""
    import json

    files = json.loads((artifact / "manifest.json").read_text())["files"]
    (match,) = [name for name in files if Path(name).name == Path(logged).name] or [None]
    return artifact / match if match else None


def _listed(client, run_id: str, path: str | None = None):
    """(path, size) of every file the server lists for the run, folders walked."""
    for entry in client.list_artifacts(run_id, path):
        if entry.is_dir:
            yield from _listed(client, run_id, entry.path)
        else:
            yield entry.path, entry.file_size


def test_every_logged_artifact_downloads_whole_through_the_server(server, pipelines, tmp_path):
    """Each file comes back through `mlflow-artifacts:` with the bytes the component wrote to its artifact."""
    import mlflow

    client, runs, _, _ = _runs(server[0])
    compared = set()
    for run in runs:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        listed = dict(_listed(client, run.info.run_id))
        downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, tracking_uri=server[0],
                                                             dst_path=str(tmp_path / run.info.run_id)))
        files = {p.relative_to(downloaded).as_posix(): p for p in downloaded.rglob("*") if p.is_file()}
        assert {name: p.stat().st_size for name, p in files.items()} == listed
        if "artifact" not in run.data.tags or run.data.tags.get("cache_hit") == "true":
            continue
        for name, path in files.items():
            written = _written(Path(run.data.tags["artifact"]), name)
            if written:
                assert _sha256(path) == _sha256(written), (run.info.run_name, name)
                compared.add((run.info.run_name, Path(name).name))
    assert {("ingest", "schema.json"), ("ingest", "statistics.json"), ("preprocess", "transform.json"),
            ("tune", "best_hparams.json"), ("evaluate", "metrics.json"), ("evaluate", "blessing.json"),
            ("evaluate", "confusion_matrix.png")} <= compared


def test_registered_versions_download_through_the_proxy_and_predict(server, pipelines, tmp_path):
    import mlflow

    client, runs, _, _ = _runs(server[0])
    trained = {r.info.run_id for r in runs if r.info.run_name == "train" and r.data.tags["cache_hit"] == "false"}
    iris = load_iris(as_frame=True)
    rows = iris.frame.drop(columns="target")
    truth = np.asarray(iris.target_names)[iris.target]
    mlflow.set_tracking_uri(server[0])
    versions = [client.search_model_versions(f"name = '{name}'") for name in ("iris-mlp", "iris-rbf")]
    assert [len(v) for v in versions] == [1, 1]  # the cached rerun registered nothing
    assert {v[0].run_id for v in versions} == trained and {v[0].status for v in versions} == {"READY"}
    for (version,) in versions:
        uri = f"models:/{version.name}/{version.version}"
        train = Path(client.get_run(version.run_id).data.tags["artifact"])
        downloaded = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / version.name)))
        for name in ("serving.keras", "transform.json"):
            (logged,) = downloaded.rglob(name)
            assert _sha256(logged) == _sha256(_written(train, name))
        model = mlflow.pyfunc.load_model(uri)
        assert (model.predict(rows)["prediction"].to_numpy() == truth).mean() >= 0.8


def test_a_shared_output_dir_outside_the_checkout_is_reused_by_another_process(server, pipelines):
    """The third run is all cache hits; its tags say which host's path the artifact is, under which root."""
    _, _, parents, children = _runs(server[0])
    first = children[next(p.info.run_id for p in parents[:2] if p.info.run_name == "iris_rbf · rbf")]
    again = children[parents[2].info.run_id]
    assert {run.data.tags["cache_hit"] for run in again.values()} == {"true"}
    for name, run in again.items():
        built = first[name].data.tags  # iris_rbf's first run reused the ingest and preprocess iris_mlp built
        assert run.data.tags["cached_from_run"] == built.get("cached_from_run", first[name].info.run_id)
        assert run.data.tags["artifact"] == first[name].data.tags["artifact"]
        assert run.data.tags["artifact_host"] == socket.gethostname()
        assert run.data.tags["artifact_root"] == str(pipelines)
        assert Path(run.data.tags["artifact"]).parent.parent == pipelines
    written = [f for f in pipelines.rglob("*") if f.is_file() and f.suffix in {".json", ".txt", ".csv", ".log"}]
    assert written and not [f for f in written if str(ROOT) in f.read_text(errors="replace")]
