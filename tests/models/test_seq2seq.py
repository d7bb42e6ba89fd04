"""Seq2seq family: RNN encoder–decoders with attention, the Transformer, loss, schedule, decoders."""

import numpy as np
import pytest
import keras

from keras_models import InputSpec, OutputSpec, build_model
from keras_models.decoding import attention_model, beam_search_decode, greedy_decode, sequence_log_prob
from keras_models.plots import save_attention_heatmap
from keras_models.seq2seq import END_ID, PAD_ID, START_ID
from keras_models.training import TransformerSchedule, masked_label_smoothed_loss
from tests.models.checks import assert_save_load_identical, assert_training_lowers_loss, count_params

SRC_VOCAB, TGT_VOCAB, SRC_LEN = 30, 40, 10
SPEC_IN, SPEC_OUT = InputSpec((SRC_LEN,), "int32", SRC_VOCAB), OutputSpec("seq2seq", vocab_size=TGT_VOCAB)
RNN = dict(embed_dim=8, units=16, dropout=0.0)
CONFIGS = {
    "bahdanau": ("seq2seq_attention", dict(attention="bahdanau", **RNN)),
    "bahdanau_lstm": ("seq2seq_attention", dict(attention="bahdanau", cell="lstm", **RNN)),
    "luong_dot": ("seq2seq_attention", dict(attention="luong_dot", cell="lstm", **RNN)),
    "luong_general": ("seq2seq_attention", dict(attention="luong_general", **RNN)),
    "transformer": ("transformer", dict(d_model=16, num_heads=2, ff_dim=32, num_layers=2, dropout=0.0)),
}


def _build(config, src_len=SRC_LEN):
    name, hparams = CONFIGS[config]
    return build_model(name, InputSpec((src_len,), "int32", SRC_VOCAB), SPEC_OUT, **hparams)


def _random_batch(batch=3, tgt_len=6, src_len=SRC_LEN, lengths=(4, 7, 10)):
    rng = np.random.default_rng(1)
    source = rng.integers(3, SRC_VOCAB, (batch, src_len)).astype("int32")
    for row, length in enumerate(lengths):
        source[row, length:] = PAD_ID
    target_in = rng.integers(3, TGT_VOCAB, (batch, tgt_len)).astype("int32")
    target_in[:, 0] = START_ID
    return {"source": source, "target_in": target_in}


def _another_token(tokens, vocab_size):
    return 3 + (tokens - 3 + 1) % (vocab_size - 3)


def _predict(model, inputs):
    if keras.backend.backend() == "jax":  # eager JAX compiles each op apart; one jit is cheaper
        return keras.tree.map_structure(np.asarray, model.predict_on_batch(inputs))
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(inputs, training=False))


@pytest.fixture(scope="module")
def kor_eng(shared_datasets):
    """The 300 shortest English→Korean Tatoeba pairs as character ids: (x, target_out, specs)."""
    lines = (shared_datasets / "kor_eng_tatoeba" / "kor.txt").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("\t")[:2] for line in lines[:300]]
    src_chars = {c: i + 3 for i, c in enumerate(sorted({c for e, _ in pairs for c in e}))}
    tgt_chars = {c: i + 3 for i, c in enumerate(sorted({c for _, k in pairs for c in k}))}
    source = np.zeros((len(pairs), max(len(e) for e, _ in pairs)), "int32")
    target_in = np.zeros((len(pairs), max(len(k) for _, k in pairs) + 1), "int32")
    target_out = np.zeros_like(target_in)
    for row, (english, korean) in enumerate(pairs):
        source[row, : len(english)] = [src_chars[c] for c in english]
        ids = [tgt_chars[c] for c in korean]
        target_in[row, : len(ids) + 1] = [START_ID, *ids]
        target_out[row, : len(ids) + 1] = [*ids, END_ID]
    specs = (
        InputSpec(source.shape[1:], "int32", len(src_chars) + 3),
        OutputSpec("seq2seq", vocab_size=len(tgt_chars) + 3),
    )
    return {"source": source, "target_in": target_in}, target_out, specs


@pytest.mark.parametrize("config", ["bahdanau", "luong_dot", "luong_general", "transformer"])
def test_shapes_and_masks(config, tmp_path):
    model, inputs = _build(config), _random_batch()
    assert model.output_shape == (None, None, TGT_VOCAB)
    # One batch (rows are independent; `_random_batch` is deterministic): the inputs, then a later
    # target token changed, then a real source token changed; and the attention over the source.
    future_changed, source_changed = _random_batch(), _random_batch()
    future_changed["target_in"][:, 4] = _another_token(inputs["target_in"][:, 4], TGT_VOCAB)
    source_changed["source"][:, 0] = _another_token(inputs["source"][:, 0], SRC_VOCAB)
    variants = {k: np.concatenate([inputs[k], future_changed[k], source_changed[k]]) for k in inputs}
    probs, future_probs, source_probs = np.split(np.asarray(_predict(model, variants)), 3)
    weights = np.asarray(_predict(attention_model(model), inputs))

    assert probs.shape == (3, 6, TGT_VOCAB) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert weights.shape == (3, 6, SRC_LEN)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert weights[0, :, 4:].max() < 1e-6 and weights[1, :, 7:].max() < 1e-6  # source padding
    np.testing.assert_allclose(future_probs[:, :4], probs[:, :4], atol=1e-6)  # causal decoder
    assert np.abs(future_probs[:, 4:] - probs[:, 4:]).max() > 1e-6
    assert np.abs(source_probs - probs).max() > 1e-6

    # The same sentences with four more padding tokens, through the same weights: same outputs.
    longer = _build(config, src_len=SRC_LEN + 4)
    longer.set_weights(model.get_weights())
    padded = {**inputs, "source": np.pad(inputs["source"], ((0, 0), (0, 4)))}
    np.testing.assert_allclose(_predict(longer, padded), probs, atol=1e-5)
    if config == "luong_general":  # the zoo's round trip builds Bahdanau's attention and the Transformer
        assert_save_load_identical(model, inputs, tmp_path)


def test_no_attention_model_reads_the_source_only_through_the_encoder_state():
    model = build_model("seq2seq_attention", SPEC_IN, SPEC_OUT, attention="none", **RNN)
    inputs = _random_batch()
    future_changed, source_changed = _random_batch(), _random_batch()
    future_changed["target_in"][:, 4] = _another_token(inputs["target_in"][:, 4], TGT_VOCAB)
    source_changed["source"][:, 0] = _another_token(inputs["source"][:, 0], SRC_VOCAB)
    probs, future_probs, source_probs = (
        np.asarray(_predict(model, x)) for x in (inputs, future_changed, source_changed)
    )

    assert model.output_shape == (None, None, TGT_VOCAB) and probs.shape == (3, 6, TGT_VOCAB)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(future_probs[:, :4], probs[:, :4], atol=1e-6)  # causal decoder
    assert np.abs(source_probs - probs).max() > 1e-6
    with pytest.raises(ValueError, match="no attention layer"):
        attention_model(model)
    E, U = RNN["embed_dim"], RNN["units"]
    assert count_params(model) == (SRC_VOCAB + TGT_VOCAB) * E + 2 * _gru(E, U) + U * TGT_VOCAB + TGT_VOCAB

    longer = build_model("seq2seq_attention", InputSpec((SRC_LEN + 4,), "int32", SRC_VOCAB), SPEC_OUT,
                         attention="none", **RNN)
    longer.set_weights(model.get_weights())
    padded = {**inputs, "source": np.pad(inputs["source"], ((0, 0), (0, 4)))}
    np.testing.assert_allclose(_predict(longer, padded), probs, atol=1e-5)


def _gru(i, u, gates=3):
    return gates * (i * u + u * u + u)


@pytest.mark.parametrize("cell,gates", [("gru", 3), ("lstm", 4)])
def test_rnn_parameter_counts_match_formula(cell, gates):
    E, U, Vs, Vt = 8, 16, SRC_VOCAB, TGT_VOCAB
    embeddings, output = (Vs + Vt) * E, U * Vt + Vt
    n_states = gates - 2  # h for GRU, (h, c) for LSTM
    bahdanau = (
        embeddings
        + 2 * _gru(E, U, gates)  # bidirectional encoder
        + n_states * (U * U + U)  # initial state from the backward encoder
        + U * U + 2 * U * U + U  # alignment model W_a, U_a, v_a
        + _gru(E + 2 * U, U, gates)  # decoder fed [E y; c]
        + (U + E + 2 * U) * 2 * U + 2 * U  # deep output before the maxout
        + output
    )
    luong = embeddings + 2 * _gru(E, U, gates) + 2 * U * U + output  # encoder, decoder, W_c, softmax
    for attention, expected in [("bahdanau", bahdanau), ("luong_dot", luong), ("luong_general", luong + U * U)]:
        hparams = dict(attention=attention, embed_dim=E, units=U, cell=cell)
        assert count_params(build_model("seq2seq_attention", SPEC_IN, SPEC_OUT, **hparams)) == expected


def _transformer_params(vs, vt, d, f, n):
    attention = 4 * (d * d + d)
    ffn = d * f + f + f * d + d
    encoder = attention + ffn + 2 * 2 * d
    decoder = 2 * attention + ffn + 3 * 2 * d
    return (vs + vt) * d + n * (encoder + decoder)  # the target embedding is also the output projection


def test_transformer_parameter_count_matches_formula_and_paper():
    model = _build("transformer")
    assert count_params(model) == _transformer_params(SRC_VOCAB, TGT_VOCAB, 16, 32, 2)
    # The base model of Vaswani et al. (Table 3: 65M parameters, one 37000-token vocabulary shared by the
    # source embedding, target embedding and softmax); here the source embedding is separate.
    vocab = InputSpec((None,), "int32", 37000), OutputSpec("seq2seq", vocab_size=37000)
    base = build_model("transformer", *vocab, d_model=512, num_heads=8, ff_dim=2048, num_layers=6)
    assert count_params(base) == _transformer_params(37000, 37000, 512, 2048, 6)
    assert 0.95 * 65e6 < count_params(base) - 37000 * 512 < 1.05 * 65e6


@pytest.fixture(scope="module")
def trained_transformer(kor_eng):
    """A tiny Transformer trained on the Tatoeba pairs, and its loss before and after."""
    x, y, specs = kor_eng
    model = build_model("transformer", *specs, d_model=32, num_heads=2, ff_dim=64, num_layers=1, dropout=0.0)
    losses = assert_training_lowers_loss(
        model, x, y, loss=masked_label_smoothed_loss(0.1), epochs=8, batch_size=50, learning_rate=5e-3,
        factor=0.6,
    )
    return model, losses


@pytest.mark.learns
@pytest.mark.parametrize("config", ["bahdanau", "luong_general"])
def test_rnn_training_lowers_loss_on_tatoeba(kor_eng, config):
    x, y, specs = kor_eng
    name, hparams = CONFIGS[config]
    model = build_model(name, *specs, **hparams)
    assert_training_lowers_loss(
        model, x, y, loss=masked_label_smoothed_loss(0.1), epochs=3, batch_size=50, learning_rate=1e-2,
        factor=0.8,
    )


def test_transformer_training_lowers_loss_on_tatoeba(trained_transformer):
    before, after = trained_transformer[1]
    assert after < 0.6 * before


def test_greedy_and_beam_search_on_a_trained_model(kor_eng, trained_transformer):
    model, sources, max_len = trained_transformer[0], kor_eng[0]["source"][::60], 12
    greedy = greedy_decode(model, sources, max_len)
    assert beam_search_decode(model, sources, beam_width=1, max_len=max_len) == greedy
    beams = beam_search_decode(model, sources, beam_width=3, max_len=max_len, length_penalty=0.0)
    for sequence in greedy + beams:
        assert sequence[-1] == END_ID or len(sequence) == max_len
        assert START_ID not in sequence and PAD_ID not in sequence
    greedy_scores = sequence_log_prob(model, sources, greedy)
    beam_scores = sequence_log_prob(model, sources, beams)
    assert (beam_scores >= greedy_scores - 1e-5).all(), (beam_scores, greedy_scores)
    assert greedy_decode(model, sources[0], max_len) == greedy[0]


def test_attention_heatmap_is_a_png(tmp_path):
    weights = np.random.default_rng(0).dirichlet(np.ones(4), size=6)  # (tgt_len, src_len)
    path = tmp_path / "attention.png"
    save_attention_heatmap(weights, list("abcd"), ["<s>", "x", "y", "z", "w", "v"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_transformer_schedule_peaks_at_warmup():
    schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    steps = np.arange(0, 20001, 50)
    rates = np.array([float(schedule(s)) for s in steps])
    assert steps[rates.argmax()] == 4000
    np.testing.assert_allclose(rates.max(), (512 * 4000) ** -0.5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(1000)), rates.max() / 4, rtol=1e-6)  # linear warm-up
    np.testing.assert_allclose(float(schedule(16000)), rates.max() / 2, rtol=1e-6)  # step^-0.5 decay
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(keras.optimizers.Adam(schedule)))
    restored_schedule = keras.optimizers.serialize(restored)["config"]["learning_rate"]
    assert restored_schedule["config"] == schedule.get_config()
    np.testing.assert_allclose(float(restored.learning_rate), float(schedule(0)), rtol=1e-6)


def test_loss_ignores_padding_and_smooths_labels():
    rng = np.random.default_rng(0)
    y_true = np.array([[5, 3, END_ID, PAD_ID, PAD_ID], [4, END_ID, PAD_ID, PAD_ID, PAD_ID]], "int32")
    y_pred = rng.dirichlet(np.ones(8), size=(2, 5)).astype("float32")
    real = y_true != PAD_ID
    log_p = np.log(y_pred)
    nll = -np.take_along_axis(log_p, y_true[..., None], -1)[..., 0]
    for smoothing in (0.0, 0.1):
        loss = masked_label_smoothed_loss(smoothing)
        expected = ((1 - smoothing) * nll + smoothing * -log_p.mean(-1))[real].mean()
        np.testing.assert_allclose(float(loss(y_true, y_pred)), expected, rtol=1e-5)
        other = y_pred.copy()
        other[~real] = rng.dirichlet(np.ones(8), size=(~real).sum())
        np.testing.assert_allclose(float(loss(y_true, other)), expected, rtol=1e-5)
    assert float(loss(np.zeros_like(y_true), y_pred)) == 0.0
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert restored.get_config() == loss.get_config()


def test_rejects_bad_hparams():
    with pytest.raises(ValueError, match="attention='cosine'"):
        build_model("seq2seq_attention", SPEC_IN, SPEC_OUT, attention="cosine")
    with pytest.raises(ValueError, match="d_model=30 .* divisible by num_heads=4"):
        build_model("transformer", SPEC_IN, SPEC_OUT, d_model=30)
    with pytest.raises(ValueError, match="vocab_size"):
        build_model("transformer", InputSpec((SRC_LEN,), "int32"), SPEC_OUT)
    with pytest.raises(ValueError, match="no head for task 'classification'"):
        build_model("transformer", SPEC_IN, OutputSpec("classification", 3))

