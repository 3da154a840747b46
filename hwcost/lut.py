"""The decode LUT: codebook entries x LUT output width, as a flop array or an SRAM macro, with read ports.

A flop/register array stores every bit once and gives each read port its own entries:1 mux; its
read energy is the register-file estimate of docs/hwcost.md §1c, a power law in the entry count
through the 32- and 64-entry points. An SRAM macro (CACTI fit, :mod:`hwcost.sram`) is padded to
the smallest macro allowed and copied once per read port, as no multi-port SRAM is tabulated
[inference]. The cheaper of the two in area is used: tiny LUTs end up as flops and larger ones as
SRAM, and the area never drops as the LUT grows (the area of each option grows with the LUT).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hwcost.interp import loglog
from hwcost.logic import bit_slices
from hwcost.node import Technology, at_node
from hwcost.part import Part
from hwcost.sram import sram_macro

_RF_POINTS = ((32, "rf_read_32_entries_fj_per_bit"), (64, "rf_read_64_entries_fj_per_bit"))
_REGISTER = "aladdin_register_um2_per_bit"


class LutImpl(enum.Enum):
    """How the LUT is built."""

    FLOPS = "flops"
    """Register array + one entries:1 mux per read port."""
    SRAM = "sram"
    """One SRAM macro per read port."""


@dataclass(frozen=True)
class LutCost:
    """A LUT holding ``entries`` words of ``width_bits``, read through ``ports`` ports."""

    entries: int
    width_bits: int
    ports: int
    impl: LutImpl
    unit: Part
    """Energy of one read; area of the whole LUT (every port)."""

    @property
    def bits(self) -> int:
        return self.entries * self.width_bits


def _flops(entries: int, width_bits: int, ports: int, tech: Technology) -> Part:
    per_bit_fj = loglog([(n, at_node(name, tech)) for n, name in _RF_POINTS], entries)
    storage_um2 = entries * width_bits * at_node(_REGISTER, tech)
    mux = bit_slices((entries - 1) * width_bits, tech)  # a tree of (entries - 1) 2:1 muxes per output bit
    return Part(
        width_bits * per_bit_fj * 1e-3,
        storage_um2 + ports * mux.area_um2,
        frozenset(name for _, name in _RF_POINTS) | {_REGISTER} | mux.uses,
    )


def _sram(bits: int, width_bits: int, ports: int, min_macro_bits: int, tech: Technology) -> Part:
    macro = sram_macro(max(bits, min_macro_bits), width_bits, tech)
    return Part(macro.energy_pj, ports * macro.area_um2, macro.uses)


def lut_cost(entries: int, width_bits: int, ports: int, min_macro_bits: int, tech: Technology) -> LutCost:
    """The cheaper (in area) of a flop array and SRAM macros for this LUT."""
    flops = _flops(entries, width_bits, ports, tech)
    sram = _sram(entries * width_bits, width_bits, ports, min_macro_bits, tech)
    if sram.area_um2 < flops.area_um2:
        return LutCost(entries, width_bits, ports, LutImpl.SRAM, sram)
    return LutCost(entries, width_bits, ports, LutImpl.FLOPS, flops)
