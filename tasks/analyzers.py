"""The full-pass statistics every task's Beam analyzer shares: mergeable moments, value counts, vocabularies.

Keras-free, so Beam workers and the analyzers' tests import it without a
deep-learning backend. Moments are kept as `{"count", "mean", "m2"}` (m2: sum
of squared deviations from the mean), elementwise for arrays or scalars, and
merged with Chan et al.'s parallel update, so partial results from any number
of workers combine in any order to the one-pass values.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Analyzer:
    """Beam's `CombineFn` protocol for a task's train statistics, whose accumulators merge two at a time.

    A task's analyzer defines `create_accumulator`, `add_input` and `merge`
    (one accumulator folded into another, which it may update in place); the
    preprocess component runs it on Beam.
    """

    def merge(self, acc, other):
        raise NotImplementedError

    def merge_accumulators(self, accumulators):
        return functools.reduce(self.merge, accumulators)

    def extract_output(self, acc):
        return acc


def empty_moments(shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Moments of no values: scalars, or arrays of `shape`."""
    if shape is None:
        return {"count": 0, "mean": 0.0, "m2": 0.0}
    return {"count": np.zeros(shape), "mean": np.zeros(shape), "m2": np.zeros(shape)}


def moments_of(values: np.ndarray) -> dict[str, Any]:
    """Moments of `values` along axis 0 (scalars for a 1-D array); `values` holds no NaN."""
    values = np.asarray(values, "float64")
    if not len(values):
        return empty_moments(values.shape[1:] or None)
    mean = values.mean(axis=0)
    m2 = np.square(values - mean).sum(axis=0)
    if values.ndim == 1:
        return {"count": len(values), "mean": float(mean), "m2": float(m2)}
    return {"count": np.full(mean.shape, len(values)), "mean": mean, "m2": m2}


def merge_moments(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """`a` with `b`'s moments merged in; other keys of `a` are kept as they are."""
    count = a["count"] + b["count"]
    weight = b["count"] / np.maximum(count, 1)
    delta = b["mean"] - a["mean"]
    return {
        **a,
        "count": count,
        "mean": a["mean"] + delta * weight,
        "m2": a["m2"] + b["m2"] + delta**2 * a["count"] * weight,
    }


def variance(moments: dict[str, Any]):
    """Population variance, 0 where there were no values."""
    return np.divide(moments["m2"], moments["count"], out=np.zeros_like(moments["m2"], dtype="float64"),
                     where=np.asarray(moments["count"]) > 0)


def count_values(column: pa.ChunkedArray | pa.Array) -> Counter:
    """How often each non-null value occurs."""
    counts = pc.value_counts(column.drop_null())
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def vocabulary(counts: Counter, max_size: int | None, min_frequency: int) -> list[str]:
    """Most frequent first, ties broken by value, as TFT's `vocabulary` orders them."""
    ranked = sorted((kv for kv in counts.items() if kv[1] >= min_frequency), key=lambda kv: (-kv[1], kv[0]))
    return [value for value, _ in ranked[:max_size]]
