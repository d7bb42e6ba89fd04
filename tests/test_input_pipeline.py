"""Streaming transformed splits from Parquet into `fit`: every row once per epoch, bounded memory, and it learns."""

import threading

import keras
import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.artifact_io import load_transformed, write_split
from components.input_pipeline import DevicePrefetch, ParquetBatches, fit_arrays, prefetch, should_stream
from tasks import get_task
from tests.helpers import config_for, run_component


class RowsTask:
    """Hands back the row ids a batch holds, so a test can see which rows `fit` would get."""

    @staticmethod
    def arrays(columns, transform):
        return columns["row"], columns["row"] % 3


@pytest.fixture
def split_dir(tmp_path):
    """1,000 rows in ten row groups of 100."""
    (tmp_path / "train").mkdir()
    pq.write_table(pa.table({"row": np.arange(1000)}), tmp_path / "train" / "part.parquet", row_group_size=100)
    return tmp_path / "train"


def epoch_rows(dataset: ParquetBatches) -> list[np.ndarray]:
    return [dataset[i][0] for i in range(len(dataset))]


def test_every_row_once_per_epoch_in_a_new_order(split_dir):
    dataset = ParquetBatches(split_dir, RowsTask(), {}, batch_size=32, seed=0, workers=1)
    first = epoch_rows(dataset)
    assert max(len(b) for b in first) == 32
    assert np.array_equal(np.sort(np.concatenate(first)), np.arange(1000))
    dataset.on_epoch_end()
    second = np.concatenate(epoch_rows(dataset))
    assert np.array_equal(np.sort(second), np.arange(1000))
    assert not np.array_equal(np.concatenate(first), second)
    # Rows are shuffled within a group and groups are visited in a random order.
    assert not np.array_equal(first[0], np.sort(first[0]))
    assert len({int(b.min()) // 100 for b in first[:3]} | {0}) > 1


def test_tf_dataset_yields_every_row_once_per_epoch_in_full_batches(split_dir):
    dataset = ParquetBatches(split_dir, RowsTask(), {}, batch_size=32, seed=0, workers=1).tf_dataset(chunk_rows=50)
    epochs = [np.concatenate([x.numpy() for x, _ in dataset]) for _ in range(2)]
    for rows in epochs:
        assert np.array_equal(np.sort(rows), np.arange(1000))
    assert not np.array_equal(epochs[0], epochs[1])
    assert [len(x) for x, _ in dataset] == [32] * 31 + [8]


def test_holds_at_most_workers_plus_read_ahead_plus_one_row_groups(split_dir):
    dataset = ParquetBatches(split_dir, RowsTask(), {}, batch_size=10, seed=0, workers=2, read_ahead=2)
    for i in range(len(dataset)):
        dataset[i]
        assert len(dataset._groups) <= 5


def test_unshuffled_split_reads_in_file_order(split_dir):
    dataset = ParquetBatches(split_dir, RowsTask(), {}, batch_size=64, shuffle=False, workers=1)
    assert np.array_equal(np.concatenate(epoch_rows(dataset)), np.arange(1000))


def test_splits_are_written_in_bounded_row_groups(tmp_path, monkeypatch):
    from components import artifact_io

    monkeypatch.setattr(artifact_io, "ROW_GROUP_BYTES", 2**20)
    rows = 12 * 2**20 // 64  # twelve row groups of 8 int64 columns
    table = pa.table({f"c{i}": np.random.default_rng(i).integers(0, 2**40, rows) for i in range(8)})
    write_split(table, tmp_path / "data.parquet")
    metadata = pq.ParquetFile(tmp_path / "data.parquet").metadata
    assert metadata.num_rows == rows and metadata.num_row_groups == 12


def test_auto_streams_what_would_not_fit_as_arrays(split_dir):
    class OneHotTask:
        """1,000 rows of 1,000 float32 one-hot columns: 4 MB as arrays from 8 kB of Parquet."""

        @staticmethod
        def arrays(columns, transform):
            return np.eye(1000, dtype="float32")[columns["row"] % 1000], columns["row"] % 3

    assert should_stream("auto", split_dir, OneHotTask(), {}, above_mib=2)
    assert not should_stream("auto", split_dir, RowsTask(), {}, above_mib=2)
    assert should_stream("stream", split_dir, RowsTask(), {}, above_mib=2)
    assert not should_stream("memory", split_dir, OneHotTask(), {}, above_mib=0)


def test_streamed_training_learns_iris(iris_preprocessed, tmp_path, local_mlflow):
    config = config_for(epochs=60, **{"train.input": "stream"})
    inputs = {"ingest": iris_preprocessed / "ingest", "preprocess": iris_preprocessed / "preprocess"}
    run_component("train", config, inputs, tmp_path / "train")
    params = mlflow.search_runs(filter_string="attributes.run_name = 'train'").iloc[0]
    assert params["params.input"] == "stream"
    import keras

    x, y, _ = load_transformed(iris_preprocessed / "preprocess", "test", get_task(config.task))
    model = keras.saving.load_model(tmp_path / "train" / "model.keras")
    accuracy = float((np.asarray(model.predict(x, verbose=0)).argmax(-1) == y).mean())
    assert accuracy >= 0.9


def test_arrays_fit_validates_on_every_eval_row_each_epoch():
    """The eval split's batches (the partial last one too) are what `evaluate` on the arrays sees."""
    import keras
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    train, held_out = order[:127], order[127:]  # 23 eval rows: a batch of 16 and one of 7
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(**fit_arrays(x[train], y[train], (x[held_out], y[held_out]), 16), epochs=3, verbose=0)
    loss, accuracy = model.evaluate(x[held_out], y[held_out], batch_size=16, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(loss, rel=1e-5)
    assert history.history["val_accuracy"][-1] == pytest.approx(accuracy) and accuracy >= 0.8
    assert len(set(history.history["val_loss"])) == 3  # evaluated again after every epoch


# ---- device prefetch ------------------------------------------------------


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "device-prefetch" and t.is_alive()]


def numbered_batches(count: int, log: list[str] | None = None):
    try:
        for i in range(count):
            yield np.full((4, 3), i, "uint8"), np.arange(4) + 4 * i
    finally:
        if log is not None:
            log.append("closed")


def test_prefetch_yields_the_same_batches_in_order_on_the_device():
    batches = list(prefetch(numbered_batches(7)))
    assert [int(x[0, 0]) for x, _ in batches] == list(range(7))
    for (x, y), (want_x, want_y) in zip(batches, numbered_batches(7)):
        np.testing.assert_array_equal(np.asarray(x), want_x)
        np.testing.assert_array_equal(np.asarray(y), want_y)
    if keras.backend.backend() == "jax":
        import jax

        assert all(isinstance(a, jax.Array) for a in keras.tree.flatten(batches))
    assert not prefetch_threads()  # ended with the source


def test_prefetch_raises_the_producers_exception_at_its_batch():
    def failing():
        yield from numbered_batches(3)
        raise ValueError("row group 3 is corrupt")

    seen = []
    with pytest.raises(ValueError, match="row group 3 is corrupt"):
        for x, _ in prefetch(failing(), ahead=2):
            seen.append(int(x[0, 0]))
    assert seen == [0, 1, 2] and not prefetch_threads()


def test_prefetch_stops_its_thread_when_the_consumer_stops_early():
    log: list[str] = []
    made = []

    def put(batch):
        made.append(int(batch[0][0, 0]))
        return batch

    batches = prefetch(numbered_batches(10**6, log), ahead=2, put=put)
    assert [int(next(batches)[0][0, 0]) for _ in range(3)] == [0, 1, 2]
    assert len(prefetch_threads()) == 1
    batches.close()
    assert not prefetch_threads() and log == ["closed"]
    assert max(made) <= 2 + 3  # at most `ahead` queued and one in the making past what was taken


def test_device_prefetch_hands_fit_the_streams_batches_each_epoch(split_dir):
    plain = ParquetBatches(split_dir, RowsTask(), {}, batch_size=32, seed=0, workers=1)
    prefetched = DevicePrefetch(ParquetBatches(split_dir, RowsTask(), {}, batch_size=32, seed=0, workers=1))
    for _ in range(2):
        got = [np.asarray(prefetched[i][0]) for i in range(len(prefetched))]
        want = epoch_rows(plain)
        assert len(got) == len(want) == 40 and all(np.array_equal(a, b) for a, b in zip(got, want))
        prefetched.on_epoch_end()
        plain.on_epoch_end()
        assert not prefetch_threads()
    # Out of order (Keras peeking at the first batch) starts again from the index asked for.
    np.testing.assert_array_equal(np.asarray(prefetched[5][0]), plain[5][0])
    np.testing.assert_array_equal(np.asarray(prefetched[0][0]), plain[0][0])
    prefetched.stop()
    assert not prefetch_threads()
