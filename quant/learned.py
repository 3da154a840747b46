"""Learned codebooks: weighted Lloyd-Max on block-normalised values.

One algorithm serves three uses:

* DD4, SOP's per-layer codebook hosted in LUT SRAM (docs/formats.md §1.11 [inference]: weighted
  Lloyd-Max on the layer's block-normalised weights, sample weight = squared block scale x
  activation weight of the input channel, pinned 0 and, under a signed scale, +1);
* BOF4 / BOF4-S for any block size (arXiv 2505.06653 §3.1-3.2, eq. 6: MSE centroids weighted by
  the squared block maximum; BOF4 pins -1, 0, +1; BOF4-S pins 0, +1);
* the reconstructed Split87 grid.

Lloyd runs on a weighted histogram of the samples (2**16 bins, each keeping the exact weighted
sum of its samples), so a 16M-element tensor costs one pass to bin and then microseconds per
iteration; the bin width (~3e-5 of the range) bounds the approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant import kernels

HIST_BINS = 1 << 16
MAX_ITERATIONS = 200
TOLERANCE = 1e-9  # stop when no level moves more than this


@dataclass(frozen=True)
class Histogram:
    """Weighted histogram of normalised values: per bin, sum of weights and of weight x value."""

    lo: float
    hi: float
    weight: np.ndarray
    """(bins,) float64 sum of sample weights."""
    weighted_sum: np.ndarray
    """(bins,) float64 sum of weight x value."""

    @classmethod
    def empty(cls, lo: float, hi: float, bins: int = HIST_BINS) -> Histogram:
        return cls(lo, hi, np.zeros(bins), np.zeros(bins))

    def add(self, y: np.ndarray, weight: np.ndarray) -> None:
        """Accumulate float32 samples ``y`` with ``weight`` (same shape) in place, sample by sample
        in order; a sample's bin is int((y - lo) * bins / (hi - lo)) in float32, clipped."""
        flat = np.ascontiguousarray(y, dtype=np.float32).reshape(-1)
        kernels.histogram_add(flat, np.ascontiguousarray(weight, dtype=np.float32).reshape(-1), np.float32(self.lo),
                              np.float32(self.weight.size / (self.hi - self.lo)), self.weight, self.weighted_sum)

    def points(self, bins: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(weighted mean, weight) of the occupied bins after merging to at most ``bins`` bins:
        the samples as a short ascending list (each merged bin stands at its exact weighted mean)."""
        group = max(1, self.weight.size // bins)
        weight = self.weight.reshape(-1, group).sum(axis=1)
        total = self.weighted_sum.reshape(-1, group).sum(axis=1)
        occupied = weight > 0
        return total[occupied] / weight[occupied], weight[occupied]


def lloyd(hist: Histogram, init: np.ndarray, pinned: tuple[float, ...] = (),
          max_iterations: int = MAX_ITERATIONS) -> np.ndarray:
    """Weighted Lloyd-Max levels (sorted float64) from ``init``; levels in ``pinned`` never move.

    Each bin acts as one point at its weighted mean; cells are split at level midpoints (a point
    on a midpoint joins the upper cell). A level whose cell is empty keeps its position (it
    cannot get worse than unused).

    With the points in ascending order each cell is a run of them, found by a binary search per
    midpoint; its mass and weighted sum are differences of running sums kept as float64 pairs
    (TwoSum, :func:`quant.kernels.prefix_sums`), exact to about one rounding of the cell's own
    sum (a cell lighter than ~n * eps of the total is summed on its own). An iteration then costs
    O(levels x log points), not a pass over the points: on the datacenter DD4 fits (~50k
    points) a whole fit took 1.0 ms instead of 4.6 ms with numpy's per-iteration ``reduceat``.
    The float64 levels differ from a sequential iteration's by a few ulps, far below a float32
    level's spacing (6e-8): the float32 grids callers keep are the textbook iteration's except
    when a level lies that close to a float32 rounding boundary (a chance of ~1e-7 per level),
    or when the stopping test (largest move < TOLERANCE) falls the other way and one more
    iteration runs.
    """
    return _lloyd(hist, init, pinned, max_iterations)[0]


def _lloyd(hist: Histogram, init: np.ndarray, pinned: tuple[float, ...], max_iterations: int
           ) -> tuple[np.ndarray, int]:
    """:func:`lloyd`'s levels and the iterations it ran."""
    occupied = hist.weight > 0
    point = hist.weighted_sum[occupied] / hist.weight[occupied]
    mass, mass_sum = hist.weight[occupied], hist.weighted_sum[occupied]
    # rounding can leave a bin's mean below its left neighbour's (means are finite: samples are checked)
    if np.any(point[1:] < point[:-1]):
        order = np.argsort(point, kind="stable")
        point, mass, mass_sum = point[order], mass[order], mass_sum[order]
    sums = [np.empty(point.size + 1) for _ in range(4)]
    kernels.prefix_sums(mass, sums[0], sums[1])
    kernels.prefix_sums(mass_sum, sums[2], sums[3])
    levels = np.sort(np.asarray(init, dtype=np.float64))
    iterations = kernels.lloyd_iterate(point, mass, mass_sum, *sums, levels,
                                       np.asarray(pinned, dtype=np.float64), max_iterations, TOLERANCE)
    return levels, int(iterations)


def normal_quantile_levels(n: int) -> np.ndarray:
    """An NF-style start: n levels at normal quantiles, with an exact 0 and max |level| = 1."""
    from scipy.stats import norm

    positive = n // 2
    negative = n - positive - 1
    offset = 0.9677083  # bitsandbytes create_normal_map offset (docs/formats.md §1.5)
    pos = norm.ppf(np.linspace(offset, 0.5, positive + 1)[:-1])
    neg = -norm.ppf(np.linspace(offset, 0.5, negative + 1)[:-1])
    levels = np.sort(np.concatenate([neg, [0.0], pos]))
    scaled: np.ndarray = levels / np.max(np.abs(levels))
    return scaled


def derive_bof4(block_size: int, *, signed: bool, samples: int = 1 << 22, seed: int = 0) -> np.ndarray:
    """BOF4 (absmax, pins -1/0/+1) or BOF4-S (signed absmax, pins 0/+1) levels for ``block_size``.

    Monte-Carlo on standard normal blocks, MSE centroids weighted by the squared block maximum
    (arXiv 2505.06653 eq. 6). Returns 16 sorted float32 levels.
    """
    rng = np.random.default_rng(seed)
    blocks = rng.standard_normal((samples // block_size, block_size), dtype=np.float32)
    if signed:
        extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=1)[:, None], axis=1)
    else:
        extreme = np.abs(blocks).max(axis=1, keepdims=True)
    y = blocks / extreme
    weight = np.broadcast_to(extreme * extreme, y.shape)
    hist = Histogram.empty(-1.0, 1.0)
    hist.add(y, weight)
    init = normal_quantile_levels(16)
    if signed:  # 7 negative levels, 0, 8 positive ending at +1 (BOF4-S structure, §3.2)
        pinned: tuple[float, ...] = (0.0, 1.0)
        init = np.concatenate([init[:7] * 0.85, init[7:]])
    else:
        pinned = (-1.0, 0.0, 1.0)
    return lloyd(hist, init, pinned).astype(np.float32)
