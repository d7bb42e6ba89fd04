"""Shared attention layers: the fused attention against a plain computation, config round trips, old saves."""

import doctest
import inspect
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_models
from keras_models import InputSpec, OutputSpec, build_model, layers
from keras_models.layers import (
    LastTimestep,
    MultiHeadDotProductAttention,
    PaddingMask,
    PositionalEncoding,
    PositionEmbedding,
    PreNormEncoderLayer,
    TokenAndPositionEmbedding,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    ViTPositionEmbedding,
)
from keras_models.architectures.fnet import FNetBlock
from keras_models.architectures.seq2seq_attention import LuongAttention
from keras_models.architectures.tabnet import TabNetDecoder
from keras_models.legacy import MultiHeadSelfAttention, TransformerEncoderBlock, ViTEncoderBlock

DATA = Path(__file__).parent / "data"
BATCH, TQ, TK, WIDTH, HEADS = 2, 5, 7, 8, 2
RNG = np.random.default_rng(0)
QUERY = RNG.normal(size=(BATCH, TQ, WIDTH)).astype("float32")
VALUE = RNG.normal(size=(BATCH, TK, WIDTH)).astype("float32")
QUERY_MASK = np.arange(TQ)[None, :] < np.array([[5], [3]])  # the second query sequence has 2 padded steps
KEY_MASK = np.arange(TK)[None, :] < np.array([[7], [4]])


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))


def plain_attention(layer, query, value, padding_mask=None, causal=False):
    """Multi-head attention with numpy: einsum projections, scores masked with -1e9, float32 softmax."""
    kernels = [(_numpy(d.kernel), _numpy(d.bias)) for d in
               (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)]
    q, k, v = (np.einsum("btd,dhk->bthk", x, w) + b for x, (w, b) in zip((query, value, value), kernels))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    mask = np.ones(scores.shape, bool)
    if padding_mask is not None:
        mask &= padding_mask[:, None, None, :]
    if causal:
        mask &= np.tril(np.ones(scores.shape[-2:], bool))
    scores = np.where(mask, scores, -1e9).astype("float32")
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = np.einsum("bhqk,bkhd->bqhd", weights, v)
    w, b = kernels[3]
    return np.einsum("bthk,hkd->btd", context, w) + b, weights


CASES = {
    "self": dict(value=None, padding_mask=None, causal=False),
    "self_padding": dict(value=None, padding_mask=QUERY_MASK, causal=False),
    "causal_padding": dict(value=None, padding_mask=QUERY_MASK, causal=True),
    "cross_padding": dict(value=VALUE, padding_mask=KEY_MASK, causal=False),
}


# bfloat16 keeps 8 bits of mantissa: outputs within 2% of their largest value, weights within 0.01.
@pytest.mark.parametrize("policy, atol, weights_atol", [("float32", 1e-5, 1e-6), ("mixed_bfloat16", 2e-2, 1e-2)])
def test_attention_equals_the_plain_computation(policy, atol, weights_atol):
    keras.utils.set_random_seed(0)
    for case, spec in CASES.items():
        layer = MultiHeadDotProductAttention(HEADS, dtype=policy)
        kwargs = dict(padding_mask=spec["padding_mask"], use_causal_mask=spec["causal"])
        fused = layer(QUERY, spec["value"], **kwargs)
        explicit, weights = layer(QUERY, spec["value"], return_attention_scores=True, **kwargs)
        expected, expected_weights = plain_attention(
            layer, QUERY, VALUE if spec["value"] is not None else QUERY, spec["padding_mask"], spec["causal"]
        )
        assert keras.backend.standardize_dtype(fused.dtype) == layer.compute_dtype, case
        assert keras.backend.standardize_dtype(weights.dtype) == "float32", case
        scale = np.abs(expected).max()
        np.testing.assert_allclose(_numpy(fused), expected, atol=atol * scale, err_msg=case)
        np.testing.assert_allclose(_numpy(explicit), expected, atol=atol * scale, err_msg=case)
        np.testing.assert_allclose(_numpy(weights), expected_weights, atol=weights_atol, err_msg=case)
        if spec["padding_mask"] is not None:
            padded = ~spec["padding_mask"][:, None, None, :]
            assert np.all(np.where(padded, _numpy(weights), 0.0) == 0.0), case


def test_padded_keys_and_later_steps_do_not_change_the_output():
    layer = MultiHeadDotProductAttention(HEADS)
    changed = VALUE.copy()
    changed[1, 4:] += 5.0  # the second sequence's padding
    np.testing.assert_allclose(
        _numpy(layer(QUERY, changed, padding_mask=KEY_MASK)), _numpy(layer(QUERY, VALUE, padding_mask=KEY_MASK)),
        atol=1e-5,
    )
    later = QUERY.copy()
    later[:, 3:] += 5.0
    causal = _numpy(layer(QUERY, use_causal_mask=True))
    np.testing.assert_allclose(_numpy(layer(later, use_causal_mask=True))[:, :3], causal[:, :3], atol=1e-5)
    assert np.abs(_numpy(layer(later, use_causal_mask=True))[:, 3:] - causal[:, 3:]).max() > 1e-3


def test_attention_dropout_applies_only_while_training():
    layer = MultiHeadDotProductAttention(HEADS, dropout=0.5)
    inference = _numpy(layer(QUERY, training=False))
    np.testing.assert_allclose(inference, plain_attention(layer, QUERY, QUERY)[0], atol=1e-5)
    assert np.abs(_numpy(layer(QUERY, training=True)) - inference).max() > 1e-3


def _round_trip_cases():
    ids = np.array([[5, 3, 9, 0, 0], [2, 7, 0, 0, 0]], "int32")
    return {
        "PaddingMask": (lambda: PaddingMask(), (ids,), {}),
        "MultiHeadDotProductAttention": (
            lambda: MultiHeadDotProductAttention(HEADS, key_dim=3, dropout=0.1, flash_attention=False),
            (QUERY, VALUE), {"padding_mask": KEY_MASK},
        ),
        "TokenAndPositionEmbedding": (lambda: TokenAndPositionEmbedding(10, 8, WIDTH), (ids,), {}),
        "PositionalEncoding": (lambda: PositionalEncoding(max_wavelength=100.0), (QUERY,), {}),
        "ViTPositionEmbedding": (lambda: ViTPositionEmbedding((2, 3), stddev=0.5), (VALUE,), {}),
        "PositionEmbedding": (lambda: PositionEmbedding(), (QUERY,), {}),
        "LastTimestep": (lambda: LastTimestep(), (QUERY,), {}),
        "PreNormEncoderLayer": (
            lambda: PreNormEncoderLayer(HEADS, 16, 0.1, attention_dropout=0.1, activation="relu"), (QUERY,), {}
        ),
        "TransformerEncoderLayer": (
            lambda: TransformerEncoderLayer(HEADS, 16, 0.1, attention_dropout=0.1, activation="gelu",
                                            layer_norm_epsilon=1e-12, kernel_initializer="he_normal"),
            (QUERY,), {"padding_mask": QUERY_MASK},
        ),
        "TransformerDecoderLayer": (
            lambda: TransformerDecoderLayer(HEADS, 16, 0.0),
            (QUERY, QUERY_MASK, VALUE, KEY_MASK), {},
        ),
        "FNetBlock": (lambda: FNetBlock(16, 0.0), (QUERY,), {}),
        "MultiHeadSelfAttention": (lambda: MultiHeadSelfAttention(HEADS, 0.1), (QUERY,), {"padding_mask": QUERY_MASK}),
        "TransformerEncoderBlock": (lambda: TransformerEncoderBlock(HEADS, 16, 0.1), (QUERY,), {"padding_mask": QUERY_MASK}),
        "ViTEncoderBlock": (lambda: ViTEncoderBlock(HEADS, 16), (QUERY,), {}),
        # Layers of model variants the zoo's examples do not build.
        "LuongAttention": (lambda: LuongAttention("general"), (QUERY, VALUE, KEY_MASK), {}),
        "TabNetDecoder": (lambda: TabNetDecoder(WIDTH, 2), (np.stack([QUERY[:, 0], QUERY[:, 1]]),), {}),
    }


def test_every_layer_round_trips_its_config_with_identical_outputs():
    registered = {
        name for name, obj in vars(layers).items()
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer)
        and keras.saving.get_registered_name(obj).startswith("keras_models>")
    }
    cases = _round_trip_cases()
    assert registered <= set(cases), registered - set(cases)
    for name, (make, args, kwargs) in cases.items():
        layer = make()
        outputs = layer(*args, **kwargs)
        config = layer.get_config()
        arguments = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
        assert arguments <= set(config), (name, arguments - set(config))
        clone = type(layer).from_config(config)
        clone(*args, **kwargs)
        clone.set_weights(layer.get_weights())
        assert clone.get_config() == config, name
        for actual, expected in zip(keras.tree.flatten(clone(*args, **kwargs)), keras.tree.flatten(outputs)):
            np.testing.assert_array_equal(_numpy(actual), _numpy(expected), err_msg=name)


def test_decoder_layer_returns_the_cross_attention_it_uses():
    layer = TransformerDecoderLayer(HEADS, 16, 0.0)
    outputs = layer(QUERY, QUERY_MASK, VALUE, KEY_MASK)
    with_weights, weights = layer(QUERY, QUERY_MASK, VALUE, KEY_MASK, return_attention_scores=True)
    np.testing.assert_allclose(_numpy(with_weights), _numpy(outputs), atol=1e-5)
    assert weights.shape == (BATCH, HEADS, TQ, TK)
    _, expected = plain_attention(layer.cross_attention, _numpy(layer.self_attention_norm(
        QUERY + layer.self_attention(QUERY, padding_mask=QUERY_MASK, use_causal_mask=True))), VALUE, KEY_MASK)
    np.testing.assert_allclose(_numpy(weights), expected, atol=1e-5)


def test_old_registered_names_resolve_to_the_shared_layers():
    keras_models.list_models()
    assert keras.saving.get_registered_object("keras_models>MultiHeadAttention") is MultiHeadDotProductAttention
    assert keras.saving.get_registered_object("keras_models>PaddingMask") is PaddingMask
    assert keras.saving.get_registered_name(MultiHeadDotProductAttention) == "keras_models>MultiHeadDotProductAttention"
    assert issubclass(keras.saving.get_registered_object("keras_models>ViTEncoderBlock"), PreNormEncoderLayer)


def _saved_example(name):
    arrays = np.load(DATA / f"{name}.npz")
    inputs = {k.removeprefix("input_"): arrays[k] for k in arrays.files if k.startswith("input_")}
    return inputs or arrays["input"], arrays["output"]


@pytest.mark.parametrize(
    "name", ["vit", "bert", "bert_mlm", "fnet", "transformer", "seq2seq_bahdanau", "seq2seq_luong_general"]
)
def test_models_saved_before_the_shared_layers_load_with_the_same_outputs(name):
    keras_models.list_models()  # registers every family's layers
    model = keras.saving.load_model(DATA / f"{name}.keras", safe_mode=True)
    inputs, expected = _saved_example(name)
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, atol=1e-5, rtol=1e-4)


def test_bert_saved_with_dense_projections_equals_the_new_layout():
    """The old BERT's weights, reshaped to the shared attention's kernels, give the same outputs."""
    old = keras.saving.load_model(DATA / "bert.keras", safe_mode=True)
    assert any(isinstance(layer, TransformerEncoderBlock) for layer in old.get_layer("encoder").layers)
    new = build_model("bert", InputSpec((10,), dtype="int32", vocab_size=30), OutputSpec("classification", 3),
                      d_model=16, num_heads=2, ff_dim=32, num_layers=2, dropout=0.0, max_len=16)
    assert not any(isinstance(layer, TransformerEncoderBlock) for layer in new.get_layer("encoder").layers)
    new.set_weights([w.reshape(v.shape) for w, v in zip(old.get_weights(), new.weights)])
    inputs, expected = _saved_example("bert")
    np.testing.assert_allclose(new.predict(inputs, verbose=0), expected, atol=1e-5, rtol=1e-4)

