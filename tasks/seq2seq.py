"""Sequence-to-sequence translation: source sentences in, target sentences out.

Pairs carry no class to stratify on, so the split is a plain seeded random
one. The Beam analyzer counts source and target tokens on the train split
(Counters add exactly across batches); the finished vocabularies give ids
after the four special ones of `keras_models.seq2seq`: PAD 0, START 1,
END 2, and OOV 3 for tokens outside the train vocabulary. Source tokens are
lower-cased words (`WORD_PATTERN`) or characters; target tokens are
characters by default, because 3.8k pairs give too few repeats of each
Hangul word form, or whitespace-separated words.

The serving model is the trained network itself: tokenisation runs in
Python from the vocabularies in `transform.json`, which the `Predictor`
rebuilds this task from, and decoding re-runs the network on the growing
prefix (greedy, or beam search when `beam_width` > 1). The model is scored
with sacrebleu's chrF and character-level BLEU against two baselines, and
blessed only when its chrF beats the stronger: the trivial one, as the
majority class is for classification (the most frequent train target for
every input), and `retrieval`, a translation memory that is much harder to
beat on Tatoeba's near-duplicate sentences (the train target whose source is
most similar, by TF-IDF cosine over the same source tokens, to the test one).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from data import pairs
from data.sources import RawData, SourceError, column_name, read_source
from tasks.analyzers import Analyzer, vocabulary
from tasks.base import Evaluation, Task

# PAD, START and END as `keras_models.seq2seq` and its decoders number them (not imported: that loads Keras).
PAD_ID, START_ID, END_ID, OOV_ID = 0, 1, 2, 3
FIRST_TOKEN_ID = 4
# Shown for an OOV id in a decoded sentence: the Unicode replacement character.
UNKNOWN = "\ufffd"
# A word is a run of letters/digits with inner apostrophes kept ("don't", "tom's"); every other
# non-space character (punctuation, symbols) is a token of its own. Applied to lower-cased text.
WORD_PATTERN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
SAMPLES = 20
DECODE_BATCH = 128


def tokenize(text: str, kind: str, side: str) -> list[str]:
    """A sentence's tokens: `character` ones, or `word` ones.

    Source text is lower-cased and its words follow `WORD_PATTERN`; target
    text keeps its case and its words are whitespace-separated, so that
    `detokenize` gives the sentence back.
    """
    if side == "source":
        text = text.lower()
    if kind == "character":
        return list(text)
    return WORD_PATTERN.findall(text) if side == "source" else text.split()


def detokenize(tokens: list[str], kind: str) -> str:
    """Target tokens → text; the inverse of `tokenize` for target tokens."""
    return "".join(tokens) if kind == "character" else " ".join(tokens)


def token_ids(tokens: list[str], vocabulary: dict[str, int]) -> list[int]:
    return [vocabulary.get(token, OOV_ID) for token in tokens]


class VocabularyFn(Analyzer):
    """Counts source and target tokens and sentence lengths of Arrow batches; merging adds the Counters."""

    def __init__(self, source: str, target: str, source_tokens: str, target_tokens: str):
        self.columns = {"source": (source, source_tokens), "target": (target, target_tokens)}

    def create_accumulator(self):
        counters = {f"{side}_{kind}": Counter() for side in self.columns for kind in ("tokens", "lengths")}
        return {"rows": 0, **counters}

    def add_input(self, acc, batch: pa.Table):
        acc["rows"] += batch.num_rows
        for side, (name, kind) in self.columns.items():
            for text in batch.column(name).to_pylist():
                tokens = tokenize(text, kind, side)
                acc[f"{side}_tokens"].update(tokens)
                acc[f"{side}_lengths"][len(tokens)] += 1
        return acc

    def merge(self, acc, other):
        acc["rows"] += other["rows"]
        for key, value in other.items():
            if key != "rows":
                acc[key].update(value)
        return acc


def padded(rows: list[list[int]], width: int) -> np.ndarray:
    """Id lists (each at most `width` long) → a (rows, width) int32 matrix filled with PAD."""
    values = np.full((len(rows), width), PAD_ID, dtype="int32")
    for i, ids in enumerate(rows):
        values[i, : len(ids)] = ids
    return values


def _fixed_size_lists(values: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


class Seq2Seq(Task):
    name = "seq2seq"
    head = "seq2seq"
    primary_metric = "chrf"
    baseline_name = "most frequent target"
    blessing_baselines = ("baseline", "retrieval")

    # ---- columns and vocabularies -----------------------------------------

    @property
    def columns(self) -> tuple[str, str]:
        """The source and target column names as `read_source` normalises them."""
        return column_name(self.options.source_column), column_name(self.options.target_column)

    @staticmethod
    def _lookup(transform: dict[str, Any], side: str) -> dict[str, int]:
        return {token: i + FIRST_TOKEN_ID for i, token in enumerate(transform[side]["vocabulary"])}

    def encode_sources(self, texts, transform: dict[str, Any]) -> np.ndarray:
        """Raw source sentences → (rows, max_source_length) ids, the same for Beam and for serving."""
        spec, lookup = transform["source"], self._lookup(transform, "source")
        rows = [token_ids(tokenize(text, spec["tokens"], "source"), lookup)[: spec["max_length"]] for text in texts]
        return padded(rows, spec["max_length"])

    def encode_targets(self, texts, transform: dict[str, Any]) -> tuple[list[list[int]], list[list[int]]]:
        """Target sentences → decoder inputs `[START, y…]` and labels `[y…, END]`, `y` cut to max length."""
        spec, lookup = transform["target"], self._lookup(transform, "target")
        inputs, labels = [], []
        for text in texts:
            ids = token_ids(tokenize(text, spec["tokens"], "target"), lookup)[: spec["max_length"]]
            inputs.append([START_ID, *ids])
            labels.append([*ids, END_ID])
        return inputs, labels

    def decode_targets(self, ids: np.ndarray, transform: dict[str, Any]) -> list[str]:
        """Rows of target ids → sentences: stops at END, skips PAD and START, shows OOV as `UNKNOWN`."""
        spec = transform["target"]
        tokens = {i + FIRST_TOKEN_ID: token for i, token in enumerate(spec["vocabulary"])}
        tokens[OOV_ID] = UNKNOWN
        sentences = []
        for row in np.asarray(ids):
            words = []
            for token in row.tolist():
                if token == END_ID:
                    break
                if token not in (PAD_ID, START_ID):
                    words.append(tokens[token])
            sentences.append(detokenize(words, spec["tokens"]))
        return sentences

    # ---- ingest -----------------------------------------------------------

    def read(self, data) -> RawData:
        """The pairs, with `data.label` (when set) required to name `task.target_column`.

        A `.txt` or `.tsv` file is read as the Tatoeba/ManyThings exports are
        written (`data.pairs`: a pair a line, no header, quotes as text); any
        other file as the other tasks read it, with the recipe's `data.csv`.
        """
        source, target = self.columns
        if data.label is not None and column_name(data.label) != target:
            raise SourceError(
                f"data.label={data.label!r} and task.target_column={self.options.target_column!r} "
                "name different columns; for seq2seq the label is the target column."
            )
        raw = read_source(data.source, data.label or target, data.tfds_data_dir, csv=data.csv.model_dump(),
                          reader=pairs.read_pairs if data.source.endswith(pairs.SUFFIXES) else None)
        if source not in raw.frame.columns:
            raise SourceError(
                f"{data.source}: source column {source!r} (task.source_column) not found; "
                f"columns are: {', '.join(raw.frame.columns)}."
            )
        for name in (source, target):
            column = raw.frame[name]
            empty = column.isna() | (column.astype(str).str.strip() == "")
            if empty.any():
                rows = np.flatnonzero(empty.to_numpy())[:5].tolist()
                raise SourceError(f"{data.source}: column {name!r} is empty in row(s) {rows} (0-based).")
        return raw

    def split(self, raw: RawData, train: float, eval: float, test: float, seed: int) -> dict[str, pd.DataFrame]:
        """Seeded random split; pairs have no class to stratify on."""
        from sklearn.model_selection import train_test_split

        first, rest = train_test_split(raw.frame, train_size=train, random_state=seed)
        if not test:
            return {"train": first, "eval": rest}
        evaluation, held_out = train_test_split(rest, test_size=test / (eval + test), random_state=seed)
        return {"train": first, "eval": evaluation, "test": held_out}

    def schema(self, train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
        source, target = self.columns
        return {
            "features": [{"name": source, "kind": "text", "tokens": self.options.source_tokens}],
            "label": {"name": target, "kind": "text", "tokens": self.options.target_tokens},
            # Kept beside each pair for the licence (CC-BY requires attribution); never a feature.
            "attribution": "attribution" if "attribution" in train.columns else None,
        }

    def to_arrow(self, frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        names = [schema["features"][0]["name"], schema["label"]["name"]]
        if schema["attribution"]:
            names.append(schema["attribution"])
        return pa.Table.from_arrays(
            [pa.array(frame[name].astype(str).to_numpy(), pa.string()) for name in names], names=names
        )

    # ---- preprocess (Beam) --------------------------------------------------

    def analyzer(self, schema, settings):
        return VocabularyFn(schema["features"][0]["name"], schema["label"]["name"],
                            self.options.source_tokens, self.options.target_tokens)

    def finalize(self, acc, schema, settings) -> dict[str, Any]:
        options = self.options
        if not acc["rows"]:
            raise ValueError("The train split has no pairs to build vocabularies from.")
        max_size = options.vocabulary_size - FIRST_TOKEN_ID
        if settings.vocabulary_max_size is not None:
            max_size = min(max_size, settings.vocabulary_max_size)

        def side(name: str, key: str, tokens: str, max_length: int) -> dict[str, Any]:
            lengths = acc[f"{key}_lengths"]
            return {
                "name": name,
                "tokens": tokens,
                "max_length": max_length,
                "vocabulary": vocabulary(acc[f"{key}_tokens"], max_size, settings.vocabulary_min_frequency),
                "train_tokens": int(sum(acc[f"{key}_tokens"].values())),
                "train_rows_cut": int(sum(n for length, n in lengths.items() if length > max_length)),
                "train_longest": int(max(lengths)),
            }

        return {
            "source": side(schema["features"][0]["name"], "source", options.source_tokens,
                           options.max_source_length),
            "target": side(schema["label"]["name"], "target", options.target_tokens, options.max_target_length),
            "label": {"name": schema["label"]["name"]},
            "special_ids": {"pad": PAD_ID, "start": START_ID, "end": END_ID, "oov": OOV_ID},
            "num_train_rows": int(acc["rows"]),
        }

    def transform_batch(self, batch, transform, split):
        """Source ids padded to `max_source_length`; decoder inputs and labels padded to `max_target_length + 1`."""
        width = transform["target"]["max_length"] + 1
        source = self.encode_sources(batch.column(transform["source"]["name"]).to_pylist(), transform)
        inputs, labels = self.encode_targets(batch.column(transform["target"]["name"]).to_pylist(), transform)
        return pa.Table.from_arrays(
            [_fixed_size_lists(source), _fixed_size_lists(padded(inputs, width)),
             _fixed_size_lists(padded(labels, width))],
            schema=self._output_schema(transform["source"]["max_length"], width),
        )

    @staticmethod
    def _output_schema(source_width: int, target_width: int) -> pa.Schema:
        return pa.schema([
            pa.field("source_ids", pa.list_(pa.int32(), source_width)),
            pa.field("target_in", pa.list_(pa.int32(), target_width)),
            pa.field("target_out", pa.list_(pa.int32(), target_width)),
        ])

    def output_schema(self, schema) -> pa.Schema:
        return self._output_schema(self.options.max_source_length, self.options.max_target_length + 1)

    # ---- train ----------------------------------------------------------------

    def specs(self, transform):
        from keras_models.specs import InputSpec, OutputSpec

        source, target = transform["source"], transform["target"]
        return (
            InputSpec((source["max_length"],), "int32", len(source["vocabulary"]) + FIRST_TOKEN_ID),
            OutputSpec("seq2seq", vocab_size=len(target["vocabulary"]) + FIRST_TOKEN_ID),
        )

    def arrays(self, columns, transform):
        """`({"source", "target_in"}, target_out)`: teacher forcing, labels shifted one step left."""
        x = {"source": np.asarray(columns["source_ids"], "int32"),
             "target_in": np.asarray(columns["target_in"], "int32")}
        return x, np.asarray(columns["target_out"], "int32")

    def build_model(self, model_name, transform, hparams, learning_rate):
        """The registry model, trained with Adam on gradients clipped to a global norm of 1.

        Recurrent encoder–decoders are usually trained with a norm clip (5 in Sutskever et al. 2014)
        against exploding gradients; it lets the recipes use learning rates of a few 1e-3.
        """
        import keras

        import keras_models

        model = keras_models.build_model(model_name, *self.specs(transform), **hparams)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate, global_clipnorm=1.0),
                      **self.compile_args(transform))
        return model

    def compile_args(self, transform):
        from keras_models.training import masked_label_smoothed_loss

        return {"loss": masked_label_smoothed_loss(self.options.label_smoothing)}

    def serving_example(self, train, transform):
        return train[[transform["source"]["name"]]].head(5)

    def serving_model(self, network, transform):
        """The network itself: tokenisation and decoding are Python around it (see `predict_outputs`)."""
        return network

    def raw_inputs(self, frame, transform):
        name = transform["source"]["name"]
        if name not in frame.columns:
            raise ValueError(f"Input rows lack the source column {name!r}; columns are: {list(frame.columns)}.")
        if frame[name].isna().any():
            raise ValueError(f"Source column {name!r} has missing values in row(s) "
                             f"{frame.index[frame[name].isna()].tolist()[:5]}.")
        return {"source": self.encode_sources(frame[name].astype(str).tolist(), transform)}

    def predict_outputs(self, model, frame, transform) -> np.ndarray:
        """Target ids `(rows, max_target_length + 1)`, PAD after END; greedy, or beam search if `beam_width` > 1."""
        from keras_models.decoding import beam_search_decode, greedy_decode

        source = self.raw_inputs(frame, transform)["source"]
        max_len = transform["target"]["max_length"] + 1
        sequences = []
        for start in range(0, len(source), DECODE_BATCH):
            chunk = source[start : start + DECODE_BATCH]
            if self.options.beam_width > 1:
                sequences += beam_search_decode(model, chunk, self.options.beam_width, max_len,
                                                self.options.length_penalty)
            else:
                sequences += greedy_decode(model, chunk, max_len)
        return padded(sequences, max_len)

    def outputs_frame(self, outputs, transform, index=None) -> pd.DataFrame:
        return pd.DataFrame({"translation": self.decode_targets(outputs, transform)}, index=index)

    # ---- evaluate ---------------------------------------------------------------

    def evaluate(self, predictor, test, ingest_dir, output, config) -> Evaluation:
        from data.splits import read_frame

        transform = predictor.transform
        source, target = transform["source"]["name"], transform["target"]["name"]
        outputs = predictor.outputs(test[[source]])
        hypotheses = self.decode_targets(outputs, transform)
        references = test[target].astype(str).tolist()
        train = read_frame(Path(ingest_dir) / "train")
        retrieved = self.retrieval_baseline(train[source].tolist(), train[target].tolist(), test[source].tolist())
        counts = Counter(train[target])
        most_frequent = min(counts, key=lambda sentence: (-counts[sentence], sentence))

        headline, signatures = translation_metrics(hypotheses, references)
        baseline, _ = translation_metrics([most_frequent] * len(test), references)
        retrieval, _ = translation_metrics(retrieved, references)
        samples = [
            {"source": s, "reference": r, "translation": h, "retrieval": b}
            for s, r, h, b in zip(test[source], references, hypotheses, retrieved)
        ]
        plots = self._write_samples(samples, output, config)
        plots += self._attention_plot(predictor, test[source].tolist(), outputs, output)
        return Evaluation(
            headline=headline,
            baseline=baseline,
            references={"retrieval": retrieval},
            details={
                "baseline_systems": {
                    "baseline": f"the most frequent train target for every input: {most_frequent}",
                    "retrieval": "the train target of the nearest train source (TF-IDF cosine over the source tokens)",
                },
                "sacrebleu": signatures,
                "decoding": {"beam_width": self.options.beam_width, "length_penalty": self.options.length_penalty},
                "samples": samples[:SAMPLES],
            },
            plots=plots,
        )

    def retrieval_baseline(self, train_sources: list[str], train_targets: list[str],
                           sources: list[str]) -> list[str]:
        """For each source, the train target of the most similar train source (TF-IDF cosine; ties → first)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        kind = self.options.source_tokens
        vectorizer = TfidfVectorizer(tokenizer=lambda text: tokenize(text, kind, "source"), lowercase=False,
                                     token_pattern=None)
        memory = vectorizer.fit_transform(train_sources)
        similarity = vectorizer.transform(sources) @ memory.T
        nearest = np.asarray(similarity.argmax(axis=1)).ravel()
        return [train_targets[i] for i in nearest]

    def _write_samples(self, samples: list[dict[str, str]], output: Path, config) -> list[Path]:
        """Every test translation as JSON, and the first `SAMPLES` as a Markdown table."""
        json_path, markdown_path = output / "translations.json", output / "translations.md"
        json_path.write_text(json.dumps(samples, indent=1, ensure_ascii=False), encoding="utf-8")

        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        lines = [f"# {config.model.name} on {config.name}: first {SAMPLES} test pairs", "",
                 "| source | reference | model | baseline (retrieval) |", "| --- | --- | --- | --- |"]
        lines += [f"| {' | '.join(cell(s[k]) for k in ('source', 'reference', 'translation', 'retrieval'))} |"
                  for s in samples[:SAMPLES]]
        markdown_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [json_path, markdown_path]

    def _attention_plot(self, predictor, sources: list[str], outputs: np.ndarray, output: Path) -> list[Path]:
        """The attention over the source while the model translates one test sentence; none without attention."""
        from keras_models.plots import save_attention_heatmap
        from keras_models.decoding import attention_model

        try:
            probe = attention_model(predictor.model)
        except ValueError:
            return []
        transform = predictor.transform
        spec = transform["source"]
        lengths = [min(len(tokenize(s, spec["tokens"], "source")), spec["max_length"]) for s in sources]
        produced = [int(np.sum(row != PAD_ID)) for row in outputs]
        candidates = [i for i, (n, m) in enumerate(zip(lengths, produced)) if 4 <= n <= 10 and m > 2]
        row = candidates[0] if candidates else 0
        sequence = outputs[row][: max(produced[row], 1)]
        target_in = np.array([[START_ID, *sequence[:-1]]], dtype="int32")
        weights = probe.predict({"source": self.encode_sources([sources[row]], transform), "target_in": target_in},
                                verbose=0)[0]
        source_tokens = tokenize(sources[row], spec["tokens"], "source")[: spec["max_length"]]
        names = {i + FIRST_TOKEN_ID: token for i, token in enumerate(transform["target"]["vocabulary"])}
        names.update({OOV_ID: UNKNOWN, END_ID: "</s>"})
        target_tokens = [names[t] if names[t] != " " else "␣" for t in sequence.tolist()]
        path = output / "attention.png"
        save_attention_heatmap(weights, source_tokens, _drawable(target_tokens), path)
        return [path]


def _drawable(tokens: list[str]) -> list[str]:
    """Tokens the plotting font has glyphs for as they are, others as their code points (`U+AC00`)."""
    from matplotlib import font_manager

    charmap = font_manager.get_font(font_manager.findfont(font_manager.FontProperties())).get_charmap()
    return [t if all(ord(c) in charmap for c in t) else " ".join(f"U+{ord(c):04X}" for c in t) for t in tokens]


def translation_metrics(hypotheses: list[str], references: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """sacrebleu corpus chrF (character 6-grams, β = 2) and BLEU on characters, and exact match, in percent.

    BLEU uses sacrebleu's `char` tokenizer: Korean word forms fuse stems and
    particles, so word BLEU is near zero on small data, and `ko-mecab` needs
    a morphological analyser the project does not ship.
    """
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(tokenize="char"), CHRF()
    metrics = {
        "chrf": float(chrf.corpus_score(hypotheses, [references]).score),
        "bleu": float(bleu.corpus_score(hypotheses, [references]).score),
        "exact_match": float(100.0 * np.mean([h.strip() == r.strip() for h, r in zip(hypotheses, references)])),
    }
    return metrics, {"chrf": str(chrf.get_signature()), "bleu": str(bleu.get_signature())}


TASK = Seq2Seq
