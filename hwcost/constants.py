"""Reference constants of the cost model: one record each, unit in the name, a source for every number.

Every value is stored as its source gives it, at the source's technology node (and supply voltage,
where the source states one). :mod:`hwcost.node` scales it to the target node. Tags say how the
number was obtained: ``primary`` (read in the original), ``secondary`` (from a copy or summary),
``computed`` (produced by running a tool), ``inference`` (reasoning on top of sourced numbers).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


class Scaling(enum.Enum):
    """How a constant changes with the technology node."""

    ENERGY = "energy"
    """Dynamic energy: Stillmaker & Baas per-node quadratic in Vdd (hwcost.node)."""
    LOGIC_AREA = "logic_area"
    """Standard-cell area: Stillmaker & Baas area factors."""
    SRAM_AREA = "sram_area"
    """SRAM macro area: scaled by the ratio of SRAM bitcell areas, not by logic scaling."""
    NONE = "none"
    """Not a function of the logic node (off-chip pJ/bit, a per-node bitcell area, a ratio)."""


@dataclass(frozen=True)
class Constant:
    """One sourced number."""

    name: str
    """Registry key; ends in the unit (``_pj``, ``_um2``, ``_mm2``, ``_fj_per_bit``...)."""
    value: float
    unit: str
    scaling: Scaling
    node_nm: float | None
    """Node the value is scaled from (None when scaling is NONE)."""
    vdd_v: float | None
    """Supply voltage of the source; None = not stated, scaled at the target's own Vdd."""
    source: str
    tag: str
    """primary | secondary | computed | inference (see the module docstring)."""


_HOROWITZ = (
    "Horowitz, 'Computing's Energy Problem', ISSCC 2014, 45 nm 0.9 V energy/area table "
    "(reproduced as Fig. 15 of arXiv 2103.13630; docs/hwcost.md §1a)"
)
_HOROWITZ_SRAM = (
    "Horowitz ISSCC 2014 cache-read rows, confirmed only via secondary copies citing the paper (docs/hwcost.md §1a)"
)
_CACTI = (
    "CACTI 7 (zigzag-dse 3.9.1 binary), 'ram', 1 RW port, 1 bank, itrs-hp, 360 K, ED^2, 22 nm "
    "(docs/hwcost.md §1b); scaled as the Stillmaker 20 nm node, as docs/hwcost.md §1b's cross-check does [inference]"
)
_ALADDIN = (
    "Aladdin (ISCA 2014), 40 nm 1 GHz, as packaged in Accelergy-Project/hwcomponents-library "
    "hwcomponents_library/library/aladdin.py (docs/hwcost.md §1c)"
)
_RF = (
    "register-file read estimate, https://stillwater-sc.github.io/domain-flow/ch3-design/switching-energy/"
    " (page calls it approximate, no primary source; docs/hwcost.md §1c)"
)

_REGISTRY: list[Constant] = []


def _add(name: str, value: float, unit: str, scaling: Scaling, node_nm: float | None, vdd_v: float | None,
         source: str, tag: str) -> None:
    _REGISTRY.append(Constant(name, value, unit, scaling, node_nm, vdd_v, source, tag))


# Horowitz ISSCC 2014, 45 nm at 0.9 V: (operation, energy pJ, area um2).
HOROWITZ_OPS = (
    ("int_add_8b", 0.03, 36.0),
    ("int_add_16b", 0.05, 67.0),
    ("int_add_32b", 0.1, 137.0),
    ("int_mult_8b", 0.2, 282.0),
    ("int_mult_32b", 3.1, 3495.0),
    ("fp_add_16b", 0.4, 1360.0),
    ("fp_add_32b", 0.9, 4184.0),
    ("fp_mult_16b", 1.1, 1640.0),
    ("fp_mult_32b", 3.7, 7700.0),
)
for _op, _pj, _um2 in HOROWITZ_OPS:
    _add(f"horowitz_{_op}_pj", _pj, "pJ", Scaling.ENERGY, 45, 0.9, _HOROWITZ, "primary")
    _add(f"horowitz_{_op}_um2", _um2, "um2", Scaling.LOGIC_AREA, 45, None, _HOROWITZ, "primary")

# 64-bit reads of an 8 KB / 32 KB / 1 MB cache (only the 8 KB row is in the survey's copy).
HOROWITZ_SRAM_READS = (("8KB", 10.0, "primary"), ("32KB", 20.0, "secondary"), ("1MB", 100.0, "secondary"))
for _size, _pj, _tag in HOROWITZ_SRAM_READS:
    _add(f"horowitz_sram_{_size}_read_64b_pj", _pj, "pJ", Scaling.ENERGY, 45, 0.9,
         _HOROWITZ if _tag == "primary" else _HOROWITZ_SRAM, _tag)

# CACTI 7 at 22 nm, 64-bit port: (capacity bytes, read energy pJ/access, macro area mm2 incl. periphery).
CACTI_SRAM_64B = (
    (256, 0.295, 0.00039),
    (1024, 0.402, 0.00097),
    (8192, 1.727, 0.00713),
    (65536, 5.327, 0.0630),
    (1048576, 21.09, 0.914),
)
# Narrow ports (docs/hwcost.md §1b "More CACTI points"): (capacity bytes, port bits, read energy pJ).
CACTI_SRAM_NARROW = (
    (256, 8, 0.107), (256, 16, 0.120), (256, 32, 0.150),
    (1024, 8, 0.261), (1024, 16, 0.281), (1024, 32, 0.322),
)


def sram_label(capacity_bytes: int) -> str:
    """'256B', '1KB', '1MB': the capacity part of an SRAM constant's name."""
    if capacity_bytes >= 1 << 20:
        return f"{capacity_bytes >> 20}MB"
    if capacity_bytes >= 1 << 10:
        return f"{capacity_bytes >> 10}KB"
    return f"{capacity_bytes}B"


for _cap, _pj, _mm2 in CACTI_SRAM_64B:
    _add(f"cacti_sram_{sram_label(_cap)}_read_64b_pj", _pj, "pJ", Scaling.ENERGY, 20, None, _CACTI, "computed")
    _add(f"cacti_sram_{sram_label(_cap)}_area_mm2", _mm2, "mm2", Scaling.SRAM_AREA, 22, None, _CACTI, "computed")
for _cap, _bits, _pj in CACTI_SRAM_NARROW:
    _add(f"cacti_sram_{sram_label(_cap)}_read_{_bits}b_pj", _pj, "pJ", Scaling.ENERGY, 20, None, _CACTI,
         "computed")

_add("aladdin_register_um2_per_bit", 5.98, "um2/bit", Scaling.LOGIC_AREA, 40, None, _ALADDIN, "secondary")
# Used as the cost of one 2:1-mux / zero-detect bit slice (32 slices per comparator) [inference].
_add("aladdin_comparator_32b_pj", 0.0295, "pJ", Scaling.ENERGY, 40, None, _ALADDIN, "secondary")
_add("aladdin_comparator_32b_um2", 71.0, "um2", Scaling.LOGIC_AREA, 40, None, _ALADDIN, "secondary")

# Midpoints of the 7/6/5 nm ranges (32 entries 3.2-4.0, 64 entries 4.5-5.5 fJ/bit).
_add("rf_read_32_entries_fj_per_bit", 3.6, "fJ/bit", Scaling.ENERGY, 7, None,
     _RF + "; midpoint of 3.2-4.0 at 7/6/5 nm", "secondary")
_add("rf_read_64_entries_fj_per_bit", 5.0, "fJ/bit", Scaling.ENERGY, 7, None,
     _RF + "; midpoint of 4.5-5.5 at 7/6/5 nm", "secondary")

# High-density 6T SRAM bitcells (docs/hwcost.md §1d): node nm -> um2.
SRAM_BITCELLS = (
    (7, 0.027, "TSMC N7 HD bitcell, Chang et al. ISSCC 2017 via WikiChip (docs/hwcost.md §1d)", "secondary"),
    (5, 0.021, "TSMC N5 HD bitcell, WikiChip 'IEDM 2022: Did We Just Witness The Death Of SRAM?' "
               "(docs/hwcost.md §1d)", "secondary"),
    (3, 0.021, "TSMC N3E HD bitcell, no shrink vs N5, same WikiChip article (docs/hwcost.md §1d)", "secondary"),
    (2, 0.0175, "TSMC N2 HD bitcell ~0.0175, tomshardware.com 'SRAM scaling isn't dead after all' "
                "(docs/hwcost.md §1d)", "secondary"),
)
for _nm, _um2, _src, _tag in SRAM_BITCELLS:
    _add(f"sram_bitcell_{_nm}nm_um2", _um2, "um2", Scaling.NONE, None, None, _src, _tag)
_add("sram_array_efficiency_large", 0.7, "ratio", Scaling.NONE, None, None,
     "bitcell area / macro area of a large macro: midpoint of 0.65-0.75 (docs/hwcost.md §1d rule)", "inference")

CONSTANTS: Mapping[str, Constant] = MappingProxyType({c.name: c for c in _REGISTRY})
"""Every constant by name (read-only)."""


def constant(name: str) -> Constant:
    """The constant called ``name``; a KeyError here is a programming error, not a user one."""
    return CONSTANTS[name]
