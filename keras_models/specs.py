"""What a model is built for: the shape of its inputs and the kind of its head.

The pipeline derives both from the data's schema, so a builder never reads a
dataset; the same builder serves the trainer, the tuner and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Head = Literal["classification", "regression", "forecasting", "seq2seq", "masked_lm"]


@dataclass(frozen=True)
class InputSpec:
    """Shape of one example (no batch axis) and, for token inputs, the vocabulary size.

    Args:
        shape: per-example shape, e.g. `(4,)` for four features or `(28, 28, 1)`.
        dtype: `"float32"` for features and pixels, `"int32"` for token ids.
        vocab_size: number of token ids (padding id 0 included) for token inputs.
    """

    shape: tuple[int | None, ...]
    dtype: str = "float32"
    vocab_size: int | None = None


@dataclass(frozen=True)
class OutputSpec:
    """The model's head: its kind and its width.

    Args:
        head: the kind of head, one of `classification`, `regression`, `forecasting`, `seq2seq`, `masked_lm`.
        units: classes for classification, outputs for regression, horizon for forecasting.
        vocab_size: target vocabulary for `seq2seq` and `masked_lm`.
    """

    head: Head
    units: int = 1
    vocab_size: int | None = None
