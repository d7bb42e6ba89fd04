"""Sequence family: 1D CNN, TCN, SimpleRNN/LSTM/GRU, SRU and the series Transformer on real series."""

import keras
import keras_tuner
import numpy as np
import pytest

from keras_models import InputSpec, OutputSpec, build_model, search_space
from keras_models.architectures.recurrent import SRU
from keras_models.architectures.tcn import WeightNormConv1D, receptive_field, tcn_receptive_field
from tests.models.checks import assert_training_lowers_loss, count_params

MODELS = ["cnn1d", "tcn", "rnn", "lstm", "gru", "sru", "series_transformer"]
EPOCHS, EPOCHS_ITALY = 10, 20
WINDOW, HORIZON = 12, 3
SERIES, FORECAST = InputSpec((WINDOW, 1)), OutputSpec("forecasting", HORIZON)


def read_ts(path):
    """Minimal reader of sktime `.ts` files of equal-length univariate series."""
    series, labels, in_data = [], [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("@data"):
            in_data = True
        elif in_data:
            values, label = line.rsplit(":", 1)
            series.append([float(v) for v in values.split(",")])
            labels.append(label)
    classes = sorted(set(labels))
    return np.asarray(series, "float32")[..., None], np.array([classes.index(c) for c in labels], "int32")


@pytest.fixture(scope="module")
def airline(shared_datasets):
    """Log airline passengers, standardised, as 130 windows of 12 months in → 3 out."""
    path = shared_datasets / "airline_passengers" / "airline-passengers.csv"
    z = np.log(np.loadtxt(path, delimiter=",", skiprows=1, usecols=1))
    z = (z - z.mean()) / z.std()
    starts = range(len(z) - WINDOW - HORIZON + 1)
    x = np.stack([z[s : s + WINDOW] for s in starts])[..., None].astype("float32")
    y = np.stack([z[s + WINDOW : s + WINDOW + HORIZON] for s in starts]).astype("float32")
    assert x.shape == (130, WINDOW, 1) and y.shape == (130, HORIZON)
    return x, y


@pytest.fixture(scope="module")
def italy_power(shared_datasets):
    root = shared_datasets / "ucr_timeseries"
    (x_train, y_train), (x_test, y_test) = data = (
        read_ts(root / "ItalyPowerDemand_TRAIN.ts"), read_ts(root / "ItalyPowerDemand_TEST.ts")
    )
    assert x_train.shape == (67, 24, 1) and x_test.shape == (1029, 24, 1)
    assert set(y_train) == set(y_test) == {0, 1}
    return data


def first_trial(name):
    """The search space's default point: small, and what the tuner tries first."""
    return search_space(name, keras_tuner.HyperParameters())


@pytest.mark.learns
@pytest.mark.parametrize("name", MODELS)
def test_forecasts_the_airline_series(name, airline):
    """Every head, then forecasting the airline series at the search space's first point."""
    x, y = airline
    hparams = first_trial(name)
    for task, units in [("classification", 4), ("regression", 2)]:
        assert build_model(name, SERIES, OutputSpec(task, units), **hparams).output_shape == (None, units)
    model = build_model(name, SERIES, FORECAST, **hparams)
    assert model.output_shape == (None, HORIZON)
    assert_training_lowers_loss(model, x, y, loss="mse", epochs=EPOCHS, batch_size=16, learning_rate=1e-2, factor=0.5)


@pytest.mark.learns
@pytest.mark.parametrize("name", ["cnn1d", "tcn"])
def test_classifies_italy_power_demand(name, italy_power):
    (x_train, y_train), (x_test, y_test) = italy_power
    model = build_model(name, InputSpec((24, 1)), OutputSpec("classification", 2), **first_trial(name))
    assert_training_lowers_loss(
        model, x_train, y_train, loss="sparse_categorical_crossentropy",
        epochs=EPOCHS_ITALY, batch_size=16, learning_rate=1e-2, factor=0.5,
    )
    accuracy = (model.predict(x_test, verbose=0).argmax(1) == y_test).mean()
    assert accuracy > 0.9, accuracy  # chance is 0.5; the FCN paper reports 0.97


TOKEN_LEN, TOKEN_VOCAB = 32, 4000
TOKENS = InputSpec((TOKEN_LEN,), dtype="int32", vocab_size=TOKEN_VOCAB)


@pytest.fixture(scope="module")
def sentence_polarity(shared_datasets):
    """The 10,662 movie-review sentences as word ids (0 pads, 1 is unknown), 8,000 to train and the rest to test."""
    from collections import Counter

    sentences, labels = [], []
    for label, suffix in ((0, "neg"), (1, "pos")):
        text = (shared_datasets / "rt_polarity" / f"rt-polarity.{suffix}").read_text(encoding="latin-1")
        lines = [line.split() for line in text.split("\n") if line.strip()]
        sentences += lines
        labels += [label] * len(lines)
    order = np.random.default_rng(0).permutation(len(sentences))
    sentences, labels = [sentences[i] for i in order], np.asarray(labels, "int32")[order]
    counts = Counter(w for s in sentences[:8000] for w in s)
    index = {w: i + 2 for i, (w, _) in enumerate(counts.most_common(TOKEN_VOCAB - 2))}
    ids = np.zeros((len(sentences), TOKEN_LEN), "int32")
    for row, sentence in enumerate(sentences):
        tokens = [index.get(w, 1) for w in sentence[:TOKEN_LEN]]
        ids[row, : len(tokens)] = tokens
    return (ids[:8000], labels[:8000]), (ids[8000:], labels[8000:])


@pytest.mark.learns
@pytest.mark.slow
@pytest.mark.parametrize("name, hparams", [
    ("cnn1d", dict(filters=32, kernel_size=5, num_blocks=1, embedding_dim=32)),
    ("lstm", dict(units=16, embedding_dim=32)),
    ("gru", dict(units=16, embedding_dim=32, bidirectional=True)),
])
def test_classifies_sentence_polarity_from_token_ids(name, hparams, sentence_polarity):
    """Token ids through a learned embedding: real sentences, held-out accuracy well above chance."""
    (x_train, y_train), (x_test, y_test) = sentence_polarity
    model = build_model(name, TOKENS, OutputSpec("classification", 2), **hparams)
    assert model.get_layer("embedding").embeddings.shape == (TOKEN_VOCAB, 32)
    assert_training_lowers_loss(
        model, x_train, y_train, loss="sparse_categorical_crossentropy",
        epochs=3, batch_size=64, learning_rate=3e-3, factor=0.7,
    )
    accuracy = (model.predict(x_test, verbose=0).argmax(1) == y_test).mean()
    assert accuracy > 0.65, accuracy  # chance is 0.5; Kim (2014) reports 0.761 for a CNN on random embeddings
    if name != "cnn1d":  # recurrent layers skip masked padding: its embedding cannot change the output
        table = model.get_layer("embedding").embeddings
        before = model.predict(x_test[:16], verbose=0)
        rows = keras.ops.convert_to_numpy(table).copy()
        rows[0] = 5.0
        table.assign(rows)
        np.testing.assert_allclose(model.predict(x_test[:16], verbose=0), before, atol=1e-6)


def test_token_inputs_need_a_sequence_of_ids():
    with pytest.raises(ValueError, match=r"Model 'lstm' reads token ids shaped \(seq_len,\)"):
        build_model("lstm", InputSpec((4, 2), dtype="int32", vocab_size=10), OutputSpec("classification", 2))
    with pytest.raises(ValueError, match="embedding_dim=0 of model 'cnn1d'"):
        build_model("cnn1d", TOKENS, OutputSpec("classification", 2), embedding_dim=0)


def test_recurrent_parameter_counts():
    """SimpleRNN h(h+d)+h, LSTM 4(h(h+d)+h), Keras GRU (reset_after=True) 3(h(h+d)+2h); ×2 bidirectional."""
    h, d, classes = 16, 1, 4
    for name, gates, biases in [("rnn", 1, 1), ("lstm", 4, 1), ("gru", 3, 2)]:
        for directions in (1, 2):
            model = build_model(
                name, InputSpec((10, d)), OutputSpec("classification", classes),
                units=h, num_layers=2, bidirectional=directions == 2,
            )
            layer = lambda inputs: gates * (h * (h + inputs) + biases * h)  # noqa: E731
            expected = directions * (layer(d) + layer(directions * h)) + (directions * h + 1) * classes
            assert count_params(model) == expected, (name, directions)


def test_sru_parameter_count():
    h, d = 16, 1  # first layer projects the skip term (4 matrices), the second has d == h (3 matrices).
    model = build_model("sru", InputSpec((10, d)), OutputSpec("forecasting", 2), units=h, num_layers=2)
    assert count_params(model) == (4 * d * h + 4 * h) + (3 * h * h + 4 * h) + (h * 2 + 2)


def test_series_transformer_parameter_count():
    """Step projection, position table, post-norm blocks (4 attention projections, FFN, 2 norms), flat head."""
    t, c, d, f, blocks, h = 12, 2, 16, 32, 2, 3
    model = build_model(
        "series_transformer", InputSpec((t, c)), OutputSpec("forecasting", h),
        d_model=d, num_heads=4, ff_dim=f, num_layers=blocks,
    )
    block = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * (2 * d)
    assert count_params(model) == (c * d + d) + t * d + blocks * block + (t * d * h + h)


def test_series_transformer_knows_the_order_of_steps(airline):
    """Attention alone is blind to order; the position embedding makes a reversed window read differently."""
    x, _ = airline
    model = build_model("series_transformer", SERIES, FORECAST, d_model=16, num_layers=1, pooling="mean")
    forward, backward = model.predict(x[:8], verbose=0), model.predict(x[:8, ::-1], verbose=0)
    assert np.abs(forward - backward).max() > 1e-4


def test_cnn1d_reference_fcn_parameter_count():
    """The defaults are Wang et al.'s FCN: 128/256/128 filters, kernels 8/5/3, BN, GAP."""
    model = build_model("cnn1d", InputSpec((24, 1)), OutputSpec("classification", 2))
    assert [layer.kernel_size for layer in model.layers if "conv" in layer.name] == [(8,), (5,), (3,)]
    convs = (8 * 1 * 128 + 128) + (5 * 128 * 256 + 256) + (3 * 256 * 128 + 128)
    batch_norms = 2 * (128 + 256 + 128)
    assert convs + batch_norms == 264_704
    assert count_params(model) == 264_704 + (128 * 2 + 2)
    assert model.count_params() - count_params(model) == batch_norms  # moving mean and variance


def test_tcn_parameter_count():
    c, f, k, blocks = 1, 16, 3, 3
    for weight_norm in (True, False):
        model = build_model(
            "tcn", InputSpec((16, c)), OutputSpec("forecasting", 3),
            filters=f, kernel_size=k, num_blocks=blocks, weight_norm=weight_norm,
        )
        g = f if weight_norm else 0  # one gain per output channel of each weight-normalised conv
        first = (k * c * f + f + g) + (k * f * f + f + g) + (c * f + f)  # with the 1x1 residual conv
        later = (k * f * f + f + g) * 2
        assert count_params(model) == first + (blocks - 1) * later + (f * 3 + 3)


@pytest.mark.parametrize("weight_norm", [True, False])
def test_tcn_receptive_field_and_causality(weight_norm, tmp_path):
    k, blocks, steps, t = 3, 3, 40, 5
    expected = 1 + 2 * (k - 1) * (2**blocks - 1)
    assert tcn_receptive_field(k, blocks) == tcn_receptive_field(k, dilations=[1, 2, 4]) == expected == 29
    model = build_model(
        "tcn", InputSpec((steps, 1)), OutputSpec("forecasting", 3),
        filters=16, kernel_size=k, num_blocks=blocks, dropout=0.0, weight_norm=weight_norm,
    )
    assert receptive_field(model) == expected
    model.save(tmp_path / "tcn.keras")
    assert receptive_field(keras.saving.load_model(tmp_path / "tcn.keras", safe_mode=True)) == expected

    features = keras.Model(model.inputs, model.get_layer("last_timestep").input)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, steps, 1)).astype("float32")
    x_changed = x.copy()
    x_changed[:, t] += 5.0 * rng.normal(size=(4, 1)).astype("float32")
    diff = np.abs(features.predict(x_changed, verbose=0) - features.predict(x, verbose=0)).max(axis=(0, 2))
    assert np.all(diff[:t] == 0.0), "a change at time t reached earlier outputs"
    assert diff[t] > 0 and diff[t + expected - 1] > 0, "the change must reach t .. t + receptive field - 1"
    assert np.all(diff[t + expected :] == 0.0), "outputs beyond the receptive field changed"


def test_weight_norm_conv_matches_numpy():
    """w = g·v/‖v‖ per output channel, applied as a dilated causal convolution."""
    k, d, rng = 3, 2, np.random.default_rng(2)
    layer = WeightNormConv1D(4, k, dilation_rate=d)
    x = rng.normal(size=(2, 9, 3)).astype("float32")
    layer.build(x.shape)
    np.testing.assert_allclose(layer.g.numpy(), np.linalg.norm(layer.v.numpy(), axis=(0, 1)), rtol=1e-6)
    v, g, b = rng.normal(size=(k, 3, 4)), rng.uniform(0.5, 2, size=4), rng.normal(size=4)
    layer.set_weights([v.astype("float32"), g.astype("float32"), b.astype("float32")])
    w = g * v / np.linalg.norm(v, axis=(0, 1))
    padded = np.pad(x, [(0, 0), ((k - 1) * d, 0), (0, 0)])
    expected = b + sum(padded[:, j * d : j * d + 9] @ w[j] for j in range(k))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5, rtol=1e-5)


def sru_reference(x, kernel, v, b, units, activation, alpha):
    """The SRU recurrence written step by step in numpy, from the equations of Lei et al. 2018."""
    g = np.tanh if activation == "tanh" else (lambda c: c)
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    batch, steps, d = x.shape
    h = units
    c = np.zeros((batch, h))
    outputs = []
    for t in range(steps):
        xt = x[:, t].astype("float64")
        w = kernel.astype("float64")
        x_tilde, wf_x, wr_x = xt @ w[:, :h], xt @ w[:, h : 2 * h], xt @ w[:, 2 * h : 3 * h]
        skip = xt @ w[:, 3 * h :] if d != h else alpha * xt
        f = sigmoid(wf_x + v[0] * c + b[0])
        r = sigmoid(wr_x + v[1] * c + b[1])
        c = f * c + (1 - f) * x_tilde
        outputs.append(r * g(c) + (1 - r) * skip)
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("d, activation, highway_bias", [(3, None, 0.0), (6, "tanh", -1.0)])
def test_sru_layer_matches_numpy_recurrence(d, activation, highway_bias):
    """With a projected skip term (d != units, identity g) and with α·x (d == units, tanh g)."""
    units, rng = 6, np.random.default_rng(1)
    layer = SRU(units, activation=activation, highway_bias=highway_bias, return_sequences=True)
    x = rng.normal(size=(4, 7, d)).astype("float32")
    layer.build(x.shape)
    alpha = np.sqrt(1 + 2 * np.exp(highway_bias))
    # Reference initialisation: U(±√(3/d)) for W, ×√0.5 for the gates, ×α for W'; v ~ U(±√1.5).
    w, limit = layer.kernel.numpy(), np.sqrt(3 / d)
    bounds = [limit, limit * np.sqrt(0.5), limit * np.sqrt(0.5)] + ([limit * alpha] if d != units else [])
    for block, bound in zip(np.split(w, len(bounds), axis=1), bounds):
        assert 0.5 * bound < np.abs(block).max() <= bound
    assert np.abs(layer.recurrent_kernel.numpy()).max() <= np.sqrt(1.5)
    np.testing.assert_allclose(layer.bias.numpy(), [np.zeros(units), np.full(units, highway_bias)])
    kernel = rng.normal(scale=0.5, size=layer.kernel.shape).astype("float32")
    v = rng.normal(size=(2, units)).astype("float32")
    b = rng.normal(size=(2, units)).astype("float32")
    layer.set_weights([kernel, v, b])
    expected = sru_reference(x, kernel, v, b, units, activation, alpha)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5, rtol=1e-5)
    last = SRU.from_config(dict(layer.get_config(), return_sequences=False))
    last.build(x.shape)
    last.set_weights([kernel, v, b])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(last(x)), expected[:, -1], atol=1e-5, rtol=1e-5)


def test_rejects_bad_hparams_and_inputs():
    with pytest.raises(ValueError, match="bidirectional=True of model 'lstm' is for classification only"):
        build_model("lstm", SERIES, OutputSpec("forecasting", 3), bidirectional=True)
    with pytest.raises(ValueError, match="dropout=1.5 .* out of range"):
        build_model("tcn", SERIES, OutputSpec("forecasting", 3), dropout=1.5)
    with pytest.raises(ValueError, match="kernel_size=1 of model 'tcn'"):
        build_model("tcn", SERIES, OutputSpec("forecasting", 3), kernel_size=1)
    with pytest.raises(ValueError, match=r"\(timesteps, channels\)"):
        build_model("sru", InputSpec((12,)), OutputSpec("forecasting", 3))
    with pytest.raises(ValueError, match="num_heads=3 of model 'series_transformer' must divide d_model=32"):
        build_model("series_transformer", SERIES, FORECAST, num_heads=3)
    with pytest.raises(ValueError, match="pooling='cls' of model 'series_transformer'"):
        build_model("series_transformer", SERIES, FORECAST, pooling="cls")
    with pytest.raises(ValueError, match="exactly one of"):
        tcn_receptive_field(3)

