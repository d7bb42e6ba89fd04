"""Seq2seq task on the English–Korean Tatoeba pairs: reader, split, vocabularies, no-skew serving, end to end."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.artifact_io import read_columns
from data.pairs import read_pairs
from data.sources import SourceError
from pipeline.config import DataConfig, PreprocessConfig, load_config
from tasks.options import Seq2SeqOptions
from tasks.seq2seq import END_ID, OOV_ID, PAD_ID, START_ID, UNKNOWN, Seq2Seq, VocabularyFn, tokenize
from tests.helpers import config_for, run_component, run_train, use_mlflow_store

SHIPPED = "data/kor_eng_tatoeba/kor.txt"
RECIPES = ("tatoeba_seq2seq_bahdanau", "tatoeba_seq2seq_luong", "tatoeba_seq2seq_plain", "tatoeba_transformer")
# A tiny Transformer, sentences cut short: a few epochs take it well above the baseline.
TINY = {
    "task.max_source_length": 12, "task.max_target_length": 28,
    "model.hparams": {"d_model": 64, "num_heads": 2, "ff_dim": 128, "num_layers": 1, "dropout": 0.1},
    "train.epochs": 7, "train.batch_size": 64, "train.learning_rate": 0.003,
    "evaluate.thresholds": {},
}


def _task(**options) -> Seq2Seq:
    return Seq2Seq(Seq2SeqOptions(type="seq2seq", **options))


def _transform(task: Seq2Seq, pairs: list[tuple[str, str]], **settings) -> dict:
    fn = task.analyzer({"features": [{"name": "source"}], "label": {"name": "target"}}, None)
    table = pa.table({"source": [s for s, _ in pairs], "target": [t for _, t in pairs]})
    acc = fn.add_input(fn.create_accumulator(), table)
    schema = {"features": [{"name": "source"}], "label": {"name": "target"}}
    return task.finalize(acc, schema, PreprocessConfig(**settings))


# ---- reader --------------------------------------------------------------------


def test_read_pairs_splits_on_tabs_and_keeps_quotes_and_attribution(tmp_path):
    path = tmp_path / "pairs.txt"
    lines = ['He said "hi, there".\t그가 "안녕"이라고 했다.\tCC-BY #1', "Go.\t가.\tCC-BY #2"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    frame = read_pairs(path)
    assert frame.columns.tolist() == ["source", "target", "attribution"]
    assert frame.iloc[0].tolist() == ['He said "hi, there".', '그가 "안녕"이라고 했다.', "CC-BY #1"]

    path.write_text("Go.\t가.\r\nHi.\t안녕.\r\n", encoding="utf-8")
    assert read_pairs(path).to_dict("list") == {"source": ["Go.", "Hi."], "target": ["가.", "안녕."]}


@pytest.mark.parametrize("text,message", [
    ("Go.\t가.\tA\nHi.\t\tB\n", r"line 2: empty target"),
    ("Go.\t가.\tA\nHi.\n", r"line 2: has 1 tab-separated field\(s\) where line 1 has 3"),
    ("Go.\t가.\nHi.\t안녕.\tB\n", r"line 2: has 3 tab-separated field\(s\) where line 1 has 2"),
    ("Go.\n", r"line 1: expected 'source<TAB>target'"),
    ("", r"no sentence pairs"),
])
def test_read_pairs_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=rf"bad\.txt.*{message}"):
        read_pairs(path)


def test_the_task_reads_a_txt_file_as_sentence_pairs_and_a_csv_with_its_header(tmp_path):
    raw = _task().read(DataConfig(source=SHIPPED))
    assert raw.frame.shape == (3798, 3) and raw.label == "target"
    assert raw.frame.iloc[0].tolist()[:2] == ["Go.", "가."]
    assert raw.frame["attribution"].str.startswith("CC-BY 2.0 (France)").all()
    raw.frame[["source", "target"]].iloc[:20].to_csv(tmp_path / "pairs.csv", sep=";", index=False)
    pairs = _task().read(DataConfig(source=str(tmp_path / "pairs.csv"))).frame
    assert pairs.columns.tolist() == ["source", "target"] and pairs.iloc[0].tolist() == ["Go.", "가."]


def test_label_must_be_the_target_column():
    with pytest.raises(SourceError, match=r"data.label='source' and task.target_column='target'"):
        _task().read(DataConfig(source=SHIPPED, label="source"))
    with pytest.raises(SourceError, match=r"source column 'english' \(task.source_column\) not found"):
        _task(source_column="english").read(DataConfig(source=SHIPPED))
    assert _task().read(DataConfig(source=SHIPPED)).label == "target"


def test_split_is_random_seeded_and_disjoint():
    task = _task()
    raw = task.read(DataConfig(source=SHIPPED, label="target"))
    splits = task.split(raw, 0.8, 0.1, 0.1, seed=7)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3038, "eval": 380, "test": 380}
    indices = [set(frame.index) for frame in splits.values()]
    assert set.union(*indices) == set(raw.frame.index) and sum(map(len, indices)) == len(raw.frame)
    again = task.split(raw, 0.8, 0.1, 0.1, seed=7)
    assert all(splits[k].index.equals(again[k].index) for k in splits)
    assert not splits["test"].index.equals(task.split(raw, 0.8, 0.1, 0.1, seed=8)["test"].index)
    # Not sorted by length like the file: the held-out pairs span short and long sentences.
    assert splits["test"]["source"].str.len().max() > 60 and splits["test"]["source"].str.len().min() < 15


# ---- tokens, vocabularies, special ids -----------------------------------------


def test_special_ids_are_the_models():
    from keras_models import seq2seq

    assert (PAD_ID, START_ID, END_ID) == (seq2seq.PAD_ID, seq2seq.START_ID, seq2seq.END_ID)
    assert OOV_ID not in (PAD_ID, START_ID, END_ID)


def test_tokenisation():
    words = ["don't", "you", "see", "tom's", "dog", "?", "!"]
    assert tokenize("Don't you SEE Tom's dog?!", "word", "source") == words
    assert tokenize("Hi, 3.5 km", "word", "source") == ["hi", ",", "3", ".", "5", "km"]
    assert tokenize("톰은 가.", "character", "target") == ["톰", "은", " ", "가", "."]
    assert tokenize("톰은  집에 가.", "word", "target") == ["톰은", "집에", "가."]


@pytest.mark.parametrize("target_tokens", ["character", "word"])
def test_target_ids_round_trip_and_special_ids(target_tokens):
    pairs = [("I'm home.", "집이야."), ("Tom is home.", "톰은 집에 있어."), ("Go home!", "집에 가!")]
    task = _task(target_tokens=target_tokens, max_target_length=9)
    transform = _transform(task, pairs)
    assert transform["special_ids"] == {"pad": PAD_ID, "start": START_ID, "end": END_ID, "oov": OOV_ID}
    inputs, labels = task.encode_targets([t for _, t in pairs], transform)
    for (_, text), decoder_in, label in zip(pairs, inputs, labels):
        assert decoder_in[0] == START_ID and label[-1] == END_ID and decoder_in[1:] == label[:-1]
        assert min(label[:-1]) >= 4
        assert task.decode_targets(np.array([label + [PAD_ID] * 3]), transform) == [text]
    cut = task.encode_targets(["집에 가! " * 3], transform)[1][0]
    assert len(cut) == (9 if target_tokens == "character" else 6) + 1 and cut[-1] == END_ID
    unseen = task.encode_targets(["톰 뭐?"], transform)[1][0]
    assert OOV_ID in unseen
    assert UNKNOWN in task.decode_targets(np.array([unseen]), transform)[0]
    # A decoded row stops at END; START and PAD are not tokens.
    assert task.decode_targets(np.array([[START_ID, labels[0][0], END_ID, labels[0][1]]]), transform) == [
        task.decode_targets(np.array([[labels[0][0]]]), transform)[0]]


def test_analyzer_merges_batches_exactly_and_vocabulary_is_ranked():
    raw = _task().read(DataConfig(source=SHIPPED)).frame.iloc[:500]
    fn = VocabularyFn("source", "target", "word", "character")
    table = pa.Table.from_pandas(raw[["source", "target"]], preserve_index=False)
    whole = fn.add_input(fn.create_accumulator(), table)
    parts = [fn.add_input(fn.create_accumulator(), table.slice(i, 73)) for i in range(0, 500, 73)]
    merged = fn.merge_accumulators(parts)
    assert merged == whole and merged["rows"] == 500
    assert whole["source_tokens"] == Counter(t for s in raw["source"] for t in tokenize(s, "word", "source"))

    task = _task(vocabulary_size=24, max_source_length=3, max_target_length=4)
    transform = task.finalize(whole, {"features": [{"name": "source"}], "label": {"name": "target"}},
                              PreprocessConfig(vocabulary_min_frequency=2))
    source = transform["source"]["vocabulary"]
    ranked = sorted(whole["source_tokens"].items(), key=lambda kv: (-kv[1], kv[0]))  # most frequent, then A–Z
    assert source == [token for token, _ in ranked[:20]] and source[:3] == [".", "tom", "!"]
    lengths = [len(tokenize(s, "word", "source")) for s in raw["source"]]
    assert transform["source"]["train_rows_cut"] == sum(n > 3 for n in lengths)
    assert transform["source"]["train_longest"] == max(lengths)

    batch = task.transform_batch(table.slice(0, 4), transform, "train")
    assert batch.schema == task.output_schema({})
    ids = np.array(batch.column("source_ids").to_pylist())
    assert ids.shape == (4, 3) and ids[0, 2] == PAD_ID  # "Go." → [go, .] then padding
    assert ids[0, 1] == source.index(".") + 4
    assert ids[0, 0] == (source.index("go") + 4 if "go" in source else OOV_ID)
    target_in = np.array(batch.column("target_in").to_pylist())
    target_out = np.array(batch.column("target_out").to_pylist())
    assert target_in.shape == target_out.shape == (4, 5)
    assert (target_in[:, 0] == START_ID).all()
    assert ((target_out == END_ID).sum(1) == 1).all()


# ---- the pipeline on the shipped pairs -------------------------------------------


@pytest.fixture(scope="module")
def tatoeba(tmp_path_factory):
    root = tmp_path_factory.mktemp("tatoeba")
    use_mlflow_store(root)
    config = config_for("tatoeba_transformer", **TINY)
    run_component("ingest", config, {}, root / "ingest")
    run_component("preprocess", config, {"ingest": root / "ingest"}, root / "preprocess")
    return root, config


def test_recipes_load():
    for recipe in RECIPES:
        config = load_config(recipe)
        assert config.task.type == "seq2seq" and config.data.split.test == pytest.approx(0.1)
    assert load_config("tatoeba_seq2seq_plain").model.hparams["attention"] == "none"


def test_ingest_keeps_attribution_and_vocabularies_come_from_train_only(tatoeba):
    root, _ = tatoeba
    train = pq.read_table(root / "ingest" / "train" / "data.parquet").to_pandas()
    assert train.columns.tolist() == ["source", "target", "attribution"]
    transform = json.loads((root / "preprocess" / "transform" / "transform.json").read_text())
    assert transform["num_train_rows"] == len(train) == 3038
    characters = Counter(c for text in train["target"] for c in text)
    assert sorted(transform["target"]["vocabulary"]) == sorted(characters)
    assert transform["target"]["vocabulary"][0] == characters.most_common(1)[0][0]
    test = pq.read_table(root / "ingest" / "test" / "data.parquet").to_pandas()
    only_in_test = {c for text in test["target"] for c in text} - set(characters)
    assert only_in_test and not only_in_test & set(transform["target"]["vocabulary"])


def test_serving_tokenisation_matches_beam(tatoeba):
    """The task rebuilt from transform.json encodes raw rows as Beam did: no skew."""
    from tasks.serving import task_from_transform

    root, _ = tatoeba
    transform = json.loads((root / "preprocess" / "transform" / "transform.json").read_text())
    task = task_from_transform(transform)
    for split in ("eval", "test"):
        raw = pq.read_table(root / "ingest" / split / "data.parquet").to_pandas()
        beam = read_columns(root / "preprocess" / "transformed" / split)
        np.testing.assert_array_equal(task.raw_inputs(raw[["source"]], transform)["source"], beam["source_ids"])
        inputs, labels = task.encode_targets(raw["target"], transform)
        width = transform["target"]["max_length"] + 1
        np.testing.assert_array_equal(beam["target_in"], [row + [PAD_ID] * (width - len(row)) for row in inputs])
        np.testing.assert_array_equal(beam["target_out"], [row + [PAD_ID] * (width - len(row)) for row in labels])
    with pytest.raises(ValueError, match="lack the source column 'source'"):
        task.raw_inputs(pd.DataFrame({"english": ["Hi."]}), transform)


@pytest.mark.slow
def test_end_to_end_translates_well_above_the_trivial_baseline_and_is_not_blessed_below_retrieval(tatoeba):
    from tasks.serving import Predictor

    root, config = tatoeba
    inputs = {"ingest": root / "ingest", "preprocess": root / "preprocess"}
    trained = run_train(config, inputs, root / "train")
    run_component("evaluate", config, {**inputs, "train": root / "train"}, root / "evaluate")
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    test, baseline, retrieval = metrics["test"], metrics["baseline"], metrics["references"]["retrieval"]
    assert test["chrf"] > 3 * baseline["chrf"] and test["bleu"] > 3 * baseline["bleu"], metrics
    assert set(baseline) == set(retrieval) == {"chrf", "bleu", "exact_match"}
    # The translation memory is the stronger baseline; a few epochs of a tiny Transformer stay below it.
    blessing = json.loads((root / "evaluate" / "blessing.json").read_text())
    check = blessing["checks"][-1]
    assert not blessing["blessed"] and check["baseline"] == "retrieval" and check["margin"] < 0, metrics
    assert check["outcome"] == f"chrf {test['chrf']:.4g} <= retrieval {retrieval['chrf']:.4g}"
    assert (root / "evaluate" / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| source | reference | model |" in (root / "evaluate" / "translations.md").read_text()

    predictor = Predictor(root / "train" / "serving.keras", root / "train" / "transform.json")
    frame = pd.DataFrame({"source": ["Tom is here.", "I'm tired."]}, index=[5, 9])
    predicted = predictor.predict(frame)
    assert predicted.index.tolist() == [5, 9] and predicted.columns.tolist() == ["translation"]
    assert all(isinstance(t, str) and t for t in predicted["translation"])
