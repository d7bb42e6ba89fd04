"""Image classification: one image (height × width × channels) per row, one class label.

Sources give images either as a column of arrays (TFDS's `image` feature)
or as flat pixel columns in row-major, channels-last order
(`sklearn:digits`), which the `pixel_shape` option reshapes; ingest turns
both into one fixed-size list column (uint8 when every pixel is a whole
number in 0..255, else float32) whose shape is in the schema and in the
Arrow field's metadata.

The transform resizes to `image_size` with the same Keras `Resizing`
layer the serving model holds (rounding back to whole uint8 values) and
writes each image's pixels as one fixed-size binary value: uint8 bytes,
or float32 bytes for float sources. The Beam analyzer computes each
channel's mean and variance over every stored pixel of the train split,
by merging per-batch moments with Chan et al.'s parallel update. The
standardisation runs in the model: the trained model starts with a
`Normalization` layer holding those statistics, so batches travel to the
device as stored pixels, and the serving model is raw images → the
transform's resize → the trained model.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from data.sources import RawData, SourceError
from keras_models.specs import InputSpec, OutputSpec
from tasks.analyzers import Analyzer, count_values, empty_moments, merge_moments, moments_of, variance
from tasks.classification import ClassificationTask, encode_labels, label_array, label_schema, label_spec

if TYPE_CHECKING:
    import keras

MISTAKES_SHOWN = 36  # a 6 × 6 grid
ATTENTION_IMAGES = 4


def _numeric_array(value) -> np.ndarray:
    """Nested lists or arrays of arrays (as Parquet list columns read back) → one array."""
    array = np.asarray(value)
    if array.dtype == object and array.ndim:
        array = np.stack([_numeric_array(v) for v in array])
    return array


def as_image(value, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    """One row's image as an `(H, W, C)` array; 2-D images get one channel, flat ones take `shape`."""
    try:
        image = _numeric_array(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: the image is not a rectangular array of numbers: {str(value)[:60]!r}.") from None
    if image.dtype == object or not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise ValueError(f"{where}: the image is not an array of numbers (dtype {image.dtype}).")
    if image.ndim == 2:
        image = image[..., None]
    if shape is not None and image.ndim == 1 and image.size == math.prod(shape):
        image = image.reshape(shape)
    if image.ndim != 3:
        hint = "; set task.pixel_shape to reshape flat images" if image.ndim == 1 and shape is None else ""
        raise ValueError(f"{where}: an image must be (height, width[, channels]), got shape {image.shape}{hint}.")
    if shape is not None and image.shape != tuple(shape):
        raise ValueError(f"{where}: image has shape {image.shape}, expected {tuple(shape)}.")
    return image


def stack_images(values: pd.Series, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    """A column of images as one `(N, H, W, C)` array; every row must have the first row's shape."""
    images = []
    for index, value in values.items():
        image = as_image(value, shape, f"{where}, row {index}")
        shape = shape or image.shape
        images.append(image)
    if not images:
        return np.zeros((0, *(shape or (0, 0, 0))), "float32")
    stacked = np.stack(images)
    if np.issubdtype(stacked.dtype, np.floating) and not np.isfinite(stacked).all():
        row = values.index[int(np.flatnonzero(~np.isfinite(stacked).reshape(len(stacked), -1).all(1))[0])]
        raise ValueError(f"{where}, row {row}: the image has missing or infinite pixel values.")
    return stacked


def fits_uint8(images: np.ndarray) -> np.ndarray:
    """Per image: whether every pixel is a whole number in 0..255, so uint8 stores it exactly."""
    flat = images.reshape(len(images), -1)
    return ((flat >= 0) & (flat <= 255) & (flat == np.round(flat))).all(1)


def arrow_images(column: pa.ChunkedArray | pa.Array, shape: list[int], where: str) -> np.ndarray:
    """A (fixed-size) list column of flattened images → `(N, H, W, C)`."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    if values.size != len(column) * math.prod(shape):
        raise ValueError(f"{where}: {len(column)} images hold {values.size} pixels; expected shape {shape} each.")
    return values.reshape(len(column), *shape)


def resize(images: np.ndarray, size: list[int] | None) -> np.ndarray:
    """Bilinear resize with the Keras layer the serving model holds, so both compute the same pixels."""
    images = np.asarray(images, "float32")
    if size is None or list(images.shape[1:3]) == list(size):
        return images
    import keras

    return keras.ops.convert_to_numpy(keras.layers.Resizing(*size)(images))


def pixels(images: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Raw images → the pixels a transformed split stores: resized, and rounded to uint8 when the source is uint8."""
    images = np.asarray(images)
    if list(images.shape[1:3]) == list(spec["size"]) and images.dtype == spec["dtype"]:
        return images
    images = resize(images, spec["size"])
    if spec["dtype"] == "uint8":
        return np.clip(np.round(images), 0, 255).astype("uint8")
    return images


def binary_column(images: np.ndarray) -> pa.Array:
    """`(N, ...)` pixels → one fixed-size binary value per image, its bytes in C order (no copy)."""
    images = np.ascontiguousarray(images)
    width = images[0].nbytes if len(images) else math.prod(images.shape[1:]) * images.itemsize
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(images), [None, pa.py_buffer(images)])


def decode_pixels(rows: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """A transformed split's image column (`(N, bytes)` uint8, as `table_columns` reads it) → `(N, H, W, C)`."""
    shape = (*spec["size"], spec["shape"][-1])
    return np.asarray(rows).view(spec["dtype"]).reshape(-1, *shape)


def normalise(images: np.ndarray, mean: list[float], variance: list[float]) -> np.ndarray:
    """Per-channel standardisation, in float32 and with Keras `Normalization`'s floor on the deviation."""
    import keras

    mean32 = np.asarray(mean, "float32")
    std32 = np.maximum(np.sqrt(np.asarray(variance, "float32")), np.float32(keras.config.epsilon()))
    return ((np.asarray(images, "float32") - mean32) / std32).astype("float32")


def preprocess(images: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Raw images → the zoo network's inputs: the stored pixels, standardised with the train statistics."""
    return normalise(pixels(images, spec), spec["mean"], spec["variance"])


class AnalyzeFn(Analyzer):
    """Per-channel pixel moments and label counts over Arrow batches of the train split."""

    def __init__(self, column: str, shape: list[int], size: list[int] | None, label: str, dtype: str = "float32"):
        self.column, self.shape, self.size, self.label, self.dtype = column, shape, size, label, dtype

    def create_accumulator(self):
        channels = self.shape[-1]
        return {**empty_moments((channels,)), "labels": Counter()}

    def add_input(self, acc, batch: pa.Table):
        images = arrow_images(batch.column(self.column), self.shape, "train split")
        values = pixels(images, {"size": self.size or self.shape[:2], "dtype": self.dtype})
        return self.merge(acc, {**moments_of(values.reshape(-1, self.shape[-1])),
                                "labels": count_values(batch.column(self.label))})

    def merge(self, acc, other):
        acc = merge_moments(acc, other)
        acc["labels"].update(other["labels"])
        return acc


def pixel_model(network: keras.Model, spec: dict[str, Any], augmentation=()) -> keras.Model:
    """Stored pixels → per-channel `Normalization` (float32, train statistics) → `augmentation` → `network`.

    The model trains and serves on the pixels a transformed split stores,
    so batches reach the device as uint8 and are standardised there.
    """
    import keras

    inputs = keras.Input((*spec["size"], spec["shape"][-1]), name=spec["name"], dtype=spec["dtype"])
    x = keras.layers.Normalization(axis=-1, mean=spec["mean"], variance=spec["variance"], name="normalize",
                                   dtype="float32")(inputs)
    if augmentation:
        x = keras.Sequential(list(augmentation), name="augmentation")(x)
    return keras.Model(inputs, network(x), name=f"{network.name}_on_pixels")


def build_serving_model(model: keras.Model, transform: dict[str, Any]) -> keras.Model:
    """Raw images `(H, W, C)` → the stored pixels (`Resizing` when resized, rounding to 0..255 for uint8) → `model`.

    `model` is the trained model, which takes stored pixels (`pixel_model`).
    Both layers compute in float32 whatever the global policy, as Beam does.
    """
    import keras

    from tasks.layers import RoundPixels

    spec = transform["image"]
    inputs = keras.Input(shape=tuple(spec["shape"]), name=spec["name"], dtype="float32")
    x = inputs
    if list(spec["size"]) != list(spec["shape"][:2]):
        x = keras.layers.Resizing(*spec["size"], name="resize", dtype="float32")(x)
    if spec["dtype"] == "uint8":
        x = RoundPixels(name="round_pixels", dtype="float32")(x)
    return keras.Model(inputs, model(x), name=f"serving_{model.name}")


def raw_inputs(frame: pd.DataFrame, transform: dict[str, Any]) -> np.ndarray:
    """Rows holding an image column (arrays, flat or shaped, or lists) or the source's pixel columns → `(N, H, W, C)`."""
    spec = transform["image"]
    shape = tuple(spec["shape"])
    if spec["name"] in frame.columns:
        images = stack_images(frame[spec["name"]], shape, f"input column {spec['name']!r}")
    elif spec["pixel_columns"] and set(spec["pixel_columns"]) <= set(frame.columns):
        try:
            pixels = frame[spec["pixel_columns"]].to_numpy("float32")
        except (TypeError, ValueError) as e:
            raise ValueError(f"Input pixel columns must be numbers: {e}") from None
        images = pixels.reshape(len(frame), *shape)
    else:
        also = f" or its {len(spec['pixel_columns'])} pixel columns" if spec["pixel_columns"] else ""
        raise ValueError(f"Input rows lack the image column {spec['name']!r}{also}; columns: {list(frame.columns)}.")
    return images.astype("float32")


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image scaled to [0, 1] for `imshow`: RGB from three or more channels, else the first in grey."""
    image = np.asarray(image, "float32")
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
    return (image[..., :3], None) if image.shape[-1] >= 3 else (image[..., 0], "gray")


def save_mistakes_grid(images, y_true, y_pred, classes: list[str], path: Path, title: str) -> Path:
    """The first misclassified images in a grid, each titled with its true and predicted class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))[:MISTAKES_SHOWN]
    columns = max(1, min(6, len(wrong)))
    rows = max(1, math.ceil(len(wrong) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.8 * columns + 0.4, 2.0 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        shown, cmap = _display(images[i])
        ax.imshow(shown, cmap=cmap)
        ax.set_title(f"true {classes[y_true[i]]}\npred {classes[y_pred[i]]}", fontsize=8)
    if not len(wrong):
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    total = int((np.asarray(y_true) != np.asarray(y_pred)).sum())
    first = f", the first {len(wrong)} shown" if total > len(wrong) else ""
    fig.suptitle(f"{title}: {total} of {len(y_true)} misclassified{first}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def find_layer(model: keras.Model, name: str):
    """The layer called `name` in `model` or in the models nested in it (the zoo network behind the wrappers)."""
    import keras

    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model) and (found := find_layer(layer, name)) is not None:
            return found
    return None


def attention_plots(network, images, y_true, y_pred, spec: dict[str, Any], output: Path) -> list[Path]:
    """ViT attention rollout over the first misclassified and the first correct test images."""
    from keras_models.architectures.vit import attention_rollout
    from keras_models.plots import save_attention_png

    wrong = np.flatnonzero(y_true != y_pred)[: ATTENTION_IMAGES // 2]
    right = np.flatnonzero(y_true == y_pred)[: ATTENTION_IMAGES - len(wrong)]
    rows = np.concatenate([wrong, right]).astype(int)
    inputs = preprocess(images[rows], spec)
    rollout = attention_rollout(network, inputs)
    return [Path(save_attention_png(image, relevance, output / f"vit_attention_test_row{row}.png"))
            for row, image, relevance in zip(rows, inputs, rollout)]


class ImageClassification(ClassificationTask):
    name = "image_classification"

    # ---- ingest ---------------------------------------------------------

    def _pixel_columns(self, raw: RawData) -> list[str] | None:
        """The flat pixel columns when the source has no image column, checked against `pixel_shape`."""
        column = self.options.image_column
        if column in raw.frame.columns:
            return None
        pixels = [c for c in raw.frame.columns if c != raw.label]
        shape = self.options.pixel_shape
        if shape is None:
            side = math.isqrt(len(pixels))
            hint = f", e.g. [{side}, {side}, 1]" if side * side == len(pixels) else ""
            raise SourceError(
                f"{raw.origin}: no image column {column!r} (task.image_column); to read its {len(pixels)} "
                f"other columns as flat pixels set task.pixel_shape to [height, width, channels]{hint}."
            )
        if len(pixels) != math.prod(shape):
            raise SourceError(
                f"{raw.origin}: task.pixel_shape {list(shape)} needs {math.prod(shape)} pixel columns; "
                f"the source has {len(pixels)} besides the label {raw.label!r}."
            )
        text = [c for c in pixels if not pd.api.types.is_numeric_dtype(raw.frame[c])]
        if text:
            raise SourceError(f"{raw.origin}: pixel column(s) {text[:5]} are not numeric.")
        return pixels

    def _with_images(self, frame: pd.DataFrame, label: str, pixels: list[str] | None, where: str) -> pd.DataFrame:
        """A split with one image column of `(H, W, C)` arrays and the label as the source has it."""
        column, shape = self.options.image_column, self.options.pixel_shape
        if pixels is None:
            images = stack_images(frame[column], shape, f"{where}, column {column!r}")
        else:
            images = frame[pixels].to_numpy().reshape(len(frame), *shape)
            bad = ~np.isfinite(images.astype("float64")).reshape(len(frame), -1).all(1)
            if bad.any():
                raise SourceError(f"{where}, row {frame.index[np.flatnonzero(bad)[0]]}: missing pixel values.")
        return pd.DataFrame({column: list(images), label: frame[label].to_numpy()}, index=frame.index)

    def read_splits(self, data, seed: int):
        raw, splits = super().read_splits(data, seed)
        pixels = self._pixel_columns(raw)
        origins = {name: data.source for name in splits}
        if data.test_source is not None:
            origins["test"] = data.test_source
        return raw, {
            name: self._with_images(frame, raw.label, pixels, f"{origins[name]} ({name} split)")
            for name, frame in splits.items()
        }

    def schema(self, train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
        column = self.options.image_column
        images = stack_images(train[column], self.options.pixel_shape, f"{raw.origin} (train split)")
        dtype = "uint8" if fits_uint8(images).all() else "float32"
        return {
            "image": {"name": column, "shape": list(images.shape[1:]), "dtype": dtype,
                      "pixel_columns": self._pixel_columns(raw)},
            "label": label_schema(train, raw),
        }

    def to_arrow(self, frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        spec = schema["image"]
        images = stack_images(frame[spec["name"]], tuple(spec["shape"]), f"column {spec['name']!r}")
        if spec["dtype"] == "uint8" and not fits_uint8(images).all():
            row = frame.index[int(np.flatnonzero(~fits_uint8(images))[0])]
            raise ValueError(
                f"Row {row}, column {spec['name']!r}: pixel values outside whole numbers 0..255, while the "
                "train split's images are uint8; make every split's pixels the same kind."
            )
        size = math.prod(spec["shape"])
        flat = pa.array(images.reshape(-1).astype(spec["dtype"]))
        column = pa.FixedSizeListArray.from_arrays(flat, size)
        label = schema["label"]["name"]
        fields = [
            pa.field(spec["name"], column.type, metadata={"shape": json.dumps(spec["shape"])}),
            pa.field(label, pa.string()),
        ]
        return pa.Table.from_arrays([column, label_array(frame, schema["label"])], schema=pa.schema(fields))

    # ---- preprocess -----------------------------------------------------

    def _size(self, schema: dict[str, Any]) -> list[int]:
        return list(self.options.image_size or schema["image"]["shape"][:2])

    def analyzer(self, schema, settings):
        spec = schema["image"]
        return AnalyzeFn(spec["name"], spec["shape"], self._size(schema), schema["label"]["name"], spec["dtype"])

    def finalize(self, acc, schema, settings) -> dict[str, Any]:
        if not np.any(acc["count"]):
            raise ValueError("The train split has no images to compute pixel statistics from.")
        return {
            "image": {
                **schema["image"],
                "size": self._size(schema),
                "mean": acc["mean"].tolist(),
                "variance": variance(acc).tolist(),
            },
            "label": label_spec(acc["labels"], schema["label"]),
            "num_train_rows": int(sum(acc["labels"].values())),
        }

    def transform_batch(self, batch, transform, split):
        spec = transform["image"]
        images = pixels(arrow_images(batch.column(spec["name"]), spec["shape"], f"{split} split"), spec)
        labels = encode_labels(batch, transform["label"], split)
        return pa.Table.from_arrays([binary_column(images), labels], schema=self.output_schema(transform))

    def output_schema(self, schema) -> pa.Schema:
        """The image as one fixed-size binary value of `height × width × channels` pixels (uint8 or float32)."""
        spec = schema["image"]
        height, width = self._size(schema)
        size = height * width * spec["shape"][-1] * np.dtype(spec["dtype"]).itemsize
        return pa.schema([
            pa.field(spec["name"], pa.binary(size), metadata={"shape": json.dumps([height, width, spec["shape"][-1]]),
                                                              "dtype": spec["dtype"]}),
            pa.field(schema["label"]["name"], pa.int64()),
        ])

    # ---- train ----------------------------------------------------------

    def augmentation(self) -> list[keras.layers.Layer]:
        """Random shifts, turns and zooms of training images, as the options bound them."""
        import keras

        options, layers = self.options, []
        if options.random_rotation:
            layers.append(keras.layers.RandomRotation(options.random_rotation, name="random_rotation"))
        if options.random_zoom:
            layers.append(keras.layers.RandomZoom(options.random_zoom, name="random_zoom"))
        if options.random_translation:
            layers.append(keras.layers.RandomTranslation(options.random_translation, options.random_translation,
                                                         name="random_translation"))
        return layers

    def build_model(self, model_name, transform, hparams, learning_rate):
        """The registry network behind the pixels' normalisation and the augmentation layers (`pixel_model`).

        The augmentation only acts in `fit`.
        """
        network = super().build_model(model_name, transform, hparams, learning_rate)
        model = pixel_model(network, transform["image"], self.augmentation())
        model.compile(optimizer=network.optimizer, **self.compile_args(transform))
        return model

    def specs(self, transform):
        spec = transform["image"]
        shape = (*spec["size"], spec["shape"][-1])
        return InputSpec(shape), OutputSpec("classification", len(transform["label"]["classes"]))

    def arrays(self, columns, transform):
        """The stored pixels, uint8 (or float32) `(N, H, W, C)` viewing the column's bytes, and the labels."""
        x = decode_pixels(columns[transform["image"]["name"]], transform["image"])
        return x, np.asarray(columns[transform["label"]["name"]], "int32")

    def serving_example(self, train, transform):
        """Flat float64 pixel lists: MLflow's signature has array columns of numbers, not uint8 or 3-D arrays."""
        name = transform["image"]["name"]
        images = raw_inputs(train.head(5), transform).astype("float64")
        return pd.DataFrame({name: list(images.reshape(len(images), -1))})

    def serving_model(self, network, transform):
        return build_serving_model(network, transform)

    def raw_inputs(self, frame, transform):
        return raw_inputs(frame, transform)

    # ---- evaluate -------------------------------------------------------

    def extra_metrics(self, y_true, probabilities):
        """Top-k accuracy (k = `top_k`), when k is below the number of classes."""
        from sklearn.metrics import top_k_accuracy_score

        k, classes = self.options.top_k, probabilities.shape[1]
        if k >= classes:
            return {}
        scores = probabilities[:, 1] if classes == 2 else probabilities
        return {f"top_{k}_accuracy": float(top_k_accuracy_score(y_true, scores, k=k, labels=np.arange(classes)))}

    def extra_plots(self, predictor, test, y_true, y_pred, output: Path, config) -> list[Path]:
        """The misclassified test images; for ViT also the attention rollout of a few test images."""
        transform = predictor.transform
        images = raw_inputs(test, transform)
        title = f"{config.model.name} on {config.name} (test)"
        plots = [save_mistakes_grid(images, y_true, y_pred, transform["label"]["classes"], output / "mistakes.png",
                                    title)]
        if config.model.name == "vit":
            plots += attention_plots(find_layer(predictor.model, "vit"), images, y_true, y_pred, transform["image"],
                                     output)
        return plots


TASK = ImageClassification
