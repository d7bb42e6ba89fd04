"""Injected faults: each one stops with an error that names where it happened, and loses nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.callbacks import NonFiniteLossError, StopOnNonFiniteLoss
from tests.helpers import config_for, new_sqlite_store, use_mlflow_store


def test_a_nan_loss_stops_training_naming_its_epoch_and_batch(iris):
    import keras

    import keras_models
    from keras_models.specs import InputSpec, OutputSpec

    x, y = iris
    x = x.copy()
    x[70, 0] = np.inf  # in batch 3 of 32-row batches: its loss is clipped, its update poisons batch 4
    model = keras_models.build_model("mlp", InputSpec((4,)), OutputSpec("classification", 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    epochs = []
    seen = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(epoch))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, batch [34] \(step [34]\)\. Lower "):
        model.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0, callbacks=[StopOnNonFiniteLoss(), seen])
    assert epochs == []


def test_the_train_component_fails_on_a_diverging_loss_and_publishes_nothing(tmp_path, monkeypatch):
    from pipeline.artifacts import ArtifactStore
    from pipeline.runner import run_pipeline

    use_mlflow_store(tmp_path)
    config = config_for(epochs=3, tuner="none", output_dir=str(tmp_path / "artifacts"))
    first = run_pipeline(config, ["preprocess"])
    train_split = first.components["preprocess"].artifact.path / "transformed" / "train"
    for file in train_split.glob("*.parquet"):  # an inf feature value, as a broken upstream step could write
        table = pq.read_table(file).to_pandas()
        table.loc[0, "sepal_length_cm"] = np.inf
        table.to_parquet(file)
    monkeypatch.setattr(ArtifactStore, "verify", staticmethod(lambda path, manifest: None))  # let it through
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, batch \d+ \(step \d+\)"):
        run_pipeline(config, ["train"])
    assert not list((tmp_path / "artifacts" / "train").glob("*/manifest.json"))


@pytest.mark.slow
def test_sigkill_in_each_component_then_the_same_command_finishes_the_work_once(tmp_path):
    """Killed in ingest, preprocess, tune and train in turn; the fifth run finishes and MLflow stays tidy."""
    import subprocess
    import sys

    import mlflow

    root = Path(__file__).resolve().parents[1]
    uri = new_sqlite_store(tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "kills"}
    args = ["run", "--recipe", "iris_mlp", "--output-dir", str(tmp_path / "artifacts"), "--epochs", "8",
            "--tuner", "random", "--max-trials", "3", "--set", "tune.epochs=4",
            "--set", "train.early_stopping_patience=20"]
    for point in ("ingest", "preprocess", "tune", "train"):
        killed = subprocess.run([sys.executable, str(root / "tests" / "fault_driver.py"), point, *args],
                                cwd=root, env=env, capture_output=True, text=True)
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
    finished = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=root, env=env,
                              capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("kills").experiment_id
    runs = client.search_runs([experiment], max_results=500)
    parents = sorted((r for r in runs if r.info.run_name == "iris_mlp · mlp"), key=lambda r: r.info.start_time)
    assert [r.info.status for r in parents] == ["KILLED"] * 4 + ["FINISHED"]
    assert not [r for r in runs if r.info.status == "RUNNING"]

    built = {name: [r for r in runs if r.info.run_name == name and r.data.tags.get("cache_hit") == "false"]
             for name in ("ingest", "preprocess", "tune", "train", "evaluate")}
    # A killed ingest or preprocess starts over: its attempt stays as a KILLED run.
    assert sorted(r.info.status for r in built["ingest"]) == ["FINISHED", "KILLED"]
    assert sorted(r.info.status for r in built["preprocess"]) == ["FINISHED", "KILLED"]
    # A killed tune or train resumes: one run each, continued by a later pipeline run.
    for name in ("tune", "train"):
        (run,) = built[name]
        assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    trials = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{built['tune'][0].info.run_id}'")
    assert sorted(t.data.tags["trial_id"] for t in trials) == ["0", "1", "2"]
    steps = [m.step for m in client.get_metric_history(built["train"][0].info.run_id, "loss")]
    assert steps == list(range(8))  # epochs 1–8, each once: 1–3 before the kill, 4–8 resumed
    assert {r.data.tags.get("cache_hit") for r in runs if r.data.tags.get("mlflow.parentRunId") ==
            parents[-1].info.run_id and r.info.run_name in ("ingest", "preprocess")} == {"true"}
    assert not list((tmp_path / "artifacts").glob("*/.staging-*"))


def test_a_damaged_or_incomplete_artifact_is_detected_by_its_manifest_and_rebuilt(tmp_path):
    import mlflow

    from pipeline.runner import run_pipeline

    use_mlflow_store(tmp_path)
    config = config_for(tuner="none", output_dir=str(tmp_path / "artifacts"))
    first = run_pipeline(config, ["preprocess"])
    ingest, preprocess = (first.components[n].artifact for n in ("ingest", "preprocess"))
    (ingest.path / "train" / "data.parquet").write_bytes(b"PAR1 truncated")
    (preprocess.path / "transform" / "transform.json").unlink()
    second = run_pipeline(config, ["preprocess"])
    reasons = {"ingest": "file train/data.parquet does not match its manifest digest",
               "preprocess": "missing file transform/transform.json"}
    for name, before in (("ingest", ingest), ("preprocess", preprocess)):
        result = second.components[name]
        assert not result.cache_hit and result.artifact.path == before.path
        assert result.artifact.manifest["files"] == before.manifest["files"]  # rebuilt to the same bytes
        assert len(list(before.path.parent.glob(f"{before.path.name}.corrupt-*"))) == 1
        assert reasons[name] in mlflow.get_run(result.run_id).data.tags["rebuilt_damaged_artifact"]


def drop_eval_split(output: Path) -> None:
    shutil.rmtree(output / "transformed" / "eval")


def drop_train_rows(output: Path) -> None:
    (part,) = (output / "transformed" / "train").glob("*.parquet")
    table = pq.read_table(part)
    pq.write_table(table.slice(0, table.num_rows - 5), part)


def leave_beam_temp_file(output: Path) -> None:
    temp = output / "transformed" / "beam-temp-part-3f2a"
    temp.mkdir()
    (temp / "a1b2.parquet").write_bytes(b"PAR1")


def test_an_incomplete_build_fails_naming_what_is_missing_and_publishes_nothing(tmp_path, monkeypatch):
    """A split without files, a short row count, a leftover temporary file: each stops the build before its manifest."""
    from components import preprocess
    from pipeline.artifacts import ArtifactError
    from pipeline.runner import run_pipeline

    use_mlflow_store(tmp_path)
    config = config_for(tuner="none", output_dir=str(tmp_path / "artifacts"))
    work = preprocess.run
    faults = {
        drop_eval_split: r"transformed/eval has no Parquet files \(expected 22 rows\)",
        drop_train_rows: r"transformed/train holds 100 rows in 1 Parquet file\(s\), expected 105",
        leave_beam_temp_file: r"temporary files left: transformed/beam-temp-part-3f2a",
    }
    for fault, message in faults.items():
        def run_with_fault(inputs, output, config, fault=fault):
            summary = work(inputs, output, config)
            fault(output)
            return summary

        monkeypatch.setattr(preprocess, "run", run_with_fault)
        expected = rf"^preprocess output is incomplete, so it is not published: {message}$"
        with pytest.raises(ArtifactError, match=expected):
            run_pipeline(config, ["preprocess"])
        assert not list((tmp_path / "artifacts" / "preprocess").glob("*/manifest.json"))
        assert not list((tmp_path / "artifacts" / "preprocess").glob(".staging-*"))
    monkeypatch.setattr(preprocess, "run", work)
    published = run_pipeline(config, ["preprocess"]).components["preprocess"]
    assert published.artifact.manifest["summary"]["output_rows"] == {
        "transformed/train": 105, "transformed/eval": 22, "transformed/test": 23}


@pytest.mark.slow
def test_two_pipelines_started_at_once_share_finished_work_and_keep_their_own_runs(tmp_path):
    import subprocess
    import sys

    import mlflow

    root = Path(__file__).resolve().parents[1]
    uri = new_sqlite_store(tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "together"}
    common = ["--output-dir", str(tmp_path / "artifacts"), "--tuner", "none", "--epochs", "30"]
    processes = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--recipe", recipe, *common],
                                  cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for recipe in ("iris_mlp", "iris_rbf")]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id], max_results=100)
    parents = {r.data.tags["pipeline.recipe"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {"iris_mlp", "iris_rbf"} and {p.info.status for p in parents.values()} == {"FINISHED"}
    children = {name: {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id}
                for name, p in parents.items()}
    # Same data settings: one ingest and one preprocess build, the other pipeline waits and reuses them.
    for component in ("ingest", "preprocess"):
        hits = sorted(children[name][component].data.tags["cache_hit"] for name in parents)
        assert hits == ["false", "true"]
    trained = {children[name]["train"].data.tags["artifact"] for name in parents}
    assert len(trained) == 2 and all(Path(path, "manifest.json").is_file() for path in trained)


@pytest.mark.slow
def test_training_goes_on_through_a_tracking_server_outage_and_its_metrics_arrive(tmp_path):
    """The server stops after epoch 3 and restarts 2 s later; MLflow's async queue retries with backoff."""
    import json
    import subprocess
    import sys

    import mlflow

    from tests.helpers import free_port, mlflow_server_command, start_mlflow_server, stop_mlflow_server

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    command = mlflow_server_command(tmp_path, port)
    server = start_mlflow_server(command, tmp_path / "server.log")
    pidfile = tmp_path / "restarted.pid"
    url = f"http://127.0.0.1:{port}"
    fault = {"pid": server.pid, "argv": command, "log": str(tmp_path / "server.log"), "pidfile": str(pidfile)}
    # Retries 1, 2, 4… s apart (default 2, 4, 8… s), 9 of them (default 7): about 6 minutes in all,
    # and a retry within a minute of the server's return.
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": "outage",
           "FAULT_SERVER": json.dumps(fault), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9"}
    try:
        finished = subprocess.run(
            [sys.executable, str(root / "tests" / "fault_driver.py"), "outage", "run", "--recipe", "iris_mlp",
             "--output-dir", str(tmp_path / "artifacts"), "--tuner", "none", "--epochs", "40",
             "--set", "train.early_stopping_patience=40"],
            cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert finished.returncode == 0, finished.stderr[-3000:]
        assert pidfile.is_file() and server.poll() is not None  # the first server really went away

        mlflow.set_tracking_uri(url)
        client = mlflow.MlflowClient()
        runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        (train,) = [r for r in runs if r.info.run_name == "train"]
        assert train.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(train.info.run_id, "loss")]
        assert steps == list(range(40))  # every epoch, those logged while the server was down included
    finally:
        stop_mlflow_server(server)
        if pidfile.is_file():
            try:
                os.killpg(int(pidfile.read_text()), 15)
            except ProcessLookupError:
                pass


def test_a_tracking_server_that_does_not_answer_fails_the_run_within_seconds_naming_it(tmp_path, monkeypatch):
    """A silent server (a socket nobody answers) and a dead port, in process and through the CLI.

    MLflow's own retry settings, which carry runs through outages, are back as they were afterwards.
    """
    import socket
    import subprocess
    import sys
    import time

    from pipeline.runner import run_pipeline
    from pipeline.tracking import TrackingServerUnreachable
    from tests.helpers import free_port

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
        start = time.monotonic()
        with pytest.raises(TrackingServerUnreachable, match=rf"^MLflow tracking server {url} does not answer "
                                                            r"\(no answer within 4 s\)"):
            run_pipeline(config_for(output_dir=str(tmp_path / "artifacts")))
        assert time.monotonic() - start < 15
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9" and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert not (tmp_path / "artifacts").exists()

    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    refused = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--output-dir", str(tmp_path / "cli")],
                             cwd=root, env={**os.environ, "MLFLOW_TRACKING_URI": dead}, capture_output=True, text=True)
    assert time.monotonic() - start < 30  # the interpreter's start and imports included
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: MLflow tracking server {dead} does not answer (Connection refused): start it, or set "
        "MLFLOW_TRACKING_URI to a server that runs (unset, runs go to the local store mlflow.db)"]


def test_an_output_dir_on_a_filesystem_without_locks_is_named(tmp_path, monkeypatch):
    import errno
    import fcntl

    from pipeline.artifacts import ArtifactError, ArtifactStore

    def refuse(handle, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.raises(ArtifactError, match=r"cannot lock .*/ingest/\.lock-0123456789abcdef \(No locks available\): "
                                            r"output_dir must be on a filesystem with file locks shared by every host"):
        with ArtifactStore(tmp_path).lock("ingest", "0123456789abcdef" * 4):
            pass
