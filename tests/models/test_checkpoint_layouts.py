"""Real checkpoint quirks (issue 14, kinds 3-6), on tiny checkpoints built here by hand.

Every right value is computed in the test from the arrays it wrote: transposes and expert slices
by numpy indexing, FP8 decoding by ml_dtypes (not the reader's own table), errors by
``quant.measure`` on those independently built matrices.
"""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

import quant
from dse.cli import main
from models.sources import open_source
from models.errors import SourceError
from tests.models.files import to_bf16_bits, write_safetensors, write_sharded

RNG = np.random.default_rng(1414)
MXFP4 = quant.parse_candidate("E2M1sUE8M0@32")


def _config(directory, **fields):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(fields))


def _measure_json(capsys, spec, candidate="E2M1sUE8M0@32"):
    assert main(["measure", candidate, "--weights", str(spec), "--json", "--sample", "off"]) == 0
    return {r["tensor"]: r for r in json.loads(capsys.readouterr().out)}


def _one_line(capsys, args):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("dse: error: ") and err.count("\n") == 1, err
    return err[len("dse: error: "):-1]


# --- kind 3: GPT-2 Conv1D weights are stored (in, out) --------------------------------------------

N_EMBD = 64
GPT2 = {  # stored (in, out), as transformers' Conv1D keeps them
    "h.0.attn.c_attn.weight": RNG.standard_normal((N_EMBD, 3 * N_EMBD)).astype(np.float32),
    "h.0.attn.c_proj.weight": RNG.standard_normal((N_EMBD, N_EMBD)).astype(np.float32),
    "h.0.mlp.c_fc.weight": RNG.standard_normal((N_EMBD, 4 * N_EMBD)).astype(np.float32),
    "h.0.mlp.c_proj.weight": RNG.standard_normal((4 * N_EMBD, N_EMBD)).astype(np.float32),
}
# GPT-2-like weights: each input row has its own scale, so blocking the wrong axis mixes scales.
for _w in GPT2.values():
    _w *= np.exp(RNG.standard_normal((_w.shape[0], 1))).astype(np.float32)
WTE = RNG.standard_normal((96, N_EMBD)).astype(np.float32)  # embedding (vocab, n_embd): rows are vectors


def _gpt2(tmp_path, **config):
    directory = tmp_path / "gpt2"
    directory.mkdir()
    tensors = {name: ("F32", w) for name, w in GPT2.items()}
    tensors["wte.weight"] = ("F32", WTE)
    tensors["h.0.ln_1.weight"] = ("F32", np.ones(N_EMBD, np.float32))
    write_safetensors(directory / "model.safetensors", tensors)
    if config:
        _config(directory, **config)
    return directory


@pytest.mark.parametrize("spec", ["dir", "file"])
def test_gpt2_conv1d_weights_are_transposed_to_out_in(tmp_path, spec):
    directory = _gpt2(tmp_path, model_type="gpt2", n_embd=N_EMBD, n_inner=None)
    source = open_source(str(directory if spec == "dir" else directory / "model.safetensors"))
    infos = {i.name: i for i in source.infos()}
    for name, stored in GPT2.items():
        assert infos[name].shape == stored.T.shape
        assert "Conv1D" in infos[name].layout
        np.testing.assert_array_equal(source.load(name), stored.T)
    assert infos["wte.weight"].shape == WTE.shape and infos["wte.weight"].layout == "(out, in)"
    np.testing.assert_array_equal(source.load("wte.weight"), WTE)
    assert "GPT-2 Conv1D" in source.label and "4 tensors" in source.label


def test_gpt2_mxfp4_error_is_measured_along_the_input(tmp_path, capsys):
    directory = _gpt2(tmp_path, model_type="gpt2", n_embd=N_EMBD)
    rows = _measure_json(capsys, directory)
    for name, stored in GPT2.items():
        want = quant.measure(np.ascontiguousarray(stored.T), MXFP4)
        wrong = quant.measure(stored, MXFP4)
        assert rows[name]["rel_mse"] == pytest.approx(want.rel_mse, rel=1e-12)
        assert abs(wrong.rel_mse / want.rel_mse - 1) > 0.05  # the axis matters on these weights


def test_conv1d_names_without_config_are_refused(tmp_path, capsys):
    directory = _gpt2(tmp_path)
    err = _one_line(capsys, ["measure", "E2M3sUE4M4", "--weights", str(directory)])
    assert err == (f"{directory / 'model.safetensors'}: tensor 'h.0.attn.c_attn.weight' is named like a GPT-2 "
                   "Conv1D weight, stored (in, out), but no config.json beside the checkpoint gives its "
                   "model_type; put the model's config.json there")


def test_conv1d_names_with_an_unknown_model_type_are_refused(tmp_path):
    directory = _gpt2(tmp_path, model_type="jais")
    with pytest.raises(SourceError) as err:
        open_source(str(directory))
    assert str(err.value) == (
        f"{directory / 'model.safetensors'}: tensor 'h.0.attn.c_attn.weight' is named like a GPT-2 Conv1D "
        "weight, stored (in, out), but config.json model_type 'jais' is not one whose layout sop-dse knows "
        "(Conv1D (in, out): decision_transformer, gpt2, imagegpt, openai-gpt; Linear (out, in): gpt_bigcode); "
        "cannot tell its input axis")


def test_gpt_bigcode_c_attn_is_a_linear(tmp_path):
    directory = _gpt2(tmp_path, model_type="gpt_bigcode")
    source = open_source(str(directory))
    stored = GPT2["h.0.attn.c_attn.weight"]
    info = next(i for i in source.infos() if i.name == "h.0.attn.c_attn.weight")
    assert info.shape == stored.shape and info.layout == "(out, in)"
    np.testing.assert_array_equal(source.load(info.name), stored)


def test_conv1d_shape_that_contradicts_the_config_is_refused(tmp_path):
    directory = _gpt2(tmp_path, model_type="gpt2", n_embd=2 * N_EMBD)
    with pytest.raises(SourceError) as err:
        open_source(str(directory))
    assert str(err.value) == (
        f"{directory / 'model.safetensors'}: tensor 'h.0.attn.c_attn.weight' has shape [64, 192], but as a "
        "GPT-2 Conv1D weight (in, out) its input axis should be n_embd = 128 (config.json); the checkpoint "
        "and its config.json disagree")


def test_flax_kernels_are_transposed(tmp_path):
    kernel = RNG.standard_normal((32, 48)).astype(np.float32)  # Flax Dense kernel: (in, out)
    write_safetensors(tmp_path / "flax.safetensors", {"model.layers.0.mlp.up_proj.kernel": ("F32", kernel)})
    source = open_source(str(tmp_path / "flax.safetensors"))
    (info,) = source.infos()
    assert info.shape == (48, 32) and "kernel" in info.layout
    np.testing.assert_array_equal(source.load(info.name), kernel.T)


# --- kind 4: fused 3-D MoE experts --------------------------------------------------------------

HIDDEN, INTER, EXPERTS = 64, 96, 4


def _moe(tmp_path, model_type="qwen3_moe", in_out=False, config=True):
    """A dense q_proj and fused experts: gate_up (E, 2*INTER, HIDDEN), down (E, HIDDEN, INTER),
    or both transposed per expert (E, in, out) when ``in_out``."""
    directory = tmp_path / "moe"
    gate_up = RNG.standard_normal((EXPERTS, 2 * INTER, HIDDEN)).astype(np.float32)
    down = RNG.standard_normal((EXPERTS, HIDDEN, INTER)).astype(np.float32)
    q = RNG.standard_normal((HIDDEN, HIDDEN)).astype(np.float32)
    stored = {"model.layers.0.self_attn.q_proj.weight": ("F32", q),
              "model.layers.0.mlp.experts.gate_up_proj": ("F32", gate_up.transpose(0, 2, 1).copy() if in_out
                                                          else gate_up),
              "model.layers.0.mlp.experts.down_proj": ("F32", down.transpose(0, 2, 1).copy() if in_out else down),
              "model.layers.0.mlp.experts.gate_up_proj_bias": ("F32", np.zeros((EXPERTS, 2 * INTER), np.float32))}
    directory.mkdir()
    write_safetensors(directory / "model.safetensors", stored)
    if config:
        _config(directory, model_type=model_type, hidden_size=HIDDEN, intermediate_size=INTER)
    want = {"model.layers.0.self_attn.q_proj.weight": q}
    for e in range(EXPERTS):
        want[f"model.layers.0.mlp.experts.gate_up_proj[{e}]"] = gate_up[e]
        want[f"model.layers.0.mlp.experts.down_proj[{e}]"] = down[e]
    return directory, want


@pytest.mark.parametrize(("model_type", "in_out"), [("qwen3_moe", False), ("gpt_oss", True), ("mixtral", True)])
def test_fused_experts_are_measured_per_expert(tmp_path, capsys, model_type, in_out):
    directory, want = _moe(tmp_path, model_type, in_out)
    source = open_source(str(directory))
    infos = {i.name: i for i in source.infos()}
    assert set(infos) == set(want)  # the 2-D expert bias is not a weight matrix
    for name, w in want.items():
        np.testing.assert_array_equal(source.load(name), w)
        assert infos[name].shape == w.shape
    rows = _measure_json(capsys, directory)
    assert rows["*"]["numel"] == sum(w.size for w in want.values()) == HIDDEN * HIDDEN + EXPERTS * 3 * INTER * HIDDEN
    for name, w in want.items():
        assert rows[name]["rel_mse"] == pytest.approx(quant.measure(w, MXFP4).rel_mse, rel=1e-12)


def test_fused_experts_without_config_are_refused(tmp_path):
    directory, _ = _moe(tmp_path, config=False)
    with pytest.raises(SourceError) as err:
        open_source(str(directory))
    assert str(err.value) == (
        f"{directory / 'model.safetensors'}: tensor 'model.layers.0.mlp.experts.gate_up_proj' holds 4 fused "
        "experts of shape [192, 64], stored (E, out, in) or (E, in, out) depending on the model, and no "
        "config.json beside the checkpoint gives hidden_size; put the model's config.json there")


def test_square_fused_experts_of_an_unknown_model_are_refused(tmp_path):
    directory = tmp_path / "sq"
    directory.mkdir()
    write_safetensors(directory / "model.safetensors",
                      {"model.layers.0.mlp.experts.down_proj": ("F32", np.ones((2, 32, 32), np.float32))})
    _config(directory, model_type="newmoe", hidden_size=32, intermediate_size=32)
    with pytest.raises(SourceError) as err:
        open_source(str(directory))
    assert str(err.value) == (
        f"{directory / 'model.safetensors'}: tensor 'model.layers.0.mlp.experts.down_proj' holds 2 fused experts "
        "of shape [32, 32]: both axes match hidden_size 32, and model_type 'newmoe' does not say which is the "
        "input; cannot tell its input axis")


# --- kind 5: block-FP8 checkpoints ---------------------------------------------------------------

FP8 = {"F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2}


def _fp8_weight(shape, dtype, block=(128, 128), rng=RNG):
    """(codes as uint8, scale_inv (ceil(out/bo), ceil(in/bi)) float32, dequantized float32 by ml_dtypes)."""
    grid = (-(-shape[0] // block[0]), -(-shape[1] // block[1]))
    scale = rng.uniform(0.5, 2.0, grid).astype(np.float32) * 1e-4
    full = np.repeat(np.repeat(scale, block[0], 0), block[1], 1)[: shape[0], : shape[1]]
    codes = (rng.standard_normal(shape) * 100).clip(-440, 440).astype(FP8[dtype])  # finite codes
    return codes.view(np.uint8), scale, codes.astype(np.float32) * full


@pytest.mark.parametrize("dtype", sorted(FP8))
def test_block_fp8_is_dequantized_with_its_block_scales(tmp_path, capsys, dtype):
    q_codes, q_scale, q_want = _fp8_weight((256, 256), dtype)  # 2 x 2 scale blocks
    o_codes, o_scale, o_want = _fp8_weight((200, 320), dtype)  # ragged last blocks: 2 x 3 scales
    norm = RNG.standard_normal((64, 64)).astype(np.float32)
    write_safetensors(tmp_path / "model.safetensors", {
        "model.layers.0.self_attn.q_proj.weight": (dtype, q_codes),
        "model.layers.0.self_attn.q_proj.weight_scale_inv": ("F32", q_scale),
        "model.layers.0.self_attn.o_proj.weight": (dtype, o_codes),
        "model.layers.0.self_attn.o_proj.weight_scale_inv": ("BF16", to_bf16_bits(o_scale)),
        "model.layers.0.mlp.down_proj.weight": ("F32", norm),
    })
    o_bf16 = (to_bf16_bits(o_scale).astype(np.uint32) << 16).view(np.float32)
    o_want = o_codes.view(FP8[dtype]).astype(np.float32) * np.repeat(np.repeat(o_bf16, 128, 0), 128, 1)[:200, :320]
    source = open_source(str(tmp_path / "model.safetensors"))
    infos = {i.name: i for i in source.infos()}
    assert set(infos) == {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                          "model.layers.0.mlp.down_proj.weight"}  # scales are never weights
    for name, want in (("model.layers.0.self_attn.q_proj.weight", q_want),
                       ("model.layers.0.self_attn.o_proj.weight", o_want)):
        assert infos[name].prequantized and infos[name].stored_dtype == dtype
        assert infos[name].shape == want.shape
        np.testing.assert_array_equal(source.load(name), want)
    assert not infos["model.layers.0.mlp.down_proj.weight"].prequantized
    rows = _measure_json(capsys, tmp_path / "model.safetensors", "E2M3sUE4M4")
    assert rows["*"]["numel"] == 256 * 256 + 200 * 320 + 64 * 64
    assert rows["model.layers.0.self_attn.q_proj.weight"]["prequantized"]
    assert rows["model.layers.0.self_attn.q_proj.weight"]["rel_mse"] == pytest.approx(
        quant.measure(q_want, quant.parse_candidate("E2M3sUE4M4")).rel_mse, rel=1e-12)


def test_fp8_block_size_from_config(tmp_path):
    codes, scale, want = _fp8_weight((128, 192), "F8_E4M3", block=(64, 64))  # 2 x 3 scales of 64 x 64
    write_safetensors(tmp_path / "model.safetensors", {"a.q_proj.weight": ("F8_E4M3", codes),
                                                        "a.q_proj.weight_scale_inv": ("F32", scale)})
    _config(tmp_path, model_type="deepseek_v3", quantization_config={"quant_method": "fp8",
                                                                    "weight_block_size": [64, 64]})
    np.testing.assert_array_equal(open_source(str(tmp_path)).load("a.q_proj.weight"), want)


def test_fp8_scale_in_another_shard(tmp_path):
    codes, scale, want = _fp8_weight((256, 128), "F8_E4M3")
    write_sharded(tmp_path / "ckpt", [{"a.q_proj.weight": ("F8_E4M3", codes)},
                                      {"a.q_proj.weight_scale_inv": ("F32", scale)}])
    np.testing.assert_array_equal(open_source(str(tmp_path / "ckpt")).load("a.q_proj.weight"), want)


def test_fp8_without_scale_is_refused(tmp_path):
    codes, _, _ = _fp8_weight((128, 128), "F8_E5M2")
    write_safetensors(tmp_path / "m.safetensors", {"a.q_proj.weight": ("F8_E5M2", codes)})
    with pytest.raises(SourceError) as err:
        open_source(str(tmp_path / "m.safetensors"))
    assert str(err.value) == (f"{tmp_path / 'm.safetensors'}: tensor 'a.q_proj.weight' is F8_E5M2 but has no "
                              "'a.q_proj.weight_scale_inv' block-scale tensor; sop-dse cannot dequantize it "
                              "(add the scales, or dequantize the checkpoint first)")


def test_fp8_scale_grid_that_fits_no_block_is_refused(tmp_path):
    codes, _, _ = _fp8_weight((256, 256), "F8_E4M3")
    write_safetensors(tmp_path / "m.safetensors", {"a.q_proj.weight": ("F8_E4M3", codes),
                                                    "a.q_proj.weight_scale_inv": ("F32", np.ones((3, 2), np.float32))})
    with pytest.raises(SourceError) as err:
        open_source(str(tmp_path / "m.safetensors"))
    assert str(err.value) == (
        f"{tmp_path / 'm.safetensors'}: tensor 'a.q_proj.weight_scale_inv' has shape [3, 2], which is not the "
        "block grid of weight [256, 256] for blocks [128, 128]; give quantization_config.weight_block_size in "
        "config.json beside the checkpoint")


def test_fp8_decoding_covers_every_code():
    """The reader's 256-entry tables against ml_dtypes, code by code (NaN codes included)."""
    from models.fp8 import fp8_to_float32

    codes = np.arange(256, dtype=np.uint8)
    for name, dtype in FP8.items():
        np.testing.assert_array_equal(fp8_to_float32(codes, name), codes.view(dtype).astype(np.float32))


# --- kind 6: one tensor name in two files of a directory without an index ------------------------

def test_duplicate_tensor_in_an_unindexed_directory_is_refused(tmp_path, capsys):
    w = RNG.standard_normal((32, 32)).astype(np.float32)
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"a.q_proj.weight": ("F32", w)})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"a.k_proj.weight": ("F32", w)})
    write_safetensors(tmp_path / "model.safetensors", {"a.q_proj.weight": ("F32", w), "a.k_proj.weight": ("F32", w)})
    err = _one_line(capsys, ["measure", "E2M3sUE4M4", "--weights", str(tmp_path)])
    assert err == (f"{tmp_path}: tensor 'a.q_proj.weight' is in both model-00001-of-00002.safetensors and "
                   "model.safetensors, and no model.safetensors.index.json says which is current; remove the "
                   "stray file or pass one file")


def test_the_index_decides_when_a_stray_file_repeats_tensors(tmp_path, capsys):
    w, v = (RNG.standard_normal((32, 32)).astype(np.float32) for _ in range(2))
    write_sharded(tmp_path, [{"a.q_proj.weight": ("F32", w)}, {"a.k_proj.weight": ("F32", v)}])
    write_safetensors(tmp_path / "model.safetensors", {"a.q_proj.weight": ("F32", v), "a.k_proj.weight": ("F32", w)})
    source = open_source(str(tmp_path))
    assert sorted(i.name for i in source.infos()) == ["a.k_proj.weight", "a.q_proj.weight"]
    np.testing.assert_array_equal(source.load("a.q_proj.weight"), w)
    rows = _measure_json(capsys, tmp_path)
    assert rows["*"]["numel"] == 2 * 32 * 32


def test_packed_integer_weights_are_refused_not_replaced_by_their_scales(tmp_path):
    """A GPTQ layer: I32 qweight, F16 scales (groups, out); the scales must not pass for weights."""
    write_safetensors(tmp_path / "m.safetensors", {
        "a.q_proj.qweight": ("I32", np.zeros((8, 64), np.int32)),
        "a.q_proj.scales": ("F16", np.ones((2, 64), np.float16)),
    })
    with pytest.raises(SourceError) as err:
        open_source(str(tmp_path / "m.safetensors"))
    assert str(err.value) == (f"{tmp_path / 'm.safetensors'}: tensor 'a.q_proj.qweight' is stored as I32, a packed "
                              "quantized weight (GPTQ, AWQ, bitsandbytes) sop-dse cannot decode; dequantize the "
                              "checkpoint to F16/BF16 first")
