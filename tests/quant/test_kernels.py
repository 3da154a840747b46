"""The compiled kernels (quant.kernels) against the numpy expressions they replace, bit for bit.

The reference rounds with the same table stripped of its buckets, which
``LookupTable`` then rounds by numpy's binary search (checked against brute force in
test_lookup.py)."""

import math
from dataclasses import replace

import ml_dtypes
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import engine, kernels, metrics, parse_candidate, quantize
from quant.candidate import ScaleRule
from quant.learned import Histogram
from quant.lookup import LookupTable, Rounding, grid_stack

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
    stack = grid_stack(tables)
    w_hat, codes = np.empty(blocks.shape, np.float32), np.empty(blocks.shape, np.uint16)
    kernels.round_chosen(blocks, scales, factor, grid, stack.buckets, stack.shift, stack.threshold, stack.value,
                         stack.index, w_hat, codes, True, True)
    y = blocks / engine._divisor(full)
    for k, table in enumerate(tables):
        mine = grid == k
        search = _search_only(table)
        np.testing.assert_array_equal(w_hat[:, mine], (search.round(y) * full)[:, mine])
        np.testing.assert_array_equal(codes[:, mine], search.index(y)[:, mine])
    searched = engine._round_chosen(tuple(map(_search_only, tables)), blocks, scales, factor, grid, codes=True)
    np.testing.assert_array_equal(searched[0], w_hat)
    np.testing.assert_array_equal(searched[1], codes)
    alone = np.empty(blocks.shape, np.uint16)
    kernels.round_chosen(blocks, scales, factor, grid, stack.buckets, stack.shift, stack.threshold, stack.value,
                         stack.index, np.empty((0, 0), np.float32), alone, False, True)
    np.testing.assert_array_equal(alone, codes)


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


def _numpy_block_scales(blocks: np.ndarray, plan: engine._Plan) -> np.ndarray:
    """Each trial's signed block scales by numpy: the ideal scale amax / (target x tensor factor),
    or OCP MX's 2**(floor(log2(amax)) - emax), rounded by the scale format's table."""
    c, g = plan.candidate, plan.tensor_factor
    if c.signed:
        hi, lo = blocks.max(axis=0), blocks.min(axis=0)
        negative = -lo > hi
        amax = np.where(negative, -lo, hi)
    else:
        amax = np.abs(blocks).max(axis=0)
    out = []
    for factor, rounding in plan.scaling.trials:
        if c.rule is ScaleRule.FLOOR:
            real = np.ldexp(np.float32(1), np.frexp(amax / g)[1] - (1 + c.atom.emax)).astype(np.float32)
            rounding = Rounding.NEAREST_EVEN
        else:
            real = amax / np.float32(c.target * g) * np.float32(factor)
        table = c.scale.table(rounding)
        s = real if table is None else _search_only(table).round(real)
        out.append(np.where(negative, -s, s) if c.signed else s)
    return np.stack(out)


@settings(max_examples=150, deadline=None)
@given(chunks(), st.sampled_from(["E2M1sE4M3@16", "E2M1sUE8M0@32", "INT8sUE8M0@32", "BOF4S-16sE4M3@32",
                                  "E2M1sE4M3@16:mse", "E2M1sE4M3@16:4o6", "NF4sUE4M4:ceil", "NF4sFP32@16",
                                  "NF4sFP16@16", "INT4sUE5M7@32", "E2M1sE8M7@32:mse", "E4M3sUE8M0@layer",
                                  "BOF4S-16sE4M3@layer"]),
       st.sampled_from([1.0, 1e-30, 1e30, 1e-42]))
def test_block_scales_equal_numpy(chunk, name, magnitude):
    """kernels.block_scales, in the block layout and in row order, against numpy for every rule
    (nearest, ceil, OCP MX floor, MSE and 4/6 trials, signed), scale tables with buckets, without
    (FP16: binary search) and none (FP32), weights near float32's ends; and a layer's one scale."""
    blocks, _, _ = chunk
    blocks = (blocks * np.float32(magnitude)).astype(np.float32)
    c = parse_candidate(name)
    if c.block_size is not None and blocks.shape[0] != c.block_size:
        blocks = np.resize(blocks, (c.block_size, blocks.shape[1])).astype(np.float32)
    w = engine._blocks_to_rows(blocks, (blocks.shape[1], blocks.shape[0]))
    _, _, plan = engine._prepare(w, c, None, "t", 1)
    if c.block_size is None:  # the layer's scale: that of one block holding the tensor's extremes
        layer = replace(plan, layer_scale=None, block=w.size)
        want = _numpy_block_scales(w.reshape(-1, 1), layer)[0, 0]
        assert plan.layer_scale.tobytes() == want.tobytes()
        return
    want = _numpy_block_scales(blocks, plan)
    np.testing.assert_array_equal(engine._block_scales(blocks, plan), want)
    np.testing.assert_array_equal(engine._block_scales(np.ascontiguousarray(blocks.T), plan, axis=1), want)


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


@settings(max_examples=150, deadline=None)
@given(chunks(), st.sampled_from([None, np.nan, np.inf, -np.inf]))
def test_extremes_equal_numpy(chunk, bad):
    """kernels.extremes: numpy's max and min; both NaN as soon as a NaN or an infinity is in."""
    blocks, _, rng = chunk
    if bad is not None:
        blocks.reshape(-1)[rng.integers(blocks.size)] = bad
    hi, lo = kernels.extremes(blocks)
    if bad is None:
        assert (hi, lo) == (float(blocks.max()), float(blocks.min()))
    else:
        assert math.isnan(hi) and math.isnan(lo)


def _numpy_outliers(blocks: np.ndarray, unit: np.float32, factor: np.float32) -> np.ndarray:
    """OPQ's outliers by numpy: |x| > sample std (ddof 1) x factor per block, x = blocks * unit,
    each sum over the block's elements in order (a cumulative sum)."""
    x = blocks * unit
    n = x.shape[0]
    mean = np.cumsum(x, axis=0)[-1] / np.float32(n)
    var = np.cumsum(np.square(x - mean), axis=0)[-1] / np.float32(max(n - 1, 1))
    outliers: np.ndarray = np.abs(x) > np.sqrt(var) * factor
    return outliers


@settings(max_examples=150, deadline=None)
@given(chunks(), st.sampled_from([1.0, 2.0**-40, 2.0**30]), st.sampled_from([0.9, 2.5, 3.7]))
def test_outliers_equal_numpy(chunk, unit, factor):
    blocks, _, rng = chunk
    blocks[rng.integers(blocks.shape[0]), :] *= np.float32(8.0)  # one large element per block
    unit, factor = np.float32(unit), np.float32(factor)
    outliers, both = np.empty(blocks.shape, np.bool_), np.empty((blocks.shape[0], 2 * blocks.shape[1]), np.float32)
    kernels.outliers(blocks, unit, factor, outliers, both)
    want = _numpy_outliers(blocks, unit, factor)
    np.testing.assert_array_equal(outliers, want)
    np.testing.assert_array_equal(both[:, :blocks.shape[1]], blocks)
    np.testing.assert_array_equal(both[:, blocks.shape[1]:], np.where(want, np.float32(0), blocks))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["E2M1sE4M3@16+opq(0.95)", "E2M1|INT4sE4M3:4o6+opq(0.95)",
                                                   "NF4sUE4M4:aw+opq(0.99)", "INT4sE4M3:mse+opq(0.9)"]),
       st.sampled_from([1.0, 1e-30, 1e30]), st.booleans())
def test_opq_in_one_call_equals_numpy(seed, name, magnitude, want_codes):
    """OPQ in one kernels.quantize_blocks call against OPQ by numpy: each block quantized as it is
    and without its outliers (numpy's rounding, tables without buckets), the outliers stored as
    BF16, and the alternative kept where its error is lower. The same reconstruction, codes,
    grids, scales and outliers, bit for bit, with and without activation weights."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 128)) * rng.lognormal(0, 2, (8, 1)) * magnitude).astype(np.float32)
    w[rng.random(w.shape) < 0.02] *= np.float32(12.0)  # outliers
    w[:, 32:48] = 0.0
    act = rng.uniform(0.1, 2.0, 128)
    w32, h, plan = engine._prepare(w, parse_candidate(name), act, "t", 1)
    blocks = engine._block_view(w32, plan.block)
    hb = engine._h_blocks(h, plan.block, w.shape[0]) if plan.h is not None else None
    got = engine._quantize_blocks(blocks, plan, hb, want_codes)

    searched = replace(plan, tables=tuple(map(_search_only, plan.tables)))
    plain, err = engine._best_of_trials(blocks, searched, hb, want_codes)
    outliers = _numpy_outliers(blocks, plan.err_unit, np.float32(plan.outlier_factor))
    alt, _ = engine._best_of_trials(np.where(outliers, np.float32(0), blocks), searched, hb, want_codes)
    alt_w_hat = np.where(outliers, blocks.astype(ml_dtypes.bfloat16).astype(np.float32), alt.w_hat)
    use = engine._block_error(alt_w_hat, blocks, hb, plan.err_unit) < err
    assert outliers.any() and use.any()
    np.testing.assert_array_equal(got.w_hat, np.where(use, alt_w_hat, plain.w_hat))
    np.testing.assert_array_equal(got.grid, np.where(use, alt.grid, plain.grid))
    np.testing.assert_array_equal(got.scales, np.where(use, alt.scales, plain.scales))
    np.testing.assert_array_equal(got.sparse, outliers & use)
    if want_codes:
        np.testing.assert_array_equal(got.codes, np.where(use, alt.codes, plain.codes))
    else:
        assert got.codes is None


@settings(max_examples=100, deadline=None)
@given(chunks())
def test_round_bf16_equals_ml_dtypes(chunk):
    blocks, _, _ = chunk
    x = np.concatenate([blocks.reshape(-1), np.float32([3.4e38, -3.4e38, 1e-40, -0.0])])
    np.testing.assert_array_equal(engine.round_bf16(x), x.astype(ml_dtypes.bfloat16).astype(np.float32))


def _numpy_stats(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray | None) -> tuple[float, ...]:
    """chunk_stats' sums by numpy, one array at a time: w^2 and w_hat^2 pairwise in float32 (or
    float64 where float32 under- or overflows) and D by einsum; weighted, every square in float64."""
    d = (w_hat - w).astype(np.float64).reshape(-1)
    if h is None:
        with np.errstate(over="ignore"):
            sums = [np.add.reduce(np.square(a), axis=None, dtype=np.float32) for a in (w, w_hat)]
        wide = [a.astype(np.float64).ravel() for a in (w, w_hat)]
        sums = [float(t) if 2.0**-60 <= t < np.inf else float(np.einsum("i,i->", x, x)) for x, t in zip(wide, sums)]
        return (*sums, float(np.einsum("i,i->", d, d)))
    hf = h.reshape(-1)
    w2, q2, d2 = np.square(w, dtype=np.float64).ravel(), np.square(w_hat, dtype=np.float64).ravel(), d * d
    return (float(w2.sum()), float(q2.sum()), float(d2.sum()), float(np.einsum("i,i->", w2, hf)),
            float(np.einsum("i,i->", q2, hf)), float(np.einsum("i,i->", d2, hf)), float(hf.sum()))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["E2M1sE4M3@16", "E2M1|INT4sE4M3:mse", "E4M3sUE8M0@layer",
                                                   "E2M1sE4M3@16+opq(0.95)", "Q4_0", "Q8_0", "NF4sUE4M4:aw"]),
       st.sampled_from([1.0, 1e-30, 1e25, 1e-42]), st.integers(1, 41), st.booleans())
def test_stats_from_the_kernels_parts_equal_numpy(seed, name, magnitude, rows, weighted):
    """The statistics measure() sums from the parts the quantizing kernels leave (float32 squares
    and the float64 difference; weighted, float64 squares) are numpy's sums of each array,
    bit for bit: squares beyond float32's range, odd sizes (unaligned rows) and weights included."""
    rng = np.random.default_rng(seed)
    c = parse_candidate(name)
    cols = 64 if c.block_size is None else 2 * c.block_size
    w = (rng.standard_normal((rows, cols)) * rng.lognormal(0, 2, (rows, 1)) * magnitude).astype(np.float32)
    w32, h, plan = engine._prepare(w, c, rng.uniform(0, 3, cols) if weighted else None, "t", 1)
    blocks = engine._block_view(w32, plan.block)
    hb = engine._h_blocks(h, plan.block, w.shape[0])
    parts = metrics.stats_parts(blocks.size, hb is not None)
    chunk = engine._quantize_blocks(blocks, plan, hb, want_codes=False, parts=parts)
    assert chunk.parts is parts
    got = metrics.chunk_stats(blocks, chunk.w_hat, hb, parts=parts)
    fields = ("sum_w2", "sum_q2", "sum_d2") + (("hsum_w2", "hsum_q2", "hsum_d2", "hsum") if weighted else ())
    # assert_array_equal: a NaN (Q4_0 at 1e25: ggml's FP16 scale overflows) equals a NaN
    np.testing.assert_array_equal([getattr(got, f) for f in fields], _numpy_stats(blocks, chunk.w_hat, hb))
    again = metrics.chunk_stats(blocks, chunk.w_hat, hb)  # numpy's parts: the same
    np.testing.assert_array_equal([getattr(again, f) for f in fields], [getattr(got, f) for f in fields])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_round_fp16_equals_numpy(seed):
    """kernels.round_fp16 (ggml's FP16 block scales) is numpy's float32 -> float16 cast: random
    bit patterns over every finite float32 (FP16 subnormals, ties, overflow to infinity), zeros."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32).view(np.float32)
    near = (rng.standard_normal(4096) * np.exp2(rng.integers(-26, 17, 4096))).astype(np.float32)
    ties = (rng.integers(-2**12, 2**12, 512) * np.float32(2.0**-25)).astype(np.float32)  # subnormal halves
    x = np.concatenate([x[np.isfinite(x)], near, ties, np.float32([0.0, -0.0, 65504, 65519.996, 65520, -65520])])
    out = np.empty_like(x)
    kernels.round_fp16(x, out)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).astype(np.float32)
    assert out.view(np.uint32).tolist() == want.view(np.uint32).tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["E2M1sE4M3@16+res(1%)", "E2M1|INT4sE4M3:4o6+opq(0.95)+res(2%)",
                                                   "NF4sUE4M4:aw+res(0.5%)", "INT4sE4M3:mse+opq(0.9)+res(1%)",
                                                   "E4M3sUE8M0@32+res(60%)"]),
       st.sampled_from([1.0, 1e-30, 1e30]), st.booleans())
def test_residuals_in_one_call_equal_numpy(seed, name, magnitude, want_codes):
    """Sparse residuals stored by kernels.quantize_blocks (after OPQ, in the same call) against
    numpy's: the same reconstruction, codes and stored positions, bit for bit, with and without
    activation weights and OPQ, and with 60 % stored (where BF16 is often not the closer)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 128)) * rng.lognormal(0, 2, (8, 1)) * magnitude).astype(np.float32)
    w[rng.random(w.shape) < 0.02] *= np.float32(12.0)
    act = rng.uniform(0.1, 2.0, 128)
    w32, h, plan = engine._prepare(w, parse_candidate(name), act, "t", 1)
    assert plan.residual_cut is not None
    blocks = engine._block_view(w32, plan.block)
    hb = engine._h_blocks(h, plan.block, w.shape[0])
    got = engine._quantize_blocks(blocks, plan, hb, want_codes)
    want = engine._quantize_blocks(blocks, replace(plan, tables=tuple(map(_search_only, plan.tables))), hb, want_codes)
    assert got.sparse is not None and want.sparse is not None and want.sparse.any()
    for a, b in ((got.w_hat, want.w_hat), (got.grid, want.grid), (got.scales, want.scales), (got.sparse, want.sparse)):
        np.testing.assert_array_equal(a, b)
    if want_codes:
        np.testing.assert_array_equal(got.codes, want.codes)
