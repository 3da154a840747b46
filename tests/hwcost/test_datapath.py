"""Per-candidate costs: decode paths, the energy split, batch reuse and the decode area."""

from __future__ import annotations

import dataclasses
import pytest

from hwcost import DecodePath, HardwareError, candidate_cost, datapath, decode_paths, preset
from hwcost.logic import int_adder
from hwcost.lut import LutImpl
from hwcost.sram import sram_macro
from quant import parse_candidate

HBM3 = preset("hbm3")


def test_decode_paths():
    assert decode_paths(parse_candidate("NF4sFP32@64")) == (DecodePath.LUT,)
    assert decode_paths(parse_candidate("E2M3sUE4M4")) == (DecodePath.DIRECT, DecodePath.LUT)
    assert decode_paths(parse_candidate("INT4sUE4M4")) == (DecodePath.DIRECT, DecodePath.LUT)
    with pytest.raises(HardwareError, match="NF4 has no fixed encoding"):
        candidate_cost(parse_candidate("NF4sFP32@64"), HBM3, DecodePath.DIRECT)


def test_mxfp4_split_by_hand():
    """E2M1sUE8M0@32 on HBM3 at 7 nm, batch 1, per weight."""
    cost = candidate_cost(parse_candidate("E2M1sUE8M0@32"), HBM3)
    e = cost.energy_pj_per_weight
    assert cost.decode is DecodePath.DIRECT and cost.bpw == 4.25 and cost.lut_bits == 0
    assert e.dram_pj == pytest.approx(4.25 * 3.97, rel=1e-12)
    assert e.buffer_pj == pytest.approx(4.25 * sram_macro(64 * 8192, 64, HBM3.tech).energy_pj / 64, rel=1e-12)
    # UE8M0: an 8-bit exponent add once per 32-weight block dot product
    assert e.scale_pj == pytest.approx(int_adder(8, HBM3.tech).energy_pj / 32, rel=1e-12)
    assert e.lut_pj == 0 and e.tensor_scale_pj == 0
    assert [i.key for i in cost.area] == ["mac_array:s2e8", "decoder:E2M1", "block_scale:UE8M0/32"]


def test_worked_magnitude_check_of_section_2f():
    """NVFP4 at 7 nm, batch 1: DRAM 4.5 x 3.97 pJ; LUT 0.02-0.09; MAC 0.02-0.05; scale < 0.005 pJ."""
    c = parse_candidate("E2M1sE4M3@16")
    direct = candidate_cost(c, HBM3).energy_pj_per_weight
    lut = candidate_cost(c, HBM3, DecodePath.LUT).energy_pj_per_weight
    assert direct.dram_pj == pytest.approx(17.865)
    assert 0.02 <= lut.lut_pj <= 0.09
    assert 0.02 <= direct.mac_pj <= 0.05 and 0.02 <= lut.mac_pj <= 0.05
    assert direct.scale_pj < 0.005 and lut.scale_pj < 0.005


def test_direct_decode_is_cheaper_than_a_lut_for_a_fixed_format():
    c = parse_candidate("E2M3sUE4M4")
    direct, lut = candidate_cost(c, HBM3), candidate_cost(c, HBM3, DecodePath.LUT)
    assert direct.bpw == lut.bpw == 6.5
    assert lut.lut_bits == 64 * 8 and lut.lut_impl is LutImpl.FLOPS
    assert direct.energy_pj_per_weight.total_pj < lut.energy_pj_per_weight.total_pj
    assert direct.decode_area_mm2 < lut.decode_area_mm2
    # the MAC multiplies E2M3's 4-bit significand, not the 8-bit LUT word
    assert datapath(c, HBM3).operand.significand_bits == 4
    assert datapath(c, HBM3, DecodePath.LUT).operand.significand_bits == 8


def test_batch_reuses_fetch_and_decode_not_mac_or_scale():
    c = parse_candidate("NF4sUE4M4")
    one = candidate_cost(c, HBM3).energy_pj_per_weight
    eight = candidate_cost(c, dataclasses.replace(HBM3, batch=8)).energy_pj_per_weight
    for f in ("dram_pj", "buffer_pj", "lut_pj"):
        assert getattr(eight, f) == pytest.approx(getattr(one, f) / 8)
    assert (eight.mac_pj, eight.scale_pj) == (one.mac_pj, one.scale_pj)


def test_area_scales_with_lanes_and_lut_ports():
    c = parse_candidate("NF4sUE4M4")
    shared = candidate_cost(c, dataclasses.replace(HBM3, lanes_per_lut_port=16))
    per_lane = candidate_cost(c, HBM3)
    shared_units, per_lane_units = ({i.key.split(":")[0]: i for i in cost.area} for cost in (shared, per_lane))
    assert per_lane_units["mac_array"] == shared_units["mac_array"] and per_lane_units["mac_array"].units == 256
    assert per_lane_units["lut"].area_um2 > 2 * shared_units["lut"].area_um2  # 256 vs 16 read ports
    assert per_lane_units["block_scale"].units == 256 // 16
    assert per_lane.decode_area_mm2 == pytest.approx(sum(i.area_um2 for i in per_lane.area) * 1e-6)


def test_per_tensor_scales_are_counted_as_area():
    layer = candidate_cost(parse_candidate("E4M3sUE8M0@layer"), HBM3)
    assert [i.key for i in layer.area] == ["mac_array:s4e8", "decoder:E4M3", "tensor_scale:UE8M0"]
    nvfp4 = candidate_cost(parse_candidate("E2M1sE4M3@16"), HBM3)
    assert "tensor_scale:fp32" in {i.key for i in nvfp4.area}


def test_a_dual_pair_doubles_the_lut_and_its_select_bit_is_the_lut_msb():
    single, pair = parse_candidate("NF4sUE4M4"), parse_candidate("NF4|INT4sUE4M4")
    assert candidate_cost(pair, HBM3).lut_bits == 2 * candidate_cost(single, HBM3).lut_bits == 2 * 16 * 8
    assert candidate_cost(pair, HBM3).bpw == 4.5625  # + 1 select bit / 16 (docs/formats.md §2.4)
    assert "lut:32x8b" in {i.key for i in candidate_cost(pair, HBM3).area}


def test_a_fixed_pair_decodes_directly_with_its_factor_folded_into_the_scale():
    """IF4-like E2M1|INT4: INT4 is rescaled by 6/7, one extra multiply per block op when decoded directly."""
    c = parse_candidate("E2M1|INT4sE4M3")
    assert decode_paths(c) == (DecodePath.DIRECT, DecodePath.LUT)
    direct, lut = candidate_cost(c, HBM3), candidate_cost(c, HBM3, DecodePath.LUT)
    keys = {i.key for i in direct.area}
    assert "decoder:E2M1+INT4" in keys and "block_scale:E4M3*s4+factor/16" in keys
    assert "block_scale:E4M3*s8/16" in {i.key for i in lut.area}  # through the LUT the factor is in the levels


def test_lut_format_sets_the_lut_word_and_the_mac_operand():
    c = parse_candidate("E2M3sUE4M4:lut=E4M3")
    dp = datapath(c, HBM3, DecodePath.LUT)
    assert dp.lut is not None and dp.lut.width_bits == 8
    assert (dp.operand.significand_bits, dp.operand.exponent_bits) == (4, 4)


def test_learned_codebooks_and_residuals_count_their_bits():
    assert candidate_cost(parse_candidate("NF4sUE4M4+res(0.5%)"), HBM3).bpw == pytest.approx(4.5 + 0.005 * 32)
    assert decode_paths(parse_candidate("NF4|DD4sUE4M4")) == (DecodePath.LUT,)


def test_record_has_the_json_fields():
    record = candidate_cost(parse_candidate("E2M3sUE4M4"), HBM3).record()
    assert {"candidate", "bpw", "energy_pj_per_weight", "decode_area_mm2", "lut_bits"} <= set(record)
    assert record["energy_pj_per_weight"] == pytest.approx(sum(record["energy_split_pj_per_weight"].values()))
