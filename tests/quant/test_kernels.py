"""The compiled kernels (quant.kernels) against the numpy expressions they replace, bit for bit.

The reference rounds with the same table stripped of its buckets, which
``LookupTable`` then rounds by numpy's binary search (checked against brute force in
test_lookup.py)."""

import math
from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import engine, kernels, parse_candidate, quantize
from quant.learned import Histogram
from quant.lookup import LookupTable, grid_stack

GRIDS = ("E2M1sE4M3@16", "NF4sUE4M4", "INT8sUE8M0@32", "E4M3sUE8M0@32", "SH4sE4M3")
FACTORS = (1.0, 0.7, 2.0**-100)  # per-tensor factors: float32 products with the block scales, some subnormal


@st.composite
def chunks(draw):
    """(B, n) block-layout weights with some all-zero and some huge blocks, and positive scales."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    size, n = draw(st.sampled_from([4, 16, 32])), draw(st.integers(1, 40) | st.just(4096))
    blocks = (rng.standard_normal((size, n)) * rng.lognormal(0, 2, n)).astype(np.float32)
    blocks[:, rng.random(n) < 0.1] = 0.0
    full = np.abs(blocks).max(axis=0) / np.float32(draw(st.sampled_from([1.0, 6.0, 127.0])))
    full[rng.random(n) < 0.1] *= np.float32(0.5)  # some values beyond the grid's end
    return blocks, full.astype(np.float32), rng


def _search_only(table: LookupTable) -> LookupTable:
    return LookupTable(table.values, table.thresholds)


@settings(max_examples=150, deadline=None)
@given(chunks(), st.sampled_from(GRIDS), st.booleans(), st.sampled_from([1.0, 2.0**-20, 2.0**40]))
def test_block_errors_equal_numpy(chunk, name, weighted, unit):
    blocks, full, rng = chunk
    table = engine._recipe(parse_candidate(name)).tables[0]
    assert table.bucket_value is not None
    h = rng.uniform(0, 3, blocks.shape).astype(np.float32) if weighted else None
    got = engine._block_errors(table, blocks, full, h, np.float32(unit))
    want = engine._block_errors(_search_only(table), blocks, full, h, np.float32(unit))
    np.testing.assert_array_equal(got, want)


@settings(max_examples=150, deadline=None)
@given(chunks(), st.sampled_from(["E2M1|INT4sE4M3", "NF4|SH4sUE4M4", "E2M1sE4M3@16", "INT8|E4M3sUE8M0@32"]),
       st.sampled_from(FACTORS))
def test_rounding_onto_each_blocks_grid_equals_numpy(chunk, name, factor):
    """One pass over a stack of grids (each block its own) equals each grid's own rounding."""
    blocks, scales, rng = chunk
    tables = engine._recipe(parse_candidate(name)).tables
    grid = rng.integers(0, len(tables), blocks.shape[1]).astype(np.uint8)
    factor = np.float32(factor)
    full = scales * factor  # float32: the effective scale
    w_hat, codes = engine._round_chosen(tables, blocks, scales, factor, grid, codes=True)
    y = blocks / engine._divisor(full)
    for k, table in enumerate(tables):
        mine = grid == k
        search = _search_only(table)
        np.testing.assert_array_equal(w_hat[:, mine], (search.round(y) * full)[:, mine])
        np.testing.assert_array_equal(codes[:, mine], search.index(y)[:, mine])
    searched = engine._round_chosen(tuple(map(_search_only, tables)), blocks, scales, factor, grid, codes=True)
    np.testing.assert_array_equal(searched[0], w_hat)
    np.testing.assert_array_equal(searched[1], codes)
    alone = engine._round_chosen(tables, blocks, scales, factor, grid, w_hat=False, codes=True)
    assert alone[0] is None
    np.testing.assert_array_equal(alone[1], codes)


@settings(max_examples=100, deadline=None)
@given(chunks(), st.sampled_from(["E2M1|INT4sE4M3", "NF4|SH4sUE4M4", *GRIDS]), st.sampled_from([np.uint8, np.uint16]),
       st.sampled_from(FACTORS))
def test_scaled_codes_equal_numpy(chunk, name, dtype, factor):
    blocks, scales, rng = chunk
    rows = np.ascontiguousarray(blocks.T)  # row order: one block per row
    tables = engine._recipe(parse_candidate(name)).tables
    stack = grid_stack(tables)
    grid = rng.integers(0, len(tables), rows.shape[0]).astype(np.uint8)
    factor = np.float32(factor)
    divisor = engine._divisor(scales * factor)
    out = np.empty(rows.shape, dtype)
    kernels.scaled_codes(rows, scales, factor, grid, stack.buckets, stack.shift, stack.threshold, stack.index, out)
    for k, table in enumerate(tables):
        mine = grid == k
        np.testing.assert_array_equal(out[mine], _search_only(table).index(rows / divisor[:, None])[mine])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["E2M1|INT4sE4M3", "NF4|SH4sUE4M4", "E2M1sE4M3@16:mse",
                                                   "E2M1sE4M3@16:4o6", "E2M1sE4M3@16:4o6:aw", "NF4|DD4sUE4M4:aw",
                                                   "E2M3|INT6sUE8M0@32", "E2M1|INT4sE4M3:mse"]),
       st.sampled_from([1.0, 1e-30, 1e30]))
def test_choosing_among_trials_and_grids_equals_numpy(seed, name, magnitude):
    """kernels.choose_blocks (every trial x grid in one call) against engine._choose over numpy's
    per-grid errors (tables without buckets): the same scale, grid and error per block, bit for
    bit, with and without activation weights and at error units far from 1."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 256)) * rng.lognormal(0, 2, (8, 1)) * magnitude).astype(np.float32)
    w[:, 32:64] = 0.0  # all-zero blocks: scale 0, divided by 1
    act = rng.uniform(0.1, 2.0, 256)
    w32, h, plan = engine._prepare(w, parse_candidate(name), act, "t", 1)
    blocks = engine._block_view(w32, plan.block)
    hb = engine._h_blocks(h, plan.block, w.shape[0]) if plan.h is not None else None
    chunk, err = engine._best_of_trials(blocks, plan, hb, want_codes=False)
    searched = replace(plan, tables=tuple(map(_search_only, plan.tables)))
    ref_s, ref_grid, ref_err = engine._choose(
        engine._block_scales(blocks, plan), searched,
        lambda table, full: engine._block_errors(table, blocks, full, hb, plan.err_unit))
    np.testing.assert_array_equal(chunk.scales, ref_s)
    np.testing.assert_array_equal(chunk.grid, ref_grid)
    np.testing.assert_array_equal(err, ref_err)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["E2M1|INT4sE4M3", "E2M1sE4M3@16:mse", "E2M1sE4M3@16:4o6:aw",
                                                   "NF4|DD4sUE4M4", "E2M1|INT4sE4M3:aw", "E4M3sUE8M0@layer",
                                                   "E2M1|INT4sE4M3:mse:aw"]),
       st.sampled_from([1.0, 1e-30, 1e30]))
def test_codes_found_in_row_order_equal_the_block_layouts(seed, name, magnitude):
    """quantize() chooses each block's scale trial and grid from errors summed in row order; they
    are the block layout's sums bit for bit, so the codes are those of _quantize_blocks."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((24, 256)) * rng.lognormal(0, 1, (24, 1)) * magnitude).astype(np.float32)
    w[:, 64:96] = 0.0  # all-zero blocks: every choice ties, the first must win
    act = rng.uniform(0.1, 2.0, 256)
    c = parse_candidate(name)
    q = quantize(w, c, act=act)
    w32, h, plan = engine._prepare(w, c, act, "t", 1)
    blocks = engine._block_view(w32, plan.block)
    chunk = engine._quantize_blocks(blocks, plan, engine._h_blocks(h, plan.block, w.shape[0]), want_codes=True)
    np.testing.assert_array_equal(q.codes, engine._blocks_to_rows(chunk.codes, w.shape))
    np.testing.assert_array_equal(q.grid_index.reshape(-1), chunk.grid)
    np.testing.assert_array_equal(q.scales.reshape(-1), chunk.scales)


@settings(max_examples=100, deadline=None)
@given(chunks(), st.integers(1, 3))
def test_decode_equals_numpy(chunk, grids):
    blocks, full, rng = chunk
    n, size = blocks.shape[1], blocks.shape[0]
    width = 16
    table = rng.standard_normal(grids * width).astype(np.float32)
    codes = rng.integers(0, width, (n, size)).astype(np.uint8)
    offset = rng.integers(0, grids, n) * width
    out = np.empty((n, size), np.float32)
    kernels.decode(codes, offset, full, table, out)
    np.testing.assert_array_equal(out, table[codes + offset[:, None]] * full[:, None])


@settings(max_examples=100, deadline=None)
@given(chunks(), st.booleans())
def test_block_extremes_equal_numpy(chunk, negate):
    blocks, _, _ = chunk
    rows = np.ascontiguousarray(-blocks.T if negate else blocks.T)
    for signed in (False, True):
        amax, negative = np.empty(rows.shape[0], np.float32), np.zeros(rows.shape[0], bool)
        kernels.block_extremes(rows, signed, amax, negative)
        if signed:
            hi, lo = rows.max(axis=1), rows.min(axis=1)
            np.testing.assert_array_equal(negative, -lo > hi)
            np.testing.assert_array_equal(amax, np.where(-lo > hi, -lo, hi))
        else:
            np.testing.assert_array_equal(amax, np.abs(rows).max(axis=1))


@settings(max_examples=100, deadline=None)
@given(chunks(), st.sampled_from([0.5, 1.25, 8.0]))
def test_histogram_add_equals_bincount(chunk, span):
    """The learned-grid fits' histogram, binned by the kernel, equals numpy's bincount of the same
    samples (values beyond the span land in the end bins)."""
    blocks, full, rng = chunk
    y = blocks / engine._divisor(full)
    weight = rng.uniform(0, 3, y.shape).astype(np.float32)
    hist = Histogram.empty(-span, span)
    hist.add(y, weight)
    bins = hist.weight.size
    flat, wt = y.reshape(-1), weight.reshape(-1).astype(np.float64)
    index = np.clip(((flat - np.float32(-span)) * np.float32(bins / (2 * span))).astype(np.intp), 0, bins - 1)
    np.testing.assert_array_equal(hist.weight, np.bincount(index, weights=wt, minlength=bins))
    np.testing.assert_array_equal(hist.weighted_sum, np.bincount(index, weights=wt * flat, minlength=bins))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3000))
def test_a_difference_of_prefix_sums_is_the_runs_exact_sum(seed, n):
    """Lloyd's cell sums (quant.learned.lloyd): a run's sum from two running-sum pairs is its exact
    sum (math.fsum) to about one rounding, even for a tiny run after ten decades of larger terms."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0, 6, n)
    hi, lo = np.empty(n + 1), np.empty(n + 1)
    kernels.prefix_sums(x, hi, lo)
    total = math.fsum(x)
    for a, b in rng.integers(0, n + 1, (20, 2)):
        a, b = min(a, b), max(a, b)
        exact = math.fsum(x[a:b])
        run = (hi[b] - hi[a]) + (lo[b] - lo[a])
        assert abs(run - exact) <= 2.3e-16 * exact + n * 2.0**-104 * total
