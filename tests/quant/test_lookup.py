"""The bucketed lookup against brute force on arbitrary value sets, for every rounding rule."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.lookup import SEARCH_BELOW, LookupTable, Rounding, rounding_thresholds

finite32 = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
value_sets = st.lists(finite32, min_size=2, max_size=40, unique=True).map(lambda v: np.unique(np.float32(v)))
probes = st.lists(finite32, min_size=1, max_size=200).map(lambda v: np.asarray(v, dtype=np.float32))


def _brute_index(values: np.ndarray, y: np.ndarray, rounding: Rounding) -> np.ndarray:
    v = values.astype(np.float64)[None, :]
    y64 = y.astype(np.float64)[:, None]
    if rounding is Rounding.CEIL:
        return np.where(y64 <= v, np.arange(v.shape[1]), v.shape[1] - 1).min(axis=1)
    if rounding is Rounding.FLOOR:
        return np.where(y64 >= v, np.arange(v.shape[1]), 0).max(axis=1)
    dist = np.abs(y64 - v)
    index = np.argmin(dist, axis=1)
    # float64 may absorb a tiny probe (0.5 + 1e-45 == 0.5): settle apparent ties exactly
    two = np.sort(dist, axis=1)[:, :2]
    for row in np.flatnonzero(two[:, 0] == two[:, 1]):
        exact = [abs(Fraction(float(y[row])) - Fraction(float(x))) for x in values]
        near = [i for i, d in enumerate(exact) if d == min(exact)]
        vals = [float(x) for x in values]  # python floats: a float32 product u * v may underflow
        # NEAREST_EVEN: the even magnitude index m(v) = #{u : |u| < |v|, u on v's side or 0}
        even = [i for i in near if sum(abs(u) < abs(vals[i]) and u * vals[i] >= 0 for u in vals) % 2 == 0]
        index[row] = max(even or near)
    return index


@settings(max_examples=300, deadline=None)
@given(value_sets, probes, st.sampled_from([Rounding.NEAREST_EVEN, Rounding.CEIL, Rounding.FLOOR]))
def test_lookup_equals_brute_force(values, y, rounding):
    table = LookupTable.build(values, rounding_thresholds(values, rounding))
    # also probe every value, and just around each threshold
    t = table.thresholds
    y = np.concatenate([y, values, t, np.nextafter(t, np.float32(-np.inf))])
    want = _brute_index(values, y, rounding)
    many = -(-SEARCH_BELOW // y.size)  # as many copies again: the compiled bucket lookup as well
    for probe, expected in ((y, want), (np.tile(y, many), np.tile(want, many))):
        for path in _both_paths(table):
            np.testing.assert_array_equal(path.index(probe), expected)
            np.testing.assert_array_equal(path.round(probe), values[expected])


def _both_paths(table: LookupTable) -> tuple[LookupTable, LookupTable]:
    """The table as built (on SEARCH_BELOW elements or more, the compiled bucket lookup, where
    the value set allows one) and the same table without buckets (the binary search)."""
    return table, LookupTable(table.values, table.thresholds)


@settings(max_examples=100, deadline=None)
@given(value_sets, st.sampled_from([Rounding.NEAREST_EVEN, Rounding.CEIL, Rounding.FLOOR]))
def test_infinities_round_to_the_end_values_on_both_paths(values, rounding):
    table = LookupTable.build(values, rounding_thresholds(values, rounding))
    for y in (np.float32([-np.inf, np.inf]), np.tile(np.float32([-np.inf, np.inf]), SEARCH_BELOW)):
        for path in _both_paths(table):
            np.testing.assert_array_equal(path.index(y), np.tile([0, values.size - 1], y.size // 2))


def test_python_and_float64_inputs_round_as_their_float32_values():
    values = np.float32([-1.0, 0.0, 0.5, 2.0])
    table = LookupTable.build(values, rounding_thresholds(values, Rounding.NEAREST_EVEN))
    assert table.round(0.3) == table.round(np.float32(0.3)) == np.float32(0.5)
    y = np.linspace(-3, 3, 2 * SEARCH_BELOW)  # float64, the compiled lookup
    np.testing.assert_array_equal(table.round(y), table.round(y.astype(np.float32)))
    np.testing.assert_array_equal(table.index(y.tolist()), table.index(y.astype(np.float32)))


def test_close_levels_fall_back_to_exact_search():
    """Thresholds 1e-3 apart in one binade cannot share the bucket table; the searchsorted path stays exact."""
    values = np.array([1.0, 1.001, 1.002, 3.0], dtype=np.float32)
    table = LookupTable.build(values, rounding_thresholds(values, Rounding.NEAREST_EVEN))
    assert table.bucket_threshold is None
    y = np.array([0.0, 1.0, 1.5, 2.0, 2.5, 9.0], dtype=np.float32)
    np.testing.assert_array_equal(table.round(y), values[_brute_index(values, y, Rounding.NEAREST_EVEN)])
