"""The hardware's LUT word format: one value set for the measured error, the bpw and the LUT cost;
LUT SRAM per layer as a constraint that excludes candidates."""

from __future__ import annotations

import pytest

from dse.fit import fit_to_hardware, lut_sram_bits
from hwcost import HardwareError, datapath
from hwcost.datapath import lut_word_format, with_hardware_lut
from hwcost.hardware import hardware_from_mapping, preset
from quant import parse_candidate


@pytest.mark.parametrize(("bits", "name"), [(4, "E2M1"), (6, "E2M3"), (7, "E3M3"), (8, "E4M3"), (16, "E5M10")])
def test_stand_in_of_each_lut_word_width(bits, name):
    hw = hardware_from_mapping({"memory": "hbm3", "lut_output_bits": bits}, "hw.yaml")
    fmt = lut_word_format(hw)
    assert fmt.name == name and fmt.code_bits == bits
    assert lut_word_format(hardware_from_mapping({"memory": "hbm3", "lut_output_bits": 32}, "hw.yaml")) is None


def test_explicit_lut_format_sets_the_width_and_is_checked():
    hw = hardware_from_mapping({"memory": "hbm3", "lut_format": "e2m3"}, "hw.yaml")
    assert hw.lut_format == "E2M3" and hw.lut_output_bits == 6 and lut_word_format(hw).name == "E2M3"
    for fields, text in (({"lut_format": "E2M3", "lut_output_bits": 8}, "6-bit codes but lut_output_bits is 8"),
                         ({"lut_format": "DD4"}, "learned per tensor"), ({"lut_format": 8}, "atom name"),
                         ({"lut_format": "E9M9"}, "float atom")):
        with pytest.raises(HardwareError, match=text):
            hardware_from_mapping({"memory": "hbm3", **fields}, "hw.yaml")


def test_lut_decoded_candidates_take_the_hardware_word():
    hw = preset("lpddr5x")  # 8-bit LUT words: E4M3
    assert with_hardware_lut(parse_candidate("NF4|DD4sUE4M4"), hw).name == "NF4|DD4sUE4M4:lut=E4M3"
    assert with_hardware_lut(parse_candidate("DD4sUE4M4+res(1%)"), hw).name == "DD4sUE4M4:lut=E4M3+res(1%)"
    for kept in ("E2M1|INT4sE4M3", "SFP4sE4M3", "NF4sUE4M4:lut=E2M3"):  # direct decode, or its own lut=
        assert with_hardware_lut(parse_candidate(kept), hw).name == kept
    c = with_hardware_lut(parse_candidate("DD4sUE4M4"), hw)
    # the bpw counts the same 8-bit words the LUT is costed with
    assert c.bits(1 << 20).lut_bits == 16 * 8 + 8 and datapath(c, hw).lut.width_bits == 8


def test_one_lut_image_per_grid_and_the_sram_constraint():
    hw = preset("lpddr5x")
    need = {n: lut_sram_bits(with_hardware_lut(parse_candidate(n), hw), hw)
            for n in ("DD4sUE4M4", "NF4|DD4sUE4M4", "DD4|DD4sUE4M4", "E2M1sE4M3")}
    assert need == {"DD4sUE4M4": 16 * 8, "NF4|DD4sUE4M4": 32 * 8, "DD4|DD4sUE4M4": 32 * 8, "E2M1sE4M3": 0}
    fitted = fit_to_hardware([parse_candidate(n) for n in need], hw, 128)
    assert [c.name for c in fitted.candidates] == ["DD4sUE4M4:lut=E4M3", "E2M1sE4M3"]
    assert fitted.excluded == ("NF4|DD4sUE4M4:lut=E4M3: needs 256 bits of LUT SRAM per layer > 128",
                               "DD4|DD4sUE4M4:lut=E4M3: needs 256 bits of LUT SRAM per layer > 128")
    assert len(fit_to_hardware([parse_candidate(n) for n in need], hw, None).candidates) == 4
