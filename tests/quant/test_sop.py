"""The SOP methods: dual grids, learned codebooks, activation weighting, outliers and residuals."""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quant import AtomKind, codebooks, dequantize, engine, fit_grids, measure, parse_candidate, quantize
from quant.candidate import Selection
from quant.formats import get_atom
from quant.learned import MAX_ITERATIONS, TOLERANCE, Histogram, _lloyd, derive_bof4, lloyd


@pytest.fixture(scope="module")
def gaussian() -> np.ndarray:
    return np.random.default_rng(12345).standard_normal(1 << 24).astype(np.float32).reshape(-1, 4096)


@pytest.mark.parametrize("block", [32, 64])
def test_derived_bof4s_matches_published_tables(block):
    """arXiv 2505.06653 Table 7 from 2**22 seeded samples, within 2e-3 per level."""
    derived = derive_bof4(block, signed=True, samples=1 << 22, seed=0)
    np.testing.assert_allclose(derived, codebooks.BOF4S_MSE[block], atol=2e-3)


def test_derived_bof4_matches_published_table():
    derived = derive_bof4(64, signed=False, samples=1 << 22, seed=0)
    np.testing.assert_allclose(derived, codebooks.BOF4_MSE_64, atol=2e-3)


@pytest.mark.parametrize(("block", "signed"), [(16, True), (8, True), (16, False), (8, False)])
def test_shipped_derived_tables_reproduce(block, signed):
    table = (codebooks.BOF4S_MSE if signed else codebooks.BOF4_MSE_DERIVED)[block]
    np.testing.assert_allclose(derive_bof4(block, signed=signed, samples=1 << 23, seed=7), table, atol=2e-3)


def test_lloyd_reproduces_max_1960():
    """Unblocked 16-level Lloyd-Max on N(0,1): MSE 0.009501, top levels as Max (1960) (docs/formats.md §4.2)."""
    x = np.random.default_rng(0).standard_normal(1 << 21, dtype=np.float32)
    x = np.concatenate([x, -x])  # symmetric sample: the shift mode of Lloyd's iteration is soft
    hist = Histogram.empty(-6.0, 6.0)
    hist.add(x, np.ones_like(x))
    levels = lloyd(hist, np.linspace(-2.7, 2.7, 16))  # Max's 16 levels, no zero
    np.testing.assert_allclose(levels[8:], [0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326],
                               atol=1e-2)
    nearest = levels[np.abs(x[:, None] - levels[None, :]).argmin(axis=1)]
    assert np.mean((x - nearest) ** 2) == pytest.approx(0.009501, rel=0.01)


def _lloyd_per_point(hist: Histogram, init: np.ndarray, pinned: tuple[float, ...]) -> tuple[np.ndarray, int]:
    """The textbook iteration, every point's cell by its own search among the midpoints: the
    levels and the iterations it ran."""
    occupied = hist.weight > 0
    point = hist.weighted_sum[occupied] / hist.weight[occupied]
    mass, mass_sum = hist.weight[occupied], hist.weighted_sum[occupied]
    levels = np.sort(init.astype(np.float64))
    for iteration in range(1, MAX_ITERATIONS + 1):
        fixed = np.isin(levels, np.asarray(pinned, np.float64))
        cell = np.searchsorted((levels[:-1] + levels[1:]) / 2, point, side="right")
        w = np.bincount(cell, weights=mass, minlength=levels.size)
        s = np.bincount(cell, weights=mass_sum, minlength=levels.size)
        new = np.sort(np.where((w > 0) & ~fixed, s / np.where(w > 0, w, 1.0), levels))
        moved, levels = np.max(np.abs(new - levels)), new
        if moved < TOLERANCE:
            return levels, iteration
    return levels, MAX_ITERATIONS


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 20_000), st.booleans(), st.booleans())
def test_lloyd_cells_by_runs_equal_cells_by_points(seed, n, pin, reverse):
    """lloyd sums each cell as a run of the sorted bin means: the textbook per-point iteration up to
    float64 summation order (a few dozen ulps), also when the means are out of bin order (reversed here)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * rng.uniform(0.1, 3)).astype(np.float32)
    hist = Histogram.empty(-1.25, 1.25, bins=1 << 12)
    hist.add(np.clip(x, -1.25, 1.25), rng.uniform(0.1, 2.0, n).astype(np.float32))
    if reverse:  # bins in descending order: lloyd must sort the means first
        hist = Histogram(hist.lo, hist.hi, hist.weight[::-1].copy(), hist.weighted_sum[::-1].copy())
    means = hist.weighted_sum[hist.weight > 0] / hist.weight[hist.weight > 0]
    assert np.all(np.diff(means) >= 0) != reverse or means.size < 2  # each order is the one under test
    init = np.sort(rng.uniform(-1, 1, 16))
    pinned = (0.0,) if pin else ()
    if pin:
        init[np.argmin(np.abs(init))] = 0.0
    ours, iterations = _lloyd(hist, init, pinned, MAX_ITERATIONS)
    textbook, textbook_iterations = _lloyd_per_point(hist, init, pinned)
    np.testing.assert_allclose(ours, textbook, rtol=1e-13, atol=1e-15)
    assert iterations == textbook_iterations  # the stopping test, and sorting the new levels
    np.testing.assert_array_equal(lloyd(hist, init, pinned), ours)


@pytest.mark.parametrize("ratio", [1.0, 1e-20, 1e-33])
def test_lloyd_finds_a_cell_far_lighter_than_the_rest(ratio):
    """A cell's sums come from running sums whose error grows with the total; a cell lighter than
    that error (samples weighted 1e-33 beside 50k weighted ~1) is summed on its own: its level is
    its weighted mean."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-0.5, 0.5, 50_000), rng.uniform(1.0, 1.2, 200)]).astype(np.float32)
    weight = np.concatenate([rng.uniform(0.5, 2.0, 50_000), np.full(200, ratio)]).astype(np.float32)
    hist = Histogram.empty(-1.25, 1.25)
    hist.add(x, weight)
    levels = lloyd(hist, np.array([-0.4, -0.1, 0.0, 0.1, 0.4, 1.1]), (0.0,))
    light = x >= 1.0
    mean = np.sum(x[light].astype(np.float64) * weight[light]) / np.sum(weight[light].astype(np.float64))
    assert levels[-1] == pytest.approx(mean, rel=1e-12)


def test_lloyd_float32_levels_equal_the_textbook_iterations_on_a_dd4_fit():
    """A DD4 fit as sampled mode runs it (2**16 bins, ~50k occupied, from NF4): the float32 levels
    a grid keeps are the textbook iteration's, bit for bit."""
    rng = np.random.default_rng(3)
    blocks = rng.standard_normal((20_000, 16)).astype(np.float32) * rng.lognormal(0, 0.5, (20_000, 1)).astype(np.float32)
    extreme = np.abs(blocks).max(axis=1, keepdims=True)
    hist = Histogram.empty(-1.25, 1.25)
    hist.add(blocks / extreme, np.broadcast_to(extreme * extreme, blocks.shape))
    init = np.asarray(get_atom("NF4").values, np.float64)
    ours, textbook = lloyd(hist, init, (0.0,)), _lloyd_per_point(hist, init, (0.0,))[0]
    assert (hist.weight > 0).sum() > 40_000
    np.testing.assert_array_equal(ours.astype(np.float32), textbook.astype(np.float32))


def test_lloyd_points_on_a_midpoint_join_the_upper_cell():
    x = np.tile(np.float32([-1.0, -0.5, 0.0, 0.5, 1.0]), 10)
    hist = Histogram.empty(-1.25, 1.25, bins=1 << 10)
    hist.add(x, np.ones_like(x))
    levels = lloyd(hist, np.array([-1.0, 0.0, 1.0]), pinned=(-1.0, 1.0))
    np.testing.assert_array_equal(levels, _lloyd_per_point(hist, np.array([-1.0, 0.0, 1.0]), (-1.0, 1.0))[0])


@pytest.mark.parametrize(("name", "ref", "sel"), [
    ("NF4|E2M1sFP32", 6.320, 0.17),   # docs/formats.md §4.1: -3.3 % vs NF4, 17 % of blocks pick E2M1
    ("E2M1|INT4sFP32", 5.969, 0.63),  # IF4-like: -33 % vs E2M1
    ("NF4|E2M1sFP32@64", 8.416, 0.06),
])
def test_dual_grid_reference_numbers(gaussian, name, ref, sel):
    s = measure(gaussian, parse_candidate(name))
    assert s.rel_mse * 1e3 == pytest.approx(ref, rel=0.03)
    assert s.second_grid_fraction == pytest.approx(sel, abs=0.02)


def test_dual_pairs_improve_on_their_grids(gaussian):
    w = gaussian[:1024]
    nf4 = measure(w, parse_candidate("NF4sFP32")).rel_mse
    e2m1 = measure(w, parse_candidate("E2M1sFP32")).rel_mse
    assert measure(w, parse_candidate("NF4|E2M1sFP32")).rel_mse / nf4 == pytest.approx(0.967, abs=0.01)
    assert measure(w, parse_candidate("E2M1|INT4sFP32")).rel_mse / e2m1 == pytest.approx(0.674, abs=0.02)


def test_selection_bit_placement_and_cost():
    assert parse_candidate("E2M1|INT4sE4M3").selection is Selection.SIGN  # IF4: scale sign bit
    assert parse_candidate("E2M1|INT4sE4M3").nominal_bpw == 4.5
    assert parse_candidate("NF4|DD4sUE4M4").selection is Selection.BIT
    assert parse_candidate("NF4|DD4sUE4M4").nominal_bpw == 4 + 8 / 16 + 1 / 16  # docs/formats.md §2.4
    assert parse_candidate("NF4|DD4sS1E5M5").selection is Selection.META
    assert parse_candidate("NF4|DD4sS1E5M5").nominal_bpw == 4 + 12 / 16


def test_dd4_beats_nf4_and_is_deterministic(gaussian):
    w = gaussian[:512]
    dd4 = parse_candidate("DD4sUE4M4")
    first, second = measure(w, dd4, threads=1), measure(w, dd4, threads=2)
    np.testing.assert_equal(astuple(first), astuple(second))
    assert first.rel_mse < 0.9 * measure(w, parse_candidate("NF4sUE4M4")).rel_mse
    q = quantize(w, dd4)
    assert 0.0 in q.grids[0] and q.grids[0].size == 16


def test_dd4_pins_plus_one_under_a_signed_scale(gaussian):
    q = quantize(gaussian[:256], parse_candidate("DD4sE4M3:signed"))
    assert q.grids[0][-1] == 1.0 and 0.0 in q.grids[0]


def test_lut_output_format_rounds_levels_and_costs_bits(gaussian):
    c = parse_candidate("DD4sUE4M4:lut=E4M3")
    q = quantize(gaussian[:256], c)
    e4m3 = set(np.asarray(parse_candidate("E4M3sUE8M0").atom.values, np.float64))
    # levels within [-1.25, 1.25] are placed by 2**8 (1.25 * 256 = 320 <= 448 < 640), then rounded
    assert q.grids[0].size == 16 and set(q.grids[0].astype(np.float64) * 256) <= e4m3
    n = gaussian[:256].size
    # 16 levels x 8 bits + the image's 8-bit exponent; float32 levels need none
    assert c.bits(n).lut_bits == 16 * 8 + 8 and parse_candidate("DD4sUE4M4").bits(n).lut_bits == 16 * 32
    assert parse_candidate("NF4|DD4sUE4M4:lut=E4M3").bits(n).lut_bits == 16 * 8 + 8  # fixed grid: hardwired
    assert parse_candidate("DD4|DD4sUE4M4:lut=E4M3").bits(n).lut_bits == 2 * (16 * 8 + 8)  # one image per learned grid


def test_activation_weighting_changes_choices_and_helps_weighted_error():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    h = rng.lognormal(0.0, 2.0, 256)  # a few input channels matter far more
    plain = measure(w, parse_candidate("NF4|DD4sUE4M4"), act=h)
    weighted = measure(w, parse_candidate("NF4|DD4sUE4M4:aw"), act=h)
    assert weighted.act_rel_mse < plain.act_rel_mse
    assert weighted.rel_mse >= plain.rel_mse * 0.98  # it optimises the weighted error, not the plain one


matrices = arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([64, 128])),
                  elements=st.floats(-100, 100, width=32))
pairs = st.sampled_from([("NF4", "E2M1"), ("E2M1", "INT4"), ("NF4", "SH4"), ("E2M3", "E3M2")])


def _block_errors(w: np.ndarray, name: str) -> np.ndarray:
    d = dequantize(quantize(w, parse_candidate(name))).astype(np.float64) - w
    return (d**2).reshape(-1, 16).sum(axis=1)


@settings(max_examples=100, deadline=None)
@given(matrices, pairs)
# Found by Hypothesis: subnormal weights, where the shared scale 196 ulp / 6 rounds to 33 ulp while
# INT4 alone divides exactly (196 / 7): the pair reconstructs 198 ulp, INT4 alone 196.
@example(np.full((1, 64), 2.75e-43, np.float32), ("E2M1", "INT4"))
def test_dual_grid_never_worse_than_either_grid_on_any_block(w, pair):
    a, b = pair
    dual = _block_errors(w, f"{a}|{b}sFP32")
    # B's grid is rescaled to A's extreme in float32: allow float32 noise on the block's energy.
    # The pair shares A's float32 scale, a single grid has its own: each rounds by up to half a
    # float32 step, which is coarse where the scale is subnormal (|w| below ~1e-37), times a
    # level of at most 28 (E3M2): |d_pair| <= |d_single| + eps per weight.
    eps = 32 * 2.0**-149
    blocks = w.astype(np.float64).reshape(-1, 16)
    amax = np.abs(blocks).max(axis=1)
    noise = 1e-6 * (blocks**2).sum(axis=1) + 16 * (2 * amax * eps + eps**2)
    for single in (_block_errors(w, f"{a}sFP32"), _block_errors(w, f"{b}sFP32")):
        assert np.all(dual <= single + noise)


@settings(max_examples=100, deadline=None)
@given(matrices, st.sampled_from(["NF4sUE4M4", "E2M1sE4M3", "NF4|DD4sUE4M4", "INT4sFP32@64"]),
       st.sampled_from(["+opq(0.95)", "+res(1%)", "+opq(0.9)+res(0.5%)"]))
def test_corrections_never_increase_error(w, name, correction):
    base = measure(w, parse_candidate(name)).sum_d2
    assert measure(w, parse_candidate(name + correction)).sum_d2 <= base * (1 + 1e-6)


@settings(max_examples=60, deadline=None)
@given(matrices, st.sampled_from(["NF4|DD4sUE4M4+res(1%)", "E2M1|INT4sE4M3+opq(0.95)", "DD4sE4M3:lut=E4M3",
                                  "SFP4sE4M3", "E2M1|E2M1~0.5|NF4|DD4|SH4sUE4M4", "DD4|DD4sS1E5M5:lut=E2M3",
                                  "BOF4S-16|DD4sS1E5M5+opq(0.9,blockidx)", "E2M3sUE4M4:mse"]))
def test_bpw_is_the_sum_of_what_is_stored(w, name):
    """Independent count from the quantized tensor: codes, scales, sign/selection bits, constants,
    LUT image of learned grids and sparse entries."""
    c = parse_candidate(name)
    q = quantize(w, c)
    stats = measure(w, c)
    n_blocks = q.scales.size
    stored = c.atom.code_bits * w.size + c.scale.bits * n_blocks
    grids = len(c.atoms)
    in_scale = c.selection in (Selection.SIGN, Selection.META)
    select = (grids - 1).bit_length() - in_scale if grids > 1 else 0  # ceil(log2 n), less a free scale bit
    stored += n_blocks * ((c.signed and not c.scale.signed) + select)
    stored += 32  # FP32 tensor factor of these candidates
    exponent = 8 if c.lut_format is not None else 0
    stored += sum(a.name.startswith("DD") for a in c.atoms) * (16 * c.lut_width_bits + exponent)
    assert q.sparse_index.size == stats.sparse
    if stats.sparse:
        entry = (c.outliers or c.residual).bits_per_entry or 16 + np.log2(c.block_size)
        stored += stats.sparse * entry
    assert c.bits(w.size, stats.sparse).total_bits == pytest.approx(stored)
    np.testing.assert_array_equal(dequantize(q).reshape(-1)[q.sparse_index], q.sparse_value)


@pytest.mark.parametrize("name", ["NF4|DD4sUE4M4", "DD4|DD4sUE4M4:aw", "DD4sUE4M4:lut=E4M3"])
def test_fit_keeping_samples_equals_redoing_them_every_round(monkeypatch, name):
    """A small tensor's fit keeps each chunk's normalised samples between rounds; a large one redoes
    them: the grids are the same bit for bit (several chunks, activation weights included)."""
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((160, 2048)) * rng.lognormal(0, 0.4, (160, 1))).astype(np.float32)
    w[128:] = rng.uniform(-1, 1, (32, 2048))  # the second chunk unlike the first
    act = rng.uniform(0.1, 2.0, 2048)
    c = parse_candidate(name)
    calls, fixed_errors = [], []
    scales, block_errors = engine._block_scales, engine._block_errors
    monkeypatch.setattr(engine, "_block_scales", lambda *a: calls.append(1) or scales(*a))
    nf4 = engine.lookup_table(engine.fixed_grid(c, 0))
    monkeypatch.setattr(engine, "_block_errors", lambda table, *a: fixed_errors.append(table is nf4) or block_errors(table, *a))
    kept = fit_grids(w, c, act=act, threads=2)
    kept_calls, kept_fixed = len(calls), sum(fixed_errors)
    monkeypatch.setattr(engine, "FIT_KEEP_ELEMENTS", 0)
    redone = fit_grids(w, c, act=act, threads=2)
    if c.dual:  # several rounds: the kept samples were used, with fewer scale passes
        assert kept_calls < len(calls) - kept_calls
    if c.atoms[0].kind is not AtomKind.LEARNED:  # NF4's block errors: once per chunk when kept, every round when not
        chunks = len(engine._row_chunks(*w.shape))
        assert kept_fixed == chunks and sum(fixed_errors) - kept_fixed == chunks * (engine.FIT_ROUNDS - 1)
    for a, b in zip(kept, redone, strict=True):
        np.testing.assert_array_equal(a, b)
