"""Transformed splits streamed from Parquet into `fit`, a few row groups in memory at a time.

Ingest and preprocess write splits in row groups of about 64 MiB, so a row
group is the unit of reading and of memory. `ParquetBatches` is a
`keras.utils.PyDataset`: each epoch it visits the row groups in a new random
order and the rows of each group in a new random order, cuts them into
batches, and converts each batch with the task's `arrays` (images are
fixed-size binary columns, viewed as uint8 arrays without a copy). Decoding
a row group is the costly part (Parquet's nested lists, as token ids are
stored, decode at about 0.5 GB/s), so reader threads decode the next
`read_ahead` groups of the epoch while batches are cut from the current
one. On the TensorFlow backend, `streamed` hands `tf.data` chunks of rows
instead, and `tf.data` cuts and prefetches the batches in C++; on JAX,
`DevicePrefetch` cuts the batches on a thread and puts them on the device
two ahead of the step that uses them (`bench/input_pipeline.py` measures
both against preloaded arrays). Its
memory is bounded by `workers + read_ahead + 1` row groups, whatever the
split's size. `train.input` picks it
(`stream`) or the whole split as arrays (`memory`); `auto` streams a split
whose arrays would take more than `train.stream_above_mib`.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.artifact_io import table_columns
from data.splits import split_files


def array_bytes(split_dir: Path, task, transform: dict[str, Any], sample_rows: int = 256) -> int:
    """What the whole split would take as `fit` arrays, from the task's arrays of its first rows.

    Parquet's size says little: a tabular split's one-hot features or an
    image split's float pixels can be tens of times larger in memory.
    """
    files = split_files(split_dir)
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    first = next(pq.ParquetFile(files[0]).iter_batches(batch_size=sample_rows), None)
    if first is None or not first.num_rows:
        return 0
    sample = task.arrays(table_columns(pa.Table.from_batches([first])), transform)
    return int(sum(np.asarray(a).nbytes for a in keras.tree.flatten(sample)) / first.num_rows * rows)


def should_stream(choice: str, split_dir: Path, task, transform: dict[str, Any], above_mib: float) -> bool:
    return choice == "stream" or (
        choice == "auto" and array_bytes(split_dir, task, transform) > above_mib * 2**20
    )


class ParquetBatches(keras.utils.PyDataset):
    """Shuffled batches `(x, y)` of a transformed split, read one row group at a time.

    Pass `shuffle=False` to `fit`: this dataset shuffles rows itself, and
    Keras's shuffling of batch indices would make every batch read a
    different row group.
    """

    def __init__(self, split_dir: Path, task, transform: dict[str, Any], batch_size: int, *,
                 shuffle: bool = True, seed: int = 0, workers: int = 1, read_ahead: int = 4,
                 max_queue_size: int = 16):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.task, self.transform, self.batch_size = task, transform, batch_size
        self.shuffle, self.seed, self.epoch, self.read_ahead = shuffle, seed, 0, read_ahead
        self.groups: list[tuple[Path, int, int]] = []
        for path in split_files(split_dir):
            metadata = pq.ParquetFile(path).metadata
            self.groups += [(path, i, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups)]
        self.num_rows = sum(rows for *_, rows in self.groups)
        self._reader = ThreadPoolExecutor(max(1, read_ahead), thread_name_prefix="parquet-batches")
        self._groups: OrderedDict[int, Future] = OrderedDict()
        self._lock = threading.Lock()
        self._plan_epoch()

    def _plan_epoch(self) -> None:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.groups)) if self.shuffle \
            else range(len(self.groups))
        self.group_order = [int(g) for g in order]
        self._position = {g: i for i, g in enumerate(self.group_order)}
        self.batches = [(g, start) for g in self.group_order for start in range(0, self.groups[g][2], self.batch_size)]
        with self._lock:
            self._groups.clear()

    def _read(self, index: int, epoch: int) -> pa.Table:
        """A row group, its rows in the epoch's order (on a reader thread)."""
        path, group, rows = self.groups[index]
        table = pq.ParquetFile(path).read_row_group(group)
        return table.take(np.random.default_rng([self.seed, epoch, index]).permutation(rows)) if self.shuffle \
            else table

    def _group(self, index: int) -> pa.Table:
        """The row group `index`; starts reading the `read_ahead` groups after it in this epoch's order."""
        with self._lock:
            position = self._position[index]
            for following in self.group_order[position:position + self.read_ahead + 1]:
                if following not in self._groups:
                    self._groups[following] = self._reader.submit(self._read, following, self.epoch)
            while len(self._groups) > self.workers + self.read_ahead + 1:
                self._groups.popitem(last=False)
            pending = self._groups.get(index) or self._reader.submit(self._read, index, self.epoch)
        return pending.result()

    def __len__(self) -> int:
        return len(self.batches)

    def _arrays(self, group: int, start: int, count: int):
        """The task's `(x, y)` of `count` rows of a row group, from `start` in this epoch's order."""
        return self.task.arrays(table_columns(self._group(group).slice(start, count)), self.transform)

    def __getitem__(self, index: int):
        group, start = self.batches[index]
        return self._arrays(group, start, self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._plan_epoch()

    def tf_dataset(self, chunk_rows: int = 4096):
        """The same rows as a `tf.data.Dataset`: Python hands over chunks, `tf.data` cuts the batches.

        One Python call per chunk instead of per batch keeps the training
        loop from waiting on the GIL; each pass over the dataset is one epoch,
        in a new order. Memory holds a few chunks besides the row groups.
        """
        import tensorflow as tf

        x, y = self[0]
        signature = keras.tree.map_structure(
            lambda a: tf.TensorSpec((None, *np.shape(a)[1:]), tf.as_dtype(np.asarray(a).dtype)), (x, y)
        )

        def chunks():
            for group in dict.fromkeys(g for g, _ in self.batches):
                for start in range(0, self.groups[group][2], chunk_rows):
                    yield self._arrays(group, start, chunk_rows)
            self.on_epoch_end()

        dataset = tf.data.Dataset.from_generator(chunks, output_signature=signature)
        return dataset.unbatch().batch(self.batch_size).prefetch(tf.data.AUTOTUNE)


_END = object()


def device_put(batch):
    """`batch` on the default device: `jax.device_put` on the JAX backend (unless a distribution lays it out)."""
    if keras.backend.backend() != "jax" or keras.distribution.distribution() is not None:
        return batch
    import jax

    return jax.device_put(batch)


def prefetch(batches: Iterable, ahead: int = 2, put: Callable = device_put) -> Iterator:
    """`put(batch)` for each of `batches`, in order, computed on a thread up to `ahead` batches early.

    The thread holds at most `ahead` finished batches and the one it is
    making. An exception in the thread is raised here, at the batch it
    replaced; closing this generator (or dropping it) stops the thread and
    closes `batches`.
    """
    slots: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        iterator = iter(batches)
        try:
            for batch in iterator:
                if not offer((put(batch), None)):
                    return
            offer((_END, None))
        except BaseException as error:  # handed to the consumer, which raises it
            offer((None, error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="device-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            batch, error = slots.get()
            if error is not None:
                raise error
            if batch is _END:
                return
            yield batch
    finally:
        stop.set()
        thread.join()


class DevicePrefetch(keras.utils.PyDataset):
    """A `PyDataset`'s batches, made on a thread and put on the device `ahead` batches before `fit` asks.

    Keras asks a one-worker `PyDataset` for its batches in order, on the
    training loop's thread; here that thread only takes the next batch,
    already on the device. Asking out of order starts again from the index
    asked for; each epoch's end stops the thread before `dataset` plans its
    next epoch.
    """

    def __init__(self, dataset: keras.utils.PyDataset, ahead: int = 2):
        super().__init__(workers=1, use_multiprocessing=False)
        self.dataset, self.ahead = dataset, ahead
        self._batches: Iterator | None = None
        self._next: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index != self._next:
            self.stop()
            self._batches = prefetch((self.dataset[i] for i in range(index, len(self.dataset))), self.ahead)
        self._next = index + 1
        return next(self._batches)

    def stop(self) -> None:
        """Stops the thread and drops the batches it made ahead."""
        if self._batches is not None:
            self._batches.close()
        self._batches, self._next = None, None

    def on_epoch_end(self) -> None:
        self.stop()
        self.dataset.on_epoch_end()


def streamed(split_dir: Path, task, transform: dict[str, Any], batch_size: int, *, shuffle: bool, seed: int = 0):
    """What `fit` streams a split from: `tf.data` on TensorFlow, `DevicePrefetch` on JAX, else a `PyDataset`."""
    batches = ParquetBatches(split_dir, task, transform, batch_size, shuffle=shuffle, seed=seed)
    if keras.backend.backend() == "tensorflow":
        return batches.tf_dataset()
    return DevicePrefetch(batches) if keras.backend.backend() == "jax" else batches


def fit_arrays(x, y, validation: tuple[Any, Any], batch_size: int, *, seed: int = 0) -> dict[str, Any]:
    """`fit`'s data arguments for whole splits held as arrays: the same batches, one iterator.

    On TensorFlow, Keras makes a new `tf.data` iterator over `fit`'s data
    every epoch, which costs more than a small split's epoch, and far more
    under `MirroredStrategy` (docs/benchmarks.md §2). Here the train split is an
    endless stream with `steps_per_epoch`, so Keras keeps one iterator for the
    whole fit. Each pass reshuffles the rows, as `fit(shuffle=True)` does,
    without a second copy of them (the shuffled things are row indices), and
    ends with the same partial batch. Evaluation starts again every epoch
    whatever it is given, so the eval split is the plainest pipeline to
    restart, its batches in order (`bench/validation_restart.py` compares it
    with the arrays Keras wraps itself).
    """
    if keras.backend.backend() != "tensorflow":
        return {"x": x, "y": y, "validation_data": validation, "batch_size": batch_size}
    import tensorflow as tf

    tensors = keras.tree.map_structure(tf.convert_to_tensor, (x, y))
    rows = int(keras.tree.flatten(tensors)[0].shape[0])
    indices = tf.data.Dataset.range(rows).shuffle(rows, seed=seed, reshuffle_each_iteration=True)
    batches = indices.batch(batch_size).repeat().map(
        lambda index: keras.tree.map_structure(lambda t: tf.gather(t, index), tensors),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    validation_batches = tf.data.Dataset.from_tensor_slices(validation).batch(batch_size)
    return {"x": batches.prefetch(tf.data.AUTOTUNE), "steps_per_epoch": -(-rows // batch_size), "shuffle": False,
            "validation_data": validation_batches}
