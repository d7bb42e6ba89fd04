"""TabNet (Arik & Pfister 2021), with sparsemax feature selection.

TabNet (Arik & Pfister 2021) chooses, at each of `n_steps` decision steps, a
sparse mask over the input features with an attentive transformer and
processes the selected features with a feature transformer of GLU blocks; the
ReLU outputs of the steps are summed into the decision. The per-step masks say
which features the model used for each example (`tabnet_feature_masks`).
`TabNetPretrainer` pretrains the encoder without labels by reconstructing
randomly hidden features with a `TabNetDecoder`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_models.heads import require_range, task_head
from keras_models.registry import Example, register_model
from keras_models.specs import InputSpec, OutputSpec


def sparsemax(logits, axis: int = -1):
    """Euclidean projection of `logits` onto the probability simplex (Martins & Astudillo 2016).

    Like softmax the output sums to 1 along `axis`, but small logits get exact
    zeros. Computed in float32; the result has the input's dtype.

    Args:
        logits: floating tensor.
        axis: the axis that sums to 1.
    """
    dtype = logits.dtype
    z = ops.moveaxis(ops.cast(logits, "float32"), axis, -1)
    z = z - ops.max(z, axis=-1, keepdims=True)
    z_sorted = ops.flip(ops.sort(z, axis=-1), axis=-1)
    k = ops.arange(1, ops.shape(z)[-1] + 1, dtype="float32")
    cumulative = ops.cumsum(z_sorted, axis=-1)
    in_support = ops.cast(1.0 + k * z_sorted > cumulative, "float32")
    support_size = ops.sum(in_support, axis=-1, keepdims=True)
    support_sum = ops.take_along_axis(
        cumulative, ops.cast(support_size, "int32") - 1, axis=-1
    )
    threshold = (support_sum - 1.0) / support_size
    outputs = ops.maximum(z - threshold, 0.0)
    return ops.cast(ops.moveaxis(outputs, -1, axis), dtype)


def glu_blocks(x, denses, norms, training):
    """TabNet's feature transformer: GLU blocks (dense → batch norm → GLU).

    After the first block each adds its input and scales by √0.5, which keeps the variance.
    """
    for j, (dense, norm) in enumerate(zip(denses, norms)):
        h = norm(dense(x), training=training)
        width = dense.units // 2
        h = h[..., :width] * ops.sigmoid(h[..., width:])
        x = h if j == 0 else (x + h) * math.sqrt(0.5)
    return x


def _dense(owner: keras.layers.Layer, units: int, name: str, input_shape) -> keras.layers.Dense:
    """A bias-free dense layer of `owner`'s dtype policy, built for `input_shape` (TabNet's layers have no bias)."""
    layer = keras.layers.Dense(units, use_bias=False, dtype=owner.dtype_policy, name=name)
    layer.build(input_shape)
    return layer


def _batch_norm(owner: keras.layers.Layer, name: str, input_shape) -> keras.layers.BatchNormalization:
    """Batch normalisation with `owner`'s momentum and dtype policy, built for `input_shape`."""
    layer = keras.layers.BatchNormalization(momentum=owner.momentum, dtype=owner.dtype_policy, name=name)
    layer.build(input_shape)
    return layer


@keras.saving.register_keras_serializable(package="keras_models")
class TabNetEncoder(keras.layers.Layer):
    """TabNet's sequential attention encoder (Arik & Pfister 2021, Figure 4).

    The features are batch-normalised. An initial feature transformer gives the
    first attention input. Then each decision step `i`:
    `M[i] = sparsemax(P[i-1] ⊙ BN(FC(a[i-1])))` selects features,
    `P[i] = P[i-1] ⊙ (γ - M[i])` lowers the prior of features already used, and
    the step's feature transformer maps `M[i] ⊙ f` to `[d[i], a[i]]`. The output
    is `Σ_i ReLU(d[i])`. A feature transformer is `n_shared` GLU blocks shared by
    all steps then `n_independent` step-specific ones; after the first block
    each adds its input and scales by √0.5. Shared blocks share their dense
    layer; every step has its own batch normalisation. The mask entropy
    `Σ_i mean_b Σ_j -M log(M + ε) / n_steps` times `sparsity_coefficient` is
    added with `add_loss`. Batch normalisation is plain, not ghost (virtual
    batch) normalisation.

    Args:
        n_d: int, width of each step's decision output.
        n_a: int, width of each step's attention input.
        n_steps: int, decision steps.
        gamma: float, relaxation factor γ ≥ 1; 1 lets each feature be used in
            one step only, larger values allow reuse.
        n_shared: int, GLU blocks shared across steps.
        n_independent: int, step-specific GLU blocks.
        momentum: float, batch-normalisation momentum.
        sparsity_coefficient: float, weight λ of the mask-entropy loss.
        epsilon: float, ε inside the entropy's logarithm.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.

    Example:
    >>> encoder = TabNetEncoder(n_d=4, n_a=4, n_steps=2)
    >>> tuple(encoder(np.zeros((3, 5), "float32")).shape)
    (3, 4)
    """

    def __init__(
        self,
        n_d: int = 8,
        n_a: int = 8,
        n_steps: int = 3,
        gamma: float = 1.3,
        n_shared: int = 2,
        n_independent: int = 2,
        momentum: float = 0.98,
        sparsity_coefficient: float = 1e-4,
        epsilon: float = 1e-15,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.n_d = n_d
        self.n_a = n_a
        self.n_steps = n_steps
        self.gamma = gamma
        self.n_shared = n_shared
        self.n_independent = n_independent
        self.momentum = momentum
        self.sparsity_coefficient = sparsity_coefficient
        self.epsilon = epsilon

    def build(self, input_shape):
        num_features = input_shape[-1]
        batch = tuple(input_shape[:-1])
        width = self.n_d + self.n_a

        def dense(units, name, input_dim):
            return _dense(self, units, name, (*batch, input_dim))

        def norm(name, dim):
            return _batch_norm(self, name, (*batch, dim))

        self.input_norm = norm("input_norm", num_features)
        # A GLU block is Dense -> BatchNorm -> GLU. Shared blocks share their
        # dense layer across steps but, as in the paper's code, each step keeps
        # its own batch normalisation: the inputs of different steps differ.
        self.shared_dense = [
            dense(2 * width, f"shared_glu_{j}_dense", num_features if j == 0 else width)
            for j in range(self.n_shared)
        ]
        # Step 0 is the initial transformer that only feeds the first attention.
        self.step_dense, self.step_norms = [], []
        for i in range(self.n_steps + 1):
            self.step_dense.append(
                [
                    dense(
                        2 * width,
                        f"step_{i}_glu_{self.n_shared + j}_dense",
                        num_features if self.n_shared + j == 0 else width,
                    )
                    for j in range(self.n_independent)
                ]
            )
            self.step_norms.append(
                [norm(f"step_{i}_glu_{j}_norm", 2 * width) for j in range(self.n_shared + self.n_independent)]
            )
        self.attention_dense = [
            dense(num_features, f"attention_{i}_dense", self.n_a) for i in range(self.n_steps)
        ]
        self.attention_norm = [norm(f"attention_{i}_norm", num_features) for i in range(self.n_steps)]

    def _feature_transformer(self, x, step, training):
        return glu_blocks(x, self.shared_dense + self.step_dense[step], self.step_norms[step], training)

    def call(self, inputs, training=None, prior=None, return_masks=False, return_steps=False):
        """The decision; `return_masks` adds the masks and step importances, `return_steps` the steps' outputs.

        `prior` (shaped like `inputs`) starts the prior scales: pretraining sets it to 0 for hidden features.
        """
        features = self.input_norm(inputs, training=training)
        attention = self._feature_transformer(features, 0, training)[..., self.n_d :]
        prior = ops.ones(ops.shape(features), "float32") if prior is None else ops.cast(prior, "float32")
        decision = 0.0
        entropy = 0.0
        masks, steps = [], []
        for i in range(self.n_steps):
            logits = self.attention_norm[i](self.attention_dense[i](attention), training=training)
            mask = sparsemax(ops.cast(logits, "float32") * prior)
            prior = prior * (self.gamma - mask)
            entropy += ops.mean(ops.sum(-mask * ops.log(mask + self.epsilon), axis=-1))
            x = self._feature_transformer(
                ops.cast(mask, self.compute_dtype) * features, i + 1, training
            )
            step_decision = ops.relu(x[..., : self.n_d])
            decision = decision + step_decision
            attention = x[..., self.n_d :]
            masks.append(mask)
            steps.append(step_decision)
        if self.sparsity_coefficient:
            self.add_loss(self.sparsity_coefficient * entropy / self.n_steps)
        if return_steps:
            return decision, ops.stack(steps)
        if return_masks:
            step_importance = [ops.sum(ops.cast(step, "float32"), axis=-1) for step in steps]
            return decision, ops.stack(masks), ops.stack(step_importance)
        return decision

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.n_d)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "n_d": self.n_d,
                "n_a": self.n_a,
                "n_steps": self.n_steps,
                "gamma": self.gamma,
                "n_shared": self.n_shared,
                "n_independent": self.n_independent,
                "momentum": self.momentum,
                "sparsity_coefficient": self.sparsity_coefficient,
                "epsilon": self.epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_models")
class TabNetDecoder(keras.layers.Layer):
    """TabNet's decoder for self-supervised pretraining (Arik & Pfister 2021, Figure 4b).

    Each decision step's output `ReLU(d[i])` goes through a feature transformer
    of its own (`n_shared` GLU blocks shared by the steps, then `n_independent`
    step-specific ones); their sum is mapped to the features by one dense layer.

    Args:
        num_features: int, width of the reconstructed feature vector.
        n_steps: int, the encoder's decision steps.
        n_shared: int, GLU blocks shared across steps.
        n_independent: int, step-specific GLU blocks.
        momentum: float, batch-normalisation momentum.
        **kwargs: base `keras.layers.Layer` arguments such as `name` and `dtype`.
    """

    def __init__(self, num_features, n_steps, n_shared=1, n_independent=1, momentum=0.98, **kwargs):
        super().__init__(**kwargs)
        self.num_features = num_features
        self.n_steps = n_steps
        self.n_shared = n_shared
        self.n_independent = n_independent
        self.momentum = momentum

    def build(self, steps_shape):
        *batch, n_d = steps_shape[1:]
        step, doubled = (*batch, n_d), (*batch, 2 * n_d)
        self.shared_dense = [_dense(self, 2 * n_d, f"shared_glu_{j}_dense", step) for j in range(self.n_shared)]
        self.step_dense = [
            [_dense(self, 2 * n_d, f"step_{i}_glu_{self.n_shared + j}_dense", step) for j in range(self.n_independent)]
            for i in range(self.n_steps)
        ]
        self.step_norms = [
            [_batch_norm(self, f"step_{i}_glu_{j}_norm", doubled) for j in range(self.n_shared + self.n_independent)]
            for i in range(self.n_steps)
        ]
        self.reconstruction = _dense(self, self.num_features, "reconstruction", step)

    def call(self, steps, training=None):
        decoded = 0.0
        for i in range(self.n_steps):
            decoded += glu_blocks(steps[i], self.shared_dense + self.step_dense[i], self.step_norms[i], training)
        return self.reconstruction(decoded)

    def compute_output_shape(self, steps_shape):
        return (*steps_shape[1:-1], self.num_features)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_features": self.num_features,
                "n_steps": self.n_steps,
                "n_shared": self.n_shared,
                "n_independent": self.n_independent,
                "momentum": self.momentum,
            }
        )
        return config


class TabNetPretrainer(keras.Model):
    """TabNet's self-supervised pretraining: reconstruct hidden features from the visible ones.

    Takes `(features, hidden)`, `hidden` being 1 where a feature is masked out.
    The encoder reads `(1 - hidden) ⊙ features`, its prior scales starting at
    `1 - hidden` so that attention goes to the visible features; the decoder
    reconstructs every feature (`reconstruction_loss` scores the hidden ones).
    The encoder is the classifier's own layer, so fitting this model pretrains
    the classifier in place.

    Args:
        encoder: the `TabNetEncoder` of a model built by `build_model("tabnet", ...)`.
        num_features: int, width of the feature vector.
        n_shared: int, the decoder's GLU blocks shared across steps.
        n_independent: int, the decoder's step-specific GLU blocks.
    """

    def __init__(self, encoder: TabNetEncoder, num_features: int, n_shared: int = 1, n_independent: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = TabNetDecoder(
            num_features, encoder.n_steps, n_shared, n_independent, encoder.momentum, name="tabnet_decoder"
        )

    def call(self, inputs, training=None):
        features, hidden = inputs
        visible = 1.0 - ops.cast(hidden, features.dtype)
        _, steps = self.encoder(features * visible, training=training, prior=visible, return_steps=True)
        return self.decoder(steps, training=training)


def hide_features(rng: np.random.Generator, shape, rate: float) -> np.ndarray:
    """A random 0/1 mask hiding each feature of each row with probability `rate`."""
    return (rng.random(shape) < rate).astype("float32")


def reconstruction_loss(feature_std):
    """TabNet's pretraining loss: squared error on the hidden features, each scaled by 1/variance.

    `y_true` is `[features, hidden]` concatenated on the last axis. A row's
    loss is its scaled squared error summed over its hidden features and
    divided by their count (Arik & Pfister 2021, Section 3.3); features of zero
    spread count with variance 1.

    Args:
        feature_std: per-feature standard deviation of the train split.
    """
    std = np.asarray(feature_std, "float32")
    inverse_variance = 1.0 / np.square(np.where(std > 0, std, 1.0))

    def loss(y_true, y_pred):
        features, hidden = ops.split(ops.cast(y_true, "float32"), 2, axis=-1)
        error = ops.square((ops.cast(y_pred, "float32") - features) * hidden) * inverse_variance
        return ops.sum(error, axis=-1) / ops.maximum(ops.sum(hidden, axis=-1), 1.0)

    return loss


def tabnet_search_space(hp):
    # The paper ties n_a to n_d and searches a handful of values of each.
    return dict(
        n_d=hp.Choice("n_d", [8, 16, 32]),
        n_a=hp.Choice("n_a", [8, 16, 32]),
        n_steps=hp.Int("n_steps", 2, 6),
        gamma=hp.Float("gamma", 1.0, 2.0, step=0.1),
        sparsity_coefficient=hp.Choice("sparsity_coefficient", [0.0, 1e-4, 1e-3, 1e-2]),
        momentum=hp.Choice("momentum", [0.7, 0.9, 0.98]),
    )


@register_model(
    "tabnet",
    family="tabular",
    search_space=tabnet_search_space,
    paper="Arik & Pfister 2021, TabNet: Attentive Interpretable Tabular Learning",
    tasks=("classification", "regression"),
    example=Example(InputSpec((30,)), OutputSpec("classification", 2),
                    dict(n_d=4, n_a=4, n_steps=2, n_shared=1, n_independent=1)),
    reference=Example(InputSpec((30,)), OutputSpec("classification", 2),
                      description="breast cancer, 30 features → 2 classes"),
)
def tabnet(
    input_spec: InputSpec,
    output_spec: OutputSpec,
    *,
    n_d: int = 8,
    n_a: int = 8,
    n_steps: int = 3,
    gamma: float = 1.3,
    n_shared: int = 2,
    n_independent: int = 2,
    sparsity_coefficient: float = 1e-4,
    momentum: float = 0.98,
) -> keras.Model:
    """TabNet: a `TabNetEncoder` of sparse, sequential feature selection, then the task head.

    Arik & Pfister 2021, TabNet: Attentive Interpretable Tabular Learning
    (AAAI). Read the per-step feature masks with `tabnet_feature_masks`.

    Args:
        n_d: width of each decision step's output, 1 to 512.
        n_a: width of each step's attention input, 1 to 512.
        n_steps: decision steps, 1 to 20.
        gamma: relaxation factor of the prior scales, in [1, 5].
        n_shared: GLU blocks shared across steps, 0 to 8.
        n_independent: step-specific GLU blocks, 0 to 8 (`n_shared + n_independent ≥ 1`).
        sparsity_coefficient: weight of the mask-entropy loss, in [0, 1].
        momentum: batch-normalisation momentum, in [0, 1).

    Example:
    >>> from keras_models import build_model, InputSpec, OutputSpec
    >>> model = build_model("tabnet", InputSpec((30,)), OutputSpec("classification", 2), n_d=4, n_a=4)
    >>> model.output_shape
    (None, 2)
    """
    require_range("n_d", n_d, 1, 512, model="tabnet")
    require_range("n_a", n_a, 1, 512, model="tabnet")
    require_range("n_steps", n_steps, 1, 20, model="tabnet")
    require_range("gamma", gamma, 1.0, 5.0, model="tabnet")
    require_range("n_shared", n_shared, 0, 8, model="tabnet")
    require_range("n_independent", n_independent, 0, 8, model="tabnet")
    require_range("sparsity_coefficient", sparsity_coefficient, 0.0, 1.0, model="tabnet")
    require_range("momentum", momentum, 0.0, 0.999, model="tabnet")
    if n_shared + n_independent < 1:
        raise ValueError("Model 'tabnet' needs n_shared + n_independent >= 1 GLU blocks per step.")
    if len(input_spec.shape) != 1:
        raise ValueError(f"Model 'tabnet' takes a flat feature vector; got input shape {input_spec.shape}.")
    inputs = keras.Input(shape=input_spec.shape, name="features")
    x = TabNetEncoder(
        n_d=n_d,
        n_a=n_a,
        n_steps=n_steps,
        gamma=gamma,
        n_shared=n_shared,
        n_independent=n_independent,
        momentum=momentum,
        sparsity_coefficient=sparsity_coefficient,
        name="tabnet_encoder",
    )(inputs)
    return keras.Model(inputs, task_head(x, output_spec), name="tabnet")


def tabnet_feature_masks(model: keras.Model, x, batch_size: int = 256):
    """The feature masks of each decision step and the aggregate feature importance.

    The aggregate weighs step `i`'s mask by `η[i] = Σ_c ReLU(d[i]_c)`, the
    step's contribution to the decision, and normalises each example's row to
    sum to 1 (Arik & Pfister 2021, Section 3.2).

    Args:
        model: a model built by `build_model("tabnet", ...)`.
        x: features, shape `(batch, features)`.
        batch_size: examples per forward pass.

    Returns:
        `(masks, importance)`: numpy arrays of shapes `(n_steps, batch, features)`,
        each row summing to 1, and `(batch, features)`.
    """
    encoder = model.get_layer("tabnet_encoder")
    x = np.asarray(x, dtype="float32")
    masks, weights = [], []
    for start in range(0, len(x), batch_size):
        _, mask, weight = encoder(x[start : start + batch_size], training=False, return_masks=True)
        masks.append(ops.convert_to_numpy(ops.cast(mask, "float32")))
        weights.append(ops.convert_to_numpy(ops.cast(weight, "float32")))
    masks = np.concatenate(masks, axis=1)
    weights = np.concatenate(weights, axis=1)
    importance = np.einsum("sb,sbf->bf", weights, masks)
    total = importance.sum(axis=1, keepdims=True)
    importance = np.divide(importance, total, out=np.zeros_like(importance), where=total > 0)
    return masks, importance
