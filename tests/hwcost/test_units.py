"""Arithmetic units, SRAM macros and LUTs against hand computations from the constant tables."""

from __future__ import annotations

import math

import pytest

from hwcost.logic import bit_slices, int_adder, int_multiplier
from hwcost.lut import LutImpl, lut_cost
from hwcost.node import Technology, area_factor, at_node, energy_factor
from hwcost.sram import SMALLEST_MACRO_BITS, sram_macro

AT_45 = Technology(45, 0.9)
AT_7 = Technology(7, 0.8)
E_20_TO_7 = energy_factor(20, None, AT_7)  # CACTI's 22 nm runs are scaled as the 20 nm node


def test_horowitz_rows_are_exact_and_widths_between_are_power_laws():
    assert int_adder(8, AT_45).energy_pj == 0.03 and int_adder(32, AT_45).area_um2 == 137.0
    assert int_multiplier(8, 8, AT_45).energy_pj == 0.2 and int_multiplier(32, 32, AT_45).area_um2 == 3495.0
    # 24 bits: between the 16- and 32-bit rows, 0.05 * (0.1/0.05) ** log2(24/16)
    assert int_adder(24, AT_45).energy_pj == pytest.approx(0.05 * 2 ** math.log2(1.5), rel=1e-12)
    # 4 x 8: below the 8x8 row, the 8x8 -> 32x32 power law extended
    assert int_multiplier(4, 8, AT_45).energy_pj == pytest.approx(0.2 * (3.1 / 0.2) ** (math.log(0.5) / math.log(16)))
    assert int_multiplier(4, 8, AT_45).uses == {"horowitz_int_mult_8b_pj", "horowitz_int_mult_8b_um2",
                                                "horowitz_int_mult_32b_pj", "horowitz_int_mult_32b_um2"}


def test_bit_slices_are_comparator_bits():
    assert bit_slices(32, Technology(40)).area_um2 == pytest.approx(71.0)
    assert bit_slices(0, AT_7).energy_pj == 0 and not bit_slices(0, AT_7).uses


def test_buffer_read_matches_section_2f_item_2():
    """64 KB buffer at 7 nm: 5.327 pJ x 0.4266 = 2.27 pJ per 64-bit read, 35 fJ/bit."""
    macro = sram_macro(64 * 8192, 64, AT_7)
    assert macro.energy_pj == pytest.approx(5.327 * E_20_TO_7, rel=1e-12)
    assert macro.energy_pj == pytest.approx(2.27, abs=0.005)


def test_cacti_agrees_with_horowitz_within_20_percent():
    """docs/hwcost.md §1b cross-check: 8 KB and 1 MB 64-bit reads at 7 nm, CACTI vs Horowitz."""
    for capacity, name in ((8 << 10, "horowitz_sram_8KB_read_64b_pj"), (1 << 20, "horowitz_sram_1MB_read_64b_pj")):
        ratio = sram_macro(8 * capacity, 64, AT_7).energy_pj / at_node(name, AT_7)
        assert 0.8 < ratio < 1.2


def test_narrow_ports_and_capacity_interpolation():
    at_20 = Technology(20, 0.8)
    assert sram_macro(256 * 8, 8, at_20).energy_pj == pytest.approx(0.107, rel=1e-12)
    assert sram_macro(1024 * 8, 16, at_20).energy_pj == pytest.approx(0.281, rel=1e-12)
    # 512 B at 64 bits: geometric mean of the 256 B and 1 KB points
    assert sram_macro(512 * 8, 64, at_20).energy_pj == pytest.approx(math.sqrt(0.295 * 0.402), rel=1e-12)
    # 8 KB at 8 bits: the 1 KB width ratio 0.261/0.402 applied to the 8 KB 64-bit read
    assert sram_macro(8192 * 8, 8, at_20).energy_pj == pytest.approx(1.727 * 0.261 / 0.402, rel=1e-12)
    # beyond 1 MB: sqrt(capacity) energy, area per bit held
    four_mb, one_mb = sram_macro(32 << 20, 64, at_20), sram_macro(8 << 20, 64, at_20)
    assert four_mb.energy_pj == pytest.approx(2 * one_mb.energy_pj) and four_mb.area_um2 == pytest.approx(4 * one_mb.area_um2)


def test_sram_area_is_bitcell_over_efficiency_for_a_large_macro():
    """At 7 nm a 1 MB macro costs 0.027 um2 (N7 bitcell) / 0.7 (array efficiency) per bit."""
    assert sram_macro(8 << 20, 64, AT_7).area_um2 / (8 << 20) == pytest.approx(0.027 / 0.7, rel=1e-12)
    # below CACTI's smallest organisation a macro costs as much as 256 B
    assert sram_macro(100, 8, AT_7) == sram_macro(SMALLEST_MACRO_BITS, 8, AT_7)


def test_flop_lut_by_hand():
    """16 entries x 8 bits, 4 ports, 7 nm: RF read energy and register + mux area (docs/hwcost.md §1c)."""
    lut = lut_cost(16, 8, 4, SMALLEST_MACRO_BITS, AT_7)
    assert lut.impl is LutImpl.FLOPS and lut.bits == 128
    per_bit_fj = 3.6 * (5.0 / 3.6) ** math.log2(16 / 32)  # power law through the 32/64-entry points
    assert lut.unit.energy_pj == pytest.approx(8 * per_bit_fj * 1e-3, rel=1e-12)
    a40 = area_factor(40, AT_7)
    assert lut.unit.area_um2 == pytest.approx(128 * 5.98 * a40 + 4 * 15 * 8 * 71 / 32 * a40, rel=1e-12)


def test_lut_read_in_the_band_of_section_1c():
    """A 64 x 16-bit LUT read at 7 nm: 0.02-0.09 pJ (docs/hwcost.md §1c derived default)."""
    assert 0.02 <= lut_cost(64, 16, 1, SMALLEST_MACRO_BITS, AT_7).unit.energy_pj <= 0.09


@pytest.mark.parametrize(("entries", "ports", "impl"), [
    (16, 1, LutImpl.FLOPS), (64, 1, LutImpl.SRAM), (64, 256, LutImpl.FLOPS), (256, 16, LutImpl.SRAM),
])
def test_lut_takes_the_smaller_implementation(entries, ports, impl):
    lut = lut_cost(entries, 8, ports, SMALLEST_MACRO_BITS, AT_7)
    assert lut.impl is impl
    # raising the smallest allowed macro keeps a LUT in flops
    assert lut_cost(entries, 8, ports, 1 << 20, AT_7).impl is LutImpl.FLOPS
