"""Every number behind a cost, with its source: the constants used, the scaling applied, the hardware."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from hwcost.constants import CONSTANTS, SRAM_BITCELLS, Scaling, constant
from hwcost.hardware import DEFAULT_SOURCES, Hardware
from hwcost.node import (
    BELOW_7NM_SOURCE, STILLMAKER_SOURCE, area_factor, at_node, energy_factor, sram_area_factor,
    sram_bitcell_um2,
)


@dataclass(frozen=True)
class ExplainRow:
    """One number and where it comes from."""

    name: str
    value: float
    unit: str
    source: str
    at_target: float | None = None
    """The value scaled to the target node (constants only)."""


_UNITS = {"node_nm": "nm", "vdd_v": "V", "lanes": "lanes", "lanes_per_lut_port": "lanes", "batch": "tokens",
          "buffer_kib": "KiB", "sram_bitcell_um2": "um2"}
"""Units of the hardware fields that are not ``*_bits`` (the others are factors)."""


def _constant_rows(uses: Iterable[str], hw: Hardware) -> list[ExplainRow]:
    names = set(uses)
    if any(CONSTANTS[n].scaling is Scaling.SRAM_AREA for n in names):
        # the SRAM area factor reads the bitcell table and the large-array efficiency
        names |= {f"sram_bitcell_{nm}nm_um2" for nm, *_ in SRAM_BITCELLS} | {"sram_array_efficiency_large",
                                                                             "cacti_sram_1MB_area_mm2"}
    rows = []
    for name in sorted(names):
        c = constant(name)
        where = "" if c.node_nm is None else f", scaled from {c.node_nm:g} nm" + (f" {c.vdd_v:g} V" if c.vdd_v else "")
        rows.append(ExplainRow(name, c.value, c.unit + where, f"{c.source} [{c.tag}]", at_node(name, hw.tech)))
    return rows


def _scaling_rows(uses: Iterable[str], hw: Hardware) -> list[ExplainRow]:
    tech = hw.tech
    below = f"; {BELOW_7NM_SOURCE}" if tech.node_nm < 7 else ""
    energy_src = (f"{hw.origin}: energy_factor_vs_45nm_0v9" if tech.energy_factor_vs_45nm_0v9 is not None
                  else STILLMAKER_SOURCE + below)
    area_src = (f"{hw.origin}: area_factor_vs_45nm" if tech.area_factor_vs_45nm is not None
                else STILLMAKER_SOURCE + below)
    target = f"{tech.node_nm:g} nm {tech.vdd_v:g} V"
    rows = {}
    for c in (constant(n) for n in uses):
        if c.scaling is Scaling.ENERGY and c.node_nm is not None:
            vdd = f"{c.vdd_v:g} V" if c.vdd_v else "same Vdd"
            rows[f"energy {c.node_nm:g} nm {vdd} -> {target}"] = ExplainRow(
                f"energy factor {c.node_nm:g} nm {vdd} -> {target}",
                energy_factor(c.node_nm, c.vdd_v, tech), "x", energy_src)
        elif c.scaling is Scaling.LOGIC_AREA and c.node_nm is not None:
            rows[f"area {c.node_nm:g}"] = ExplainRow(
                f"logic area factor {c.node_nm:g} nm -> {tech.node_nm:g} nm", area_factor(c.node_nm, tech), "x",
                area_src)
        elif c.scaling is Scaling.SRAM_AREA:
            bitcell_src = (f"{hw.origin}: sram_bitcell_um2" if tech.sram_bitcell_um2 is not None else
                           "sram_bitcell_*nm_um2 table, log-log in the node; 22 nm implied by CACTI's 1 MB "
                           "macro x sram_array_efficiency_large [inference]")
            rows["bitcell"] = ExplainRow(f"SRAM bitcell at {tech.node_nm:g} nm", sram_bitcell_um2(tech), "um2",
                                         bitcell_src)
            rows["sram area"] = ExplainRow("SRAM area factor 22 nm CACTI -> target", sram_area_factor(tech), "x",
                                           "bitcell at target / bitcell implied by CACTI 22 nm (docs/hwcost.md §1d)")
    return list(rows.values())


def _hardware_rows(hw: Hardware) -> list[ExplainRow]:
    m = hw.memory
    rows = [
        ExplainRow(f"memory {m.name} bandwidth", m.bandwidth_gbyte_per_s, "GB/s", m.bandwidth_source),
        ExplainRow(f"memory {m.name} energy", m.energy_pj_per_bit, "pJ/bit", m.energy_source),
    ]
    values = {**dataclasses.asdict(hw.tech), **{f: getattr(hw, f) for f in DEFAULT_SOURCES if hasattr(hw, f)}}
    for field, value in values.items():
        if value is None:
            continue  # an override not given: the scaling rows say what is used instead
        source = f"{hw.origin}: {field}" if field in hw.overridden else DEFAULT_SOURCES[field]
        unit = "bit" if field.endswith("_bits") else _UNITS.get(field, "x")
        rows.append(ExplainRow(field, float(value), unit, source))
    return rows


def explain(uses: Iterable[str], hw: Hardware) -> tuple[ExplainRow, ...]:
    """Rows for the hardware parameters, the node scaling and every constant in ``uses``."""
    used = set(uses)
    return (*_hardware_rows(hw), *_scaling_rows(sorted(used), hw), *_constant_rows(used, hw))
