import subprocess
import sys
from collections import Counter
from functools import reduce

import numpy as np
import pyarrow as pa
import pytest

from tasks.analyzers import count_values, empty_moments, merge_moments, moments_of, variance, vocabulary


@pytest.mark.parametrize("shape", [(97,), (97, 3)])
def test_moments_merged_from_parts_in_any_order_equal_one_pass(shape):
    values = np.random.default_rng(0).normal(5.0, 2.0, size=shape)
    parts = [values[:0], values[:10], values[10:11], values[11:60], values[60:]]
    start = empty_moments(shape[1:] or None)
    forward = reduce(merge_moments, map(moments_of, parts), start)
    backward = reduce(merge_moments, map(moments_of, reversed(parts)), start)
    for merged in (forward, backward):
        np.testing.assert_allclose(merged["count"], len(values))
        np.testing.assert_allclose(merged["mean"], values.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(variance(merged), values.var(axis=0), rtol=1e-12)


def test_moments_keep_the_accumulators_other_keys_and_report_no_values_as_zero_variance():
    acc = {**empty_moments((2,)), "rows": 4}
    merged = merge_moments(acc, empty_moments((2,)))
    assert merged["rows"] == 4
    np.testing.assert_array_equal(variance(merged), [0.0, 0.0])


def test_vocabulary_ranks_by_count_then_value_and_applies_both_limits():
    counts = Counter({"b": 3, "a": 3, "c": 5, "d": 1})
    assert vocabulary(counts, None, 1) == ["c", "a", "b", "d"]
    assert vocabulary(counts, 2, 1) == ["c", "a"]
    assert vocabulary(counts, None, 3) == ["c", "a", "b"]


def test_count_values_leaves_out_nulls():
    assert count_values(pa.chunked_array([["x", None, "y"], ["x"]])) == Counter({"x": 2, "y": 1})


def test_the_analyzers_import_no_deep_learning_backend():
    code = "import sys, tasks.analyzers; print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
