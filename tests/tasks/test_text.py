"""Text classification: the Latin-1 TFDS builder, tokens and vocabulary, serving without skew, and a real run."""

import json
from collections import Counter

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.artifact_io import read_columns, read_json
from data.sources import SourceError
from data.tfds_builders.mr_polarity import DATA_DIR, MrPolarity, read_sentences
from pipeline.config import DataConfig, PreprocessConfig
from tasks.options import TextClassificationOptions as Options
from tasks.text import OOV_ID, PAD_ID, TextClassification, TokenCountFn, build_serving_model, encode, tokenize
from tests.helpers import config_for, run_component, run_train, use_mlflow_store

MAX_LENGTH, VOCABULARY_SIZE = 24, 3000  # short and small enough that truncation and OOV ids are common


def tokens(texts):
    return [[t.decode() for t in row] for row in tokenize(texts).to_list()]


def identity_serving(transform):
    """The serving preprocessing in front of a network that returns its token ids unchanged."""
    ids = keras.Input((transform["text"]["max_length"],), dtype="int32")
    return build_serving_model(keras.Model(ids, keras.layers.Identity()(ids)), transform)


def serve_ids(serving, texts, task, transform):
    return np.asarray(serving.predict(task.raw_inputs(pd.DataFrame({"text": texts}), transform), verbose=0))


# ---- the TFDS builder over the shipped Latin-1 files -----------------------


def test_builder_decodes_latin1_and_splits_on_newlines_only():
    neg, pos = read_sentences(DATA_DIR / "rt-polarity.neg"), read_sentences(DATA_DIR / "rt-polarity.pos")
    assert len(neg) == len(pos) == 5331
    assert "not a stereotype is omitted nor a cliché left unsaid ." in neg  # byte 0xE9 in the file
    # Byte 0x85 is U+0085 (NEL) in Latin-1: kept inside its sentence, not taken for a line break.
    assert sum("\x85" in s for s in neg + pos) == 15
    assert len((DATA_DIR / "rt-polarity.neg").read_bytes().decode("latin-1").splitlines()) > len(neg)
    info = MrPolarity(data_dir="/nonexistent").info
    assert info.features["label"].names == ["neg", "pos"] and info.supervised_keys == ("text", "label")
    examples = list(MrPolarity(data_dir="/nonexistent")._generate_examples(DATA_DIR))
    assert len(examples) == 10662 and len({key for key, _ in examples}) == 10662
    assert Counter(example["label"] for _, example in examples) == {"neg": 5331, "pos": 5331}


# ---- reading: text checked and decoded ---------------------------------------


def read(tmp_path, frame, suffix=".parquet"):
    path = tmp_path / f"reviews{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    task = TextClassification(Options(type="text_classification", text_column="Review"))
    return task.read(DataConfig(source=str(path), label="label"))


def test_reads_bytes_as_utf8_text(tmp_path):
    raw = read(tmp_path, pd.DataFrame({"Review": ["fine".encode(), "très bien".encode()], "label": ["a", "b"]}))
    assert raw.frame["review"].tolist() == ["fine", "très bien"]


@pytest.mark.parametrize("texts, suffix, message", [
    (["good", "", "bad"], ".parquet", r"row 1 \(counting from 0\) of text column 'review' is empty"),
    (["good", "bad", None], ".csv", r"row 2 \(counting from 0\) of text column 'review' is empty"),
    (["good", "  \t", "bad"], ".parquet", r"row 1 .* is empty"),
    ([b"good", b"caf\xe9", b"bad"], ".parquet", r"row 1 \(counting from 0\) of text column 'review' is not valid UTF-8 at byte 3"),
])
def test_empty_or_undecodable_text_is_an_error_naming_the_row(tmp_path, texts, suffix, message):
    with pytest.raises(SourceError, match=message):
        read(tmp_path, pd.DataFrame({"Review": texts, "label": ["a", "b", "a"]}), suffix)


def test_missing_text_column_names_the_option(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"body": ["x"], "label": ["a"]}).to_csv(path, index=False)
    task = TextClassification(Options(type="text_classification"))
    with pytest.raises(SourceError, match=r"text column 'text' \(task.text_column\) not found; columns are: body, label"):
        task.read(DataConfig(source=str(path), label="label"))


# ---- tokens, vocabulary, ids -----------------------------------------------


def test_tokens_are_lowercased_words_and_single_punctuation_marks():
    assert tokens([
        "The Rock's NEW \"Conan\"... 21st-century!",
        "Café\u00a0ÉCLAIR\u0085naïve\tx",  # no-break space and NEL separate tokens
        "a\x00B  $5 😀",  # NUL separates; symbols are tokens
        "",
    ]) == [
        ["the", "rock", "'", "s", "new", '"', "conan", '"', ".", ".", ".", "21st", "-", "century", "!"],
        ["café", "éclair", "naïve", "x"],
        ["a", "b", "$", "5", "😀"],
        [],
    ]


def test_analyzer_merges_batches_exactly_and_orders_the_vocabulary():
    texts = read_sentences(DATA_DIR / "rt-polarity.pos")[:900]
    labels = np.array(["pos", "neg", "pos"] * 300)
    batches = [pa.table({"text": texts[i:i + 128], "label": labels[i:i + 128]}) for i in range(0, 900, 128)]
    fn = TokenCountFn("text", "label")
    accumulators = [fn.add_input(fn.create_accumulator(), b) for b in batches]
    merged = fn.merge_accumulators([fn.merge_accumulators(accumulators[:3]), fn.merge_accumulators(accumulators[3:])])
    single = fn.add_input(fn.create_accumulator(), pa.table({"text": texts, "label": labels}))
    assert merged == single
    expected = Counter(t for row in tokens(texts) for t in row)
    assert merged["tokens"] == expected and merged["labels"] == {"pos": 600, "neg": 300}
    assert sum(merged["lengths"].values()) == 900

    task = TextClassification(Options(type="text_classification", vocabulary_size=50))
    transform = task.finalize(merged, {"label": {"name": "label"}}, PreprocessConfig(vocabulary_min_frequency=1))
    vocabulary = transform["text"]["vocabulary"]
    assert vocabulary == [t for t, _ in sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:50]]
    assert transform["text"]["vocab_size"] == 52
    rare = TextClassification(Options(type="text_classification")).finalize(
        merged, {"label": {"name": "label"}}, PreprocessConfig(vocabulary_min_frequency=3))
    assert sorted(rare["text"]["vocabulary"]) == sorted(t for t, n in expected.items() if n >= 3)
    assert rare["train_tokens"]["out_of_vocabulary"] == sum(n for n in expected.values() if n < 3)


def test_ids_pad_with_0_mark_unknown_tokens_with_1_and_truncate():
    vocabulary = ["the", "film", "."]
    ids = encode(["The film .", "the unseen film is the film .", "zzz", "x" * 3], vocabulary, 5)
    np.testing.assert_array_equal(ids, [
        [2, 3, 4, PAD_ID, PAD_ID],
        [2, OOV_ID, 3, OOV_ID, 2],
        [OOV_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
        [OOV_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
    ])
    assert ids.dtype == np.int32


def test_serving_layers_tokenise_like_beam_on_odd_text(tmp_path):
    """Unicode, separators, symbols, unknown words and long texts: Keras and Beam give the same ids."""
    texts = ["The Rock's NEW \"Conan\"... 21st-century!", "Café\u00a0ÉCLAIR\u0085naïve\tx", "a\x00B  $5 😀",
             "İSTANBUL ΣΟΦΟΣ straße", "word " * 40, "unknown-words, only ?"]
    vocabulary = ["the", "'", ".", "café", "a", "$", "word", ",", "σοφος", "😀", "-"]
    transform = {"text": {"name": "text", "vocabulary": vocabulary, "vocab_size": 13, "max_length": 7}}
    task = TextClassification(Options(type="text_classification"))
    serving = identity_serving(transform)
    expected = encode(texts, vocabulary, 7)
    np.testing.assert_array_equal(serve_ids(serving, texts, task, transform), expected)
    serving.save(tmp_path / "serving.keras")
    restored = keras.saving.load_model(tmp_path / "serving.keras", safe_mode=True)
    np.testing.assert_array_equal(serve_ids(restored, texts, task, transform), expected)
    with pytest.raises(SourceError, match=r"input rows: row 1 \(counting from 0\) of text column 'text' is empty"):
        task.raw_inputs(pd.DataFrame({"text": ["fine", None]}), transform)


def test_pretraining_needs_a_masked_lm_head():
    config = config_for("mr_cnn1d", **{"task.pretrain_epochs": 1})
    task = TextClassification(config.task)
    transform = {"text": {"name": "text", "vocabulary": ["a", "b"], "vocab_size": 4, "max_length": 3},
                 "label": {"name": "label", "classes": ["neg", "pos"]}}
    with pytest.raises(ValueError, match=r"task.pretrain_epochs=1 needs a model with a masked_lm head \(bert, fnet\)"):
        task.pretrain(None, np.zeros((2, 3), "int32"), transform, config)


# ---- on real data: the recipes' ingest and Beam preprocess -------------------


@pytest.fixture(scope="module")
def mr_run(tmp_path_factory):
    """Ingest and preprocess of `tfds:mr_polarity` with short texts and a small vocabulary, then a tiny CNN."""
    root = tmp_path_factory.mktemp("mr")
    use_mlflow_store(root)
    config = config_for("mr_cnn1d", epochs=4, **{
        "evaluate.thresholds": {"accuracy": 0.62},
        "task.max_length": MAX_LENGTH, "task.vocabulary_size": VOCABULARY_SIZE,
        "model.hparams": {"filters": 32, "kernel_size": 5, "num_blocks": 1, "embedding_dim": 32},
    })
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    return root, config


def test_vocabulary_is_counted_on_train_only(mr_run):
    root, _ = mr_run
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    train = pq.read_table(root / "ingest" / "train" / "data.parquet").to_pandas()
    counts = Counter(t for row in tokens(train["text"].tolist()) for t in row)
    ranked = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    assert transform["text"]["vocabulary"] == ranked[:VOCABULARY_SIZE]
    assert transform["num_train_rows"] == len(train) == 7463
    assert transform["train_tokens"]["truncated_texts"] > 1000 and transform["train_tokens"]["out_of_vocabulary"] > 0


def test_exported_preprocessing_matches_beam(mr_run):
    """The serving model's Keras layers give the ids Beam wrote for the raw test split: no skew."""
    root, config = mr_run
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    test = pq.read_table(root / "ingest" / "test" / "data.parquet").to_pandas()
    beam = read_columns(root / "preprocess" / "transformed" / "test")["text"]
    assert beam.shape == (len(test), MAX_LENGTH)
    assert (beam == OOV_ID).any(axis=1).mean() > 0.3  # many test texts have unknown words
    assert (beam[:, -1] != PAD_ID).mean() > 0.1  # and many are truncated
    served = serve_ids(identity_serving(transform), test["text"].tolist(), TextClassification(config.task), transform)
    np.testing.assert_array_equal(served, beam)


@pytest.mark.slow
def test_end_to_end_learns_sentence_polarity(mr_run):
    root, config = mr_run
    run_train(config, {"ingest": root / "ingest", "preprocess": root / "preprocess"}, root / "train")
    summary = run_component(
        "evaluate", config, {"ingest": root / "ingest", "preprocess": root / "preprocess", "train": root / "train"},
        root / "evaluate")
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    assert metrics["baseline"]["accuracy"] == pytest.approx(0.5, abs=0.01)
    assert metrics["test"]["accuracy"] >= 0.62, metrics["test"]
    assert summary["blessed"]


@pytest.mark.slow
def test_masked_lm_pretraining_moves_the_encoder_and_logs_its_loss(mr_run):
    import mlflow

    root, _ = mr_run
    config = config_for("mr_bert_mlm", **{
        "task.pretrain_epochs": 2, "task.pretrain_vocabulary": 300, "train.batch_size": 64,
        "model.hparams": {"d_model": 16, "num_heads": 2, "ff_dim": 32, "num_layers": 1, "max_len": MAX_LENGTH},
    })
    transform = read_json(root / "preprocess" / "transform" / "transform.json")
    task = TextClassification(config.task)
    x = read_columns(root / "preprocess" / "transformed" / "train")["text"][:512]
    model = task.build_model("bert", transform, dict(config.model.hparams), 1e-3)
    before = [w.copy() for w in model.get_layer("encoder").get_weights()]
    with mlflow.start_run() as run:
        task.pretrain(model, x, transform, config)
    after = model.get_layer("encoder").get_weights()
    assert all(a.shape == b.shape for a, b in zip(after, before))
    assert any(not np.allclose(a, b) for a, b in zip(after, before))
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "pretrain_loss")
    assert [m.step for m in history] == [0, 1] and history[1].value < history[0].value
