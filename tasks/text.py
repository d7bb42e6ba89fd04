r"""Text classification: free text → word and punctuation ids → a text model; one class label.

Tokens are the matches of `[\p{L}\p{M}\p{N}]+|[\p{P}\p{S}]` (RE2 syntax) in
the lower-cased text: runs of letters, combining marks and digits, and single
punctuation or symbol characters; everything else (white space, control
characters) separates tokens. `standardize` computes them with TensorFlow
string ops (RE2, as the pattern is written), and both Beam and the serving
model's `TextVectorization` run that same function, so they tokenise alike.

The Beam analyzer counts tokens over the train split (per-batch counters,
merged exactly) and keeps the `vocabulary_size` most frequent seen at least
`preprocess.vocabulary_min_frequency` times, ties broken by token. Ids: 0 pads,
1 is any token outside the vocabulary, then the vocabulary in that order.
Id 1 is also the text encoders' `[MASK]` (`keras_models.training.MASK_ID`): to a
masked-LM-pretrained encoder an unknown word and a masked word are alike, a
word to infer from its context. A text becomes its first `max_length` ids,
padded with 0 at the end: the same as `TextVectorization` with a fixed
vocabulary and `output_sequence_length`, which the serving model applies to
raw strings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from data.sources import RawData, SourceError, column_name
from keras_models.specs import InputSpec, OutputSpec
from tasks.base import pretrain_by_epoch, require_tensorflow_backend
from tasks.analyzers import Analyzer, count_values, vocabulary
from tasks.classification import ClassificationTask, encode_labels, label_array, label_schema, label_spec

PAD_ID, OOV_ID = 0, 1
SEPARATORS = r"[^\p{L}\p{M}\p{N}\p{P}\p{S}]+"
PUNCTUATION = r"[\p{P}\p{S}]"


@keras.saving.register_keras_serializable(package="tasks", name="text_standardize")
def standardize(texts):
    """UTF-8 strings → their tokens joined by spaces, ready for a whitespace split.

    Separators become spaces first: `tf.strings.lower` stops at a NUL byte,
    and `tf.strings.split` splits on ASCII white space only (not U+00A0 or U+0085).
    """
    texts = tf.strings.regex_replace(texts, SEPARATORS, " ")
    texts = tf.strings.lower(texts, encoding="utf-8")
    return tf.strings.regex_replace(texts, PUNCTUATION, r" \0 ")


def tokenize(texts) -> tf.RaggedTensor:
    """Strings (a sequence or 1-D array) → a ragged `(texts, tokens)` tensor of UTF-8 tokens."""
    return tf.strings.split(standardize(tf.constant(texts, tf.string)))


def _flat_tokens(tokens: tf.RaggedTensor) -> pa.Array:
    return pa.array(tokens.flat_values.numpy(), pa.binary()).cast(pa.string())


def encode(texts, vocabulary: list[str], max_length: int) -> np.ndarray:
    """Strings → `(texts, max_length)` int32 ids: 0 pads, 1 is out of vocabulary, `vocabulary[i]` is i + 2."""
    tokens = tokenize(texts)
    lengths = tokens.row_lengths().numpy()
    index = pc.index_in(_flat_tokens(tokens), value_set=pa.array(vocabulary, pa.string()))
    ids = pc.fill_null(pc.add(index, OOV_ID + 1), OOV_ID).to_numpy(zero_copy_only=False).astype("int32")
    rows = np.repeat(np.arange(len(lengths)), lengths)
    positions = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    keep = positions < max_length
    matrix = np.full((len(lengths), max_length), PAD_ID, "int32")
    matrix[rows[keep], positions[keep]] = ids[keep]
    return matrix


class TokenCountFn(Analyzer):
    """Counts tokens, token lengths of texts and labels per Arrow batch; merging adds the counters."""

    def __init__(self, text: str, label: str):
        self.text, self.label = text, label

    def create_accumulator(self):
        return {"tokens": Counter(), "lengths": Counter(), "labels": Counter()}

    def add_input(self, acc, batch: pa.Table):
        tokens = tokenize(batch.column(self.text).to_numpy(zero_copy_only=False))
        acc["tokens"].update(count_values(_flat_tokens(tokens)))
        acc["lengths"].update(tokens.row_lengths().numpy().tolist())
        acc["labels"].update(count_values(batch.column(self.label)))
        return acc

    def merge(self, acc, other):
        for key, counts in other.items():
            acc[key].update(counts)
        return acc


@keras.saving.register_keras_serializable(package="tasks")
class CastToInt32(keras.layers.Layer):
    """`TextVectorization`'s int64 ids → the int32 token ids the text models take.

    Args:
        **kwargs: base `keras.layers.Layer` arguments such as `name`.
    """

    def call(self, inputs):
        return keras.ops.cast(inputs, "int32")

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype="int32")


def build_serving_model(network: keras.Model, transform: dict[str, Any]) -> keras.Model:
    """A raw string per row, shaped `(batch, 1)` → the Beam tokenisation and lookup → `network`."""
    spec = transform["text"]
    text = keras.Input(shape=(1,), dtype="string", name=spec["name"])
    vectorize = keras.layers.TextVectorization(
        standardize=standardize,
        split="whitespace",
        vocabulary=spec["vocabulary"],
        output_mode="int",
        output_sequence_length=spec["max_length"],
        name="vectorize",
    )
    ids = CastToInt32(name="token_ids")(vectorize(text))
    return keras.Model({spec["name"]: text}, network(ids), name=f"serving_{network.name}")


def check_texts(values, where: str, column: str) -> list[str]:
    """Text values → str; a missing or blank text, or bytes that are not UTF-8, is an error naming its row."""
    texts = []
    for row, value in enumerate(values):
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as e:
                raise SourceError(
                    f"{where}: row {row} (counting from 0) of text column {column!r} is not valid UTF-8 "
                    f"at byte {e.start}: {bytes(value)[:60]!r}."
                ) from None
        missing = not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)
        if missing or not str(value).strip():
            raise SourceError(f"{where}: row {row} (counting from 0) of text column {column!r} is empty.")
        texts.append(str(value))
    return texts


class TextClassification(ClassificationTask):
    name = "text_classification"

    @property
    def text(self) -> str:
        return column_name(self.options.text_column)

    # ---- ingest ---------------------------------------------------------

    def read(self, data) -> RawData:
        """Reads the source and decodes its text column (TFDS gives bytes) to checked `str`."""
        raw = super().read(data)
        if self.text not in raw.frame.columns:
            raise SourceError(
                f"{raw.origin}: text column {self.text!r} (task.text_column) not found; "
                f"columns are: {', '.join(raw.frame.columns)}."
            )
        if self.text == raw.label:
            raise SourceError(f"{raw.origin}: task.text_column {self.text!r} is also the label column.")
        frame = raw.frame.copy()
        frame[self.text] = check_texts(frame[self.text].tolist(), raw.origin, self.text)
        return replace(raw, frame=frame)

    def schema(self, train: pd.DataFrame, raw: RawData) -> dict[str, Any]:
        return {
            "features": [{"name": self.text, "kind": "text", "dtype": "string"}],
            "label": label_schema(train, raw),
        }

    def to_arrow(self, frame: pd.DataFrame, schema: dict[str, Any]) -> pa.Table:
        label = schema["label"]["name"]
        return pa.table({
            self.text: pa.array(frame[self.text].astype(str).to_numpy(dtype=object), pa.string()),
            label: label_array(frame, schema["label"]),
        })

    # ---- preprocess (Beam) ----------------------------------------------

    def analyzer(self, schema, settings):
        return TokenCountFn(self.text, schema["label"]["name"])

    def finalize(self, acc, schema, settings) -> dict[str, Any]:
        tokens = vocabulary(acc["tokens"], self.options.vocabulary_size, settings.vocabulary_min_frequency)
        if not tokens:
            raise ValueError(
                f"No train token is seen {settings.vocabulary_min_frequency} times or more "
                "(preprocess.vocabulary_min_frequency); the vocabulary would be empty."
            )
        max_length = self.options.max_length
        lengths, total = acc["lengths"], sum(acc["tokens"].values())
        return {
            "text": {
                "name": self.text,
                "vocabulary": tokens,
                "vocab_size": len(tokens) + OOV_ID + 1,
                "max_length": max_length,
            },
            "label": label_spec(acc["labels"], schema["label"]),
            "num_train_rows": int(sum(lengths.values())),
            "train_tokens": {
                "total": int(total),
                "distinct": len(acc["tokens"]),
                "out_of_vocabulary": int(total - sum(acc["tokens"][t] for t in tokens)),
                "longest_text": int(max(lengths)),
                "truncated_texts": int(sum(n for length, n in lengths.items() if length > max_length)),
            },
        }

    def transform_batch(self, batch, transform, split):
        spec = transform["text"]
        column = batch.column(spec["name"])
        if column.null_count:
            raise ValueError(f"Split {split!r}: text column {spec['name']!r} has {column.null_count} missing value(s).")
        ids = encode(column.to_numpy(zero_copy_only=False), spec["vocabulary"], spec["max_length"])
        values = pa.FixedSizeListArray.from_arrays(pa.array(ids.ravel(), pa.int32()), spec["max_length"])
        labels = encode_labels(batch, transform["label"], split)
        return pa.Table.from_arrays([values, labels], schema=self._output_schema(spec, transform["label"]["name"]))

    @staticmethod
    def _output_schema(spec, label: str) -> pa.Schema:
        return pa.schema([
            pa.field(spec["name"], pa.list_(pa.int32(), spec["max_length"])),
            pa.field(label, pa.int64()),
        ])

    def output_schema(self, schema) -> pa.Schema:
        return self._output_schema({"name": self.text, "max_length": self.options.max_length},
                                   schema["label"]["name"])

    # ---- train ----------------------------------------------------------

    def specs(self, transform):
        spec = transform["text"]
        return (
            InputSpec((spec["max_length"],), dtype="int32", vocab_size=spec["vocab_size"]),
            OutputSpec("classification", len(transform["label"]["classes"])),
        )

    def arrays(self, columns, transform):
        x = np.asarray(columns[transform["text"]["name"]], "int32")
        return x, np.asarray(columns[transform["label"]["name"]], "int32")

    def pretrains(self, config) -> bool:
        return bool(self.options.pretrain_epochs)

    def pretrain(self, model, x_train, transform, config) -> None:
        """Masked-LM pretraining of the encoder on the train split's ids, then its weights go to `model`.

        The masked-LM model is built with the recipe's hyperparameters and
        starts from the classifier's encoder weights (which also checks that
        the two encoders match before any epoch runs). Tokens are masked
        afresh every epoch (BERT's 80/10/10 scheme). With `pretrain_vocabulary`
        set, the head predicts only that many ids (the padding and unknown
        ids, then the most frequent tokens): masked rarer tokens stay
        corrupted in the input but are not scored, and the softmax, which
        dominates the cost, shrinks. The loss of each epoch is logged to
        MLflow as `pretrain_loss`.
        """
        options = self.options
        epochs = options.pretrain_epochs
        if not epochs:
            return
        import keras_models
        from keras_models.training import mask_tokens, masked_lm_loss, transfer_encoder_weights

        name = config.model.name
        if "masked_lm" not in keras_models.get_entry(name).tasks:
            able = sorted(e.name for e in keras_models.list_models() if "masked_lm" in e.tasks)
            raise ValueError(
                f"task.pretrain_epochs={epochs} needs a model with a masked_lm head ({', '.join(able)}); "
                f"model {name!r} has none."
            )
        input_spec, _ = self.specs(transform)
        scored = min(options.pretrain_vocabulary or input_spec.vocab_size, input_spec.vocab_size)
        mlm = keras_models.build_model(
            name, input_spec, OutputSpec("masked_lm", vocab_size=scored), **config.model.hparams
        )
        transfer_encoder_weights(model, mlm)
        learning_rate = options.pretrain_learning_rate or config.train.learning_rate
        mlm.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=masked_lm_loss())
        rng = np.random.default_rng(config.seed)

        def masked(_epoch):
            inputs, labels, _ = mask_tokens(x_train, rng, options.mask_rate, vocab_size=input_spec.vocab_size)
            return inputs, np.where(labels < scored, labels, PAD_ID)

        pretrain_by_epoch(mlm, epochs, config.train.batch_size, masked)
        transfer_encoder_weights(mlm, model)

    def serving_model(self, network, transform):
        return build_serving_model(network, transform)

    def check_serving_model(self, transform):
        from tasks import TENSORFLOW_NEEDS

        require_tensorflow_backend(self.name, TENSORFLOW_NEEDS[self.name])

    def raw_inputs(self, frame, transform):
        name = transform["text"]["name"]
        if name not in frame.columns:
            raise ValueError(f"Input rows lack the text column {name!r}; columns are: {', '.join(frame.columns)}.")
        texts = check_texts(frame[name].tolist(), "input rows", name)
        return {name: tf.constant(np.asarray(texts, dtype=object)[:, None], tf.string)}


TASK = TextClassification
