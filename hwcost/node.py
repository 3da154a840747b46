"""Technology-node scaling: Stillmaker & Baas for logic energy and area, bitcell tables for SRAM area.

Stillmaker & Baas, "Scaling equations for the accurate prediction of CMOS device performance from
180nm to 7nm", Integration 58 (2017) 74-81, DOI 10.1016/j.vlsi.2017.02.002. The tables are the ones
implemented in Accelergy-Project/hwcomponents:hwcomponents/scaling/techscaling.py: energy per
operation at node n is a quadratic a*Vdd**2 + b*Vdd + c, and area follows a factor table. Between
tabulated nodes we interpolate log-log in the node; below 7 nm we extrapolate as hwcomponents does
(energy ~ sqrt(node), area ~ node, energy flat below 1 nm). Both are extrapolations [inference].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwcost.constants import CONSTANTS, Constant, Scaling, constant
from hwcost.interp import loglog

STILLMAKER_SOURCE = (
    "Stillmaker & Baas, Integration 58 (2017) 74-81, DOI 10.1016/j.vlsi.2017.02.002, as tabulated in "
    "Accelergy-Project/hwcomponents:hwcomponents/scaling/techscaling.py (docs/hwcost.md §1g)"
)
BELOW_7NM_SOURCE = "below 7 nm: energy ~ sqrt(node), area ~ node, IRDS 2016/2017 as in hwcomponents [inference]"

# Energy per operation: (a, b, c) of a*Vdd**2 + b*Vdd + c, per node (nm).
_ENERGY_QUADRATIC = {
    130: (7.171, -6.709, 2.904),
    90: (4.762, -4.781, 2.092),
    65: (3.755, -4.398, 1.975),
    45: (1.103, -0.362, 0.2767),
    32: (0.9559, -0.7823, 0.471),
    20: (0.373, -0.1582, 0.04104),
    16: (0.2958, -0.1241, 0.03024),
    14: (0.2363, -0.09675, 0.02239),
    10: (0.2068, -0.09311, 0.02375),
    7: (0.1776, -0.09097, 0.02447),
}
# Area relative to 45 nm (the 45 nm row of AREA_SCALING).
_AREA_VS_45NM = {130: 6.4, 90: 2.8, 65: 1.5, 45: 1.0, 32: 0.46, 20: 0.21, 16: 0.19, 14: 0.17, 10: 0.1, 7: 0.059}

MIN_NODE_NM = 1.0
MAX_NODE_NM = 130.0
_SMALLEST_TABLE_NM = 7
_HOROWITZ_NODE_NM, _HOROWITZ_VDD_V = 45, 0.9


@dataclass(frozen=True)
class Technology:
    """The target process: node, supply, and optional overrides of the scaling rules."""

    node_nm: float = 7.0
    vdd_v: float = 0.8
    energy_factor_vs_45nm_0v9: float | None = None
    """Override: energy per operation at the target relative to 45 nm at 0.9 V (Horowitz's conditions)."""
    area_factor_vs_45nm: float | None = None
    """Override: logic area at the target relative to 45 nm."""
    sram_bitcell_um2: float | None = None
    """Override: SRAM bitcell area at the target."""


def _at_node(table: dict[int, float], node_nm: float) -> float:
    """Value of a per-node ``table`` at ``node_nm``, log-log interpolated between its nodes."""
    return loglog(sorted(table.items()), node_nm)


def _energy_per_op(node_nm: float, vdd_v: float) -> float:
    """Stillmaker energy per operation (arbitrary units; only ratios are meaningful)."""
    scale = 1.0
    if node_nm < _SMALLEST_TABLE_NM:
        scale = math.sqrt(max(node_nm, 1.0) / _SMALLEST_TABLE_NM)
        node_nm = _SMALLEST_TABLE_NM
    at_vdd = {n: a * vdd_v**2 + b * vdd_v + c for n, (a, b, c) in _ENERGY_QUADRATIC.items()}
    return scale * _at_node(at_vdd, node_nm)


def _area_vs_45nm(node_nm: float) -> float:
    if node_nm < _SMALLEST_TABLE_NM:
        return _AREA_VS_45NM[_SMALLEST_TABLE_NM] * node_nm / _SMALLEST_TABLE_NM
    return _at_node(_AREA_VS_45NM, node_nm)


def energy_factor(from_nm: float, from_vdd_v: float | None, tech: Technology) -> float:
    """Multiply an energy measured at (from_nm, from_vdd_v) by this to get it at ``tech``.

    ``from_vdd_v`` None means the source gives no voltage: scale at the target's Vdd.
    """
    source = _energy_per_op(from_nm, tech.vdd_v if from_vdd_v is None else from_vdd_v)
    if tech.energy_factor_vs_45nm_0v9 is not None:
        target = tech.energy_factor_vs_45nm_0v9 * _energy_per_op(_HOROWITZ_NODE_NM, _HOROWITZ_VDD_V)
    else:
        target = _energy_per_op(tech.node_nm, tech.vdd_v)
    return target / source


def area_factor(from_nm: float, tech: Technology) -> float:
    """Multiply a logic area measured at ``from_nm`` by this to get it at ``tech``."""
    target = tech.area_factor_vs_45nm if tech.area_factor_vs_45nm is not None else _area_vs_45nm(tech.node_nm)
    return target / _area_vs_45nm(from_nm)


def _implied_cacti_bitcell_um2() -> float:
    """Bitcell of the CACTI 22 nm runs: 1 MB macro area per bit x large-array efficiency [inference]."""
    mm2 = constant("cacti_sram_1MB_area_mm2").value
    return mm2 * 1e6 / (8 << 20) * constant("sram_array_efficiency_large").value


def sram_bitcell_um2(tech: Technology) -> float:
    """HD SRAM bitcell area at the target node.

    Between 2 nm and 7 nm: the foundry bitcell table, log-log in the node. From 7 nm to 22 nm:
    interpolated towards the bitcell implied by the CACTI 22 nm runs. Above 22 nm no bitcell is
    tabulated, so the 22 nm value follows logic area scaling [inference]. Below 2 nm: the 2 nm cell
    (SRAM stopped shrinking after N5, docs/hwcost.md §1d).
    """
    if tech.sram_bitcell_um2 is not None:
        return tech.sram_bitcell_um2
    table = {nm: CONSTANTS[f"sram_bitcell_{nm}nm_um2"].value for nm in (7, 5, 3, 2)}
    table[22] = _implied_cacti_bitcell_um2()
    node = max(tech.node_nm, 2.0)
    if node > 22:
        return table[22] * _area_vs_45nm(node) / _area_vs_45nm(22)
    # 5 nm -> 3 nm (N3E) does not shrink; _loglog needs no special case for equal values.
    return _at_node(table, node)


def sram_area_factor(tech: Technology) -> float:
    """Multiply a CACTI 22 nm macro area by this: the bitcell ratio, never logic scaling."""
    return sram_bitcell_um2(tech) / _implied_cacti_bitcell_um2()


def scale_factor(c: Constant, tech: Technology) -> float:
    """The factor that takes constant ``c`` from its own node to ``tech``."""
    if c.scaling is Scaling.ENERGY:
        assert c.node_nm is not None
        return energy_factor(c.node_nm, c.vdd_v, tech)
    if c.scaling is Scaling.LOGIC_AREA:
        assert c.node_nm is not None
        return area_factor(c.node_nm, tech)
    if c.scaling is Scaling.SRAM_AREA:
        return sram_area_factor(tech)
    return 1.0


def at_node(name: str, tech: Technology) -> float:
    """The constant ``name`` scaled to ``tech``."""
    c = constant(name)
    return c.value * scale_factor(c, tech)
