"""One tie rule for every grid: nearest, ties to the even magnitude index (quant.lookup).

FP and INT codes written by quantize() must equal ml_dtypes' casts (numpy.rint for INT) code
for code; codebooks and learned grids round ties sign-symmetrically.
"""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import dequantize, parse_candidate, quantize
from quant.formats import ATOMS, AtomKind, get_atom, known_atom_names
from quant.lookup import lookup_table

MIDPOINTS = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]


def test_mxfp4_block_of_every_e2m1_midpoint_rounds_to_even():
    """The issue's input: one E2M1sUE8M0@32 block, amax 6 (scale exactly 1), every midpoint +-."""
    values = [6.0, *MIDPOINTS, *(-m for m in MIDPOINTS)]
    w = np.array(values + [0.0] * (32 - len(values)), np.float32).reshape(1, 32)
    q = quantize(w, parse_candidate("E2M1sUE8M0@32"))
    assert q.scales.tolist() == [[1.0]] and q.tensor_factor == 1.0
    # By hand (OCP MX v1.0 §5.3 RNE): 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4.
    by_hand = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    expected = [6.0, *by_hand, *(-v for v in by_hand)] + [0.0] * (32 - len(values))
    np.testing.assert_array_equal(dequantize(q)[0], np.array(expected, np.float32) + 0.0)
    codes = np.asarray(get_atom("E2M1").codes)[q.codes[0]]
    oracle = w[0].astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0xF
    oracle[w[0].astype(ml_dtypes.float4_e2m1fn).astype(np.float32) == 0] = 0  # -0 is stored as +0
    np.testing.assert_array_equal(codes, oracle)
    assert dequantize(q)[0, 13] == -4.0  # -3.5 -> -4, not -3


def _brute_magnitude_index(values: list[float], v: float) -> int:
    """m(v) = #{u : |u| < |v| and u on v's side of zero, zero included}, by its definition."""
    return sum(1 for u in values if abs(u) < abs(v) and u * v >= 0)


def _brute_round(values: list[float], y: float) -> float:
    """Nearest value in exact arithmetic; a tie goes to the even magnitude index (+ on a +-a tie)."""
    dist = [abs(Fraction(y) - Fraction(v)) for v in values]
    best = min(dist)
    near = [v for v, d in zip(values, dist) if d == best]
    if len(near) == 1:
        return near[0]
    even = [v for v in near if _brute_magnitude_index(values, v) % 2 == 0]
    return max(even) if even else max(near)


@pytest.mark.parametrize("name", known_atom_names())
def test_every_atom_rounds_every_midpoint_by_the_rule(name):
    atom = get_atom(name)
    values = list(atom.values)
    v = np.asarray(values, np.float64)
    mids = np.float32((v[:-1] + v[1:]) / 2)
    exact = mids.astype(np.float64) == (v[:-1] + v[1:]) / 2  # a float32 midpoint is a true tie
    probes = np.concatenate([mids[exact], -mids[exact], np.float32(v)])
    expected = [_brute_round(values, float(y)) for y in probes]
    np.testing.assert_array_equal(atom.table.round(probes), np.array(expected, np.float32))


@pytest.mark.parametrize("atom", [a for a in ATOMS.values() if a.kind in (AtomKind.FLOAT, AtomKind.INT)],
                         ids=lambda a: a.name)
def test_magnitude_index_is_the_code_without_its_sign(atom):
    """So the one rule is RNE on the encoding for FP (code parity) and INT (value parity)."""
    values = list(atom.values)
    m = [_brute_magnitude_index(values, v) for v in values]
    if atom.kind is AtomKind.FLOAT:
        assert m == [c & ((1 << (atom.code_bits - 1)) - 1) for c in atom.codes]
    else:
        assert m == [abs(int(v)) for v in values]


sym_sets = st.lists(st.floats(2.0**-10, 1e3, width=32), min_size=1, max_size=12, unique=True).flatmap(
    lambda pos: st.booleans().map(lambda zero: np.unique(np.float32(
        [*pos, *(-p for p in pos), *([0.0] if zero else [])]))))


@settings(max_examples=200, deadline=None)
@given(sym_sets, st.lists(st.floats(-2e3, 2e3, width=32), max_size=50))
def test_sign_symmetric_grids_round_sign_symmetrically(values, extra):
    """q(-y) = -q(y) for any sign-symmetric grid, ties included (a codebook or learned grid)."""
    v = values.astype(np.float64)
    mids = np.float32((v[:-1] + v[1:]) / 2)
    y = np.concatenate([mids, np.float32(extra), values])
    y = y[y != 0]  # the +-a tie at 0 goes to +a by the rule: no sign to mirror
    table = lookup_table(values)
    np.testing.assert_array_equal(table.round(-y), -table.round(y))


# Candidates whose grid is an ml_dtypes type (FP) or a symmetric integer (INT, oracle numpy.rint).
FP_CANDIDATES = ["E2M1sUE8M0@32", "E2M1sE4M3@16", "E2M3sUE8M0@32", "E3M2sUE8M0@32", "E2M3sUE4M4",
                 "E4M3sUE8M0@32", "E5M2sUE8M0@32", "E4M3sUE8M0@layer", "E2M1sE4M3@16:4o6"]
INT_CANDIDATES = ["INT4sE4M3", "INT8sUE8M0@32", "INT4sUE8M0@32"]

# Weights built to hit ties: grid values and midpoints of every FP4/FP6/FP8 grid times powers of
# two (exact under UE8M0 scales), mixed with arbitrary floats.
_TIE_VALUES = sorted({float(x) for a in ("E2M1", "E2M3", "E3M2") for x in
                      np.concatenate([get_atom(a).values, (np.asarray(get_atom(a).values[:-1]) +
                                                            get_atom(a).values[1:]) / 2])})
elements = st.one_of(
    st.builds(lambda x, e: np.float32(x * 2.0**e), st.sampled_from(_TIE_VALUES), st.integers(-3, 3)),
    st.floats(-100, 100, width=32),
)
tensors = st.integers(1, 3).flatmap(lambda rows: st.lists(elements, min_size=64 * rows, max_size=64 * rows).map(
    lambda v: np.array(v, np.float32).reshape(rows, 64)))


def _scaled_inputs(w: np.ndarray, q) -> np.ndarray:
    """y = w / (scale * tensor factor) per element, in float32 as the engine divides."""
    block = w.shape[1] // q.scales.shape[1]
    full = q.scales * np.float32(q.tensor_factor)
    full = np.where(full == 0, np.float32(1.0), full).reshape(-1, 1)
    return (w.reshape(-1, block) / full).reshape(w.shape)


@settings(max_examples=200, deadline=None)
@given(tensors, st.sampled_from(FP_CANDIDATES))
def test_fp_codes_equal_ml_dtypes_casts(w, name):
    c = parse_candidate(name)
    atom = c.atom
    q = quantize(w, c)
    y = np.clip(_scaled_inputs(w, q), -atom.qmax, atom.qmax)  # the engine saturates (OCP MX §6.3)
    cast = y.astype(getattr(ml_dtypes, atom.ml_dtypes_name))
    oracle = cast.view(np.uint8).astype(np.int64) & ((1 << atom.code_bits) - 1)
    oracle[cast.astype(np.float32) == 0] = 0  # -0 is stored as +0
    np.testing.assert_array_equal(np.asarray(atom.codes)[q.codes], oracle)


@settings(max_examples=150, deadline=None)
@given(tensors, st.sampled_from(INT_CANDIDATES))
def test_int_codes_equal_rint(w, name):
    c = parse_candidate(name)
    q = quantize(w, c)
    top = c.atom.qmax
    oracle = np.rint(np.clip(_scaled_inputs(w, q), -top, top)).astype(np.int64) & ((1 << c.atom.code_bits) - 1)
    np.testing.assert_array_equal(np.asarray(c.atom.codes)[q.codes], oracle)
