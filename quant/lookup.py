"""Exact rounding of float32 arrays onto a sorted value set, fast.

Every atom grid and every scale grid in sop-dse is a sorted table of values, so one kernel
rounds onto all of them. ``np.searchsorted`` is exact but costs ~35 ns per element; instead we
bucket the input by the top bits of its float32 encoding (sign, exponent and ``k`` mantissa
bits). Buckets are monotone in value, so if each bucket holds at most one decision threshold
the answer is "the bucket's lower index, plus one if y >= that threshold": one 16-byte gather
and one compare per element, exact by construction (the table is checked when built).

Thresholds are float32 numbers with the rule ``index = #{i : y >= t_i}``; any rounding rule
(nearest with a tie policy, ceil, floor) reduces to that form, see :func:`rounding_thresholds`.

One tie rule for every grid (FP, INT, codebooks, learned, scales): round to nearest, ties to
the value whose *magnitude index* is even. The magnitude index of v counts the grid values on
v's side of zero, zero included, that are smaller in magnitude: ``m(v) = #{u : 0 <= u < v}``
for v > 0, ``#{u : v < u <= 0}`` for v < 0, and 0 for v = 0. For an ExMy float it is the code
without its sign bit and for a symmetric integer it is |v|, so the rule is IEEE 754
roundTiesToEven on the encoding (what ml_dtypes casts and ``numpy.rint`` do). It depends only on
magnitudes, so a sign-symmetric grid rounds sign-symmetrically: q(-y) = -q(y). The one tie it
cannot split that way, y = 0 between -a and +a on a grid without zero (SH4's +-1/15), goes to +a.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from fractions import Fraction

import numpy as np

from quant import kernels


# Largest bucket table we build: 2**18 buckets x 16 bytes = 4 MiB. Value sets needing more
# (two levels closer than ~2**-9 relative) fall back to searchsorted, which is exact but slow.
_MAX_MANTISSA_BITS = 9
# Below this many elements one binary search over the thresholds beats the compiled bucket
# lookup's call (this VM: 1 element 1.3 us against 3.9 us; even at 256); both are exact.
SEARCH_BELOW = 256


class Rounding(enum.Enum):
    """How a real number is mapped onto a sorted value set."""

    NEAREST_EVEN = "nearest-even"
    """Nearest value; a tie goes to the even magnitude index (IEEE/OCP RNE on FP/INT; module doc)."""
    CEIL = "ceil"
    """Smallest value >= y (saturates at the largest value)."""
    FLOOR = "floor"
    """Largest value <= y (saturates at the smallest value)."""


_F32_MAX = np.finfo(np.float32).max


def _ceil32(x: Fraction) -> np.float32:
    """Smallest float32 >= x, exactly (a float64 midpoint can absorb a tiny addend)."""
    f = np.float32(min(float(x), float(_F32_MAX)))
    while Fraction(float(f)) < x:
        if f == _F32_MAX:
            return np.float32(np.inf)  # nothing finite is >= x: the threshold is never reached
        f = np.nextafter(f, np.float32(np.inf))
    while Fraction(float(below := np.nextafter(f, np.float32(-np.inf)))) >= x:
        f = below
    return f


def _above32(x: Fraction) -> np.float32:
    """Smallest float32 > x."""
    f = _ceil32(x)
    return np.nextafter(f, np.float32(np.inf)) if np.isfinite(f) and Fraction(float(f)) == x else f


def magnitude_index(values: np.ndarray) -> np.ndarray:
    """m(v) for each of the sorted, unique ``values``: grid values on v's side of zero (zero
    included) smaller in magnitude (module doc). (n,) int64; the ExMy code without its sign bit."""
    v = np.asarray(values, dtype=np.float64)
    i = np.arange(v.size)
    first_nonneg = int(np.searchsorted(v, 0.0, side="left"))
    last_nonpos = int(np.searchsorted(v, 0.0, side="right")) - 1
    return np.where(v > 0, i - first_nonneg, np.where(v < 0, last_nonpos - i, 0))


def rounding_thresholds(values: np.ndarray, rounding: Rounding) -> np.ndarray:
    """Float32 thresholds t (len n-1) such that ``index = #{i : y >= t_i}`` implements ``rounding``.

    Computed in exact rational arithmetic, so the lookup is exact for every float32 input.

    Args:
        values: sorted, unique values (each exactly representable in float32).
        rounding: the rule.
    """
    v = [Fraction(float(x)) for x in np.asarray(values, dtype=np.float64)]
    if rounding is Rounding.CEIL:
        out = [_above32(x) for x in v[:-1]]
    elif rounding is Rounding.FLOOR:
        out = [_ceil32(x) for x in v[1:]]
    else:  # a tie goes up iff the upper value's magnitude index is even
        mids = [(a + b) / 2 for a, b in zip(v[:-1], v[1:])]
        up_even = magnitude_index(values)[1:] % 2 == 0
        out = [_ceil32(m) if up else _above32(m) for m, up in zip(mids, up_even)]
    return np.array(out, dtype=np.float32)


# Tables by (values, rule), least recently used dropped beyond this many bytes of buckets: a
# learned grid is new per tensor, the built-in ones are reused by every call (issue: 93 % of a
# small call's time was rebuilding them).
_CACHE_BYTES = 64 << 20
_cache: OrderedDict[tuple[bytes, Rounding], LookupTable] = OrderedDict()
_cache_lock = threading.Lock()


def lookup_table(values: np.ndarray, rounding: Rounding = Rounding.NEAREST_EVEN) -> LookupTable:
    """The table rounding float32 inputs onto sorted, unique ``values`` under ``rounding``,
    built once per process for each distinct (values, rounding) and shared (read-only)."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    key = (v.tobytes(), rounding)
    with _cache_lock:
        table = _cache.get(key)
        if table is not None:
            _cache.move_to_end(key)
            return table
    table = LookupTable.build(v, rounding_thresholds(v, rounding))
    with _cache_lock:
        _cache[key] = table
        while len(_cache) > 1 and sum(t.nbytes for t in _cache.values()) > _CACHE_BYTES:
            _cache.popitem(last=False)
    return table


@dataclass(frozen=True, eq=False)
class LookupTable:
    """Rounds float32 arrays onto ``values`` with precomputed ``thresholds``.

    Inputs are cast to float32. -Inf and +Inf round to the first and last value; NaN has no
    defined result (callers check their inputs finite)."""

    values: np.ndarray
    """(n,) float32 sorted values."""
    thresholds: np.ndarray
    """(n-1,) float32 decision thresholds: index = #{i : y >= t_i}."""
    shift: np.uint32 = field(default=np.uint32(0))
    """Right shift of the float32 bit pattern that gives the bucket."""
    bucket_threshold: np.ndarray | None = field(default=None, repr=False)
    """(n_buckets,) float32: the one threshold inside each bucket (+inf if none)."""
    bucket_value: np.ndarray | None = field(default=None, repr=False)
    """(2 * n_buckets,) float32: value below / above the bucket's threshold, interleaved."""
    bucket_index: np.ndarray | None = field(default=None, repr=False)
    """(2 * n_buckets,) uint16: index into ``values`` below / above, interleaved."""

    @property
    def nbytes(self) -> int:
        parts = (self.values, self.thresholds, self.bucket_threshold, self.bucket_value, self.bucket_index)
        return sum(p.nbytes for p in parts if p is not None)

    @classmethod
    def build(cls, values: np.ndarray, thresholds: np.ndarray) -> LookupTable:
        v = np.asarray(values, dtype=np.float32)
        t = np.asarray(thresholds, dtype=np.float32)
        if v.size != t.size + 1:
            raise ValueError("need exactly one threshold between consecutive values")
        for k in range(_MAX_MANTISSA_BITS + 1):
            buckets = _buckets(v, t, k)
            if buckets is not None:
                return cls(_frozen(v), _frozen(t), np.uint32(23 - k), *map(_frozen, buckets))
        return cls(_frozen(v), _frozen(t))

    def index(self, y: np.ndarray) -> np.ndarray:
        """Index into ``values`` for each element of float32 ``y`` (same shape)."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        if self.bucket_index is None or y.size < SEARCH_BELOW:
            return self._search(y).astype(np.uint16)
        out = np.empty(y.shape, np.uint16)
        kernels.bucket_lookup(y.reshape(-1), self.shift, self.bucket_threshold, self.bucket_index, out.reshape(-1))
        return out

    def round(self, y: np.ndarray) -> np.ndarray:
        """The rounded float32 value of each element of ``y`` (same shape)."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        if self.bucket_value is None or y.size < SEARCH_BELOW:
            return self.values.take(self._search(y))
        out = np.empty(y.shape, np.float32)
        kernels.bucket_lookup(y.reshape(-1), self.shift, self.bucket_threshold, self.bucket_value, out.reshape(-1))
        return out

    def _search(self, y: np.ndarray) -> np.ndarray:
        """#{i : y >= t_i} for float32 ``y`` by binary search."""
        # the ndarray method: 1 us less per call than the np.searchsorted wrapper
        found: np.ndarray = self.thresholds.searchsorted(y, side="right")
        return found


@dataclass(frozen=True, eq=False)
class GridStack:
    """The bucket tables of several grids at one common bucket width, stacked: grid k's buckets
    are ``k * buckets ... (k + 1) * buckets - 1``, so one kernel pass rounds each block onto its
    own grid (quant.kernels.round_chosen). A bucket narrower than a table needs still holds at
    most one of its thresholds, so every grid stays exact at the finest width among them."""

    buckets: int
    shift: np.uint32
    threshold: np.ndarray
    """(K * buckets,) float32."""
    value: np.ndarray
    """(2 * K * buckets,) float32: value below / above each bucket's threshold, interleaved."""
    index: np.ndarray
    """(2 * K * buckets,) uint16: index into the grid's values, likewise."""


@lru_cache(maxsize=256)
def grid_stack(tables: tuple[LookupTable, ...]) -> GridStack | None:
    """The tables' :class:`GridStack` (made once per tuple of tables), or None if one of them has
    no bucket table (its levels are too close: it rounds by binary search)."""
    if any(t.bucket_threshold is None for t in tables):
        return None
    if len(tables) == 1:  # the table's own arrays
        t = tables[0]
        assert t.bucket_threshold is not None and t.bucket_value is not None and t.bucket_index is not None
        return GridStack(t.bucket_threshold.size, t.shift, t.bucket_threshold, t.bucket_value, t.bucket_index)
    shift = min(int(t.shift) for t in tables)
    parts = [_buckets(t.values, t.thresholds, 23 - shift) for t in tables]
    assert all(p is not None for p in parts)  # finer than each table's own: one threshold per bucket
    threshold, value, index = (_frozen(np.concatenate(a)) for a in zip(*parts))
    return GridStack(threshold.size // len(tables), np.uint32(shift), threshold, value, index)


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy: tables are shared between calls and threads."""
    out = np.array(a)
    out.flags.writeable = False
    return out


def _buckets(v: np.ndarray, t: np.ndarray, mantissa_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A bucket table of ``mantissa_bits``: (threshold inside each bucket, value below / above it
    interleaved, their indices as uint16), or None if a bucket holds two thresholds."""
    rows = _bucket_rows(t, mantissa_bits)
    if rows is None:
        return None
    threshold, lower = rows
    index = np.stack([lower, np.minimum(lower + 1, v.size - 1)], axis=1).reshape(-1)
    return threshold, v[index], index.astype(np.uint16)


def _bucket_rows(t: np.ndarray, mantissa_bits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(threshold inside, index below it) per bucket, or None if a bucket holds two thresholds."""
    shift = 23 - mantissa_bits
    n_buckets = 1 << (32 - shift)
    first = (np.arange(n_buckets, dtype=np.uint64) << np.uint64(shift)).astype(np.uint32)
    last = first | np.uint32((1 << shift) - 1)
    with np.errstate(invalid="ignore"):
        a = first.view(np.float32).astype(np.float64)
        b = last.view(np.float32).astype(np.float64)
    # fmin/fmax skip NaN: the buckets of +-Inf (which also hold NaN patterns) span just +-Inf, so
    # +-Inf round to the end values as the binary search does; NaN has no defined answer
    lo_edge, hi_edge = np.fmin(a, b), np.fmax(a, b)
    t64 = t.astype(np.float64)
    lo_idx = np.searchsorted(t64, lo_edge, side="right")
    hi_idx = np.searchsorted(t64, hi_edge, side="right")
    if np.any(hi_idx - lo_idx > 1):
        return None
    inside = hi_idx > lo_idx
    padded = np.append(t, np.float32(np.inf))
    threshold = np.where(inside, padded[lo_idx], np.float32(np.inf)).astype(np.float32)
    return threshold, lo_idx
