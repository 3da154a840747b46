"""Compiled loops for the per-element hot paths (bucket lookup, block scales, scale-and-round,
each block's choice of scale trial and grid, OPQ, decode) and for the learned grids' Lloyd
iterations.

numpy runs each step of "divide by the block scale, bucket, compare, gather, multiply" as a
separate pass over memory with its own temporary; these kernels do all of them in one pass
per element, in float32 exactly as the numpy expressions they replace (no fast-math, no fused
multiply-add), so every result is bit-identical. The Lloyd kernels are the exception: they sum
a cell as a difference of running sums, not as numpy did (see quant.learned.lloyd); and OPQ's
block mean and deviation are summed in the block's element order, as numpy's axis-0 sums did
for every chunk of more than one block. ``quantize_blocks`` runs a chunk's whole quantization
in one call: a small call pays one dispatch instead of a dozen numpy calls. They release the
GIL, so the chunk pool's threads run them in parallel, and are compiled once per machine
(numba's on-disk cache).

Positions in a table are unsigned where an offset is added to them: numba wraps a negative
index around, and a signed index it cannot prove non-negative costs a test per lookup.

numba is imported, and the kernels made, on the first use of any of them (``kernels.decode``
and so on): importing and starting numba takes about a second, which a process that measures
nothing must not pay. The Python functions below, named with a leading underscore, are their sources.

Bucket tables are :class:`quant.lookup.LookupTable`'s: ``shift`` of the float32 bit pattern
gives the bucket, ``threshold[bucket]`` splits it, and ``table[2 * bucket + (y >= threshold)]``
is the answer (a value or an index).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

KERNELS = ("extremes", "bucket_lookup", "scaled_codes", "decode", "block_extremes", "block_scales",
           "choose_blocks", "choose_rows", "round_chosen", "quantize_blocks", "round_bf16", "outliers",
           "keep_better", "store_residuals", "ggml_blocks", "round_fp16", "stats_parts", "histogram_add", "prefix_sums",
           "lloyd_iterate")
# Set with the kernels; those below are also called by other kernels (and compiled into them).
residual_score: Any  # _residual_score and _effective_scales compiled
effective_scales: Any
block_extremes: Any
block_scales: Any
choose_blocks: Any
round_chosen: Any
outliers: Any
keep_better: Any
round_bf16: Any
round_fp16: Any
store_residuals: Any
stats_parts: Any


def __getattr__(name: str) -> Any:
    if name not in KERNELS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import numba

    # error_model="numpy": x / 0 gives inf as in numpy, with no zero test per division (which stops vector code)
    jit = numba.njit(nogil=True, cache=True, fastmath=False, boundscheck=False, error_model="numpy")
    made = globals()
    made["residual_score"] = jit(_residual_score)  # called by kernels: compiled into them
    made["effective_scales"] = jit(_effective_scales)
    for kernel in KERNELS:
        made[kernel] = jit(made["_" + kernel])
    return made[name]


def _residual_score(r, unit, h, weighted):
    """In place: r = (r * unit)**2 * h, the ``* unit`` only if unit != 1 and ``* h`` only if
    ``weighted``: numpy's ``engine._residual_score`` step by step."""
    if unit != 1:
        for j in range(r.size):
            r[j] = r[j] * unit
    for j in range(r.size):
        r[j] = r[j] * r[j]
    if weighted:
        for j in range(r.size):
            r[j] = r[j] * h[j]


def _effective_scales(scales, factor):
    """(full, divisor) for (n,) block ``scales``: full = scales * ``factor`` in float32 (the
    decoder's effective scale), and the divisor full, or 1 where full is 0 (an all-zero block)."""
    full = np.empty(scales.size, np.float32)
    divisor = np.empty(scales.size, np.float32)
    for j in range(scales.size):
        full[j] = scales[j] * factor
        divisor[j] = full[j] if full[j] != 0 else np.float32(1)
    return full, divisor


def _extremes(w):
    """(max, min) of contiguous ``w`` as floats, both NaN if it holds a NaN or an infinity (a
    scalar loop: for small tensors, where numpy's two calls cost more than the pass)."""
    flat = w.reshape(-1)
    hi = flat[0]
    lo = flat[0]
    check = np.float32(0)  # x * 0 is NaN exactly for NaN and +-Inf
    for x in flat:
        hi = max(hi, x)
        lo = min(lo, x)
        check += x * np.float32(0)
    if check != 0:
        return np.nan, np.nan
    return np.float64(hi), np.float64(lo)


def _bucket_lookup(y, shift, threshold, table, out):
    """out[i] = table[2 * b + (y[i] >= threshold[b])], b = bits(y[i]) >> shift; 1-D contiguous."""
    bits = y.view(np.uint32)
    for i in range(y.size):
        b = np.intp(bits[i] >> shift)
        out[i] = table[2 * b + (y[i] >= threshold[b])]
    return out


def _scaled_codes(blocks, scales, factor, choice, buckets, shift, threshold, index, out):
    """Codes of (n, B) row-order ``blocks`` (one block per row) at effective scales full = scales[i]
    * ``factor`` (float32; divided by as 1 where 0), each block on its grid ``choice[i]`` of
    stacked bucket tables (quant.lookup.GridStack): index(blocks[i, j] / full)."""
    n, size = blocks.shape
    y = np.empty(size, np.float32)
    bits = y.view(np.uint32)
    for i in range(n):
        f = scales[i] * factor
        d = f if f != 0 else np.float32(1)
        base = np.uintp(choice[i]) * np.uintp(buckets)
        for j in range(size):
            y[j] = blocks[i, j] / d
        for j in range(size):
            b = base + np.uintp(bits[j] >> shift)
            out[i, j] = index[b + b + np.uintp(y[j] >= threshold[b])]


def _choose_rows(blocks, scales, factor, buckets, shift, threshold, table, n_grids, h, unit, weighted,
                 best_s, best_grid, best_err):
    """:func:`_choose_blocks` for (n, B) row-order ``blocks`` (one block per row), the same sums in
    the same order; ``h`` is the (cols,) float32 activation weight of each input channel, and
    block i starts at column (i * B) % cols."""
    n, size = blocks.shape
    y = np.empty(size, np.float32)
    bits = y.view(np.uint32)
    r = np.empty(size, np.float32)
    for i in range(n):
        start = (i * size) % h.size if weighted else 0
        for t in range(scales.shape[0]):
            f = scales[t, i] * factor
            d = f if f != 0 else np.float32(1)
            for j in range(size):
                y[j] = blocks[i, j] / d
            for k in range(n_grids):
                base = np.uintp(k) * np.uintp(buckets)
                for j in range(size):
                    b = base + np.uintp(bits[j] >> shift)
                    r[j] = table[b + b + np.uintp(y[j] >= threshold[b])] * f - blocks[i, j]
                residual_score(r, unit, h[start:start + size] if weighted else r, weighted)
                e = np.float32(0)
                for j in range(size):
                    e += r[j]
                if (t == 0 and k == 0) or e < best_err[i]:
                    best_err[i] = e
                    best_s[i] = scales[t, i]
                    best_grid[i] = k


def _decode(codes, offset, multiplier, table, out):
    """out[i, j] = table[offset[i] + codes[i, j]] * multiplier[i] for (n, B) codes, (n,) offset and multiplier."""
    n, size = codes.shape
    for i in range(n):
        base = np.uintp(offset[i])
        m = multiplier[i]
        for j in range(size):
            out[i, j] = table[base + np.uintp(codes[i, j])] * m


def _block_extremes(blocks, signed, amax, negative):
    """Per row of (n, B) ``blocks``: the largest magnitude, and (signed) whether the extreme is
    negative (-min > max; ties keep the positive extreme). Unsigned: max |x|, negative untouched."""
    n, size = blocks.shape
    for i in range(n):
        if signed:
            hi = blocks[i, 0]
            lo = blocks[i, 0]
            for j in range(1, size):
                x = blocks[i, j]
                hi = max(hi, x)
                lo = min(lo, x)
            negative[i] = -lo > hi
            amax[i] = -lo if negative[i] else hi
        else:
            a = abs(blocks[i, 0])
            for j in range(1, size):
                a = max(a, abs(blocks[i, j]))
            amax[i] = a


def _block_scales(blocks, by_row, divisor, g, signed, floor, floor_shift, factors, s_buckets, s_shift, s_threshold,
                  s_value, out):
    """Each block's signed stored scale for each scale trial, into row t of (T, n) ``out``; (B, n)
    block-layout ``blocks``, or (n, B) row-order ones if ``by_row``. A block's ideal scale is
    amax / ``divisor`` (float32; amax its largest magnitude, and if ``signed`` the scale takes
    the sign of that extreme, a tie keeping +); trial t multiplies it by factors[t] and rounds it
    onto the scale format's table t. With ``floor`` (OCP MX) the ideal scale is
    2**(e - ``floor_shift``) instead, e = frexp(amax / ``g``)'s exponent. Tables: ``s_buckets``
    > 0, stacked bucket tables (quant.lookup.GridStack, table t at t * s_buckets); 0, a binary
    search in table t's thresholds s_threshold[t*m:(t+1)*m] and values s_value[t*(m+1):...];
    no values at all, no rounding (FP32 scales). numpy's ``engine._round_scales`` did the same."""
    n = out.shape[1]
    amax = np.empty(n, np.float32)
    negative = np.zeros(n, np.bool_)
    if by_row:
        block_extremes(blocks, signed, amax, negative)
    elif signed:  # per column, row after row: vector code across blocks
        hi = blocks[0].copy()
        lo = blocks[0].copy()
        for i in range(1, blocks.shape[0]):
            for j in range(n):
                hi[j] = max(hi[j], blocks[i, j])
                lo[j] = min(lo[j], blocks[i, j])
        for j in range(n):
            negative[j] = -lo[j] > hi[j]
            amax[j] = -lo[j] if negative[j] else hi[j]
    else:
        for j in range(n):
            amax[j] = abs(blocks[0, j])
        for i in range(1, blocks.shape[0]):
            for j in range(n):
                amax[j] = max(amax[j], abs(blocks[i, j]))
    real = np.empty(n, np.float32)
    for j in range(n):
        real[j] = amax[j] / divisor
    y = np.empty(n, np.float32)
    bits = y.view(np.uint32)
    trials = factors.size
    m = s_threshold.size // trials
    for t in range(trials):
        for j in range(n):
            if floor:
                y[j] = np.float32(math.ldexp(1.0, math.frexp(np.float32(amax[j] / g))[1] - floor_shift))
            else:
                y[j] = real[j] * factors[t]
        if s_buckets > 0:
            base = np.uintp(t) * np.uintp(s_buckets)
            for j in range(n):
                b = base + np.uintp(bits[j] >> s_shift)
                y[j] = s_value[b + b + np.uintp(y[j] >= s_threshold[b])]
        elif s_value.size > 0:
            for j in range(n):
                a, z = 0, m  # numpy's searchsorted(side="right"): thresholds <= y
                while a < z:
                    mid = (a + z) // 2
                    if s_threshold[t * m + mid] <= y[j]:
                        a = mid + 1
                    else:
                        z = mid
                y[j] = s_value[t * (m + 1) + a]
        for j in range(n):
            out[t, j] = -y[j] if signed and negative[j] else y[j]


def _choose_blocks(blocks, scales, factor, buckets, shift, threshold, table, n_grids, h, unit, weighted,
                   best_s, best_grid, best_err):
    """Each block's best scale trial x grid for (B, n) block-layout ``blocks``: trial t's effective
    scales are full = scales[t] * ``factor`` (float32), divided by as 1 where 0; grid k's buckets
    start at k * ``buckets`` in the stacked tables (quant.lookup.GridStack). A block's error on
    each, err[j], is the sum over i, in order, of ((w_hat - blocks) * unit)**2 (times h[i, j] if
    ``weighted``; the ``* unit`` only if unit != 1), w_hat = table[slot(y)] * full[j]: numpy's
    ``engine._block_error`` bit for bit. Trials outermost; a later choice wins only with a
    smaller error. Writes the winner's scale (from ``scales``), grid and error per block."""
    rows, n = blocks.shape
    y = np.empty(n, np.float32)
    bits = y.view(np.uint32)
    r = np.empty(n, np.float32)
    err = np.empty(n, np.float32)
    for t in range(scales.shape[0]):
        full, divisor = effective_scales(scales[t], factor)
        for k in range(n_grids):
            base = np.uintp(k) * np.uintp(buckets)
            err[:] = 0
            for i in range(rows):
                for j in range(n):
                    y[j] = blocks[i, j] / divisor[j]
                for j in range(n):
                    b = base + np.uintp(bits[j] >> shift)
                    r[j] = table[b + b + np.uintp(y[j] >= threshold[b])] * full[j] - blocks[i, j]
                residual_score(r, unit, h[i] if weighted else r, weighted)
                for j in range(n):
                    err[j] += r[j]
            if t == 0 and k == 0:
                for j in range(n):
                    best_err[j] = err[j]
                    best_s[j] = scales[0, j]
                    best_grid[j] = 0
                continue
            for j in range(n):  # selects, not branches: which block wins is data, unpredictable
                better = err[j] < best_err[j]
                best_err[j] = err[j] if better else best_err[j]
                best_s[j] = scales[t, j] if better else best_s[j]
                best_grid[j] = k if better else best_grid[j]


def _round_chosen(blocks, scales, factor, choice, buckets, shift, threshold, table, index,
                  w_hat, codes, want_w_hat, want_codes):
    """Round (B, n) block-layout ``blocks`` onto each block's chosen grid at effective scales
    full[j] = scales[j] * ``factor`` (float32): y = blocks[i, j] / full[j] (by 1 where full is
    0); grid ``choice[j]``'s buckets start at choice[j] * ``buckets`` in the stacked tables
    (quant.lookup.GridStack); w_hat[i, j] = table[slot] * full[j], codes[i, j] = index[slot].
    Only the outputs asked for are written (the other may be an empty array)."""
    rows, n = blocks.shape
    y = np.empty(n, np.float32)
    bits = y.view(np.uint32)
    slot = np.empty(n, np.uintp)
    base = np.empty(n, np.uintp)
    for j in range(n):
        base[j] = np.uintp(choice[j]) * np.uintp(buckets)
    full, divisor = effective_scales(scales, factor)
    for i in range(rows):
        for j in range(n):
            y[j] = blocks[i, j] / divisor[j]
        for j in range(n):
            b = base[j] + np.uintp(bits[j] >> shift)
            slot[j] = b + b + np.uintp(y[j] >= threshold[b])
        if want_w_hat:
            for j in range(n):
                w_hat[i, j] = table[slot[j]] * full[j]
        if want_codes:
            for j in range(n):
                codes[i, j] = index[slot[j]]


def _quantize_blocks(blocks, layer, layer_scale, divisor, g, signed, floor, floor_shift, factors, s_buckets,
                     s_shift, s_threshold, s_value, buckets, shift, threshold, value, index, n_grids, h, unit,
                     weighted, opq_factor, cut, w_hat, codes, grid, scales, err, sparse, want_codes, squares,
                     wide, difference):
    """A (B, n) block-layout chunk quantized in one call: block_scales (from ``divisor`` to
    ``s_value``; with ``layer``, every block's scale is ``layer_scale``), then choose_blocks
    unless one trial on one grid leaves nothing to choose (``err`` is then not written), then
    round_chosen at tensor factor ``g``. With ``opq_factor`` > 0 (OPQ) every block is quantized
    twice, as it is and without its outliers, and keep_better keeps the better, leaving the
    outliers it stores in (B, n) ``sparse``; then, with a finite ``cut``, store_residuals.
    Outputs: (B, n) w_hat, codes (only if ``want_codes``), sparse (with OPQ or a cut); (n,)
    grid, scales, err; and what quant.metrics.chunk_stats sums, into ``squares``, ``wide`` and
    ``difference`` where they are not empty
    (:func:`_stats_parts`)."""
    rows, n = blocks.shape
    opq = opq_factor > 0
    if opq:  # the blocks, then the blocks without their outliers, side by side
        m = 2 * n
        work = np.empty((rows, m), np.float32)
        outliers(blocks, unit, opq_factor, sparse, work)
        work_h = np.empty((rows, m) if weighted else (0, 0), np.float32)
        if weighted:
            for i in range(rows):
                for j in range(n):
                    work_h[i, j] = h[i, j]
                    work_h[i, n + j] = h[i, j]
        work_w_hat = np.empty((rows, m), np.float32)
        work_codes = np.empty((rows, m) if want_codes else (0, 0), np.uint16)
        work_grid = np.empty(m, np.uint8)
        work_scales = np.empty(m, np.float32)
        work_err = np.empty(m, np.float32)
    else:
        m, work, work_h = n, blocks, h
        work_w_hat, work_codes, work_grid, work_scales, work_err = w_hat, codes, grid, scales, err
    trials = np.empty((1 if layer else factors.size, m), np.float32)
    if layer:
        trials[0] = layer_scale
    else:
        block_scales(work, False, divisor, g, signed, floor, floor_shift, factors, s_buckets, s_shift, s_threshold,
                     s_value, trials)
    if trials.shape[0] * n_grids > 1 or opq:
        choose_blocks(work, trials, g, buckets, shift, threshold, value, n_grids, work_h, unit, weighted,
                      work_scales, work_grid, work_err)
    else:
        for j in range(m):
            work_scales[j] = trials[0, j]
            work_grid[j] = 0
    round_chosen(work, work_scales, g, work_grid, buckets, shift, threshold, value, index, work_w_hat, work_codes,
                 True, want_codes)
    if opq:
        keep_better(blocks, sparse, h, unit, weighted, work_err, work_w_hat, work_codes, work_grid, work_scales,
                    want_codes, w_hat, codes, grid, scales, err)
    if cut < np.inf:
        if not opq:
            sparse[:] = False
        store_residuals(blocks, w_hat, h, unit, weighted, cut, sparse)
    stats_parts(blocks, w_hat, squares, wide, difference)


def _store_residuals(blocks, w_hat, h, unit, weighted, cut, sparse):
    """Sparse residuals of (B, n) ``blocks``: an element not yet in ``sparse`` whose residual
    score (w_hat - x as choose_blocks scores it) exceeds ``cut``, and whose BF16 value is closer
    to x than w_hat is, gets that BF16 value in w_hat and joins ``sparse``. In place."""
    rows, n = blocks.shape
    exact = np.empty(n, np.float32)
    r = np.empty(n, np.float32)
    for i in range(rows):
        round_bf16(blocks[i], exact)
        for j in range(n):
            r[j] = w_hat[i, j] - blocks[i, j]
        residual_score(r, unit, h[i] if weighted else r, weighted)
        for j in range(n):
            x = blocks[i, j]
            if r[j] > cut and abs(exact[j] - x) < abs(w_hat[i, j] - x) and not sparse[i, j]:
                w_hat[i, j] = exact[j]
                sparse[i, j] = True


def _stats_parts(blocks, w_hat, squares, wide, difference):
    """What quant.metrics.chunk_stats sums for (B, n) ``blocks`` and ``w_hat``, in C order, into
    those of its arrays that are not empty: (2, B*n) float32 ``squares`` of each and (B*n,)
    ``difference`` w_hat - blocks (a float32 difference, widened); or, for weighted sums, (3,
    B*n) float64 ``wide`` squares of blocks, w_hat and that difference (exact products)."""
    rows, n = blocks.shape
    if squares.size == 0 and wide.size == 0:
        return
    for i in range(rows):
        for j in range(n):
            x = blocks[i, j]
            q = w_hat[i, j]
            d = np.float64(np.float32(q - x))
            if wide.size:
                wide[0, i * n + j] = np.float64(x) * np.float64(x)
                wide[1, i * n + j] = np.float64(q) * np.float64(q)
                wide[2, i * n + j] = d * d
            else:
                squares[0, i * n + j] = x * x
                squares[1, i * n + j] = q * q
                difference[i * n + j] = d


def _ggml_blocks(blocks, half, top, w_hat, codes, scales, squares, wide, difference):
    """llama.cpp's reference block quantizers on (B, n) block-layout ``blocks``, operation for
    operation in float32 (ggml-quants.c ``quantize_row_q{4,5,8}_0_ref``): with ``half`` > 0
    (Q4_0: 8, Q5_0: 16) d = the largest-magnitude weight (the first) / -half and code =
    min(trunc(x / d + half + 0.5), 2 half - 1); otherwise (Q8_0) d = amax / ``top`` and q =
    x / d rounded half away from zero, code = q + top. Division is by the reciprocal, 0 where d
    is 0. Writes w_hat = q * fp16(d), the codes, the FP16-rounded signed scales and, if
    given, the statistics' parts (:func:`_stats_parts`)."""
    rows, n = blocks.shape
    best = np.empty(n, np.float32)  # each block's largest magnitude and its first weight with it
    extreme = np.empty(n, np.float32)
    for j in range(n):
        best[j] = abs(blocks[0, j])
        extreme[j] = blocks[0, j]
    for i in range(1, rows):  # row after row: the blocks of a row are contiguous
        for j in range(n):
            if abs(blocks[i, j]) > best[j]:
                best[j] = abs(blocks[i, j])
                extreme[j] = blocks[i, j]
    d = np.empty(n, np.float32)
    inv = np.empty(n, np.float32)
    for j in range(n):
        d[j] = extreme[j] / np.float32(-half) if half > 0 else best[j] / np.float32(top)
        inv[j] = np.float32(0) if d[j] == 0 else np.float32(1) / d[j]
    round_fp16(d, scales)
    for i in range(rows):
        for j in range(n):
            x = np.float32(blocks[i, j] * inv[j])
            # codes from float values clipped first: a NaN or infinite x (d below float32's
            # normal range, whose reciprocal overflows) gets numpy's cast of it, as gguf does
            if half > 0:
                t = np.float32(x + np.float32(half + 0.5))
                code = 0 if t != t else np.intp(np.trunc(min(max(t, np.float32(0)), np.float32(2 * half - 1))))
                q = np.float32(code - half)
            else:
                a = abs(x)
                floored = np.float32(np.floor(a))
                q = floored + np.float32(np.floor(np.float32(2) * (a - floored)))
                if x < 0:
                    q = -q
                code = np.intp(q) + top if abs(q) <= top else 0
            codes[i, j] = code
            w_hat[i, j] = q * scales[j]
    stats_parts(blocks, w_hat, squares, wide, difference)


def _round_fp16(x, out):
    """out = finite float32 ``x`` rounded to IEEE FP16 (to nearest, ties to even; beyond 65520
    to infinity), as float32, as numpy's ``astype(np.float16)`` rounds; 1-D contiguous."""
    bits = out.view(np.uint32)
    for i in range(x.size):
        a = abs(x[i])
        if a >= np.float32(65520.0):
            r = np.float32(np.inf)
        elif a < np.float32(2.0**-14):  # FP16 subnormals: a fixed step of 2**-24
            r = np.float32(np.rint(np.float32(a * np.float32(2.0**24))) * np.float32(2.0**-24))
        else:
            r = a
        out[i] = r
        if np.float32(2.0**-14) <= a < np.float32(65520.0):  # keep 11 significant bits
            b = bits[i]
            bits[i] = (b + np.uint32(0x0FFF) + ((b >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
        out[i] = np.float32(math.copysign(out[i], x[i]))  # -0.0 stays -0.0


def _round_bf16(x, out):
    """out = ``x`` rounded to the nearest BF16 value (ties to even), as float32; 1-D contiguous."""
    bits = x.view(np.uint32)
    rounded = out.view(np.uint32)
    for i in range(x.size):
        b = bits[i]
        rounded[i] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)


def _outliers(blocks, unit, factor, outliers, both):
    """OPQ's outliers (BOF4 §3.3) of (B, n) block-layout ``blocks``: outliers[i, j] = |x| >
    sigma_j * ``factor``, x = blocks[i, j] * ``unit``, sigma_j the sample standard deviation
    (ddof 1) of block j's x, every sum over the block's elements in order, in float32. (B, 2n)
    ``both`` gets the blocks, then the blocks with their outliers set to 0."""
    rows, n = blocks.shape
    x = np.empty(n, np.float32)
    total = np.zeros(n, np.float32)
    for i in range(rows):
        for j in range(n):
            x[j] = blocks[i, j] * unit
        for j in range(n):
            total[j] += x[j]
    mean = np.empty(n, np.float32)
    for j in range(n):
        mean[j] = total[j] / np.float32(rows)
    square = np.zeros(n, np.float32)
    for i in range(rows):
        for j in range(n):
            x[j] = blocks[i, j] * unit
        for j in range(n):
            x[j] = x[j] - mean[j]
        for j in range(n):
            x[j] = x[j] * x[j]
        for j in range(n):
            square[j] += x[j]
    limit = np.empty(n, np.float32)
    for j in range(n):
        limit[j] = square[j] / np.float32(max(rows - 1, 1))
        limit[j] = np.sqrt(limit[j])
        limit[j] = limit[j] * factor
    for i in range(rows):
        for j in range(n):
            x[j] = blocks[i, j] * unit
        for j in range(n):
            outliers[i, j] = abs(x[j]) > limit[j]
            both[i, j] = blocks[i, j]
            both[i, n + j] = np.float32(0) if outliers[i, j] else blocks[i, j]


def _keep_better(blocks, removed, h, unit, weighted, err, w_hat, codes, grid, scales, want_codes,
                 out_w_hat, out_codes, out_grid, out_scales, out_err):
    """OPQ's choice for each block j of (B, n) ``blocks``: column j of the (2n)-wide results is
    its plain quantization (``w_hat``, ``codes``, ``grid``, ``scales``, with errors ``err``) and
    column n + j its quantization with the elements flagged in ``removed`` set to 0; those are
    stored as BF16, and if that lowers the block's error (summed as choose_blocks sums it), the
    block takes column n + j, else column j, and its flags are cleared (it stores no outliers).
    Writes the (B, n) and (n,) ``out_`` arrays; codes only if ``want_codes``."""
    rows, n = blocks.shape
    exact = np.empty(n, np.float32)
    r = np.empty(n, np.float32)
    alt_err = np.zeros(n, np.float32)
    for i in range(rows):
        round_bf16(blocks[i], exact)
        for j in range(n):
            if removed[i, j]:
                w_hat[i, n + j] = exact[j]
            r[j] = w_hat[i, n + j] - blocks[i, j]
        residual_score(r, unit, h[i] if weighted else r, weighted)
        for j in range(n):
            alt_err[j] += r[j]
    use = np.empty(n, np.bool_)
    for j in range(n):
        use[j] = alt_err[j] < err[j]
        k = n + j if use[j] else j
        out_grid[j] = grid[k]
        out_scales[j] = scales[k]
        out_err[j] = alt_err[j] if use[j] else err[j]
    for i in range(rows):  # row after row: the blocks of a row are contiguous
        for j in range(n):
            k = n + j if use[j] else j
            out_w_hat[i, j] = w_hat[i, k]
            if want_codes:
                out_codes[i, j] = codes[i, k]
            if not use[j]:
                removed[i, j] = False


def _histogram_add(y, weight, lo, scale, total_weight, total_sum):
    """Add samples ``y`` with ``weight`` (1-D float32) to a weighted histogram, in order: bin
    k = int((y - lo) * scale) clipped to the bins; total_weight[k] += weight, total_sum[k] +=
    weight * y (float64). On empty totals this is numpy's bincount with weights bit for bit."""
    last = total_weight.size - 1
    for i in range(y.size):
        k = min(max(np.intp((y[i] - lo) * scale), 0), last)
        w = np.float64(weight[i])
        total_weight[k] += w
        total_sum[k] += w * np.float64(y[i])


def _prefix_sums(x, hi, lo):
    """Running sums of ``x`` (float64) as unevaluated pairs hi + lo (TwoSum, Knuth TAOCP 4.2.2):
    hi[0] = lo[0] = 0 and hi[i] + lo[i] = x[0] + ... + x[i-1] with an error of order
    n * eps**2 * sum |x|, so a difference of two of them is a run's sum to about one rounding
    unless the run is below about n * eps of sum |x|."""
    hi[0] = 0.0
    lo[0] = 0.0
    for i in range(x.size):
        a = hi[i]
        b = x[i]
        s = a + b
        bb = s - a
        hi[i + 1] = s
        lo[i + 1] = lo[i] + ((a - (s - bb)) + (b - bb))


def _lloyd_iterate(point, mass, mass_sum, mass_hi, mass_lo, sum_hi, sum_lo, levels, pinned, max_iterations,
                   tolerance):
    """Weighted Lloyd iterations in place on sorted ``levels``: cell c holds the sorted ``point``
    from the first one >= the midpoint below level c to the first one >= the midpoint above (a
    point on a midpoint joins the upper cell); its mass and weighted sum are differences of the
    prefix sums of ``mass`` and ``mass_sum`` (:func:`_prefix_sums`), or, for a cell too light for
    those (below n * eps of the total), its own sums. A level in ``pinned`` or with an empty cell
    stays. Stops when no level moves by ``tolerance`` or more. Returns the iterations run."""
    eps_n = point.size * 2.0**-52
    tiny_w = eps_n * (mass_hi[-1] + mass_lo[-1])
    tiny_s = 0.0
    for i in range(mass_sum.size):
        tiny_s += abs(mass_sum[i])
    tiny_s *= eps_n
    n = levels.size
    first = np.empty(n, np.intp)
    new = np.empty(n)
    for it in range(max_iterations):
        first[0] = 0
        for c in range(1, n):
            mid = (levels[c - 1] + levels[c]) / 2
            a, b = 0, point.size  # numpy's searchsorted(side="left"): the first point >= mid
            while a < b:
                m = (a + b) // 2
                if point[m] < mid:
                    a = m + 1
                else:
                    b = m
            first[c] = a
        for c in range(n):
            end = first[c + 1] if c + 1 < n else point.size
            new[c] = levels[c]
            if end <= first[c]:
                continue
            fixed = False
            for p in pinned:
                fixed = fixed or levels[c] == p
            if fixed:
                continue
            w = (mass_hi[end] - mass_hi[first[c]]) + (mass_lo[end] - mass_lo[first[c]])
            ws = (sum_hi[end] - sum_hi[first[c]]) + (sum_lo[end] - sum_lo[first[c]])
            if w < tiny_w or abs(ws) < tiny_s:  # rare: the running sums' error would show
                w, ws = 0.0, 0.0
                for i in range(first[c], end):
                    w += mass[i]
                    ws += mass_sum[i]
            if w > 0:
                new[c] = ws / w
        new.sort()  # centroids of ordered cells stay ordered; sort guards ties
        moved = 0.0
        for c in range(n):
            moved = max(moved, abs(new[c] - levels[c]))
            levels[c] = new[c]
        if moved < tolerance:
            return it + 1
    return max_iterations
