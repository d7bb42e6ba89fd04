from collections import Counter

import numpy as np
import pytest
import keras

from keras_models import InputSpec, OutputSpec, build_model
from keras_models.layers import PAD_ID
from keras_models.training import MASK_ID, mask_tokens, masked_lm_loss, transfer_encoder_weights
from tests.models.checks import assert_training_lowers_loss, count_params

SEQ_LEN, VOCAB = 24, 1000
SPEC_IN = InputSpec((SEQ_LEN,), dtype="int32", vocab_size=VOCAB)
TINY = {"bert": dict(d_model=32, num_heads=2, ff_dim=64, num_layers=1, dropout=0.0),
        "fnet": dict(d_model=32, ff_dim=64, num_layers=1, dropout=0.0)}


@pytest.fixture(scope="module")
def rt_polarity(shared_datasets):
    """2,000 movie-review sentences (half positive) as word ids: 0 pads, 1 is [MASK], 2 is unknown."""
    sentences, labels = [], []
    for label, suffix in ((1, "pos"), (0, "neg")):
        lines = (shared_datasets / "rt_polarity" / f"rt-polarity.{suffix}").read_text(encoding="latin-1").splitlines()
        sentences += lines[:1000]
        labels += [label] * 1000
    words = [s.lower().split() for s in sentences]
    vocabulary = [w for w, _ in Counter(w for s in words for w in s).most_common(VOCAB - 3)]
    index = {w: i + 3 for i, w in enumerate(vocabulary)}
    ids = np.zeros((len(words), SEQ_LEN), "int32")
    for row, sentence in enumerate(words):
        tokens = [index.get(w, 2) for w in sentence[:SEQ_LEN]]
        ids[row, : len(tokens)] = tokens
    order = np.random.default_rng(0).permutation(len(ids))
    return ids[order], np.asarray(labels, "int32")[order]


def bert_base_params(vocab=30522, max_len=512, hidden=768, layers=12, ff=3072, classes=2):
    """Devlin et al.'s BERT-base (110M) without its 2 × 768 segment embeddings, plus the class head."""
    embeddings = vocab * hidden + max_len * hidden + 2 * hidden
    block = 4 * (hidden * hidden + hidden) + 2 * hidden + (hidden * ff + ff) + (ff * hidden + hidden) + 2 * hidden
    return embeddings + layers * block + (hidden * hidden + hidden) + (hidden * classes + classes)


def fnet_params(vocab, max_len, hidden, layers, ff, classes):
    """FNet: BERT's count without attention weights, plus the hidden × hidden embedding projection."""
    embeddings = vocab * hidden + max_len * hidden + 2 * hidden + (hidden * hidden + hidden)
    block = 2 * hidden + (hidden * ff + ff) + (ff * hidden + hidden) + 2 * hidden
    return embeddings + layers * block + (hidden * hidden + hidden) + (hidden * classes + classes)


@pytest.mark.parametrize("name", ["bert", "fnet"])
def test_heads_shapes_and_parameter_counts(name):
    classifier = build_model(name, SPEC_IN, OutputSpec("classification", 3), **TINY[name])
    mlm = build_model(name, SPEC_IN, OutputSpec("masked_lm"), **TINY[name])
    assert classifier.output_shape == (None, 3)
    assert mlm.output_shape == (None, SEQ_LEN, VOCAB)
    other_vocab = build_model(name, SPEC_IN, OutputSpec("masked_lm", vocab_size=7), **TINY[name])
    assert other_vocab.output_shape == (None, SEQ_LEN, 7)
    expected = {"bert": bert_base_params, "fnet": fnet_params}[name](VOCAB, 512, 32, 1, 64, 3)
    assert count_params(classifier) == expected
    # Masked-LM head: dense transform, LayerNorm, untied projection to the vocabulary.
    head = (32 * 3 + 3) + (32 * 32 + 32)
    assert count_params(mlm) == expected - head + (32 * 32 + 32) + 2 * 32 + (32 * VOCAB + VOCAB)


def test_bert_base_has_110m_parameters():
    spec = InputSpec((128,), dtype="int32", vocab_size=30522)
    with keras.StatelessScope(initialize_variables=False):  # shapes only: skip drawing 110M random weights
        model = build_model("bert", spec, OutputSpec("classification", 2), d_model=768, num_heads=12, ff_dim=3072, num_layers=12)
    assert count_params(model) == bert_base_params() == 109_482_242
    # The paper's 110M; with segment embeddings it is Hugging Face's 109,482,240 + head.
    assert abs(count_params(model) + 2 * 768 - 110e6) / 110e6 < 0.01
    # FNet-Base (Lee-Thorp et al., Table 1: 83M) by the same formula, checked above on a small build.
    assert abs(fnet_params(32000, 512, 768, 12, 3072, 2) + 4 * 768 - 83e6) / 83e6 < 0.01


def test_mask_tokens_follows_bert_80_10_10(rt_polarity):
    ids, _ = rt_polarity
    inputs, labels, weights = mask_tokens(ids, np.random.default_rng(0), mask_rate=0.15, vocab_size=VOCAB)
    real = ids > MASK_ID
    selected = weights > 0
    assert not selected[~real].any() and (inputs[~real] == ids[~real]).all()
    assert abs(selected.sum() / real.sum() - 0.15) < 0.01
    assert (labels[selected] == ids[selected]).all() and (labels[~selected] == PAD_ID).all()
    as_mask = (inputs[selected] == MASK_ID).mean()
    kept = (inputs[selected] == ids[selected]).mean()
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03 and (inputs >= 0).all() and (inputs < VOCAB).all()


def test_masked_lm_loss_counts_masked_positions_only():
    rng = np.random.default_rng(0)
    probs = rng.random((2, 5, 7)).astype("float32")
    probs /= probs.sum(-1, keepdims=True)
    labels = np.array([[0, 3, 0, 0, 2], [0, 0, 0, 0, 5]])
    picked = np.take_along_axis(probs, labels[..., None], -1)[..., 0]
    expected = -np.log(picked[labels != PAD_ID]).mean()
    np.testing.assert_allclose(float(masked_lm_loss()(labels, probs)), expected, rtol=1e-5)


def _encode(model, ids):
    return keras.ops.convert_to_numpy(model.get_layer("encoder")(ids, training=False))


@pytest.mark.parametrize("name", ["bert", "fnet"])
def test_padding_content_and_length_do_not_change_bert_encoding_of_real_tokens(name, rt_polarity):
    ids = rt_polarity[0][:8]
    real = ids != PAD_ID
    model = build_model(name, SPEC_IN, OutputSpec("classification", 2), **TINY[name])
    before = _encode(model, ids)
    # Padded positions get other contents: a different [PAD] embedding ...
    table = model.get_layer("encoder").get_layer("embeddings").token_embedding.embeddings
    rows = keras.ops.convert_to_numpy(table).copy()
    rows[PAD_ID] = np.random.default_rng(1).normal(size=rows.shape[1])
    table.assign(rows)
    after = _encode(model, ids)
    assert not np.allclose(after[~real], before[~real])
    # ... and more of them: the same weights on sequences 8 positions longer.
    longer = build_model(name, InputSpec((SEQ_LEN + 8,), "int32", VOCAB), OutputSpec("classification", 2), **TINY[name])
    longer.set_weights(model.get_weights())
    padded_more = _encode(longer, np.pad(ids, ((0, 0), (0, 8))))[:, :SEQ_LEN]
    if name == "bert":
        np.testing.assert_allclose(after[real], before[real], atol=1e-5)
        np.testing.assert_allclose(padded_more[real], after[real], atol=1e-5)
    else:  # FNet's Fourier transform mixes padded positions into every token, as in the paper.
        assert not np.allclose(after[real], before[real], atol=1e-5)
        assert not np.allclose(padded_more[real], after[real], atol=1e-5)


@pytest.mark.learns
@pytest.mark.parametrize("name", ["bert", "fnet"])
def test_mlm_pretraining_on_rt_polarity_then_transfer_to_classifier(name, rt_polarity, tmp_path):
    ids, labels = rt_polarity
    inputs, targets, _ = mask_tokens(ids[:1000], np.random.default_rng(0), vocab_size=VOCAB)
    mlm = build_model(name, SPEC_IN, OutputSpec("masked_lm"), **TINY[name])
    assert_training_lowers_loss(mlm, inputs, targets, loss=masked_lm_loss(), epochs=2, batch_size=64, learning_rate=3e-3)

    classifier = build_model(name, SPEC_IN, OutputSpec("classification", 2), **TINY[name])
    transfer_encoder_weights(mlm, classifier)
    for pretrained, copied in zip(mlm.get_layer("encoder").weights, classifier.get_layer("encoder").weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(copied), keras.ops.convert_to_numpy(pretrained))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(classifier.get_layer("encoder")(ids[:16], training=False)),
        keras.ops.convert_to_numpy(mlm.get_layer("encoder")(ids[:16], training=False)),
        atol=1e-6,
    )
    if name == "bert":  # FNet's classifier head is the same code; one fine-tuning keeps the test short.
        assert_training_lowers_loss(classifier, ids, labels, loss="sparse_categorical_crossentropy", epochs=3, batch_size=64, learning_rate=3e-3)
    # The classifier's round trip is the zoo's (tests/models/test_zoo.py); the masked-LM head's is here.
    mlm.save(tmp_path / "mlm.keras")  # eager comparison: a second predict compilation costs more than the check
    restored = keras.saving.load_model(tmp_path / "mlm.keras", safe_mode=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(inputs[:16], training=False)),
        keras.ops.convert_to_numpy(mlm(inputs[:16], training=False)),
        atol=1e-6,
    )


def test_text_rejects_bad_hparams():
    with pytest.raises(ValueError, match="d_model=30 .* multiple of num_heads=4"):
        build_model("bert", SPEC_IN, OutputSpec("classification", 2), d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="max_len=8 .* shorter than seq_len=24"):
        build_model("fnet", SPEC_IN, OutputSpec("classification", 2), max_len=8)
    with pytest.raises(ValueError, match="takes token ids"):
        build_model("bert", InputSpec((24,)), OutputSpec("classification", 2))

