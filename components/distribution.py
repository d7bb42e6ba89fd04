"""Data-parallel training with the backend's own distribution API.

`train.strategy` (`default`, `mirrored`, `data_parallel`, `multi_worker`,
`auto`) picks how train and tune spread one model over devices, and
`train.batch_size` is per replica; what each strategy does on each backend,
and why, is in docs/design.md ("Distribution strategies").
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "data_parallel")
MULTI_WORKER_ISSUE = "keras-team/keras#20585"
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


@dataclass(frozen=True)
class Plan:
    """The resolved strategy: its name, the devices of every replica, the processes that share them.

    `distribution` is the backend object that does the work (a
    `tf.distribute.Strategy` or a `keras.distribution.Distribution`), or None.
    """

    name: str
    devices: tuple[str, ...]
    replicas: int
    processes: int = 1
    process_id: int = 0
    distribution: Any = field(default=None, repr=False, compare=False)

    def global_batch_size(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def local_batch_size(self, per_replica: int) -> int:
        """The batch one process hands to `fit`: Keras splits it over the process's own replicas."""
        return per_replica * self.replicas // self.processes

    def scaled_learning_rate(self, learning_rate: float) -> float:
        """The linear scaling rule: k replicas take k times the step of one."""
        return learning_rate * self.replicas

    def shard(self, data):
        """This process's share of the rows under `data_parallel`, cut to a multiple of its devices.

        Keras's JAX DataParallel splits every batch, the last one too, evenly
        over the devices, and every process must run the same number of
        steps: this drops fewer rows than there are replicas.
        """
        if self.name != "data_parallel" or self.replicas == 1 or data is None:
            return data
        import keras

        local = max(1, self.replicas // self.processes)
        rows = len(keras.tree.flatten(data)[0]) // self.processes // local * local
        return keras.tree.map_structure(lambda a: a[self.process_id::self.processes][:rows], data)

    def mlflow_params(self, batch_size: int, learning_rate: float | None = None) -> dict[str, Any]:
        params = {
            "strategy": self.name,
            "replicas": self.replicas,
            "devices": ",".join(self.devices),
            "processes": self.processes,
            "global_batch_size": self.global_batch_size(batch_size),
        }
        if learning_rate is not None:
            params["scaled_learning_rate"] = self.scaled_learning_rate(learning_rate)
        return params


def resolve(strategy: str = "auto") -> Plan:
    """The plan for `strategy` on the current Keras backend and the devices this process sees.

    Call it before the first model is built: a multi-host JAX process joins
    its peers here, which must happen before JAX computes anything.
    """
    import keras

    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}.")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _resolve_tensorflow(strategy)
    if backend == "jax":
        return _resolve_jax(strategy)
    if strategy in ("auto", "default"):
        return Plan("default", (), 1)
    raise ValueError(f"Strategy {strategy!r} needs the TensorFlow or JAX backend, not {backend!r}.")


@contextlib.contextmanager
def distributed(plan: Plan) -> Iterator[Plan]:
    """The scope in which to build, compile and fit the model under `plan`.

    Both `tf.distribute.Strategy.scope` and `keras.distribution.Distribution.scope`
    put back on exit what was current before, so later models in the process
    are not distributed by accident.
    """
    if plan.distribution is None:
        yield plan
        return
    with plan.distribution.scope():
        yield plan


def _resolve_tensorflow(strategy: str) -> Plan:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if strategy == "auto":
        strategy = "mirrored" if len(gpus) > 1 else "default"
    if strategy == "default":
        return Plan("default", ("/device:GPU:0" if gpus else "/device:CPU:0",), 1)
    if strategy == "multi_worker":
        workers = _tf_config_workers()
        if workers > 1:
            raise ValueError(
                f"strategy 'multi_worker' on the TensorFlow backend: TF_CONFIG names {workers} workers, and "
                "Keras 3 cannot fit a model under tf.distribute.MultiWorkerMirroredStrategy across workers "
                f"(\"Attempt to convert a value (PerReplica...) with an unsupported type\", {MULTI_WORKER_ISSUE}). "
                "For multi-host data parallelism run with KERAS_BACKEND=jax and train.strategy: data_parallel, "
                f"with {COORDINATOR_ENV}, {NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} set on every host "
                "(keras.distribution.initialize, i.e. jax.distributed.initialize)."
            )
        distribution = tf.distribute.MultiWorkerMirroredStrategy()
        return Plan("multi_worker", tuple(distribution.extended.worker_devices),
                    distribution.num_replicas_in_sync, processes=workers, distribution=distribution)
    devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
    distribution = tf.distribute.MirroredStrategy(devices)
    return Plan("mirrored", tuple(devices), distribution.num_replicas_in_sync, distribution=distribution)


def _tf_config_workers() -> int:
    """How many workers (the chief counted) `TF_CONFIG` describes; 1 when it is unset."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def _resolve_jax(strategy: str) -> Plan:
    import jax
    import keras

    multi_host = bool(os.environ.get(COORDINATOR_ENV))
    if multi_host and strategy != "default" and not jax.distributed.is_initialized():
        keras.distribution.initialize(
            job_addresses=os.environ[COORDINATOR_ENV],
            num_processes=_int_env(NUM_PROCESSES_ENV),
            process_id=_int_env(PROCESS_ID_ENV),
        )
    devices = keras.distribution.list_devices()
    if strategy == "auto":
        strategy = "data_parallel" if len(devices) > 1 or multi_host else "default"
    if strategy == "default":
        return Plan("default", tuple(devices[:1]), 1)
    distribution = keras.distribution.DataParallel(devices=devices)
    # Plan.shard has already given each process its own rows.
    distribution.auto_shard_dataset = False
    return Plan("data_parallel", tuple(devices), len(devices), processes=jax.process_count(),
                process_id=jax.process_index(), distribution=distribution)


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None
