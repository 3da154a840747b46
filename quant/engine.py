"""Block quantization: pure, vectorized functions of a weight matrix and a candidate.

A weight matrix is (out_features, in_features) with rows contiguous along the reduction
(input) dimension, as in PyTorch/HF checkpoints; blocks of ``block_size`` run along each row.
Work is done on chunks of whole rows of ~256K elements (see CHUNK_ELEMENTS); chunks run on a
thread pool. Results do not depend on the number of threads:
chunks are fixed and their statistics are summed in order.

Decode of one element: ``w_hat = grid[g][code] * (block_scale * tensor_factor)`` in float32,
``g`` being the block's selected grid; outliers and residual entries stored aside replace their
positions with their BF16 values.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TypeVar

import numpy as np

from quant import ggml, kernels
from quant._allocator import keep_chunks_in_heap
from quant.candidate import Candidate, ScaleRule, TensorScale
from quant.errors import WeightError
from quant.formats import AtomKind
from quant.learned import Histogram, lloyd
from quant.lookup import GridStack, LookupTable, Rounding, grid_stack, lookup_table, rounding_thresholds
from quant.lutformat import decoded_levels, refine_on_samples, store_levels
from quant.metrics import NO_PARTS, ErrorStats, chunk_stats, stats_parts

keep_chunks_in_heap()

# 1 MiB of float32 per operand: measured fastest on 2 cores (benchmarks/bench_quant.py: 256K
# elements 40 ms per 16M weights with 2 threads, 64K 61 ms, 16K 145 ms), large enough that
# numpy's per-call overhead and the GIL stop dominating, small enough to stay in L2/L3.
CHUNK_ELEMENTS = 1 << 18
# Up to this many weights, one scalar compiled loop finds a tensor's extremes faster than numpy's
# max and min, which vector code makes 5x faster per element (this VM: 0.8 against 5.8 us at 16, 270
# against 55 us at 256K).
SMALL_ELEMENTS = 4096
# Chunks in flight per worker thread: enough to keep every worker busy while the caller consumes
# results in order, few enough that memory stays a few chunks whatever the tensor size.
IN_FLIGHT_PER_WORKER = 2
FIT_ROUNDS = 4  # assignment/refit rounds when a learned grid is paired with a fixed one
FIT_KEEP_ELEMENTS = 1 << 21  # a fit keeps its samples between rounds up to this size (16-32 MB)

# Per-block scale candidates tried by ScaleRule.MSE: (factor on the ideal scale, rounding).
# x1.5 maps the block max to 2/3 of qmax (4 for E2M1: Four over Six); x0.9 trades clipping
# the largest element for finer steps on the rest.
_MSE_CANDIDATES = ((1.0, Rounding.NEAREST_EVEN), (1.0, Rounding.CEIL), (1.5, Rounding.NEAREST_EVEN),
                   (0.9, Rounding.NEAREST_EVEN))
_FOUR_OVER_SIX = ((1.0, Rounding.NEAREST_EVEN), (1.5, Rounding.NEAREST_EVEN))

T = TypeVar("T")
_ONE = np.float32(1.0)  # the unit factor, made once (a numpy scalar costs ~0.5 us per call)
_NO_WEIGHTS = np.empty((0, 0), np.float32)  # h for kernels.choose_blocks when there is none
_NO_CODES = np.empty((0, 0), np.uint16)  # codes for kernels.keep_better when none are asked for
_NO_SPARSE = np.empty((0, 0), np.bool_)  # kernels.quantize_blocks' outliers without OPQ
_F32_TINY = float(np.finfo(np.float32).tiny)
# Tensor amax range whose squared residuals fit float32 as they are: 2**-30 leaves residuals
# down to 2**-30 x 2**-33 of the largest weight above float32's smallest normal square root (2**-63).
_PLAIN_AMAX = (2.0**-30, 2.0**30)


@dataclass(frozen=True)
class QuantizedTensor:
    """A quantized weight matrix: codes, block scales, selected grids and sparse entries."""

    candidate: Candidate
    shape: tuple[int, int]
    grids: tuple[np.ndarray, ...]
    """Effective float32 values of each grid for this tensor (learned and LUT-rounded)."""
    codes: np.ndarray
    """(rows, cols) index into the block's grid: uint8 when every grid has <= 256 values, else uint16."""
    grid_index: np.ndarray
    """(rows, cols // block) uint8: which grid each block uses (all 0 for a single grid)."""
    scales: np.ndarray
    """(rows, cols // block) float32 decoded block scales (signed under signed absmax)."""
    tensor_factor: float
    """Per-tensor factor g (float32 value); an @layer candidate's single scale is in ``scales``."""
    sparse_index: np.ndarray
    """(k,) int64 flat positions of outliers and residual entries stored aside."""
    sparse_value: np.ndarray
    """(k,) float32 (BF16-exact) values stored at those positions."""


@dataclass(eq=False)  # not frozen (its __init__ costs 1.5 us more per call); never changed, only replace()d
class _Plan:
    """Everything about one (tensor, candidate) pair that is fixed before the chunks run."""

    candidate: Candidate
    block: int
    tensor_factor: np.float32
    layer_scale: np.float32 | None
    scaling: _Scaling
    """The block-scale trials."""
    grids: tuple[np.ndarray, ...]
    tables: tuple[LookupTable, ...]
    h: np.ndarray | None
    """(cols,) activation weights, or None."""
    outlier_factor: float | None
    """OPQ threshold in units of the block's sample std, or None."""
    err_unit: np.float32 = np.float32(1.0)
    """Residuals are multiplied by this before they are squared and compared. For weights beyond
    2**+-30 it is 2**-floor(log2(amax)), a power of two, so every comparison is an exact rescaling
    of the plain one, and squares of weights near 1e-22 or 1e37 stay inside float32's range
    instead of flushing to 0 or overflowing; otherwise 1."""
    residual_cut: float | None = None
    """Store aside every element whose (weighted, ``err_unit``-scaled) squared residual exceeds this, or None."""


def _check_matrix(w: np.ndarray, name: str, block: int | None) -> np.ndarray:
    if w.ndim != 2:
        raise WeightError(f"tensor {name!r}: expected a 2-D (out, in) matrix, got shape {w.shape}")
    if w.size == 0:
        raise WeightError(f"tensor {name!r}: empty tensor {w.shape}")
    if block is not None and w.shape[1] % block:
        divisors = [b for b in (8, 16, 32, 64, 128) if w.shape[1] % b == 0]
        raise WeightError(
            f"tensor {name!r}: row length {w.shape[1]} is not a multiple of block {block}; "
            f"use a block that divides it ({', '.join(map(str, divisors)) or 'e.g. @layer'})"
        )
    return np.ascontiguousarray(w, dtype=np.float32)


def _plan(w: np.ndarray, c: Candidate, name: str, h: np.ndarray | None, threads: int | None,
          fitted: FittedGrids | None = None) -> _Plan:
    hi, lo = _extremes(w, threads)
    if not (math.isfinite(hi) and math.isfinite(lo)):
        bad = int(np.count_nonzero(~np.isfinite(w)))
        raise WeightError(f"tensor {name!r}: {bad} NaN/Inf weights; fix or drop the checkpoint tensor")
    amax = max(hi, -lo)
    recipe = _recipe(c)
    grids, tables = (recipe.grids, recipe.tables) if fitted is None else (tuple(fitted), fitted.tables)
    unit = _err_unit(amax)
    if c.block_size is None:
        # the layer's scale is that of one block holding its extremes, at the rule's first trial
        scale = np.empty((len(recipe.scaling.trials), 1), np.float32)
        kernels.block_scales(np.array([[hi], [lo]], np.float32), False, np.float32(c.target), _ONE,
                             *recipe.scaling.args, scale)
        plan = _Plan(c, w.shape[1], _ONE, scale[0, 0], recipe.scaling, grids,
                     tables, h if c.act_weighted else None, None, unit)
    else:
        plan = _Plan(c, c.block_size, _tensor_factor(c, amax, recipe.full_scale), None, recipe.scaling, grids,
                     tables, h if c.act_weighted else None, recipe.outlier_factor, unit)
    if fitted is None and recipe.learned:
        plan = _fit_learned(w, plan, threads)
    return plan


def _err_unit(amax: float) -> np.float32:
    """1 for ordinary weights (no extra multiply, the plain comparisons), else
    2**-floor(log2(amax)) within float32's normal range: see ``_Plan.err_unit``."""
    if amax == 0.0 or _PLAIN_AMAX[0] <= amax <= _PLAIN_AMAX[1]:
        return _ONE
    return np.float32(2.0 ** min(127, max(-126, 1 - math.frexp(amax)[1])))


@dataclass(frozen=True)
class _Recipe:
    """What a candidate fixes for every tensor, built once per process (a small call's fixed cost)."""

    grids: tuple[np.ndarray, ...]
    """The candidate's grids (read-only: shared by every call); learned grids' starting points."""
    tables: tuple[LookupTable, ...]
    """One rounding table per grid."""
    scaling: _Scaling
    """The block-scale trials (:data:`_MSE_CANDIDATES` and so on, or the rule's one)."""
    outlier_factor: float | None
    """OPQ threshold in block standard deviations (a scipy call), or None."""
    full_scale: float
    """target x the largest block scale the trials leave room for: the per-tensor factor is
    amax / full_scale (before POT rounding)."""
    learned: bool
    """Some grid is fitted to each tensor (DDn)."""


@lru_cache(maxsize=1024)
def _recipe(c: Candidate) -> _Recipe:
    grids = tuple(fixed_grid(c, k) for k in range(len(c.atoms)))
    for g in grids:
        g.flags.writeable = False
    trials = {ScaleRule.MSE: _MSE_CANDIDATES, ScaleRule.FOUR_OVER_SIX: _FOUR_OVER_SIX}.get(
        c.rule, ((1.0, _rule_rounding(c.rule)),))
    outlier_factor = None
    if c.outliers is not None and c.block_size is not None:
        outlier_factor = c.outliers.threshold_sigmas(c.block_size)
    top = c.scale.max
    if max(f for f, _ in trials) > 1.0:
        # Leave room for x1.5 scales: the largest power of two <= max/1.5 (E4M3: 256, as the
        # Four-over-Six NVFP4 recipe, mit-han-lab/fouroversix E4M3_MAX_FOUROVERSIX).
        top = 2.0 ** math.floor(math.log2(top / 1.5))
    return _Recipe(grids, _tables(grids), _scaling(c, trials), outlier_factor, c.target * top, c.learned)


@dataclass(frozen=True, eq=False)
class _Scaling:
    """Block-scale trials and what kernels.block_scales needs to compute them."""

    trials: tuple[tuple[float, Rounding], ...]
    """(factor on the ideal scale, rounding) per trial."""
    args: tuple[object, ...]
    """kernels.block_scales' arguments from ``signed`` on: (signed, floor, floor_shift, factors,
    s_buckets, s_shift, s_threshold, s_value)."""


@lru_cache(maxsize=1024)
def _scaling(c: Candidate, trials: tuple[tuple[float, Rounding], ...]) -> _Scaling:
    """``c``'s scale rule and the scale format's tables for ``trials``."""
    floor = c.rule is ScaleRule.FLOOR
    factors = np.array([f for f, _ in trials], np.float32)
    # OCP MX: shared_exp = floor(log2(amax)) - emax_elem; frexp's exponent is floor(log2)+1.
    rule = (c.signed, floor, 1 + c.atom.emax if floor else 0, factors)
    tables = [c.scale.table(Rounding.NEAREST_EVEN if floor else rounding) for _, rounding in trials]
    buckets, shift = 0, np.uint32(0)
    if tables[0] is None:  # FP32 scales: not rounded
        threshold = value = np.empty(0, np.float32)
    elif (stack := grid_stack(tuple(t for t in tables if t is not None))) is not None:
        buckets, shift, threshold, value = stack.buckets, stack.shift, stack.threshold, stack.value
    else:  # binary search in each trial's table
        threshold = np.concatenate([t.thresholds for t in tables if t is not None])
        value = np.concatenate([t.values for t in tables if t is not None])
    for a in (threshold, value):
        a.flags.writeable = False  # as the bucket tables are: one kernel signature for all
    return _Scaling(trials, (*rule, buckets, shift, threshold, value))


def fixed_grid(c: Candidate, k: int) -> np.ndarray:
    """Grid k's float32 values in the primary grid's units, LUT-rounded for table-decoded grids
    (a learned grid's starting point). Decoders rebuild shift-decoded (FLOAT/INT) grids with it."""
    atom = c.atoms[k]
    return _lut_round(c, k, np.asarray(atom.values, dtype=np.float64) * c.grid_factor(k))


def _lut_round(c: Candidate, k: int, values: np.ndarray) -> np.ndarray:
    """A table-decoded grid's levels as its LUT stores them under ``lut=FMT`` (quant.lutformat)."""
    atom = c.atoms[k]
    if c.lut_format is None or atom.kind not in (AtomKind.CODEBOOK, AtomKind.LEARNED):
        return np.unique(values.astype(np.float32))
    factor = c.grid_factor(k)
    stored, e = store_levels(c.lut_format, np.unique(values / factor))
    return np.unique((decoded_levels(stored, e) * factor).astype(np.float32))


def _lut_fit(c: Candidate, k: int, levels: np.ndarray, hist: Histogram, pinned: tuple[float, ...]) -> np.ndarray:
    """A learned grid's Lloyd levels as LUT words of ``c.lut_format``: placed and rounded
    (quant.lutformat.store_levels), then moved to neighbouring words where that lowers the error
    of the histogram's samples (quant.lutformat.refine_on_samples)."""
    assert c.lut_format is not None
    factor = c.grid_factor(k)
    stored, e = store_levels(c.lut_format, np.unique(levels / factor))
    if np.unique(stored).size == stored.size:  # a narrow word that merged levels is left as rounded
        point, mass = hist.points()
        fixed = np.isin(decoded_levels(stored, e) * factor, np.asarray(pinned, np.float64))
        stored = refine_on_samples(c.lut_format, stored, e, factor, point, mass, fixed)
    return np.unique((decoded_levels(stored, e) * factor).astype(np.float32))


def _tables(grids: tuple[np.ndarray, ...]) -> tuple[LookupTable, ...]:
    return tuple(lookup_table(g) for g in grids)


def _extremes(w: np.ndarray, threads: int | None) -> tuple[float, float]:
    """(max, min) of ``w``, NaN if it holds one; chunk by chunk on the thread pool (one numpy
    reduction over a large tensor runs on one core: a quarter of quantize()'s time at 16M)."""
    if w.size <= SMALL_ELEMENTS:  # one compiled pass beats numpy's two calls
        hi, lo = kernels.extremes(w)
        return hi, lo
    if w.size <= CHUNK_ELEMENTS:  # one chunk
        return float(w.max()), float(w.min())
    parts = np.array(list(_map_chunks(lambda r: (w[r].max(), w[r].min()), _row_chunks(*w.shape), threads)))
    return float(parts[:, 0].max()), float(parts[:, 1].min())  # numpy's max and min keep a NaN


def _tensor_factor(c: Candidate, amax: float, full_scale: float) -> np.float32:
    if c.tensor_scale is TensorScale.NONE or amax == 0.0:
        return _ONE
    g = amax / full_scale
    if c.tensor_scale is TensorScale.POT:
        g = 2.0 ** math.ceil(math.log2(g))
    # A factor below float32's normal range would lose bits (or flush to 0) in s * g.
    return np.float32(max(g, _F32_TINY))


def _rule_rounding(rule: ScaleRule) -> Rounding:
    return Rounding.CEIL if rule is ScaleRule.CEIL else Rounding.NEAREST_EVEN


@dataclass
class _Chunk:
    """One chunk's result in the (B, n_blocks) block layout."""

    w_hat: np.ndarray | None
    """(B, n_blocks) reconstruction; None when only codes were asked for and nothing needs it."""
    codes: np.ndarray | None
    grid: np.ndarray
    """(n_blocks,) selected grid per block."""
    scales: np.ndarray
    sparse: np.ndarray | None
    """(B, n_blocks) bool: positions stored aside, or None."""
    parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """chunk_stats' parts of (blocks, w_hat) (metrics.stats_parts), filled on the way, or None."""


def _block_view(w: np.ndarray, block: int) -> np.ndarray:
    """(rows, cols) -> (B, n_blocks) contiguous: per-block reductions then run along axis 0,
    over long contiguous rows, ~10x faster in numpy than reducing 16-wide rows."""
    return np.ascontiguousarray(w.reshape(-1, block).T)


def _blocks_to_rows(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`_block_view`."""
    return np.ascontiguousarray(a.T).reshape(shape)


def _h_blocks(h: np.ndarray | None, block: int, rows: int) -> np.ndarray | None:
    """Per-element activation weights in the (B, n_blocks) layout of ``rows`` rows."""
    if h is None:
        return None
    per_block = h.size // block
    out = np.empty((block, rows * per_block), np.float32)
    out.reshape(block, rows, per_block)[...] = h.reshape(per_block, block).T[:, None, :]  # one cast copy
    return out


def round_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest BF16 value (ties to even), as float32 (same shape)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, np.float32)
    kernels.round_bf16(x.reshape(-1), out.reshape(-1))
    return out


def _block_scales(blocks: np.ndarray, plan: _Plan, axis: int = 0) -> np.ndarray:
    """(T, n_blocks) signed stored block scales, one row per scale trial; ``blocks`` in the
    (B, n_blocks) layout, or (n_blocks, B) with ``axis=1``."""
    n_blocks = blocks.shape[1 - axis]
    if plan.layer_scale is not None:
        return np.full((1, n_blocks), plan.layer_scale, np.float32)
    out = np.empty((len(plan.scaling.trials), n_blocks), np.float32)
    kernels.block_scales(blocks, axis == 1, np.float32(plan.candidate.target * plan.tensor_factor),
                         plan.tensor_factor, *plan.scaling.args, out)
    return out


def _divisor(full: np.ndarray) -> np.ndarray:
    """Effective block scales to divide by: an all-zero block (scale 0) divides by 1 instead."""
    divisor = full.copy()  # a masked store: np.where costs 2 us more on a small call
    divisor[full == 0] = 1.0
    return divisor


def _quantize_blocks(blocks: np.ndarray, plan: _Plan, h: np.ndarray | None, want_codes: bool,
                     parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> _Chunk:
    """Quantize a (B, n_blocks) chunk: every scale trial x grid, the best per block, then the
    corrections. ``h``: per-element activation weights in the chunk's layout, or None.

    With OPQ, each block is also tried with its outliers removed (set to 0 before the scale
    search, stored aside as BF16) and keeps that only if it lowers the block's error, so the
    correction never hurts. With sparse residuals (``plan.residual_cut``), elements whose
    residual scores above the cut are stored aside as BF16 where that is closer. ``parts``
    (metrics.stats_parts): the compiled paths fill them and return them in the chunk.
    """
    select_h = h if plan.h is not None else None
    stack = grid_stack(plan.tables)
    if stack is not None and plan.candidate.rule is not ScaleRule.GGML:  # one compiled call
        return _compiled_blocks(blocks, plan, stack, select_h, want_codes, corrections=True, parts=parts)[0]
    if plan.candidate.rule is ScaleRule.GGML:
        parts = parts if plan.residual_cut is None else None  # residuals change w_hat afterwards
        w_hat, codes, scales = ggml.quantize_blocks(blocks, plan.candidate, parts)
        chunk = _Chunk(w_hat, codes if want_codes else None, np.zeros(scales.shape, np.uint8), scales, None, parts)
    elif plan.outlier_factor is None:
        chunk = _best_of_trials(blocks, plan, select_h, want_codes)[0]
    else:  # every block twice, as it is and without its outliers: one pass chooses for both
        n = blocks.shape[1]
        outliers, both = np.empty(blocks.shape, np.bool_), np.empty((blocks.shape[0], 2 * n), np.float32)
        kernels.outliers(blocks, plan.err_unit, np.float32(plan.outlier_factor), outliers, both)
        pair, err = _best_of_trials(both, plan, None if select_h is None else np.tile(select_h, 2), want_codes)
        assert pair.w_hat is not None and err is not None  # OPQ compares reconstructions
        w_hat, codes = np.empty(blocks.shape, np.float32), np.empty(blocks.shape if want_codes else (0, 0), np.uint16)
        grid, scales = np.empty(n, np.uint8), np.empty(n, np.float32)
        kernels.keep_better(blocks, outliers, _NO_WEIGHTS if select_h is None else select_h, plan.err_unit,
                            select_h is not None, err, pair.w_hat, _NO_CODES if pair.codes is None else pair.codes,
                            pair.grid, pair.scales, want_codes, w_hat, codes, grid, scales, np.empty(n, np.float32))
        chunk = _Chunk(w_hat, codes if want_codes else None, grid, scales, outliers)
    _store_residuals(blocks, chunk, plan, select_h)
    return chunk


def _compiled_blocks(blocks: np.ndarray, plan: _Plan, stack: GridStack, h: np.ndarray | None,
                     want_codes: bool, *, corrections: bool,
                     parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                     ) -> tuple[_Chunk, np.ndarray | None]:
    """:func:`_quantize_blocks` for grids with bucket tables, by kernels.quantize_blocks, with the
    plan's OPQ and residuals or without them; returns (chunk, errors), errors None when one trial
    on one grid without OPQ leaves nothing to compare."""
    n = blocks.shape[1]
    w_hat, codes = np.empty(blocks.shape, np.float32), np.empty(blocks.shape if want_codes else (0, 0), np.uint16)
    grid, scales, err = np.empty(n, np.uint8), np.empty(n, np.float32), np.empty(n, np.float32)
    opq = corrections and plan.outlier_factor is not None
    cut = plan.residual_cut if corrections else None
    stored = opq or cut is not None
    sparse = np.empty(blocks.shape, np.bool_) if stored else _NO_SPARSE
    layer = plan.layer_scale is not None
    kernels.quantize_blocks(blocks, layer, plan.layer_scale if layer else _ONE,
                            np.float32(plan.candidate.target * plan.tensor_factor), plan.tensor_factor,
                            *plan.scaling.args, stack.buckets, stack.shift, stack.threshold, stack.value, stack.index,
                            len(plan.tables), _NO_WEIGHTS if h is None else h, plan.err_unit, h is not None,
                            np.float32(plan.outlier_factor if opq else 0.0), np.float32(np.inf if cut is None else cut),
                            w_hat, codes, grid, scales, err, sparse,
                            want_codes, *(parts or NO_PARTS))
    chosen = opq or (1 if layer else len(plan.scaling.trials)) * len(plan.tables) > 1
    chunk = _Chunk(w_hat, codes if want_codes else None, grid, scales, sparse if stored else None, parts)
    return chunk, err if chosen else None


def _block_errors(table: LookupTable, blocks: np.ndarray, full: np.ndarray, h: np.ndarray | None,
                  unit: np.float32) -> np.ndarray:
    """(n_blocks,) error of each block of (B, n_blocks) ``blocks`` rounded onto one grid at
    effective scales ``full`` (divided by as 1 where 0), as :func:`_block_error` computes it."""
    stack = grid_stack((table,))
    if stack is None:  # no bucket table (levels too close): numpy's binary search
        w_hat = table.round(blocks / _divisor(full))
        w_hat *= full
        return _block_error(w_hat, blocks, h, unit)
    scale, grid, err = _chosen(blocks.shape[1])  # one trial on one grid: every block's own error
    kernels.choose_blocks(blocks, full[None], _ONE, stack.buckets, stack.shift, stack.threshold, stack.value, 1,
                          _NO_WEIGHTS if h is None else h, unit, h is not None, scale, grid, err)
    return err


def _round_chosen(tables: tuple[LookupTable, ...], blocks: np.ndarray, scales: np.ndarray, factor: np.float32,
                  grid: np.ndarray, *, w_hat: bool = True, codes: bool = False
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(w_hat, codes) of (B, n_blocks) ``blocks`` rounded onto each block's grid ``grid``
    (n_blocks,) uint8, at effective scales full = ``scales`` * ``factor`` (float32): y = blocks /
    full (by 1 where full is 0), w_hat = value * full. Each only if asked for, else None. numpy,
    grid by grid, for grids without bucket tables: kernels.round_chosen does it in one pass."""
    full = scales * factor
    y = blocks / _divisor(full)
    hat = codes_out = None
    for k, table in enumerate(tables):
        mine = grid == k
        if w_hat:
            hat = np.where(mine, table.round(y) * full, np.float32(0) if hat is None else hat)
        if codes:
            codes_out = np.where(mine, table.index(y), np.uint16(0) if codes_out is None else codes_out)
    return hat, codes_out


def _block_error(w_hat: np.ndarray, blocks: np.ndarray, h: np.ndarray | None, unit: np.float32) -> np.ndarray:
    """(h-weighted) squared error of each block in units of ``unit**-2``: (n_blocks,)."""
    score = _residual_score(blocks, w_hat, h, unit)
    # summed row after row (as kernels.choose_blocks): numpy's sum over axis 0 is that,
    # except for a single block, which it sums pairwise
    error: np.ndarray = score.sum(axis=0) if score.shape[1] > 1 else np.cumsum(score, axis=0)[-1]
    return error


def _best_of_trials(blocks: np.ndarray, plan: _Plan, h: np.ndarray | None,
                    want_codes: bool) -> tuple[_Chunk, np.ndarray | None]:
    """Every scale trial x grid, no OPQ; per block the lowest (h-weighted) error. Returns (chunk,
    errors); errors are None when there is a single trial and grid, unless (numpy's path, for
    grids without bucket tables) OPQ needs them."""
    stack = grid_stack(plan.tables)
    if stack is not None:
        return _compiled_blocks(blocks, plan, stack, h, want_codes, corrections=False)
    trials = _block_scales(blocks, plan)
    if len(trials) * len(plan.tables) == 1 and plan.outlier_factor is None:  # nothing to compare
        s = trials[0]
        grid = np.zeros(s.shape, np.uint8)
        codes_only = want_codes and plan.residual_cut is None  # no reconstruction needed
        w_hat, codes = _round_chosen(plan.tables, blocks, s, plan.tensor_factor, grid, w_hat=not codes_only,
                                     codes=want_codes)
        return _Chunk(w_hat, codes, grid, s, None), None
    # Errors of every trial x grid, trial by trial and grid by grid; then each block onto its winner.
    best_s, best_grid, best_err = _choose(
        trials, plan, lambda table, full: _block_errors(table, blocks, full, h, plan.err_unit))
    w_hat, codes = _round_chosen(plan.tables, blocks, best_s, plan.tensor_factor, best_grid, codes=want_codes)
    return _Chunk(w_hat, codes, best_grid, best_s, None), best_err


def _chosen(n_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empty (scale, grid, error) arrays for the choose kernels to fill."""
    return np.empty(n_blocks, np.float32), np.empty(n_blocks, np.uint8), np.empty(n_blocks, np.float32)


def _choose(trials: np.ndarray, plan: _Plan, errors: Callable[[LookupTable, np.ndarray], np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each block's best scale trial x grid: (scale, grid, error), all (n_blocks,). ``errors(table,
    full)`` gives every block's error on one grid; a tie keeps the earlier choice. numpy's path
    for grids without bucket tables: kernels.choose_blocks does the same in one call."""
    best_err = best_s = best_grid = None
    for s in trials:
        full = s * plan.tensor_factor  # float32 product: the decoder's effective scale
        for k, table in enumerate(plan.tables):
            err = errors(table, full)
            if best_err is None or best_s is None or best_grid is None:
                # the first trial's first grid (k = 0); np.zeros costs ~1 us less than np.full
                best_err, best_s, best_grid = err, s, np.zeros(s.shape, np.uint8)
                continue
            better = err < best_err
            # no np.where (~2.5 us each) between equal arrays: the grids of one trial share its s,
            # and every block of a single grid picks grid 0
            if s is not best_s:
                best_s = np.where(better, s, best_s)
            if len(plan.tables) > 1:
                best_grid = np.where(better, np.uint8(k), best_grid)
            best_err = np.where(better, err, best_err)
    assert best_s is not None and best_grid is not None and best_err is not None
    return best_s, best_grid, best_err


def _store_residuals(blocks: np.ndarray, chunk: _Chunk, plan: _Plan, h: np.ndarray | None) -> None:
    """numpy's kernels.store_residuals, in place on ``chunk``: an element not yet stored aside
    whose residual score exceeds ``plan.residual_cut`` and whose BF16 value is closer than the
    quantized one is stored aside, so the correction never hurts."""
    if plan.residual_cut is None:
        return
    assert chunk.w_hat is not None
    r = _residual_score(blocks, chunk.w_hat, h, plan.err_unit)
    exact = round_bf16(blocks)
    picked = (r > np.float32(plan.residual_cut)) & (np.abs(exact - blocks) < np.abs(chunk.w_hat - blocks))
    if chunk.sparse is not None:
        picked &= ~chunk.sparse
    chunk.w_hat = np.where(picked, exact, chunk.w_hat)
    chunk.sparse = picked if chunk.sparse is None else chunk.sparse | picked


def _residual_score(blocks: np.ndarray, w_hat: np.ndarray, h: np.ndarray | None, unit: np.float32) -> np.ndarray:
    """Per-element (h-weighted) squared residual, the residual measured in units of ``1/unit``."""
    r: np.ndarray = w_hat - blocks
    if unit != 1:
        r *= unit
    r *= r
    if h is not None:
        r *= h
    return r


def _row_chunks(rows: int, cols: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // cols)
    return [slice(r, min(r + step, rows)) for r in range(0, rows, step)]


def _summed(fn: Callable[[slice], ErrorStats], chunks: list[slice], threads: int | None) -> ErrorStats:
    """The chunks' statistics summed in chunk order; one chunk runs inline (without
    _map_chunks' generator: ~2 us of a small call)."""
    if len(chunks) == 1:
        return fn(chunks[0])
    stats = _map_chunks(fn, chunks, threads)
    total = next(stats)
    for s in stats:
        total = total + s
    return total


def _map_chunks(fn: Callable[[slice], T], chunks: list[slice], threads: int | None) -> Iterator[T]:
    """``map(fn, chunks)`` on a thread pool, results in order, at most a few chunks in flight
    (memory stays bounded by the chunk size, not the tensor size)."""
    # Default: every core, asked only when there is a choice (os.cpu_count() costs ~20 us, a tenth
    # of a small call). dse explore passes threads=1: it runs tensors in processes instead.
    workers = 1 if len(chunks) == 1 else threads or os.cpu_count() or 1
    if workers == 1:
        yield from map(fn, chunks)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[T]] = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(fn, chunk))
                if len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # an error or an abandoned iterator: run nothing more
            for f in pending:
                f.cancel()


def _fit_learned(w: np.ndarray, plan: _Plan, threads: int | None) -> _Plan:
    """Fit the learned grids (DDn) of ``plan`` to ``w``: weighted Lloyd-Max (docs/formats.md
    §1.11 [inference]), alternating with block assignment when a block may choose among several grids.

    * A learned grid beside fixed grids (PO2, ``NF4|DD4``) is first fitted to every block, then
      refitted on the blocks it wins (FIT_ROUNDS rounds).
    * A set of learned grids only (MPO2, ``DD4|DD4``) needs distinct starts, or its grids would
      fit the same blocks to the same levels. The first grid starts at its atom's levels (NF4 for
      DD4) and is held there while the others are fitted in turn as in PO2; then every learned grid
      is refitted on the blocks it wins, jointly, for FIT_ROUNDS rounds. The start is the PO2
      solution and no round raises the error, so MPO2 is never worse than PO2(NF4) (up to the
      histogram's bin width).
    """
    c = plan.candidate
    learned = [i for i, a in enumerate(c.atoms) if a.kind is AtomKind.LEARNED]
    fit_plan = replace(plan, scaling=_scaling(c, plan.scaling.trials[:1]), residual_cut=None, outlier_factor=None)
    held = learned[:1] if len(learned) == len(c.atoms) and c.dual else []
    for k in learned:  # PO2 stage: one grid at a time
        if k in held:
            continue
        fit_plan = _lloyd_rounds(w, fit_plan, [k], FIT_ROUNDS if c.dual else 1, first_on_all=True, threads=threads)
    if held:  # MPO2 stage: all learned grids together
        fit_plan = _lloyd_rounds(w, fit_plan, learned, FIT_ROUNDS, first_on_all=False, threads=threads)
    return replace(plan, grids=fit_plan.grids, tables=fit_plan.tables)


@dataclass(frozen=True)
class _FitSamples:
    """One chunk of a learned-grid fit, in the (B, n_blocks) block layout."""

    blocks: np.ndarray
    h: np.ndarray | None
    full: np.ndarray
    """(n_blocks,) effective block scales (float32)."""
    y: np.ndarray
    """Block-normalised weights (float32)."""
    weight: np.ndarray
    """Sample weights: squared effective block scale x activation weight (float32)."""


def _lloyd_rounds(w: np.ndarray, fit_plan: _Plan, fitted: list[int], rounds: int, *, first_on_all: bool,
                  threads: int | None) -> _Plan:
    """``rounds`` rounds of: assign blocks to their best grid, refit each grid in ``fitted`` on its
    blocks (weighted Lloyd from its current levels). With ``first_on_all``, round 0 fits on every
    block instead: started from NF4, a DD4 paired with NF4 would otherwise tie everywhere, win no
    block and never move."""
    c = fit_plan.candidate
    span = 1.25 * c.target  # nearest-rounded scales let |y| exceed the target slightly
    pinned = (0.0, c.target) if c.signed else (0.0,)
    h_all = fit_plan.h
    # Scales, and so every sample's value and weight, are the same in every round: a small tensor
    # keeps them (8-16 bytes a weight); a large one redoes them, holding a few chunks at a time.
    kept: dict[int, _FitSamples] | None = {} if w.size <= FIT_KEEP_ELEMENTS else None
    scaling = fit_plan  # rounds change the grids, never the scales

    def samples(rows: slice) -> _FitSamples:
        if kept is not None and rows.start in kept:
            return kept[rows.start]
        part = w[rows]
        blocks = _block_view(part, scaling.block)
        h = _h_blocks(h_all, scaling.block, part.shape[0])
        s = _block_scales(blocks, scaling)[0]
        full = s * scaling.tensor_factor
        y = blocks / _divisor(full)
        scaled = full * scaling.err_unit  # float32 squares of scales near 1e-23 would flush to 0
        weight = np.broadcast_to(scaled * scaled, y.shape)
        if h is not None:
            weight = weight * h
        chunk = _FitSamples(blocks, h, full, y, weight)
        if kept is not None:
            for a in (blocks, h, full, y, weight):
                if a is not None:
                    a.flags.writeable = False  # reused by every round and thread
            kept[rows.start] = chunk
        return chunk

    # errors of the grids these rounds never refit, per kept chunk: the same in every round
    fixed_errors: dict[tuple[int, int], np.ndarray] = {}

    def best_grid(rows: slice, d: _FitSamples, fit_plan: _Plan) -> np.ndarray:
        """Each block's grid as _best_of_trials picks it with the fit's single scale trial."""
        h = d.h if fit_plan.h is not None else None
        grid = np.zeros(d.full.shape, np.uint8)
        best: np.ndarray | None = None
        for k, table in enumerate(fit_plan.tables):
            err = fixed_errors.get((rows.start, k))
            if err is None:
                err = _block_errors(table, d.blocks, d.full, h, fit_plan.err_unit)
                if kept is not None and k not in fitted:
                    fixed_errors[(rows.start, k)] = err
            if best is None:
                best = err
                continue
            better = err < best
            grid, best = np.where(better, np.uint8(k), grid), np.where(better, err, best)
        return grid

    for round_ in range(rounds):
        def one(rows: slice, fit_plan: _Plan = fit_plan, restrict: bool = not (first_on_all and round_ == 0),
                ) -> list[Histogram]:
            d = samples(rows)
            grid = None
            if restrict:  # only the blocks each grid wins
                grid = best_grid(rows, d, fit_plan)
            hists = []
            for k in fitted:
                hist = Histogram.empty(-span, span)
                if grid is None:
                    hist.add(d.y, d.weight)
                else:
                    keep = grid == k
                    hist.add(d.y[:, keep], d.weight[:, keep])
                hists.append(hist)
            return hists

        totals = [Histogram.empty(-span, span) for _ in fitted]
        for hists in _map_chunks(one, _row_chunks(*w.shape), threads):
            for total, hist in zip(totals, hists):
                total.weight[:] += hist.weight
                total.weighted_sum[:] += hist.weighted_sum
        grids = list(fit_plan.grids)
        for k, total in zip(fitted, totals):
            levels = lloyd(total, grids[k].astype(np.float64), pinned)
            grids[k] = _lut_round(c, k, levels) if c.lut_format is None else _lut_fit(c, k, levels, total, pinned)
        fit_plan = replace(fit_plan, grids=tuple(grids), tables=_tables(tuple(grids)))
    return fit_plan


def _residual_cut(w: np.ndarray, plan: _Plan, threads: int | None) -> float:
    """The score above which an element is among the top ``fraction`` residuals of the tensor."""
    c = plan.candidate
    assert c.residual is not None
    k = c.residual.entries(w.size)

    def one(rows: slice) -> np.ndarray:
        part = w[rows]
        blocks = _block_view(part, plan.block)
        h = _h_blocks(plan.h, plan.block, part.shape[0])
        chunk = _quantize_blocks(blocks, plan, h, want_codes=False)
        assert chunk.w_hat is not None
        score = _residual_score(blocks, chunk.w_hat, h, plan.err_unit)
        if chunk.sparse is not None:
            score[chunk.sparse] = 0.0  # outliers are already stored aside
        return score.reshape(-1)

    # The k-th largest score, streamed: keep the k largest seen so far (at most 2k + a chunk).
    kept: list[np.ndarray] = []
    size, floor = 0, -np.inf
    for scores in _map_chunks(one, _row_chunks(*w.shape), threads):
        if np.isfinite(floor):
            scores = scores[scores > floor]  # cannot change the k-th largest
        kept.append(scores)
        size += scores.size
        if size >= 2 * k:
            top = np.partition(np.concatenate(kept), size - k)[size - k:]
            kept, size, floor = [top], k, top.min()
    scores = np.concatenate(kept)
    kth = np.partition(scores, scores.size - k)[scores.size - k]
    # Strictly above the next lower score: exactly k entries unless scores tie.
    return float(np.nextafter(kth, np.float32(-np.inf))) if kth > 0 else float("inf")


def _prepare(w: np.ndarray, candidate: Candidate, act: np.ndarray | None, name: str, threads: int | None,
             grids: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, np.ndarray | None, _Plan]:
    w = _check_matrix(w, name, candidate.block_size)
    h = _check_act(act, w.shape[1], name)
    fitted = None
    if grids is not None:
        if len(grids) != len(candidate.atoms):
            raise ValueError(f"{len(grids)} grids for {len(candidate.atoms)} atoms of {candidate.name}")
        fitted = grids if isinstance(grids, FittedGrids) else FittedGrids(grids)
    plan = _plan(w, candidate, name, h, threads, fitted)
    if candidate.residual is not None:
        plan = replace(plan, residual_cut=_residual_cut(w, plan, threads))
    return w, h, plan


class FittedGrids(tuple[np.ndarray, ...]):
    """Grids as :func:`fit_grids` returns them: one read-only float32 array of sorted, unique
    values per atom (made from any arrays of values), with their rounding tables made once, so
    that each ``measure(..., grids=)`` call of a sampled tensor skips checking and looking them
    up. Pickled, it is a plain tuple (the tables are made again where it is used)."""

    tables: tuple[LookupTable, ...]

    def __new__(cls, grids: Iterable[np.ndarray]) -> FittedGrids:
        self = super().__new__(cls, map(_levels, grids))
        for g in self:
            g.flags.writeable = False
        self.tables = _tables(tuple(self))
        return self

    def __reduce__(self) -> tuple[type, tuple[tuple[np.ndarray, ...]]]:
        return tuple, (tuple(self),)


def _levels(grid: np.ndarray) -> np.ndarray:
    """A copy of a grid's values, sorted and unique, as float32: np.unique's, or a plain copy when
    they already are (np.unique costs a small call ~5 us per grid)."""
    a = np.asarray(grid, np.float32)
    if a.ndim == 1 and a.size and bool((a[1:] > a[:-1]).all()):
        return a.copy()
    levels: np.ndarray = np.unique(a)
    return levels


def fit_grids(w: np.ndarray, candidate: Candidate, *, act: np.ndarray | None = None, name: str = "tensor",
              threads: int | None = None) -> FittedGrids:
    """The candidate's grids for ``w`` (one float32 array of values per atom): learned grids (DD4)
    fitted to ``w`` as :func:`measure` fits them, fixed grids as they are. Pass them to
    ``measure(..., grids=)`` to apply one fit to several parts of a tensor (sampled mode)."""
    w = _check_matrix(w, name, candidate.block_size)
    return FittedGrids(_plan(w, candidate, name, _check_act(act, w.shape[1], name), threads).grids)


def measure(
    w: np.ndarray, candidate: Candidate, *, act: np.ndarray | None = None, name: str = "tensor",
    threads: int | None = None, grids: tuple[np.ndarray, ...] | None = None,
) -> ErrorStats:
    """Reconstruction error of ``w`` under ``candidate``, with block and sparse-entry counts.

    Args:
        w: (out, in) weights, any float dtype (converted to float32).
        candidate: the format.
        act: optional (in,) per-input-channel activation weights h_j >= 0: weighted metrics are
            reported, and candidates with ``:aw`` use them for their data-dependent choices.
        threads: worker threads (default: all cores); the result does not depend on it.
        grids: the values of each grid, from :func:`fit_grids` (default: fit learned grids to ``w``).
    """
    w, h, plan = _prepare(w, candidate, act, name, threads, grids)

    def one(rows: slice) -> ErrorStats:
        part = w[rows]
        blocks = _block_view(part, plan.block)
        hb = _h_blocks(h, plan.block, part.shape[0])
        chunk = _quantize_blocks(blocks, plan, hb, want_codes=False, parts=stats_parts(blocks.size, hb is not None))
        sparse = chunk.sparse
        assert chunk.w_hat is not None
        second = int(np.count_nonzero(chunk.grid)) if len(plan.tables) > 1 else 0  # one grid: all blocks 0
        return chunk_stats(blocks, chunk.w_hat, hb, blocks=chunk.grid.size, second_grid_blocks=second,
                           sparse=0 if sparse is None else int(np.count_nonzero(sparse)), parts=chunk.parts)

    return _summed(one, _row_chunks(*w.shape), threads)


def quantize(w: np.ndarray, candidate: Candidate, *, act: np.ndarray | None = None, name: str = "tensor",
             threads: int | None = None, grids: tuple[np.ndarray, ...] | None = None) -> QuantizedTensor:
    """Quantize ``w`` (out, in) to codes, block scales, grid selections and sparse entries.

    Chunked and threaded like :func:`measure`; beyond the outputs (codes 1 or 2 bytes per
    weight, one scale and grid byte per block) it holds only the chunks in flight. ``grids``: as
    in :func:`measure` (default: fit learned grids to ``w``).
    """
    w, h, plan = _prepare(w, candidate, act, name, threads, grids)
    rows, cols = w.shape
    n_blocks = cols // plan.block
    codes = np.empty((rows, cols), code_dtype(plan.grids))
    grid_index = np.empty((rows, n_blocks), np.uint8)
    scales = np.empty((rows, n_blocks), np.float32)
    # Nothing stored aside: each block's codes follow from its own scale trial and grid, chosen by
    # errors summed in the block layout's order, so they can be found in the weights' own row
    # order (no transposed copy in, none out: 10-40 % faster).
    stack = grid_stack(plan.tables)
    rowwise = (stack is not None and plan.outlier_factor is None and plan.residual_cut is None
               and candidate.rule is not ScaleRule.GGML)
    h_row = np.empty(0, np.float32) if plan.h is None else plan.h.astype(np.float32)

    def one(r: slice) -> np.ndarray:
        part = w[r]
        if rowwise:
            assert stack is not None
            row_blocks = part.reshape(-1, plan.block)
            trials = _block_scales(row_blocks, plan, axis=1)
            if len(trials) * len(plan.tables) == 1:
                s, grid = trials[0], np.zeros(row_blocks.shape[0], np.uint8)
            else:
                s, grid, err = _chosen(row_blocks.shape[0])
                kernels.choose_rows(row_blocks, trials, plan.tensor_factor, stack.buckets, stack.shift,
                                    stack.threshold, stack.value, len(plan.tables), h_row, plan.err_unit,
                                    plan.h is not None, s, grid, err)
            kernels.scaled_codes(row_blocks, s, plan.tensor_factor, grid, stack.buckets, stack.shift,
                                 stack.threshold, stack.index, codes[r].reshape(row_blocks.shape))
            grid_index[r] = grid.reshape(part.shape[0], -1)
            scales[r] = s.reshape(part.shape[0], -1)
            return np.zeros(0, np.int64)
        blocks = _block_view(part, plan.block)
        hb = _h_blocks(h, plan.block, part.shape[0])
        chunk = _quantize_blocks(blocks, plan, hb, want_codes=True)
        sparse = chunk.sparse
        assert chunk.codes is not None
        codes[r].reshape(-1, plan.block).T[...] = chunk.codes  # the inverse of _block_view, in place
        grid_index[r] = chunk.grid.reshape(part.shape[0], -1)
        scales[r] = chunk.scales.reshape(part.shape[0], -1)
        if sparse is None:
            return np.zeros(0, np.int64)
        index: np.ndarray = np.flatnonzero(_blocks_to_rows(sparse, part.shape)) + r.start * cols
        return index

    index = np.concatenate(list(_map_chunks(one, _row_chunks(rows, cols), threads)))
    return QuantizedTensor(
        candidate=candidate, shape=(rows, cols), grids=plan.grids, codes=codes, grid_index=grid_index,
        scales=scales, tensor_factor=float(plan.tensor_factor),
        sparse_index=index, sparse_value=round_bf16(w.reshape(-1)[index]),
    )


def reconstruction_error(w: np.ndarray, w_hat: np.ndarray, block: int, *, act: np.ndarray | None = None,
                         name: str = "tensor", threads: int | None = None) -> ErrorStats:
    """Error of a given reconstruction ``w_hat`` of ``w``, summed in exactly the order
    :func:`measure` uses (same chunks, same block layout), so an unpacked tensor reproduces the
    measured statistics bit for bit. ``block``: the candidate's block size (row length for @layer).
    Counts (blocks, grids, sparse entries) are not known here and stay 0.
    """
    w = _check_matrix(w, name, block)
    w_hat = np.ascontiguousarray(w_hat, dtype=np.float32)
    if w_hat.shape != w.shape:
        raise WeightError(f"tensor {name!r}: reconstruction shape {w_hat.shape} != weights {w.shape}")
    h = _check_act(act, w.shape[1], name)

    def one(rows: slice) -> ErrorStats:
        part, hat = w[rows], w_hat[rows]
        return chunk_stats(_block_view(part, block), _block_view(hat, block), _h_blocks(h, block, part.shape[0]))

    return _summed(one, _row_chunks(*w.shape), threads)


def code_dtype(grids: tuple[np.ndarray, ...]) -> type[np.unsignedinteger]:
    """The dtype of :attr:`QuantizedTensor.codes` for these grids: uint8 up to 256 values, else uint16."""
    return np.uint8 if max(g.size for g in grids) <= 256 else np.uint16


def dequantize(q: QuantizedTensor, *, threads: int | None = None) -> np.ndarray:
    """Decode to a (rows, cols) float32 array exactly as :func:`measure` does (chunked, threaded)."""
    rows, cols = q.shape
    block = cols // q.scales.shape[1]
    width = max(g.size for g in q.grids)
    table = np.zeros(len(q.grids) * width, np.float32)  # grid k's values at k * width
    for k, g in enumerate(q.grids):
        table[k * width: k * width + g.size] = g
    factor = np.float32(q.tensor_factor)
    out = np.empty(q.shape, np.float32)

    def one(r: slice) -> None:
        kernels.decode(q.codes[r].reshape(-1, block), q.grid_index[r].reshape(-1) * np.intp(width),
                       (q.scales[r] * factor).reshape(-1), table, out[r].reshape(-1, block))

    for _ in _map_chunks(one, _row_chunks(rows, cols), threads):
        pass
    out.reshape(-1)[q.sparse_index] = q.sparse_value
    return out


def _check_act(act: np.ndarray | None, cols: int, name: str) -> np.ndarray | None:
    if act is None:
        return None
    h = np.asarray(act, dtype=np.float64).reshape(-1)
    if h.size != cols:
        raise WeightError(f"tensor {name!r}: activation weights have {h.size} entries, need {cols}")
    if not (h.min() >= 0 and h.max() < math.inf):  # NaN fails both
        raise WeightError(f"tensor {name!r}: activation weights must be finite and >= 0")
    return h
