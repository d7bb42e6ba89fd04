"""Image classification: the MNIST TFDS builder, Beam pixel statistics, serving without skew, and a real run."""

import gzip
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.artifact_io import load_transformed, read_columns, read_json, table_columns
from data.sources import SourceError, read_source
from data.splits import read_frame
from data.tfds_builders.mnist_subset import DATA_DIR, TEST_IMAGES, TEST_LABELS, TRAIN_CSV, read_idx
from pipeline.config import DataConfig
from tasks.image import (AnalyzeFn, ImageClassification, build_serving_model, normalise, pixel_model, pixels,
                         raw_inputs, resize)
from tasks.options import ImageClassificationOptions as ImageOptions
from tests.helpers import config_for, run_component, run_train, use_mlflow_store

# ---- data -----------------------------------------------------------------


def test_mnist_subset_builder_reads_the_shipped_files(tmp_path):
    test = read_source("tfds:mnist_subset/test", tfds_data_dir=str(tmp_path)).frame
    labels = read_idx(DATA_DIR / TEST_LABELS, "labels")
    assert len(test) == 10_000 and {i.shape for i in test["image"]} == {(28, 28, 1)}
    assert test["image"].iloc[0].dtype == np.uint8
    assert test["label"].value_counts().sort_index().tolist() == np.bincount(labels).tolist()
    # TFDS shuffles; every shipped image is there with its label.
    images = read_idx(DATA_DIR / TEST_IMAGES, "images")
    first = np.flatnonzero([np.array_equal(i[..., 0], images[0]) for i in test["image"]])
    assert first.size and test["label"].iloc[first[0]] == str(labels[0])

    train = read_source("tfds:mnist_subset/train", tfds_data_dir=str(tmp_path)).frame
    assert len(train) == 5_000 and set(train["label"].value_counts()) == {500}
    row = pd.read_csv(DATA_DIR / TRAIN_CSV, header=None, nrows=1).to_numpy()[0]
    match = [np.array_equal(i.ravel(), row[:-1]) for i in train["image"]]
    assert train["label"][match].tolist() == [str(row[-1])]
    with pytest.raises(SourceError, match="tfds:mnist_subset has no split 'validation'"):
        read_source("tfds:mnist_subset/validation", tfds_data_dir=str(tmp_path))


def test_idx_reader_names_a_bad_file(tmp_path):
    path = tmp_path / "labels.gz"
    with gzip.open(path, "wb") as f:
        f.write(np.array([2051, 3], ">u4").tobytes() + b"\x01\x02\x03")
    with pytest.raises(ValueError, match=r"labels\.gz: not an IDX labels file \(magic number \[2051\]"):
        read_idx(path, "labels")


def digits_data(**split) -> DataConfig:
    return DataConfig(source="sklearn:digits", label="label", **split)


def test_flat_pixel_columns_need_their_shape():
    task = ImageClassification(ImageOptions(type="image_classification"))
    with pytest.raises(SourceError, match=r"no image column 'image'.*64 other columns.*"
                                          r"task\.pixel_shape.*e\.g\. \[8, 8, 1\]"):
        task.read_splits(digits_data(), 0)
    task = ImageClassification(ImageOptions(type="image_classification", pixel_shape=(8, 4, 1)))
    with pytest.raises(SourceError, match=r"pixel_shape \[8, 4, 1\] needs 32 pixel columns; the source has 64"):
        task.read_splits(digits_data(), 0)


def test_pixel_columns_become_one_image_column():
    task = ImageClassification(ImageOptions(type="image_classification", pixel_shape=(8, 8, 1)))
    raw, splits = task.read_splits(digits_data(), 0)
    assert list(splits["train"].columns) == ["image", "label"]
    row = splits["test"].index[0]
    np.testing.assert_array_equal(splits["test"].loc[row, "image"][..., 0],
                                  raw.frame.drop(columns="label").loc[row].to_numpy().reshape(8, 8))
    schema = task.schema(splits["train"], raw)
    assert schema["image"]["shape"] == [8, 8, 1] and schema["image"]["dtype"] == "uint8"
    assert schema["label"]["classes"] == [str(d) for d in range(10)]


def test_bad_images_are_named_by_row(tmp_path):
    images = [list(range(64))] * 30
    images[7] = list(range(63))
    path = tmp_path / "images.parquet"
    pd.DataFrame({"image": images, "label": ["a", "b", "c"] * 10}).to_parquet(path)
    task = ImageClassification(ImageOptions(type="image_classification", pixel_shape=(8, 8, 1)))
    with pytest.raises(ValueError, match=r"images\.parquet \((train|eval|test) split\), column 'image', row 7: "
                                         r"an image must be \(height, width\[, channels\]\), got shape \(63,\)"):
        task.read_splits(DataConfig(source=str(path)), 0)
    frame = pd.DataFrame({"image": [np.full((2, 2), 0.5)] * 2, "label": ["a", "b"]})
    schema = {"image": {"name": "image", "shape": [2, 2, 1], "dtype": "uint8"}, "label": {"name": "label"}}
    with pytest.raises(ValueError, match=r"Row 0, column 'image': pixel values outside whole numbers 0\.\.255"):
        task.to_arrow(frame, schema)


# ---- preprocessing --------------------------------------------------------


def test_analyzer_merges_batches_exactly():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 5, 4, 3), dtype=np.uint8)
    images[:, :, :, 2] //= 7  # channels with different moments
    labels = np.array(["x", "y", "z"])[rng.integers(0, 3, 300)]
    column = pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 60)
    table = pa.table({"image": column, "label": labels})
    fn = AnalyzeFn("image", [5, 4, 3], [5, 4], "label")
    cuts = [0, 1, 50, 51, 170, 300]
    partials = [fn.add_input(fn.create_accumulator(), table.slice(a, b - a)) for a, b in zip(cuts, cuts[1:])]
    partials.append(fn.create_accumulator())  # an empty worker
    merged = fn.merge_accumulators([fn.merge_accumulators(partials[3:]), *partials[:3]])
    pixels = images.reshape(-1, 3).astype("float64")
    np.testing.assert_array_equal(merged["count"], 300 * 20)
    np.testing.assert_allclose(merged["mean"], pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged["m2"] / merged["count"], pixels.var(0), rtol=1e-12)
    assert merged["labels"] == dict(zip(*np.unique(labels, return_counts=True)))


def digits_transform(**image) -> dict:
    spec = {"name": "image", "shape": [8, 8, 1], "size": [8, 8], "dtype": "float32", "mean": [0.0], "variance": [1.0]}
    return {"image": {**spec, **image}, "label": {"name": "label", "classes": list("0123456789")}}


def test_augmentation_acts_only_in_training(digits):
    options = ImageOptions(type="image_classification", random_translation=0.2, random_rotation=0.1, random_zoom=0.2)
    transform = digits_transform()
    model = ImageClassification(options).build_model("lenet", transform, {}, 1e-3)
    augmentation = model.get_layer("augmentation")
    assert [layer.name for layer in augmentation.layers] == ["random_rotation", "random_zoom", "random_translation"]
    images = digits[0][:32]
    np.testing.assert_allclose(model.predict(images, verbose=0), model.get_layer("lenet").predict(images, verbose=0))
    assert np.abs(np.asarray(augmentation(images, training=True)) - images).max() > 0.1
    plain = ImageClassification(ImageOptions(type="image_classification")).build_model("lenet", transform, {}, 1e-3)
    assert [layer.name for layer in plain.layers] == ["image", "normalize", "lenet"]


def test_the_model_standardises_stored_pixels_with_the_train_statistics(digits):
    """uint8 pixels go in; the `Normalization` at the head holds Beam's mean and variance and runs in float32."""
    transform = digits_transform(dtype="uint8", mean=[5.0], variance=[36.0])
    model = ImageClassification(ImageOptions(type="image_classification")).build_model("lenet", transform, {}, 1e-3)
    assert model.inputs[0].dtype == "uint8"
    head = model.get_layer("normalize")
    np.testing.assert_allclose(np.ravel(head.mean), [5.0])
    np.testing.assert_allclose(np.ravel(head.variance), [36.0])
    assert head.dtype_policy.compute_dtype == "float32"
    images = np.round(digits[0][:16] * 16).astype("uint8")
    np.testing.assert_allclose(head(images), (images.astype("float32") - 5) / 6, atol=1e-6)
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               model.get_layer("lenet").predict(normalise(images, [5.0], [36.0]), verbose=0),
                               atol=1e-6)


def test_resized_images_are_stored_as_rounded_uint8_bytes():
    """Sources larger or smaller than `image_size` are resized in the transform and stored as whole pixels."""
    rng = np.random.default_rng(0)
    for source, size in (((10, 6, 3), [5, 3]), ((4, 4, 3), [7, 9])):
        images = rng.integers(0, 256, size=(6, *source), dtype=np.uint8)
        options = ImageOptions(type="image_classification", image_size=size)
        task = ImageClassification(options)
        schema = {"image": {"name": "image", "shape": list(source), "dtype": "uint8"}, "label": {"name": "label"}}
        transform = {"image": {**schema["image"], "size": size, "mean": [0.0] * 3, "variance": [1.0] * 3},
                     "label": {"name": "label", "classes": ["a", "b"]}}
        batch = pa.table({"image": pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), images[0].size),
                          "label": ["a", "b"] * 3})
        table = task.transform_batch(batch, transform, "train")
        assert table.schema == task.output_schema(schema)
        assert table.schema.field("image").type == pa.binary(size[0] * size[1] * 3)
        x, y = task.arrays(table_columns(table), transform)
        assert x.dtype == np.uint8 and x.shape == (6, *size, 3) and y.tolist() == [0, 1] * 3
        np.testing.assert_array_equal(x, pixels(images, transform["image"]))
        np.testing.assert_allclose(x, resize(images, size), atol=0.5 + 1e-4)


@pytest.fixture(scope="module")
def digits_artifacts(tmp_path_factory):
    """sklearn digits (8×8, upsampled to 32×32 as the recipe does) ingested and preprocessed on Beam."""
    root = tmp_path_factory.mktemp("digits")
    use_mlflow_store(root)
    config = config_for("digits_lenet", **{"epochs": 12, "learning_rate": 0.003, "output_dir": str(root)})
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    return root, config


def test_ingest_stores_images_as_fixed_size_lists(digits_artifacts):
    root, _ = digits_artifacts
    field = pq.read_schema(root / "ingest" / "train" / "data.parquet").field("image")
    assert field.type == pa.list_(pa.uint8(), 64) and json.loads(field.metadata[b"shape"]) == [8, 8, 1]
    schema = read_json(root / "ingest" / "schema.json")
    assert schema["image"]["pixel_columns"][:2] == ["pixel_0_0", "pixel_0_1"]
    assert pq.read_schema(root / "ingest" / "test" / "data.parquet").field("label").type == pa.string()


def test_transformed_images_are_fixed_size_binary_uint8(digits_artifacts):
    root, _ = digits_artifacts
    field = pq.read_schema(next((root / "preprocess" / "transformed" / "train").glob("*.parquet"))).field("image")
    assert field.type == pa.binary(32 * 32 * 1)
    assert json.loads(field.metadata[b"shape"]) == [32, 32, 1] and field.metadata[b"dtype"] == b"uint8"
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    x, _, _ = load_transformed(root / "preprocess", "test", ImageClassification(digits_options()))
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 1) and transform["image"]["dtype"] == "uint8"


def test_statistics_are_full_pass_over_train_only(digits_artifacts):
    root, _ = digits_artifacts
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    train = read_columns(root / "ingest" / "train")
    stored = pixels(train["image"].reshape(-1, 8, 8, 1), transform["image"]).astype("float64")
    assert transform["image"]["size"] == [32, 32]
    assert transform["image"]["mean"] == pytest.approx([stored.mean()], rel=1e-9)
    assert transform["image"]["variance"] == pytest.approx([stored.var()], rel=1e-9)
    assert transform["num_train_rows"] == len(train["label"])
    x, _, _ = load_transformed(root / "preprocess", "train", ImageClassification(digits_options()))
    np.testing.assert_array_equal(x, stored.astype("uint8"))
    standardised = np.asarray(pixel_model(identity((32, 32, 1)), transform["image"]).predict(x, verbose=0))
    assert abs(standardised.mean()) < 1e-4 and abs(standardised.std() - 1) < 1e-4


def identity(shape):
    import keras

    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Identity()(inputs), name="identity")


def digits_options() -> ImageOptions:
    return ImageOptions(type="image_classification", pixel_shape=(8, 8, 1), image_size=(32, 32), top_k=3)


def test_exported_preprocessing_matches_beam(digits_artifacts):
    """The serving model's Resizing and rounding give the pixels Beam stored, then the model standardises them."""
    root, _ = digits_artifacts
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    raw = read_frame(root / "ingest" / "test")
    beam, _, _ = load_transformed(root / "preprocess", "test", ImageClassification(digits_options()))
    expected = normalise(beam, transform["image"]["mean"], transform["image"]["variance"])
    serving = build_serving_model(pixel_model(identity((32, 32, 1)), transform["image"]), transform)
    served = serving.predict(raw_inputs(raw, transform), verbose=0)
    np.testing.assert_allclose(served, expected, atol=1e-5)

    # The source's own flat pixel columns serve as well as the ingested image column.
    flat = pd.DataFrame(np.stack(raw["image"]).astype("float64"), columns=transform["image"]["pixel_columns"])
    np.testing.assert_allclose(serving.predict(raw_inputs(flat, transform), verbose=0), expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"Input rows lack the image column 'image' or its 64 pixel columns"):
        raw_inputs(flat.drop(columns="pixel_3_3"), transform)


def test_serving_on_raw_images_predicts_what_the_trained_model_does(digits_artifacts, tmp_path):
    """The exported serving model (raw 8×8 images) against the trained model on the transformed split."""
    import keras

    import tasks.layers  # noqa: F401  (registers the serving layers)

    root, config = digits_artifacts
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    task = ImageClassification(config.task)
    keras.utils.set_random_seed(0)
    model = task.build_model("lenet", transform, {}, 1e-3)
    x, y, _ = load_transformed(root / "preprocess", "train", task)
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    task.serving_model(model, transform).save(tmp_path / "serving.keras")
    serving = keras.saving.load_model(tmp_path / "serving.keras")
    stored, _, _ = load_transformed(root / "preprocess", "test", task)
    raw = raw_inputs(read_frame(root / "ingest" / "test"), transform)
    np.testing.assert_allclose(serving.predict(raw, verbose=0), model.predict(stored, verbose=0), atol=1e-5)


def test_vit_attention_maps_are_plotted(digits_artifacts, tmp_path):
    import keras_models
    from tasks.serving import Predictor

    root, config = digits_artifacts
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    task = ImageClassification(config.task)
    network = keras_models.build_model("vit", *task.specs(transform), patch_size=8, hidden_dim=16,
                                       num_layers=2, num_heads=2, mlp_dim=32)
    build_serving_model(pixel_model(network, transform["image"]), transform).save(tmp_path / "serving.keras")
    (tmp_path / "transform.json").write_text(json.dumps(transform))
    predictor = Predictor(tmp_path / "serving.keras", tmp_path / "transform.json")
    test = read_frame(root / "ingest" / "test").head(20)
    y_true = pd.Categorical(test["label"], categories=transform["label"]["classes"]).codes
    y_pred = predictor.outputs(test).argmax(1)
    vit_config = config_for("digits_lenet", model="vit")
    plots = task.extra_plots(predictor, test, y_true, y_pred, tmp_path, vit_config)
    names = sorted(p.name for p in plots)
    assert names[0] == "mistakes.png" and len(names) == 5
    assert all(n.startswith("vit_attention_test_row") for n in names[1:])
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)


# ---- end to end -----------------------------------------------------------


@pytest.mark.slow
def test_lenet_learns_digits_end_to_end(digits_artifacts):
    import mlflow

    root, config = digits_artifacts
    inputs = {"ingest": root / "ingest", "preprocess": root / "preprocess"}
    trained = run_train(config, inputs, root / "train")
    result = run_component("evaluate", config, {**inputs, "train": root / "train"}, root / "evaluate")
    metrics = read_json(root / "evaluate" / "metrics.json")
    assert metrics["test"]["accuracy"] > 0.85 and metrics["baseline"]["accuracy"] < 0.15
    assert metrics["test"]["top_3_accuracy"] >= metrics["test"]["accuracy"]
    assert (root / "evaluate" / "mistakes.png").read_bytes()[:4] == b"\x89PNG"
    assert result["blessed"] is (metrics["test"]["accuracy"] >= 0.95)

    # The logged pyfunc model takes JSON-like rows: one list of raw pixel values per image.
    rows = read_frame(root / "ingest" / "test").head(8)
    model = mlflow.pyfunc.load_model(trained["mlflow_model_uri"])
    served = model.predict(pd.DataFrame({"image": [img.astype(float).tolist() for img in rows["image"]]}))
    assert pd.api.types.is_integer_dtype(served["prediction"])  # scikit-learn's digits are labelled 0-9
    assert (served["prediction"].astype(str) == rows["label"]).mean() >= 0.75
