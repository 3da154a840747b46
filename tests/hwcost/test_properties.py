"""Properties the cost model must keep on any hardware (hypothesis)."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hwcost import Technology, WeightTensor, candidate_cost, decode_paths, model_cost, preset
from hwcost.lut import lut_cost
from hwcost.sram import SMALLEST_MACRO_BITS
from quant import parse_candidate

ATOMS = ("E2M1", "E2M3", "E3M2", "E4M3", "INT4", "INT8", "NF4", "NF4|INT4", "E2M1|INT4", "DD4")
CANDIDATES = ("E2M1sE4M3@16", "E2M1sUE8M0@32", "E2M3sUE4M4", "E4M3sUE8M0@32", "E4M3sUE8M0@layer",
              "NF4sFP32@64", "NF4|INT4sUE4M4", "INT8sUE4M4@64", "E2M1|INT4sE4M3", "NF4sUE4M4+res(1%)")

technologies = st.builds(Technology, node_nm=st.floats(2, 90), vdd_v=st.floats(0.6, 1.1))
hardware = st.builds(
    lambda memory, tech, lanes, per_port, batch, word, exponent: dataclasses.replace(
        preset(memory), tech=tech, lanes=lanes, lanes_per_lut_port=per_port, batch=batch, lut_output_bits=word,
        lut_output_exponent_bits=min(exponent, word - 2)),
    st.sampled_from(["hbm3", "hbm3e", "lpddr5x", "gddr6", "gddr7"]), technologies, st.integers(1, 1024),
    st.integers(1, 64), st.integers(1, 64), st.integers(4, 16), st.integers(0, 4),
)
tensors = st.builds(WeightTensor, name=st.just("w"), out_features=st.integers(1, 8192),
                    in_features=st.sampled_from([64, 128, 4096, 14336]))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(CANDIDATES), st.sampled_from(CANDIDATES), tensors, hardware)
def test_more_bits_never_lower_dram_energy_or_raise_tokens_per_s(a, b, tensor, hw):
    costs = sorted((model_cost([(tensor, parse_candidate(n))], hw) for n in (a, b)),
                   key=lambda m: m.tensors[0].bpw)
    fewer, more = costs
    assert fewer.energy_pj_per_token.dram_pj <= more.energy_pj_per_token.dram_pj
    assert fewer.tokens_per_s >= more.tokens_per_s


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 512), st.integers(2, 512), st.integers(2, 32), st.integers(2, 32), st.integers(1, 256),
       st.integers(1, 256), technologies, st.integers(SMALLEST_MACRO_BITS, 1 << 16))
def test_a_larger_lut_never_has_less_area(entries_a, entries_b, width_a, width_b, ports_a, ports_b, tech, min_macro):
    small = lut_cost(min(entries_a, entries_b), min(width_a, width_b), min(ports_a, ports_b), min_macro, tech)
    large = lut_cost(max(entries_a, entries_b), max(width_a, width_b), max(ports_a, ports_b), min_macro, tech)
    assert small.unit.area_um2 <= large.unit.area_um2


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ATOMS), st.sampled_from(["16", "32", "64", "layer"]), st.sampled_from(["", ":tnone"]),
       hardware)
def test_a_ue8m0_scale_never_costs_more_than_ue4m4(atom, block, option, hw):
    assume(block != "layer" or "|" not in atom)  # pairs select per block
    ue8m0, ue4m4 = (parse_candidate(f"{atom}s{scale}@{block}{option if block != 'layer' else ''}")
                    for scale in ("UE8M0", "UE4M4"))
    for path in decode_paths(ue8m0):
        cheap, dear = candidate_cost(ue8m0, hw, path), candidate_cost(ue4m4, hw, path)
        assert cheap.energy_pj_per_weight.total_pj <= dear.energy_pj_per_weight.total_pj
        assert cheap.energy_pj_per_weight.scale_pj <= dear.energy_pj_per_weight.scale_pj
        assert cheap.decode_area_mm2 <= dear.decode_area_mm2


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(CANDIDATES), hardware)
def test_every_cost_is_finite_and_positive(name, hw):
    c = parse_candidate(name)
    for path in decode_paths(c):
        cost = candidate_cost(c, hw, path)
        values = [*cost.energy_pj_per_weight.record().values(), cost.decode_area_mm2, cost.bpw]
        assert all(math.isfinite(v) and v >= 0 for v in values)
        assert cost.energy_pj_per_weight.mac_pj > 0 and cost.decode_area_mm2 > 0
