"""dse export: fake-quantized safetensors equal to the packed tensors' decode; llama.cpp overrides."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file, save_file

from dse.cli import main
from dse.package import load_config
from dse.packing import decode_file, unpack
from quant import dequantize


@pytest.fixture
def checkpoint(tmp_path):
    """An HF-like folder: F32 and F16 matrices, a 1-D bias, config.json and a tokenizer file."""
    rng = np.random.default_rng(11)
    tensors = {
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((32, 64)).astype(np.float32),
        "model.layers.0.mlp.down_proj.weight": (rng.standard_normal((16, 128)) * 0.02).astype(np.float16),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((16, 64)).astype(np.float32),
        "model.layers.0.mlp.up_proj.bias": rng.standard_normal(16).astype(np.float32),
    }
    src = tmp_path / "ckpt"
    src.mkdir()
    save_file(tensors, str(src / "model.safetensors"))
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "tokenizer.json").write_text("{}")
    np.savez(tmp_path / "act.npz", **{"model.layers.0.self_attn.q_proj.weight": rng.uniform(0.1, 3.0, 64)})
    return {"dir": src, "tensors": tensors, "tmp": tmp_path}


def _config(tmp, assignment: dict[str, str], name: str = "config.yaml") -> str:
    doc = {"sop_dse_config": 1, "scenario": str(tmp / "s.yaml"), "weights": ["ckpt"], "activations": "act.npz",
           "act_power": 2, "bpw": 5.0, "error": 0.0, "metric": "sse", "assignment": assignment}
    (tmp / name).write_text(yaml.safe_dump(doc))
    return str(tmp / name)


def test_fakequant_equals_the_decoded_package(checkpoint, capsys):
    tmp = checkpoint["tmp"]
    config = _config(tmp, {"model.layers.0.self_attn.q_proj.weight": "NF4|DD4sUE4M4:aw+res(1%)",
                           "model.layers.0.mlp.down_proj.weight": "Q4_0",
                           "model.layers.0.mlp.up_proj.weight": "E2M3sUE4M4"})
    assert main(["export", config, "--to", "fakequant", "--out", str(tmp / "fq")]) == 0
    assert main(["quantize", config, "--out", str(tmp / "pkg")]) == 0
    exported = load_file(str(tmp / "fq" / "model.safetensors"))
    manifest = json.loads((tmp / "pkg" / "manifest.json").read_text())
    for record in manifest["tensors"]:
        decoded = dequantize(unpack(decode_file((tmp / "pkg" / record["file"]).read_bytes(), record["file"])))
        source = checkpoint["tensors"][record["name"]]
        got = exported[record["name"]]
        assert got.dtype == source.dtype and got.shape == source.shape
        # F32: the packed form's decode bit for bit; F16: that value rounded to F16
        assert got.tobytes() == decoded.astype(source.dtype).tobytes()
    bias = "model.layers.0.mlp.up_proj.bias"
    assert exported[bias].tobytes() == checkpoint["tensors"][bias].tobytes()  # untouched tensors copied
    assert (tmp / "fq" / "config.json").read_text() == '{"model_type": "llama"}'
    assert (tmp / "fq" / "tokenizer.json").exists()
    with open(tmp / "fq" / "model.safetensors", "rb") as fh:
        header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    assert header["__metadata__"]["format"] == "pt"  # transformers refuses other formats


def test_bf16_rounding_is_nearest_even():
    from dse.export import _to_dtype

    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    x[:4] = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1 + 2**-8 + 2**-20], np.float32)  # ties and near-ties
    assert _to_dtype(x, "BF16") == x.astype(ml_dtypes.bfloat16).tobytes()


def test_llama_cpp_overrides(checkpoint, capsys):
    tmp = checkpoint["tmp"]
    config = _config(tmp, {"model.layers.0.self_attn.q_proj.weight": "Q8_0",
                           "model.layers.0.mlp.down_proj.weight": "Q4_0",
                           "model.layers.0.mlp.up_proj.weight": "Q5sFP16@32:ggml:tnone"})
    assert main(["export", config, "--to", "llama.cpp", "--out", str(tmp / "ll")]) == 0
    lines = (tmp / "ll" / "llama-quantize-args.txt").read_text().splitlines()
    assert lines == [r"--tensor-type blk\.0\.ffn_down\.weight=q4_0", r"--tensor-type blk\.0\.ffn_up\.weight=q5_0",
                     r"--tensor-type blk\.0\.attn_q\.weight=q8_0"]
    assert load_config(config).assignment  # the config itself is unchanged and valid


def test_llama_cpp_names_what_it_cannot_export(checkpoint, capsys):
    tmp = checkpoint["tmp"]
    config = _config(tmp, {"model.layers.0.self_attn.q_proj.weight": "Q8_0",
                           "model.layers.0.mlp.down_proj.weight": "NVFP4",
                           "model.layers.0.mlp.up_proj.weight": "E2M3sUE4M4"}, "mixed.yaml")
    assert main(["export", config, "--to", "llama.cpp", "--out", str(tmp / "ll")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "E2M1sE4M3 (1 tensors), E2M3sUE4M4 (1 tensors)" in err


def test_fakequant_needs_a_safetensors_source(tmp_path, capsys):
    doc = {"sop_dse_config": 1, "weights": ["synthetic:gaussian"], "assignment": {"synthetic": "E2M3sUE4M4"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    assert main(["export", str(tmp_path / "c.yaml"), "--to", "fakequant", "--out", str(tmp_path / "o")]) == 2
    assert "needs a safetensors checkpoint" in capsys.readouterr().err
