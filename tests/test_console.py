"""What a pipeline run prints: Keras's progress per epoch and the component table, none of the libraries' notices."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The start-up notices a run printed before the console was set up, each by what identifies it.
NOISE = re.compile("|".join([
    r"apitools not found",  # Beam, GCP clients missing (a root-logger WARNING)
    r"bigquery_storage_v1",  # Beam's BigQuery notice
    r"WriteImpl min_shards",  # Beam's WriteToParquet
    r"Creating state cache",  # Beam's DirectRunner
    r"absl::InitializeLog",  # TensorFlow's native logging
    r"oneDNN custom operations",
    r"^I\d{4} ",  # any absl INFO line
    r"system metrics",  # MLflow's system-metrics monitor
    r" INFO mlflow",  # any MLflow INFO line
    r"Downloading artifacts",  # MLflow's artifact download bars
]), re.MULTILINE)
EPOCH_LINE = re.compile(r"^\d+/\d+ - .*- loss: [\d.]+ .*- val_loss: [\d.]+", re.MULTILINE)
ARGS = ["run", "--recipe", "iris_mlp", "--epochs", "3", "--max-trials", "1", "--set", "tune.epochs=2"]


def _cli(tmp_path, *args):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    for name in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        env.pop(name, None)  # as a user's shell has them
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--output-dir", str(tmp_path / "artifacts")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def consoles(tmp_path_factory):
    """A first run (tune with one trial, then train), the same run cached, and the cached one with --verbose."""
    tmp_path = tmp_path_factory.mktemp("console")
    return [_cli(tmp_path, *ARGS), _cli(tmp_path, *ARGS), _cli(tmp_path, *ARGS, "--verbose")]


def test_a_run_prints_progress_per_epoch_and_the_component_table_without_library_notices(consoles):
    first, cached, _ = consoles
    for console in (first, cached):
        assert not NOISE.findall(console), console
    # Piped, Keras prints one line per epoch: 2 for the trial, 3 for train.
    assert len(EPOCH_LINE.findall(first)) == 5, first
    assert "Trial 1 Complete" in first and "Epoch 3/3" in first
    for component in ("ingest", "preprocess", "tune", "train", "evaluate"):
        assert re.search(rf"^  {component} +ran ", first, re.MULTILINE), first
        assert re.search(rf"^  {component} +cached ", cached, re.MULTILINE), cached
    assert not EPOCH_LINE.findall(cached)
    assert "test metrics: accuracy=" in cached


def test_verbose_brings_the_libraries_logs_back(consoles):
    _, cached, verbose = consoles
    assert "INFO mlflow.system_metrics" in verbose and "system metrics" not in cached
    assert re.search(r"^  evaluate +cached ", verbose, re.MULTILINE)
