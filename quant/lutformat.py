"""LUT word formats: storing a table-decoded grid's levels in a narrow LUT word (``:lut=FMT``).

A grid's normalised levels lie in about [-1, 1]; a LUT word format FMT (E4M3, E2M3, a HIF
stand-in...) spans [-qmax_FMT, qmax_FMT]. Rounding the levels onto FMT as they are would use only
FMT's values in [-1, 1] (14 of E2M3's 63) and merge levels that FMT could keep apart. So each grid
is first placed in FMT's range by a power of two, then rounded:

1. ``e`` = the largest integer with ``max|level| * 2**e <= qmax_FMT``: the levels use FMT's whole
   range. A power of two keeps the placement exact and costs the decoder only an exponent offset;
   it is stored per grid as one 8-bit exponent (a UE8M0 byte, ``e + 127``), which
   :meth:`quant.Candidate.bits` counts for learned grids.
2. Each ``level * 2**e`` goes to its nearest FMT value (FMT's own tie rule). If two levels land on
   the same value and FMT has at least as many values as the grid has levels, the order-preserving
   one-to-one assignment with the least squared displacement is used instead (dynamic
   programming), so a level is lost only when FMT has too few values to hold them all.

The stored level is ``value_FMT(code) * 2**-e``, exact in float32.
"""

from __future__ import annotations

import math

import numpy as np

from quant.formats import AtomFormat

EXPONENT_BIAS = 127  # the stored byte is e + 127, as a UE8M0 scale


def placement_exponent(fmt: AtomFormat, levels: np.ndarray) -> int:
    """The largest e with ``max|levels| * 2**e <= qmax`` of ``fmt`` (0 for an all-zero grid)."""
    top = float(np.max(np.abs(levels)))
    if top == 0.0:
        return 0
    e = math.floor(math.log2(fmt.qmax / top))
    while math.ldexp(top, e + 1) <= fmt.qmax:  # log2 may round either way near a power of two
        e += 1
    while math.ldexp(top, e) > fmt.qmax:
        e -= 1
    return e


def store_levels(fmt: AtomFormat, levels: np.ndarray) -> tuple[np.ndarray, int]:
    """(FMT values stored for ``levels``, ascending float64; exponent e). Decoded level = value * 2**-e.

    ``levels``: ascending float64 levels in the grid's own units.
    """
    levels = np.asarray(levels, np.float64)
    e = placement_exponent(fmt, levels)
    placed = np.ldexp(levels, e)
    nearest = fmt.table.round(placed.astype(np.float32)).astype(np.float64)
    values = np.asarray(fmt.values, np.float64)
    if np.all(np.diff(nearest) > 0) or values.size < levels.size:
        return nearest, e
    return _one_to_one(placed, values), e


def _one_to_one(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Strictly increasing choice of ``values`` for ascending ``x`` minimising sum (x - v)**2.

    cost[i, j] = (x_i - v_j)**2 + min over j' < j of cost[i-1, j']; O(len(x) * window). Only the
    values within len(x) places of x's range can be optimal, so only those are searched.
    """
    n = x.size
    lo = max(int(np.searchsorted(values, x[0])) - n, 0)
    hi = min(int(np.searchsorted(values, x[-1])) + n, values.size)
    values = values[lo:hi]
    cost = np.square(x[0] - values)
    back = np.zeros((n, values.size), np.int64)
    for i in range(1, n):  # one vectorised step per level (n <= 256)
        best_left = np.minimum.accumulate(cost)
        is_new = np.concatenate([[True], cost[1:] < best_left[:-1]])
        arg_left = np.maximum.accumulate(np.where(is_new, np.arange(cost.size), 0))
        back[i, 1:] = arg_left[:-1]
        cost = np.square(x[i] - values) + np.concatenate([[np.inf], best_left[:-1]])
    j = int(np.argmin(cost))
    picked = np.empty(n, np.int64)
    for i in range(n - 1, -1, -1):
        picked[i] = j
        j = int(back[i, j])
    return values[picked]


def decoded_levels(stored: np.ndarray, e: int) -> np.ndarray:
    """Levels a LUT holding FMT values ``stored`` with exponent ``e`` decodes to (float64, exact)."""
    return np.ldexp(np.asarray(stored, np.float64), -e)


def encode_grid(fmt: AtomFormat, grid: np.ndarray, factor: float) -> tuple[np.ndarray, int]:
    """Invert the decode of an effective float32 ``grid`` = fp32(value * 2**-e * factor): the FMT
    values and exponent to store. The largest e that reproduces the grid is taken; any e that
    does decodes to the same float32 levels, so a package round-trips bit for bit.

    Raises ValueError when no exponent reproduces the grid.
    """
    grid = np.asarray(grid, np.float32)
    levels = grid.astype(np.float64) / factor
    top = placement_exponent(fmt, levels)
    for e in range(top + 1, top - 2 * EXPONENT_BIAS, -1):
        values = fmt.table.round(np.ldexp(levels, e).astype(np.float32)).astype(np.float64)
        if np.array_equal((decoded_levels(values, e) * factor).astype(np.float32), grid):
            return values, e
    raise ValueError(f"the grid is not fp32({fmt.name} value x 2**-e x {factor}) for any e")


def refine_on_samples(fmt: AtomFormat, stored: np.ndarray, e: int, factor: float, point: np.ndarray,
                      mass: np.ndarray, fixed: np.ndarray, max_sweeps: int = 32) -> np.ndarray:
    """Improve stored FMT values of a learned grid for the weighted samples it quantizes.

    Rounding Lloyd's levels onto FMT moves each by up to half an FMT step, which a fit that knew
    the step would not do. Coordinate descent: each free level tries its neighbouring FMT values
    (order kept) and takes the one with the least weighted squared error, until no level moves.
    The error of levels ``l`` is ``sum_cells (l**2 W_c - 2 l S_c)`` plus a constant, W_c and S_c
    being the cell's sample weight and weighted sum, so no pass over the samples is needed.

    Args:
        stored: ascending FMT values (the grid after :func:`store_levels`, exponent ``e``).
        factor: grid factor: decoded level = value * 2**-e * factor, in the samples' units.
        point, mass: (m,) sample values (ascending) and weights, e.g. a histogram's occupied bins.
        fixed: (n,) bool, levels that must not move (pinned 0 and +1).
    """
    values = np.asarray(fmt.values, np.float64)
    idx = np.searchsorted(values, stored)
    scale = math.ldexp(factor, -e)
    msum = mass * point

    def cost(index: np.ndarray) -> float:
        lv = values[index] * scale
        cell = np.searchsorted((lv[:-1] + lv[1:]) / 2, point)
        w = np.bincount(cell, weights=mass, minlength=lv.size)
        s = np.bincount(cell, weights=msum, minlength=lv.size)
        return float(np.sum(lv * lv * w - 2 * lv * s))

    best = cost(idx)
    for _ in range(max_sweeps):
        moved = False
        for i in np.flatnonzero(~fixed):
            for step in (-1, 1):
                j = idx[i] + step
                if j < 0 or j >= values.size or (i > 0 and j <= idx[i - 1]) or (i + 1 < idx.size and j >= idx[i + 1]):
                    continue
                trial = idx.copy()
                trial[i] = j
                c = cost(trial)
                if c < best:
                    best, idx, moved = c, trial, True
        if not moved:
            break
    return values[idx]
