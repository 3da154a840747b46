"""Reconstruction-error metrics, accumulated in float64 and additive across chunks and tensors.

For a layer y = x W^T, the output error is E||X (W - W_hat)^T||^2; keeping the diagonal of X^T X
gives sum_j h_j sum_r (W - W_hat)_rj^2 with h_j = ||X_:,j||^2, the activation weight of input
channel j (the diagonal of GPTQ's Hessian H = 2 X^T X up to its factor 2; Frantar et al., GPTQ,
arXiv 2210.17323, §3). The weighted
metrics below use that h; with h = 1 they are the plain ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from quant.errors import DseError


def activation_weights(mean_square: np.ndarray, power: Literal[1, 2] = 2) -> np.ndarray:
    """Per-input-channel weights h_j from mean squared activations E[x_j^2] (what imatrix stores).

    With channel norm c_j = sqrt(E[x_j^2]), ``power=2`` gives h_j = c_j^2, the diagonal of X^T X
    up to the token count: the exact output-error weight derived above, and the default.
    ``power=1`` gives h_j = c_j, a flatter weighting (SOP's ACos may use either; docs/formats.md §6.2).
    """
    ms = np.asarray(mean_square, dtype=np.float64)
    if power not in (1, 2):
        raise ValueError("power must be 1 (h = c) or 2 (h = c^2)")
    if ms.size and not (np.all(np.isfinite(ms)) and ms.min() >= 0 and ms.max() <= MAX_MEAN_SQUARE):
        worst = ms[~np.isfinite(ms)][0] if not np.all(np.isfinite(ms)) else (ms.min() if ms.min() < 0 else ms.max())
        raise DseError(f"activation statistics hold {worst:.3g}; mean squares must be finite, >= 0 and "
                          f"<= {MAX_MEAN_SQUARE:g} (weighted sums run in float32); rescale them")
    return ms if power == 2 else np.sqrt(ms)


MAX_MEAN_SQUARE = 1e30
"""Largest mean squared activation accepted: h then fits float32 with room for h * w^2."""


@dataclass(frozen=True)
class ErrorStats:
    """Sufficient statistics of one (tensor, candidate) reconstruction; ``+`` merges tensors."""

    numel: int
    sum_w2: float
    """sum w^2"""
    sum_q2: float
    """sum w_hat^2"""
    sum_d2: float
    """sum (w_hat - w)^2"""
    hsum_w2: float = math.nan
    """sum h_j w^2 (activation-weighted; NaN when no activation weights were given)"""
    hsum_q2: float = math.nan
    hsum_d2: float = math.nan
    hsum: float = math.nan
    """sum over elements of h_j (normalises the weighted MSE)"""
    blocks: int = 0
    """Blocks quantized."""
    second_grid_blocks: int = 0
    """Blocks that chose the second grid of a dual pair."""
    sparse: int = 0
    """Outliers and residual entries stored aside."""

    def __add__(self, other: ErrorStats) -> ErrorStats:
        return ErrorStats(*(getattr(self, name) + getattr(other, name) for name in STAT_FIELDS))

    @property
    def second_grid_fraction(self) -> float:
        return self.second_grid_blocks / self.blocks if self.blocks else 0.0

    @property
    def mse(self) -> float:
        return self.sum_d2 / self.numel

    @property
    def rel_mse(self) -> float:
        """sum (w_hat - w)^2 / sum w^2 (NMSE)."""
        return _ratio(self.sum_d2, self.sum_w2)

    @property
    def sqnr_db(self) -> float:
        return _db(self.rel_mse)

    @property
    def cosine(self) -> float:
        return 1.0 - _cos_deficit(self.sum_w2, self.sum_q2, self.sum_d2)

    @property
    def cos_deficit_ppm(self) -> float:
        """(1 - cosine) in parts per million, computed without cancellation."""
        return 1e6 * _cos_deficit(self.sum_w2, self.sum_q2, self.sum_d2)

    @property
    def weighted(self) -> bool:
        return not math.isnan(self.hsum)

    @property
    def act_mse(self) -> float:
        """Activation-weighted MSE: sum h_j d^2 / sum h_j."""
        return _ratio(self.hsum_d2, self.hsum)

    @property
    def act_rel_mse(self) -> float:
        return _ratio(self.hsum_d2, self.hsum_w2)

    @property
    def acos_deficit_ppm(self) -> float:
        """1 - ACos in ppm: the activation-weighted cosine (SOP's metric, docs/formats.md §3.3)."""
        return 1e6 * _cos_deficit(self.hsum_w2, self.hsum_q2, self.hsum_d2)


STAT_FIELDS = tuple(f.name for f in fields(ErrorStats))
"""ErrorStats' field names, in order: stats are summed per chunk and combined per sample, where
calling ``fields()`` each time cost a third of a combine."""


def _ratio(a: float, b: float) -> float:
    if b == 0.0:
        return 0.0 if a == 0.0 else math.inf
    return a / b


def _db(rel: float) -> float:
    if rel == 0.0:
        return math.inf
    return -10.0 * math.log10(rel)


def _cos_deficit(a: float, b: float, d: float) -> float:
    """1 - <w, q>/(|w||q|) from A=|w|^2, B=|q|^2, D=|q-w|^2.

    <w,q> = (A + B - D)/2, so 1 - cos = (D - (sqrt A - sqrt B)^2) / (2 sqrt(AB)): the
    subtraction there is second order, so the deficit keeps D's relative precision.
    """
    if math.isnan(a):
        return math.nan
    if a == 0.0 or b == 0.0:
        return 0.0 if a == b else 1.0
    ra, rb = math.sqrt(a), math.sqrt(b)
    return max(0.0, (d - (ra - rb) ** 2) / (2.0 * ra * rb))


def chunk_stats(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray | None, *, blocks: int = 0,
                second_grid_blocks: int = 0, sparse: int = 0,
                parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> ErrorStats:
    """Statistics of one chunk: ``w``, ``w_hat`` and ``h`` (per-element weights or None) alike in shape.

    The error sum D is accumulated in float64; sum w^2 and sum w_hat^2 use numpy's pairwise
    float32 summation (relative error < 1e-6 per chunk) and are summed across chunks in float64.
    That is enough: 1 - cosine depends on them only to second order (see ``_cos_deficit``).
    Where float32 squares would underflow or overflow (weights below ~1e-19 or above ~1e19),
    the sums are redone in float64, whose range holds any float32 square. The counts are stored as given.
    ``parts``: :func:`stats_parts` of (w, w_hat), already filled (kernels.quantize_blocks does).
    """
    # Sums use einsum/reduce, never BLAS: OpenBLAS's threaded dot spin-waits when the other
    # core is busy (e.g. a second explore worker) and then took 3 s per 16M values instead of 12 ms.
    squares, wide, d = _fill_parts(w, w_hat, stats_parts(w.size, h is not None)) if parts is None else parts
    if h is None:
        sum_w2, sum_q2 = (float(t) if _F32_SUMSQ_MIN <= t < math.inf else _sumsq64(a)
                          for a, t in zip((w, w_hat), _row_sums(squares)))
        return ErrorStats(w.size, sum_w2, sum_q2, float(np.einsum("i,i->", d, d)), blocks=blocks,
                          second_grid_blocks=second_grid_blocks, sparse=sparse)
    hf = h.reshape(-1)
    sum_w2, sum_q2, sum_d2 = np.add.reduce(wide, axis=1)  # per row: the pairwise sum of each
    return ErrorStats(
        numel=w.size,
        sum_w2=float(sum_w2),
        sum_q2=float(sum_q2),
        sum_d2=float(sum_d2),
        hsum_w2=float(np.einsum("i,i->", wide[0], hf)),
        hsum_q2=float(np.einsum("i,i->", wide[1], hf)),
        hsum_d2=float(np.einsum("i,i->", wide[2], hf)),
        hsum=float(hf.sum()),
        blocks=blocks,
        second_grid_blocks=second_grid_blocks,
        sparse=sparse,
    )


def stats_parts(size: int, weighted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays for what :func:`chunk_stats` sums over ``size`` elements, in C order: (squares,
    wide, difference). Unweighted: (2, size) float32 squares of w and w_hat, and (size,) float64
    w_hat - w (a float32 difference). Weighted: (3, size) float64 ``wide`` squares of w, w_hat
    and that difference (exact products). The arrays not used are empty (one kernel signature)."""
    if weighted:
        return NO_PARTS[0], np.empty((3, size)), NO_PARTS[2]
    return np.empty((2, size), np.float32), NO_PARTS[1], np.empty(size)


NO_PARTS = (np.empty((0, 0), np.float32), np.empty((0, 0)), np.empty(0))
"""Empty statistics' parts: for a kernel asked to fill none."""


@np.errstate(over="ignore", under="ignore")  # as a decorator: 1 us less than `with` (numpy 2), thread-safe
def _fill_parts(w: np.ndarray, w_hat: np.ndarray, parts: tuple[np.ndarray, np.ndarray, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``parts`` (:func:`stats_parts`) filled for alike-shaped float32 ``w`` and ``w_hat`` by numpy."""
    squares, wide, difference = parts
    d = w_hat - w
    if wide.size:
        for row, a in zip(wide, (w, w_hat, d)):
            np.square(a, out=row.reshape(a.shape), dtype=np.float64)
    else:
        np.square(w, out=squares[0].reshape(w.shape), dtype=np.float32)
        np.square(w_hat, out=squares[1].reshape(w.shape), dtype=np.float32)
        difference[:] = d.reshape(-1)
    return parts


@np.errstate(over="ignore")  # a sum beyond float32's range is redone in float64
def _row_sums(squares: np.ndarray) -> np.ndarray:
    """numpy's pairwise float32 sum of each row of (k, n) float32 ``squares`` (as of a flat array)."""
    sums: np.ndarray = np.add.reduce(squares, axis=1, dtype=np.float32)
    return sums


# A float32 sum of squares at least this large lost at most n * 2**-126 to squares flushed
# below float32's normal range: < 2**-26 relative for n <= 2**40 elements.
_F32_SUMSQ_MIN = 2.0**-60


def _sumsq64(a: np.ndarray) -> float:
    wide = a.astype(np.float64).reshape(-1)
    return float(np.einsum("i,i->", wide, wide))
