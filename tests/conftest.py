"""Shared fixtures: real small datasets and a quiet, deterministic Keras."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# XLA compiles JAX's random initializers once per weight shape. On CPU the partitionable threefry
# (JAX's default, built for sharded arrays) compiles several times slower than the classic one
# (docs/benchmarks.md); only the random bits differ. The variable reaches the processes tests start.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")
# XLA's compilations, kept on disk and shared by the test workers, the processes they start and later
# runs: the same initializers and train steps compile once (figures in docs/benchmarks.md §4).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "keras-pipeline", "jax"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' models are tiny: compiling them takes XLA far longer than running them, and LLVM's
# optimisations only lengthen the compile.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import pytest


def pytest_collection_modifyitems(items):
    """Modules with slow tests first, for `pytest -n 2 --dist loadscope` (`make test`).

    `loadscope` sends each module to one worker, which builds its
    module-scoped fixtures (a trained model, a preprocessed dataset, three
    pipeline runs) once, not once per worker; taking the long modules first
    lets the workers finish together rather than one waiting on a long module
    picked up last.
    """
    slow_modules = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow_modules)


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield
    # Without the full garbage collection, which walks every object TensorFlow loaded; Python's own
    # collections still run.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(scope="session", autouse=True)
def _data_roots(tmp_path_factory):
    """Recipes and data files the tests write under pytest's temporary directory are inside the allowed roots."""
    from pipeline.config import ROOTS_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ROOTS_ENV, str(tmp_path_factory.getbasetemp()))
        yield


@pytest.fixture(scope="session")
def iris():
    """Iris as standardised float32 features and integer labels (real data, 150 rows)."""
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    return x, y.astype("int32")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8×8 digits as (n, 8, 8, 1) float32 in [0, 1] and integer labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[..., None] / 16.0).astype("float32"), d.target.astype("int32")


@pytest.fixture(scope="session")
def shared_datasets():
    """The directory of small real datasets shipped with the project."""
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def iris_preprocessed(tmp_path_factory):
    """Iris through the real ingest and Beam preprocess components, once per test module."""
    from tests.helpers import config_for, run_component, use_mlflow_store

    root = tmp_path_factory.mktemp("iris")
    use_mlflow_store(root)
    config = config_for()
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    return root


@pytest.fixture
def local_mlflow(tmp_path, monkeypatch):
    """An isolated SQLite MLflow store for one test."""
    import mlflow

    from tests.helpers import use_mlflow_store

    uri = use_mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
