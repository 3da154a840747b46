"""The worked weight-traffic table of docs/hwcost.md §2f, and the memory presets."""

from __future__ import annotations

import pytest

from hwcost import MEMORY_PRESETS, WeightTensor, WeightTraffic, model_cost, preset
from quant import parse_candidate
from tests.hwcost.printed import agrees_with_printed

N_WEIGHTS = 8e9
# docs/hwcost.md §2f item 1, "Example, 8e9 weights": format, bits/w, GB/token, tok/s @ 3.35 TB/s,
# J/token @ 3.97 pJ/bit, tok/s @ LPDDR5X 68.3 GB/s; then the candidate that stores it, if one can.
SECTION_2F = [
    ("BF16", 16, "16.0", "209", "0.51", "4.3", None),
    ("FP8 per-channel", 8, "8.0", "419", "0.25", "8.5", "E4M3sFP32@layer"),
    ("MXFP8", 8.25, "8.25", "406", "0.26", "8.3", "E4M3sUE8M0@32"),
    ("FP6 E2M3 + UE4M4/16 + 1 select bit/16", 6.5625, "6.56", "510", "0.21", "10.4", None),
    ("MXFP6", 6.25, "6.25", "536", "0.20", "10.9", "E2M3sUE8M0@32"),
    ("NVFP4", 4.5, "4.5", "744", "0.14", "15.2", "E2M1sE4M3@16"),
    ("MXFP4", 4.25, "4.25", "788", "0.135", "16.1", "E2M1sUE8M0@32"),
    ("NF4 (FP32 absmax/64)", 4.5, "4.5", "744", "0.14", "15.2", "NF4sFP32@64"),
    ("NF4 + double quant", 4.127, "4.13", "812", "0.13", "16.5", None),
    ("4-bit code + 4-bit scale/16 + select bit", 4.3125, "4.31", "777", "0.137", "15.8", None),
]
# One 8e9-weight tensor: 1953125 x 4096 (4096 is a multiple of every block size used here).
EIGHT_BILLION = WeightTensor("w", 1_953_125, 4096)


@pytest.mark.parametrize("row", SECTION_2F, ids=[r[0] for r in SECTION_2F])
def test_worked_table_of_section_2f(row):
    _, bpw, gb, tok_hbm, joule, tok_lpddr, _ = row
    hbm = WeightTraffic(N_WEIGHTS * bpw, 1, MEMORY_PRESETS["HBM3"])
    lpddr = WeightTraffic(N_WEIGHTS * bpw, 1, MEMORY_PRESETS["LPDDR5X"])
    assert agrees_with_printed(hbm.bytes_per_token / 1e9, gb)
    assert agrees_with_printed(hbm.tokens_per_s, tok_hbm)
    assert agrees_with_printed(hbm.energy_j_per_token, joule)
    assert agrees_with_printed(lpddr.tokens_per_s, tok_lpddr)


@pytest.mark.parametrize("row", [r for r in SECTION_2F if r[6]], ids=[r[0] for r in SECTION_2F if r[6]])
def test_section_2f_through_candidates_and_model_cost(row):
    _, bpw, _, tok_hbm, joule, _, name = row
    c = parse_candidate(name)
    assert c.nominal_bpw == bpw
    cost = model_cost([(EIGHT_BILLION, c)], preset("hbm3"))
    assert agrees_with_printed(cost.tokens_per_s, tok_hbm)
    assert agrees_with_printed(cost.traffic.energy_j_per_token, joule)
    assert cost.energy_pj_per_token.dram_pj * 1e-12 == pytest.approx(cost.traffic.energy_j_per_token, rel=1e-12)
    # the decode datapath is at most 0.8% of the DRAM energy (docs/hwcost.md §2f "Worked magnitude check")
    e = cost.energy_pj_per_token
    assert (e.lut_pj + e.decoder_pj + e.scale_pj + e.mac_pj + e.tensor_scale_pj) / e.dram_pj < 0.008


def test_batch_shares_the_weight_fetch():
    one = WeightTraffic(8e9 * 4.5, 1, MEMORY_PRESETS["HBM3"])
    eight = WeightTraffic(8e9 * 4.5, 8, MEMORY_PRESETS["HBM3"])
    assert eight.tokens_per_s == pytest.approx(8 * one.tokens_per_s)
    assert eight.energy_j_per_token == pytest.approx(one.energy_j_per_token / 8)


@pytest.mark.parametrize(("name", "gbyte_per_s", "pj_per_bit"), [
    ("HBM3", 3350, 3.97), ("HBM3E", 4800, 3.44), ("LPDDR5X", 68.264, 8.0), ("GDDR6", 768, 7.5), ("GDDR7", 1536, 6.0),
])
def test_memory_presets(name, gbyte_per_s, pj_per_bit):
    m = MEMORY_PRESETS[name]
    assert (m.bandwidth_gbyte_per_s, m.energy_pj_per_bit) == (gbyte_per_s, pj_per_bit)
    assert m.bandwidth_source and m.energy_source
    assert preset(name.lower()).memory is m
