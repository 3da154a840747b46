"""SRAM macros (the weight buffer and large LUTs): read energy and area fitted to the CACTI table.

Read energy per access at a 64-bit port is interpolated log-log in capacity between the CACTI
22 nm points (256 B .. 1 MB); beyond 1 MB it grows as sqrt(capacity) (docs/hwcost.md §2f item 3).
Narrower ports use the ratio E(width)/E(64 bit) CACTI gives at 256 B and 1 KB, held at the 1 KB
ratio for larger macros [inference]. Area is the CACTI macro area (periphery included), scaled
by the SRAM bitcell ratio rather than by logic scaling (docs/hwcost.md §1d). No CACTI organisation
exists below 256 B, so a smaller macro costs as much as a 256 B one.
"""

from __future__ import annotations

import math

from hwcost.constants import CACTI_SRAM_64B, CACTI_SRAM_NARROW, sram_label
from hwcost.interp import bracket, loglog
from hwcost.node import Technology, at_node
from hwcost.part import Part

SMALLEST_MACRO_BITS = 8 * CACTI_SRAM_64B[0][0]
"""256 B: CACTI 7 finds no array organisation below it (docs/hwcost.md §1b)."""
_LARGEST_BITS = 8 * CACTI_SRAM_64B[-1][0]
_CAPACITIES_BITS = [8 * cap for cap, _, _ in CACTI_SRAM_64B]
_NARROW_CAPACITIES_BITS = sorted({8 * cap for cap, _, _ in CACTI_SRAM_NARROW})
_PORT_BITS = 64
_NARROWEST_PORT_BITS = min(bits for _, bits, _ in CACTI_SRAM_NARROW)


def _read_64b_name(capacity_bits: int) -> str:
    return f"cacti_sram_{sram_label(capacity_bits // 8)}_read_64b_pj"


def _read_name(capacity_bits: int, width_bits: int) -> str:
    return f"cacti_sram_{sram_label(capacity_bits // 8)}_read_{width_bits}b_pj"


def _capacity_curve(stem: str, capacity_bits: float, tech: Technology) -> tuple[float, frozenset[str]]:
    """A per-capacity CACTI quantity at ``capacity_bits`` (within the table), and the constants used."""
    used = [_CAPACITIES_BITS[i] for i in bracket(_CAPACITIES_BITS, capacity_bits)]
    names = [f"cacti_sram_{sram_label(bits // 8)}_{stem}" for bits in used]
    return loglog([(b, at_node(n, tech)) for b, n in zip(used, names)], capacity_bits), frozenset(names)


def _width_ratio(capacity_bits: float, width_bits: int, tech: Technology) -> tuple[float, frozenset[str]]:
    """E(width) / E(64 bit) for a read port of ``width_bits``."""
    if width_bits >= _PORT_BITS:
        return width_bits / _PORT_BITS, frozenset()  # wider ports: as several 64-bit reads [inference]
    width = max(width_bits, _NARROWEST_PORT_BITS)  # no CACTI point below 8 bits: the 8-bit cost
    capacity = min(max(capacity_bits, _NARROW_CAPACITIES_BITS[0]), _NARROW_CAPACITIES_BITS[-1])
    names: set[str] = set()
    ratios = []
    for cap in (_NARROW_CAPACITIES_BITS[i] for i in bracket(_NARROW_CAPACITIES_BITS, capacity)):
        widths = sorted({bits for c, bits, _ in CACTI_SRAM_NARROW if 8 * c == cap} | {_PORT_BITS})
        points = []
        for w in (widths[i] for i in bracket(widths, width)):
            name = _read_64b_name(cap) if w == _PORT_BITS else _read_name(cap, w)
            names |= {name, _read_64b_name(cap)}
            points.append((w, at_node(name, tech) / at_node(_read_64b_name(cap), tech)))
        ratios.append((cap, loglog(points, width)))
    return loglog(ratios, capacity), frozenset(names)


def sram_macro(capacity_bits: float, width_bits: int, tech: Technology) -> Part:
    """One read of ``width_bits`` from a macro of ``capacity_bits``: energy per read, macro area."""
    capacity = max(capacity_bits, SMALLEST_MACRO_BITS)
    growth = 1.0
    if capacity > _LARGEST_BITS:
        growth = math.sqrt(capacity / _LARGEST_BITS)
    energy_64b, energy_uses = _capacity_curve("read_64b_pj", min(capacity, _LARGEST_BITS), tech)
    ratio, ratio_uses = _width_ratio(capacity, width_bits, tech)
    area_mm2, area_uses = _capacity_curve("area_mm2", min(capacity, _LARGEST_BITS), tech)
    area_um2 = area_mm2 * 1e6 * max(capacity / _LARGEST_BITS, 1.0)  # beyond 1 MB: area per bit held
    return Part(energy_64b * growth * ratio, area_um2, energy_uses | ratio_uses | area_uses)
