"""Arithmetic units from the Horowitz 45 nm table, sized by operand width, scaled to the target node.

Adders are interpolated log-log in width between the 8/16/32-bit rows; integer multipliers
log-log in the partial-product count a*b between the 8x8 and 32x32 rows (docs/hwcost.md §1a: energy
~ n^2.0, area ~ n^1.8). Outside the table the nearest segment's slope is extended [inference].
"""

from __future__ import annotations

from hwcost.interp import bracket, loglog
from hwcost.node import Technology, at_node
from hwcost.part import NOTHING, Part

_ADDER_ROWS = ((8, "horowitz_int_add_8b"), (16, "horowitz_int_add_16b"), (32, "horowitz_int_add_32b"))
_MULTIPLIER_ROWS = ((8 * 8, "horowitz_int_mult_8b"), (32 * 32, "horowitz_int_mult_32b"))
_SLICE = "aladdin_comparator_32b"
_SLICES_PER_COMPARATOR = 32


def _interpolated(rows: tuple[tuple[int, str], ...], size: float, tech: Technology) -> Part:
    """Log-log interpolation of (size, constant-stem) rows; exact at a row's size."""
    used = [rows[i] for i in bracket([r[0] for r in rows], size)]
    energy = [(s, at_node(f"{stem}_pj", tech)) for s, stem in used]
    area = [(s, at_node(f"{stem}_um2", tech)) for s, stem in used]
    names = frozenset(f"{stem}_{unit}" for _, stem in used for unit in ("pj", "um2"))
    return Part(loglog(energy, size), loglog(area, size), names)


def int_adder(bits: int, tech: Technology) -> Part:
    """A ``bits``-wide integer adder (also used for exponent adds and accumulators)."""
    return _interpolated(_ADDER_ROWS, bits, tech)


def int_multiplier(a_bits: int, b_bits: int, tech: Technology) -> Part:
    """An ``a_bits`` x ``b_bits`` integer multiplier array."""
    return _interpolated(_MULTIPLIER_ROWS, a_bits * b_bits, tech)


def fp32_multiplier(tech: Technology) -> Part:
    """An IEEE float32 multiplier (per-tensor scales)."""
    names = ("horowitz_fp_mult_32b_pj", "horowitz_fp_mult_32b_um2")
    return Part(at_node(names[0], tech), at_node(names[1], tech), frozenset(names))


def bit_slices(n: int, tech: Technology) -> Part:
    """``n`` one-bit logic slices (a 2:1 mux or a zero-detect bit each).

    No mux cell is tabulated in docs/hwcost.md; one bit of Aladdin's 32-bit comparator stands in for
    it [inference: a comparator bit is an XOR plus a share of a reduction tree, about a mux].
    """
    if n == 0:
        return NOTHING
    names = (f"{_SLICE}_pj", f"{_SLICE}_um2")
    one = Part(at_node(names[0], tech) / _SLICES_PER_COMPARATOR, at_node(names[1], tech) / _SLICES_PER_COMPARATOR,
               frozenset(names))
    return one * n
