"""GGUF files written with gguf's GGUFWriter read back exactly; quantized types are flagged."""

import numpy as np
import pytest

from dse.cli import main
from models.gguf_source import GGUFSource
from models.sources import open_source
from models.errors import SourceError
from tests.models.files import truncate, write_gguf


@pytest.fixture
def gguf_file(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {
        "token_embd.weight": rng.standard_normal((64, 32)).astype(np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((32, 32)).astype(np.float16),
        "blk.0.ffn_gate_exps.weight": rng.standard_normal((4, 48, 32)).astype(np.float32),
        "blk.0.attn_norm.weight": np.ones(32, np.float32),
    }
    quantized = {"blk.0.ffn_down.weight": (rng.standard_normal((32, 64)).astype(np.float32), "Q8_0"),
                 "blk.0.attn_output.weight": (rng.standard_normal((32, 32)).astype(np.float32), "BF16")}
    path = tmp_path / "model.gguf"
    write_gguf(path, arrays, quantized)
    return path, arrays, quantized


def test_float_tensors_read_back_exactly(gguf_file):
    path, arrays, quantized = gguf_file
    source = open_source(str(path))
    infos = {i.name: i for i in source.infos()}
    assert "blk.0.attn_norm.weight" not in infos
    np.testing.assert_array_equal(source.load("token_embd.weight"), arrays["token_embd.weight"])
    np.testing.assert_array_equal(source.load("blk.0.attn_q.weight"), arrays["blk.0.attn_q.weight"].astype(np.float32))
    assert infos["blk.0.attn_q.weight"].stored_dtype == "F16" and not infos["blk.0.attn_q.weight"].prequantized
    # BF16 is a float type: exact after truncation of the float32 input to its top 16 bits (round to nearest)
    bf16 = source.load("blk.0.attn_output.weight")
    assert not infos["blk.0.attn_output.weight"].prequantized
    np.testing.assert_allclose(bf16, quantized["blk.0.attn_output.weight"][0], rtol=2**-8)
    assert np.all((bf16.view(np.uint32) & 0xFFFF) == 0)


def test_stacked_experts_are_listed_one_per_expert(gguf_file):
    path, arrays, _ = gguf_file
    source = GGUFSource(path)
    names = [i.name for i in source.infos() if "exps" in i.name]
    assert names == [f"blk.0.ffn_gate_exps.weight[{e}]" for e in range(4)]
    assert source.infos()[[i.name for i in source.infos()].index(names[2])].shape == (48, 32)
    np.testing.assert_array_equal(source.load(names[2]), arrays["blk.0.ffn_gate_exps.weight"][2])


def test_quantized_tensor_is_flagged_and_dequantized(gguf_file):
    path, _, quantized = gguf_file
    source = GGUFSource(path)
    info = next(i for i in source.infos() if i.name == "blk.0.ffn_down.weight")
    assert info.prequantized and info.stored_dtype == "Q8_0" and info.shape == (32, 64)
    original = quantized["blk.0.ffn_down.weight"][0]
    w = source.load(info.name)
    # Q8_0: 8-bit symmetric blocks of 32, step d = amax/127 per block, d stored as F16 (its
    # rounding, 2^-11 relative, moves codes near amax by up to 127 * 2^-11 d ~ 0.06 d)
    step = np.abs(original.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(w - original).reshape(-1, 32) <= 0.57 * step)
    assert not np.array_equal(w, original)


def test_truncated_gguf_names_the_tensor(gguf_file):
    path, _, _ = gguf_file
    truncate(path, path.stat().st_size - 100)
    with pytest.raises(SourceError) as err:
        GGUFSource(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "truncated" in message
    assert "'blk.0.attn_output.weight'" in message  # the last tensor written


@pytest.mark.parametrize("content", [b"", b"GGUF", b"NOPE" + bytes(60), b"GGUF\x03\x00\x00\x00" + b"\xff" * 40])
def test_corrupt_gguf_fails_in_one_line(tmp_path, content, capsys):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        GGUFSource(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert main(["measure", "E2M3sUE4M4", "--weights", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_dse_measure_on_truncated_gguf_exits_2(gguf_file, capsys):
    path, _, _ = gguf_file
    truncate(path, path.stat().st_size - 100)
    assert main(["measure", "E2M3sUE4M4", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dse: error: ") and err.count("\n") == 1 and "blk.0.attn_output.weight" in err
