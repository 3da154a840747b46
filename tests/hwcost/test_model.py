"""Whole-model costs: which weights a decode step fetches, and totals under an assignment."""

from __future__ import annotations

import dataclasses

import pytest

from hwcost import DecodePath, WeightTensor, datapath, model_cost, preset, shared_area, tensor_cost, weight_tensors
from models.catalog import get_model
from quant import parse_candidate

HBM3 = preset("hbm3")
NVFP4 = parse_candidate("E2M1sE4M3@16")


def test_llama_8b_bytes_per_token_by_hand():
    """Llama-3.1-8B's config.json: 32 layers of q/k/v/o + gate/up/down, an untied 128256 x 4096 lm_head;
    the embedding is a lookup of one 4096-weight row. NVFP4: 4.5 bit/weight + 32 bits per tensor."""
    per_layer = 4096 * (4096 + 1024 + 1024 + 4096) + 3 * 14336 * 4096
    embed_numel = lm_head = 128256 * 4096
    bits = 4.5 * (32 * per_layer + lm_head) + 32 * (7 * 32 + 1) + 4096 * (4.5 + 32 / embed_numel)
    cost = model_cost([(t, NVFP4) for t in weight_tensors(get_model("llama-3.1-8b"))], HBM3)
    assert cost.bytes_per_token == pytest.approx(bits / 8, rel=1e-12)
    assert cost.tokens_per_s == pytest.approx(3350e9 / (bits / 8), rel=1e-12)
    assert cost.energy_pj_per_token.dram_pj == pytest.approx(bits * 3.97, rel=1e-12)
    assert cost.stored_bytes == pytest.approx((4.5 * (32 * per_layer + 2 * lm_head) + 32 * 226) / 8, rel=1e-12)


def test_tied_embedding_is_the_lm_head_matmul():
    tensors = {t.name: t for t in weight_tensors(get_model("llama-3.2-1b"))}
    embed = tensors["model.embed_tokens.weight"]
    assert not embed.lookup and embed.macs_per_token == 128256 * 2048
    untied = {t.name: t for t in weight_tensors(get_model("llama-3.1-8b"))}["model.embed_tokens.weight"]
    assert untied.lookup and untied.macs_per_token == 0 and untied.weights_per_step(4) == 4 * 4096


def test_routed_experts_fetch_the_experts_hit():
    experts = next(t for t in weight_tensors(get_model("mixtral-8x7b")) if t.name.endswith("experts.*.w1.weight"))
    assert (experts.count, experts.active_copies) == (8, 2)
    assert experts.weights_per_step(1) == pytest.approx(2 * experts.numel)
    # batch 4, uniform routing: 8 * (1 - (6/8)**4) distinct experts expected
    assert experts.weights_per_step(4) == pytest.approx(8 * (1 - 0.75**4) * experts.numel)
    assert experts.macs_per_token == 2 * experts.numel


def test_tensor_scale_is_counted_per_output():
    t = WeightTensor("w", 4096, 1024)
    cost = tensor_cost(t, NVFP4, HBM3)
    per_output = datapath(NVFP4, HBM3).tensor_scale.energy_pj
    assert cost.energy_pj_per_token.tensor_scale_pj == pytest.approx(4096 * per_output)
    assert cost.bpw == 4.5 + 32 / (4096 * 1024)


def test_sparse_entries_are_fetched():
    t = WeightTensor("w", 1000, 1024)
    res = parse_candidate("NF4sUE4M4+res(1%)")
    assert tensor_cost(t, res, HBM3).bpw == pytest.approx(4.5 + 32 / t.numel + round(0.01 * t.numel) * 32 / t.numel)
    opq = parse_candidate("NF4sUE4M4+opq(0.95)")
    assert tensor_cost(t, opq, HBM3, sparse_entries=100).bpw > tensor_cost(t, opq, HBM3).bpw


def test_decode_area_is_paid_once_per_unit():
    tensors = [WeightTensor("a", 64, 64), WeightTensor("b", 64, 64), WeightTensor("c", 64, 64)]
    mxfp4 = parse_candidate("E2M1sUE8M0@32")
    one = model_cost([(t, NVFP4) for t in tensors], HBM3)
    assert one.area == datapath(NVFP4, HBM3).area
    mixed = model_cost([(tensors[0], NVFP4), (tensors[1], mxfp4), (tensors[2], NVFP4)], HBM3)
    units = shared_area([*datapath(NVFP4, HBM3).area, *datapath(mxfp4, HBM3).area])
    assert mixed.area == units
    # the E2M1 decoder and the 2-bit-significand MAC array are shared; the scale units are not
    assert len(units) == len(datapath(NVFP4, HBM3).area) + len(datapath(mxfp4, HBM3).area) - 2
    assert mixed.decode_area_mm2 == pytest.approx(sum(i.area_um2 for i in units) * 1e-6)


def test_batch_divides_traffic_and_fetch_energy():
    tensors = weight_tensors(get_model("smollm2-135m"))
    one = model_cost([(t, NVFP4) for t in tensors], HBM3)
    four = model_cost([(t, NVFP4) for t in tensors], dataclasses.replace(HBM3, batch=4))
    assert four.bytes_per_token == pytest.approx(one.bytes_per_token / 4, rel=1e-3)  # embedding rows: 4 lookups
    assert four.energy_pj_per_token.mac_pj == pytest.approx(one.energy_pj_per_token.mac_pj)


def test_forced_decode_path_applies_to_every_candidate():
    t = WeightTensor("w", 64, 64)
    cost = model_cost([(t, NVFP4)], HBM3, DecodePath.LUT)
    assert cost.tensors[0].decode is DecodePath.LUT and cost.energy_pj_per_token.lut_pj > 0
    assert set(cost.record()) >= {"bytes_per_token", "tokens_per_s", "energy_j_per_token", "decode_area_mm2"}
