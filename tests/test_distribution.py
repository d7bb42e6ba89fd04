"""Data-parallel training through the train component, on Iris, over two devices.

A process's devices are fixed when its backend starts, so every run over two
devices is a fresh Python process: two logical CPUs for TensorFlow, two XLA
host devices for JAX.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.helpers import config_for, run_component, use_mlflow_store

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 15
BATCH_SIZE = 16  # iris_mlp's per-replica batch

# Trains Iris in this process under a strategy, then reloads model.keras under
# the same strategy and predicts the test split with it (cut to a multiple of
# the devices under data_parallel, as Plan.shard does for training). A process
# that is one of several predicts the whole split on its own copy of the weights.
TRAIN_SCRIPT = r"""
import contextlib, json, sys
from pathlib import Path

args = json.loads(sys.argv[1])
if args.get("logical_cpus"):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args["logical_cpus"])

import keras
import mlflow
import numpy as np

from components import distribution
from components.artifact_io import load_transformed
from tasks import get_task
from tests.helpers import config_for, run_component, use_mlflow_store

root, out = Path(args["root"]), Path(args["output"])
use_mlflow_store(out)
config = config_for(**args["overrides"])
run_component("train", config, {"ingest": root / "ingest", "preprocess": root / "preprocess"}, out / "train")
params = mlflow.search_runs(filter_string="attributes.run_name = 'train'").iloc[0].filter(like="params.")
x, y, _ = load_transformed(root / "preprocess", "test", get_task(config.task))
plan = distribution.resolve(config.train.strategy)
if plan.processes == 1:
    x, y = plan.shard(x), plan.shard(y)
with distribution.distributed(plan) if plan.processes == 1 else contextlib.nullcontext():
    model = keras.saving.load_model(out / "train" / "model.keras")
    probabilities = np.asarray(model.predict(x, verbose=0))
np.save(out / "probabilities.npy", probabilities)
(out / "result.json").write_text(json.dumps({
    "params": {k.removeprefix("params."): v for k, v in params.items()},
    "accuracy": float((probabilities.argmax(-1) == y).mean()),
    "loaded_replicas": plan.replicas,
    "rows": len(y),
}))
"""


def start_training(root: Path, output: Path, strategy: str, env: dict[str, str] | None = None,
                   logical_cpus: int = 0) -> subprocess.Popen:
    """Starts TRAIN_SCRIPT in a fresh interpreter."""
    output.mkdir(parents=True, exist_ok=True)
    args = {"root": str(root), "output": str(output), "logical_cpus": logical_cpus,
            "overrides": {"epochs": EPOCHS, "train.strategy": strategy}}
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, json.dumps(args)],
        cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def finish_training(process: subprocess.Popen, output: Path, timeout: int = 150) -> tuple[dict, np.ndarray]:
    """Waits for a TRAIN_SCRIPT process; returns its result and test-split probabilities."""
    try:
        _, stderr = process.communicate(timeout=timeout)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-4000:]
    return json.loads((output / "result.json").read_text()), np.load(output / "probabilities.npy")


def train_in_subprocess(root: Path, output: Path, strategy: str, env: dict[str, str] | None = None,
                        logical_cpus: int = 0) -> tuple[dict, np.ndarray]:
    return finish_training(start_training(root, output, strategy, env, logical_cpus), output)


def iris_test_split(iris_preprocessed):
    """The test split's labels, and the majority baseline the models must beat by far."""
    from components.artifact_io import load_transformed
    from tasks import get_task

    x, y, _ = load_transformed(iris_preprocessed / "preprocess", "test", get_task(config_for().task))
    return x, y, np.bincount(y).max() / len(y)


def assert_trained_on_two_replicas(result: dict, strategy: str, iris_preprocessed, processes: int = 1) -> None:
    params = result["params"]
    assert params["strategy"] == strategy
    assert params["replicas"] == "2"
    assert len(params["devices"].split(",")) == 2
    assert params["global_batch_size"] == str(2 * BATCH_SIZE)
    assert params["processes"] == str(processes)
    assert float(params["scaled_learning_rate"]) == pytest.approx(2 * float(params["learning_rate"]))
    _, _, majority = iris_test_split(iris_preprocessed)
    assert majority < 0.5
    assert result["accuracy"] >= 0.85, result


def assert_restores_on_one_device(output: Path, probabilities: np.ndarray, iris_preprocessed) -> None:
    """model.keras saved under two replicas loads in this one-device process and predicts the same."""
    from components import distribution

    assert distribution.resolve("default").replicas == 1
    x, _, _ = iris_test_split(iris_preprocessed)
    x = keras.tree.map_structure(lambda a: a[:len(probabilities)], x)
    model = keras.saving.load_model(output / "train" / "model.keras")
    np.testing.assert_allclose(np.asarray(model.predict(x, verbose=0)), probabilities, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="MirroredStrategy is TensorFlow's")
def test_mirrored_strategy_trains_on_two_logical_cpus(iris_preprocessed, tmp_path):
    result, probabilities = train_in_subprocess(iris_preprocessed, tmp_path, "mirrored", logical_cpus=2)
    assert_trained_on_two_replicas(result, "mirrored", iris_preprocessed)
    assert result["loaded_replicas"] == 2
    assert_restores_on_one_device(tmp_path, probabilities, iris_preprocessed)


def test_jax_data_parallel_trains_on_two_host_devices(iris_preprocessed, tmp_path):
    pytest.importorskip("jax")
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result, probabilities = train_in_subprocess(iris_preprocessed, tmp_path, "data_parallel", env=env)
    assert_trained_on_two_replicas(result, "data_parallel", iris_preprocessed)
    assert result["loaded_replicas"] == 2
    assert_restores_on_one_device(tmp_path, probabilities, iris_preprocessed)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="MultiWorkerMirroredStrategy is TensorFlow's")
def test_tf_multi_worker_across_workers_stops_before_training(iris_preprocessed, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]}, "task": {"type": "worker", "index": 0},
    }))
    use_mlflow_store(tmp_path)
    config = config_for(**{"train.strategy": "multi_worker"})
    inputs = {"ingest": iris_preprocessed / "ingest", "preprocess": iris_preprocessed / "preprocess"}
    with pytest.raises(ValueError, match=r"keras-team/keras#20585") as error:
        run_component("train", config, inputs, tmp_path / "train")
    assert "KERAS_BACKEND=jax" in str(error.value) and "data_parallel" in str(error.value)
    assert not (tmp_path / "train" / "model.keras").exists()


def test_plan_scales_batch_and_learning_rate_with_replicas():
    from components.distribution import Plan, resolve

    plan = Plan("data_parallel", ("cpu:0", "cpu:1", "cpu:2", "cpu:3"), replicas=4, processes=2, process_id=1)
    assert plan.global_batch_size(16) == 64
    assert plan.local_batch_size(16) == 32
    assert plan.scaled_learning_rate(0.01) == pytest.approx(0.04)
    rows = np.arange(11)
    assert plan.shard({"x": rows})["x"].tolist() == [1, 3, 5, 7]
    assert plan.mlflow_params(16, 0.01)["devices"] == "cpu:0,cpu:1,cpu:2,cpu:3"
    with pytest.raises(ValueError, match="valid: auto, default, mirrored, multi_worker, data_parallel"):
        resolve("horovod")


@pytest.mark.slow
def test_two_jax_processes_train_one_model(iris_preprocessed, tmp_path):
    """Two hosts on 127.0.0.1, one CPU device each: one model, as good as a one-process run."""
    pytest.importorskip("jax")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = [
        start_training(iris_preprocessed, tmp_path / f"host{i}", "data_parallel", env={
            "KERAS_BACKEND": "jax", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i),
        })
        for i in range(2)
    ]
    (first, first_probabilities), (second, second_probabilities) = [
        finish_training(process, tmp_path / f"host{i}") for i, process in enumerate(processes)
    ]
    for result in (first, second):
        assert_trained_on_two_replicas(result, "data_parallel", iris_preprocessed, processes=2)
    np.testing.assert_allclose(first_probabilities, second_probabilities, rtol=1e-5, atol=1e-6)
