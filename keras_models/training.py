"""Training objects the zoo's models need beyond Keras's: schedules, losses, masked-LM data and weight transfer.

- `TransformerSchedule`, `masked_label_smoothed_loss`: the Transformer's
  learning rate and the seq2seq loss (Vaswani et al. 2017).
- `mask_tokens`, `masked_lm_loss`, `transfer_encoder_weights`: masked-LM
  pretraining of the text encoders (BERT, FNet) and fine-tuning from it:

    mlm = build_model("bert", spec, OutputSpec("masked_lm"))
    inputs, labels, weights = mask_tokens(token_ids, rng=0)
    mlm.compile("adam", loss=masked_lm_loss())
    mlm.fit(inputs, labels)
    classifier = build_model("bert", spec, OutputSpec("classification", 2))
    transfer_encoder_weights(mlm, classifier)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_models.layers import PAD_ID

# `[MASK]`, the token of masked-LM pretraining; real tokens use ids 2 and up.
MASK_ID = 1


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="keras_models")(cls)


@_serializable
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5)` (Vaswani et al. 2017, §5.3).

    Rises linearly for `warmup_steps`, peaks at `step == warmup_steps` with
    `(d_model · warmup_steps)^-0.5`, then decays as `step^-0.5`. Step 0 (the
    optimizer's first update) is treated as step 1.

    Args:
        d_model: int, model width.
        warmup_steps: int, steps of linear warm-up.
    """

    def __init__(self, d_model: int, warmup_steps: int = 4000):
        self.d_model = d_model
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.maximum(ops.cast(step, "float32"), 1.0)
        return self.d_model**-0.5 * ops.minimum(ops.rsqrt(step), step * self.warmup_steps**-1.5)

    def get_config(self):
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps}


@_serializable
class MaskedLabelSmoothedCrossEntropy(keras.losses.Loss):
    """Sparse cross-entropy on probabilities with label smoothing, ignoring padding labels (`PAD_ID`).

    The target distribution is `(1 - smoothing)·onehot(y) + smoothing/V`
    (Szegedy et al. 2016; 0.1 in Vaswani et al. 2017). With the default
    `sum_over_batch_size` reduction the loss is the mean over the real
    (non-padding) target tokens of the batch.

    Args:
        smoothing: float in [0, 1), probability mass spread uniformly over the vocabulary.
        name: str, loss name.
        reduction: str, a Keras loss reduction.
        dtype: dtype of the loss computation, float32 by default.
    """

    def __init__(
        self,
        smoothing: float = 0.1,
        name: str = "masked_label_smoothed_cross_entropy",
        reduction: str = "sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing={smoothing!r} must be in [0, 1).")
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0))
        nll = -ops.squeeze(ops.take_along_axis(log_probs, y_true[..., None], axis=-1), axis=-1)
        uniform = -ops.mean(log_probs, axis=-1)
        losses = (1.0 - self.smoothing) * nll + self.smoothing * uniform
        mask = ops.cast(ops.not_equal(y_true, PAD_ID), "float32")
        if self.reduction == "sum_over_batch_size":
            # The reduction divides by every position; reweight so it divides by real tokens only.
            mask = mask * ops.sum(ops.ones_like(mask)) / ops.maximum(ops.sum(mask), 1.0)
        return losses * mask

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def masked_label_smoothed_loss(smoothing: float = 0.1) -> MaskedLabelSmoothedCrossEntropy:
    """The seq2seq training loss: label-smoothed sparse cross-entropy that ignores padding."""
    return MaskedLabelSmoothedCrossEntropy(smoothing)


def mask_tokens(token_ids, rng, mask_rate: float = 0.15, vocab_size: int | None = None):
    """BERT's masking for masked-LM pretraining (Devlin et al. 2019, Section 3.1).

    Each real token (id > `MASK_ID`) is selected with probability `mask_rate`;
    a selected token is replaced by `MASK_ID` 80% of the time, by a random real
    token 10% of the time, and kept 10% of the time.

    Args:
        token_ids: integer array `(batch, seq_len)`.
        rng: a `numpy.random.Generator` or a seed.
        mask_rate: probability that a real token is selected.
        vocab_size: random replacements are drawn from `[MASK_ID + 1, vocab_size)`;
            defaults to `token_ids.max() + 1`.

    Returns:
        `(inputs, labels, sample_weights)`: the corrupted ids; the original ids at
        selected positions and `PAD_ID` elsewhere (what `masked_lm_loss` ignores);
        float32 weights, 1 at selected positions and 0 elsewhere.
    """
    if not 0.0 <= mask_rate <= 1.0:
        raise ValueError(f"mask_rate={mask_rate!r} must be in [0, 1].")
    rng = np.random.default_rng(rng)
    token_ids = np.asarray(token_ids)
    vocab_size = vocab_size or int(token_ids.max()) + 1
    if vocab_size <= MASK_ID + 1:
        raise ValueError(f"vocab_size={vocab_size} leaves no real token to draw (ids 0 and 1 are reserved).")
    selected = (token_ids > MASK_ID) & (rng.random(token_ids.shape) < mask_rate)
    action = rng.random(token_ids.shape)
    inputs = token_ids.copy()
    inputs[selected & (action < 0.8)] = MASK_ID
    randomised = selected & (action >= 0.8) & (action < 0.9)
    inputs[randomised] = rng.integers(MASK_ID + 1, vocab_size, size=int(randomised.sum()))
    labels = np.where(selected, token_ids, PAD_ID).astype(token_ids.dtype)
    return inputs, labels, selected.astype("float32")


def masked_lm_loss() -> keras.losses.Loss:
    """Cross-entropy averaged over the masked positions only.

    Positions whose label is `PAD_ID` (unselected by `mask_tokens`) are ignored
    and the mean is over the selected positions of the batch, as in BERT.
    """
    return keras.losses.SparseCategoricalCrossentropy(ignore_class=PAD_ID, name="masked_lm_loss")


def transfer_encoder_weights(pretrained: keras.Model, target: keras.Model) -> None:
    """Copies the `"encoder"` sub-model's weights of `pretrained` (e.g. a masked-LM model) into `target`.

    Args:
        pretrained: a text model built by `build_model`, usually the masked-LM one.
        target: a model of the same architecture and hyperparameters, e.g. its classifier.
    """
    source, destination = pretrained.get_layer("encoder"), target.get_layer("encoder")
    source_shapes = [tuple(w.shape) for w in source.weights]
    destination_shapes = [tuple(w.shape) for w in destination.weights]
    if source_shapes != destination_shapes:
        raise ValueError(
            "The encoders differ: build both models with the same input spec and "
            f"encoder hyperparameters (weight shapes {source_shapes} vs {destination_shapes})."
        )
    destination.set_weights(source.get_weights())
